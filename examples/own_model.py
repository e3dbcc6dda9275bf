"""Your own PyTorch model and loop in the AdaLRS comparison, then the cost report.

AdaLRS (Dong et al., "AdaLRS", NeurIPS 2025, arXiv 2506.13274), started 10x below the reference
LR, searches the LR inside ONE run; a grid, HyperBand and PBT (every default arm of
``AdaLRSComparison``) search [lr_ref/10, lr_ref*10] the usual way, all in one ``tune.Tuner``.
The model (a small MLP) and the data (a regression on a random teacher network) are made in this
script; the training loop is an ordinary PyTorch loop, and ``AdaLRSTrial`` is the glue (the lines
marked ``# glue``: 3 in the trainable, 5 to run the comparison in the Tuner; the rest of
``main`` sizes the arms, starts Ray, switches the loggers and builds the report;
docs/own_training.md counts the minimal form).

    python examples/own_model.py --out runs/own_model                # 1000 steps per trial
    python examples/own_model.py --smoke-test --out /tmp/own_model   # 200 steps, under a minute

Writes the report (``report.md``, ``report.html``, ``results.parquet``, plots) into ``--out``
and Tune's own logs into every trial directory under ``OUT/tune`` (TensorBoard event files,
``progress.csv``, ``result.json``; ``--no-loggers``: none). Uses an already initialised Ray as
is; otherwise starts a local one and shuts it down at the end.
"""

from __future__ import annotations

import argparse
import logging
from functools import partial
from pathlib import Path
from typing import Any

import torch
from ray import tune
from torch import nn

from adalrs_ray import report as rep
from adalrs_ray.comparison import AdaLRSComparison, AdaLRSTrial, explicit_loggers, tune_loggers
from search_algos import ARMS, DEFAULT_ARMS, get_arm

LR_REF = 1e-2  # the best LR of a sweep of this model (1000 steps, cosine): 1e-2 to 3e-2
DIM, TRAIN, VAL = 16, 3584, 512


# ------------------------------------------------------------------ your model, data and loop
def make_data(seed: int) -> dict[str, torch.Tensor]:
    """A regression task: targets of a random teacher network plus noise; train/val split."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(TRAIN + VAL, DIM, generator=g)
    w1 = torch.randn(DIM, 32, generator=g) / DIM**0.5
    w2 = torch.randn(32, 1, generator=g) / 32**0.5
    y = 3 * torch.tanh(x @ w1) @ w2 + 0.1 * torch.randn(TRAIN + VAL, 1, generator=g)
    return {"x": x[:TRAIN], "y": y[:TRAIN], "x_val": x[TRAIN:], "y_val": y[TRAIN:]}


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(DIM, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 1)
    )


def batch(data: dict[str, torch.Tensor], step: int, size: int):
    """The batch of a step (a function of the step: a resumed trial continues the stream)."""
    idx = torch.randint(0, TRAIN, (size,), generator=torch.Generator().manual_seed(step))
    return data["x"][idx], data["y"][idx]


@torch.no_grad()
def val_loss(model: nn.Module, data: dict[str, torch.Tensor]) -> float:
    model.eval()
    loss = nn.functional.mse_loss(model(data["x_val"]), data["y_val"]).item()
    model.train()
    return loss


def train(config: dict[str, Any]) -> None:
    """The Tune function trainable: an ordinary PyTorch loop plus three lines of glue."""
    torch.set_num_threads(1)
    data, model = make_data(config["data_seed"]), make_model(config["seed"])
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.01)
    val = partial(val_loss, model, data)  # your validation, called at each report
    # the batches are a function of the step, so a backtrack that moves the step back replays
    # them (rewinds=True): the opening and failed trials then cost compute, not steps
    trial = AdaLRSTrial(config, model, opt, schedule="cosine", evaluate=val, rewinds=True)  # glue
    for step in trial.steps():  # glue (instead of range(total_steps))
        x, y = batch(data, step, config["batch_size"])
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        trial.step(loss)  # glue


# ------------------------------------------------------------------ the comparison
def make_arms(smoke_test: bool) -> list:
    """Every default arm over [LR_REF/10, LR_REF*10]; AdaLRS starts once, at LR_REF/10. The smoke
    test takes each arm's own small size (its ``smoke`` preset settings)."""
    arms = []
    for name in DEFAULT_ARMS:
        if name == "adalrs":
            arms.append(get_arm("adalrs", lrs=(LR_REF / 10,), adalrs={"window": 10}))
            continue
        sizes = dict(ARMS[name].preset_settings.get("smoke", {})) if smoke_test else {}
        arms.append(get_arm(name, lr_min=LR_REF / 10, lr_max=LR_REF * 10, **sizes))
    return arms


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/own_model_example")
    parser.add_argument("--smoke-test", action="store_true", help="200 steps, small arms")
    parser.add_argument(
        "--no-loggers",
        dest="loggers",
        action="store_false",
        help="no Tune logs per trial (default: TensorBoard, progress.csv, result.json)",
    )
    args = parser.parse_args(argv)
    total_steps, report_every = (200, 40) if args.smoke_test else (1000, 50)
    out = Path(args.out).resolve()
    if (out / "tune").exists():
        parser.error(f"{out / 'tune'} already exists (an earlier run): choose another --out")

    import os

    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's console tables off (verbose=0)
    started = not ray.is_initialized()
    if started:
        ray.init(
            address="local", include_dashboard=False, log_to_driver=False, logging_level="ERROR"
        )
    try:
        sched = AdaLRSComparison(  # glue (metric val_loss, mode min)
            make_arms(args.smoke_test), total_steps=total_steps, report_every=report_every
        )
        cpu = float(ray.cluster_resources()["CPU"]) / 4  # four trials at once
        shared = {"seed": 0, "data_seed": 0, "batch_size": 64}  # every trial's own keys
        tuner = tune.Tuner(
            tune.with_resources(train, {"cpu": cpu}),  # glue
            param_space=sched.param_space(shared),  # glue
            tune_config=tune.TuneConfig(scheduler=sched, reuse_actors=True),  # glue
            run_config=tune.RunConfig(
                storage_path=str(out),
                name="tune",
                verbose=0,
                callbacks=tune_loggers(args.loggers),  # Tune's TensorBoard, CSV, JSON
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None),  # PBT: old donors
            ),
        )
        with explicit_loggers():  # exactly the loggers above
            results = tuner.fit()  # glue
    finally:
        if started:
            ray.shutdown()
    errors = [str(r.error) for r in results if r.error]

    adalrs = [key for key in sched.arms if key.startswith("adalrs")]
    paths = rep.write_report(
        rep.load_results(out / "tune"),
        out,
        title="AdaLRS against every default arm on a model made in the script",
        extra={"example": "examples/own_model.py", "lr_ref": LR_REF, "steps": total_steps},
        baseline_steps=total_steps,
        grid_arm="grid",
        adalrs_arms=adalrs,
    )
    compute = sched.compute_table()  # steps, tokens, worker-seconds per arm
    print(compute[["arm", "trials", "steps", "best_metric"]].to_string(index=False))
    print(f"{len(errors)} failed trial(s); report: {paths['markdown']}")
    return {"paths": paths, "compute": compute, "errors": len(errors), "tune_dir": out / "tune"}


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    raise SystemExit(1 if main()["errors"] else 0)
