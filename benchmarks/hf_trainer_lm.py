"""AdaLRS in the transformers ``Trainer`` on the real LM task: the integration's default, which
rewinds its data (``AdaLRSTrainerCallback(config)``), against the default of a loop that cannot
rewind (``rewind=False``: ``"continue"`` mode) and against no AdaLRS, from lr_grid / f, lr_grid
and f x lr_grid, in one run (issue 13: "the default in loops that cannot rewind").

Every run trains the tiny Qwen2 preset on the standard-library corpus (byte tokens) through
:class:`~adalrs_ray.integrations.hf_trainer.AdaLRSTrainer` (the plain ``Trainer`` for the fixed
runs), same seed, same data order (the Trainer's seeded sampler), the Trainer's own
``warmup_stable_decay`` schedule (no warmup, the last 10% decayed) and AdamW (weight decay
0.1, betas 0.9/0.95, clip 1.0, as the LM loop). AdaLRS observes the training loss (what the
integration feeds it). Reported per start: the final validation loss (the first
``--eval-batches`` batches of the validation split) and its ratio to the fixed same-start run,
the final LR as a ratio to lr_grid, and the optimizer steps the Trainer ran (a rewind's steps
are run again: compute) as a ratio to ``--steps``. Runs go ``--procs`` at a time in worker
processes with one torch thread each. Writes a Markdown table and a JSON summary.

    python benchmarks/hf_trainer_lm.py --steps 4000 --window 40 --out runs/hf_lm   # ~20 min
    python benchmarks/hf_trainer_lm.py --steps 200 --window 10 --out /tmp/h          # a look
"""

from __future__ import annotations

import argparse
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ARMS = ("fixed", "rewind", "continue")


def _run(arm: str, lr: float, args: dict) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import logging
    import tempfile

    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers import Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from adalrs_ray import AdaLRSConfig
    from adalrs_ray.integrations.hf_trainer import AdaLRSTrainer, AdaLRSTrainerCallback
    from train_loops import data as lmdata
    from train_loops import model as lmmodel

    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    logging.getLogger("adalrs_ray").setLevel(logging.WARNING)
    lm = lmdata.load_lm_data()
    train = lmdata.PackedSequences(lm.splits["train"], args["seq_len"], "train")
    val = lmdata.PackedSequences(lm.splits["validation"], args["seq_len"], "validation")

    class Sequences(torch.utils.data.Dataset):
        def __len__(self):
            return len(train)

        def __getitem__(self, i):
            ids = torch.from_numpy(train.get([i])[0])
            return {"input_ids": ids, "labels": ids}  # the model shifts the labels

    model = lmmodel.build_model("tiny", lm.vocab_size, args["seq_len"], args["seed"])
    steps = args["steps"]
    callbacks, cls, cb = [], Trainer, None
    if arm != "fixed":
        options = dict(args["adalrs_options"])
        cfg = AdaLRSConfig(total_steps=steps, window=args["window"], **options)
        cb = AdaLRSTrainerCallback(cfg, rewind=arm == "rewind")
        callbacks, cls = [cb], AdaLRSTrainer
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out,
            max_steps=steps,
            per_device_train_batch_size=args["batch_size"],
            learning_rate=lr,
            lr_scheduler_type="warmup_stable_decay",
            lr_scheduler_kwargs={"num_decay_steps": max(1, round(0.1 * steps))},
            warmup_steps=0,
            weight_decay=0.1,
            adam_beta1=0.9,
            adam_beta2=0.95,
            max_grad_norm=1.0,
            logging_steps=10**9,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            seed=args["seed"],
            data_seed=args["seed"],
            dataloader_num_workers=0,
        )
        trainer = cls(model=model, args=targs, train_dataset=Sequences(), callbacks=callbacks)
        trainer.train()
        ran = trainer.state.global_step
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for idx in lmdata.eval_batches(len(val), args["batch_size"], args["eval_batches"]):
            batch = torch.from_numpy(val.get(idx))
            logits = model(input_ids=batch[:, :-1]).logits
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
            total += float(loss) * len(idx)
            count += len(idx)
    scale = 1.0 if cb is None else float(cb.scheduler.scale)
    events = [] if cb is None else list(cb.controller.events)
    return {
        "arm": arm,
        "lr": lr,
        "val_loss": total / count,
        "final_scale": scale,
        "final_lr_ratio": lr * scale / args["lr_grid"],
        "ran": ran,
        "mode": None if cb is None else cb.controller.config.backtrack_mode,
        "events": [
            {k: e[k] for k in ("step", "kind", "scale_before", "scale_after") if k in e}
            for e in events
        ],
        "finite": bool(np.isfinite(total)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lr-grid", type=float, default=3e-3, help="the best LR of the grid")
    p.add_argument("--factor", type=float, default=10.0, help="starts at lr_grid / f, 1, f x")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--window", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument(
        "--adalrs-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an AdaLRSConfig field for both AdaLRS arms (VALUE as JSON, else a string), "
        "e.g. start_ratio=0.05",
    )
    p.add_argument("--arms", default=",".join(ARMS), help=f"a subset of {ARMS}")
    p.add_argument("--out", default="runs/hf_trainer_lm")
    a = p.parse_args()
    from adalrs_ray.cli.train import parse_adalrs_opts

    try:
        options = parse_adalrs_opts(a.adalrs_opt)
    except ValueError as exc:
        p.error(str(exc))
    arms = [x for x in a.arms.split(",") if x]
    bad = [x for x in arms if x not in ARMS]
    if bad or not arms:
        p.error(f"the value of --arms is {a.arms!r}, but each must be one of {ARMS}")
    from adalrs_ray import AdaLRSConfig

    try:  # both AdaLRS arms' configs, before any training
        cfg = AdaLRSConfig(total_steps=a.steps, window=a.window, **options)
        for rewinds in (True, False):
            cfg.resolved(rewinds=rewinds)
    except (TypeError, ValueError) as exc:
        p.error(str(exc))
    args = {
        "lr_grid": a.lr_grid,
        "steps": a.steps,
        "window": a.window,
        "batch_size": a.batch_size,
        "seq_len": a.seq_len,
        "eval_batches": a.eval_batches,
        "seed": a.seed,
        "adalrs_options": options,
    }
    starts = {"1/f": a.lr_grid / a.factor, "1": a.lr_grid, "f": a.lr_grid * a.factor}
    jobs = [(arm, name, lr) for name, lr in starts.items() for arm in arms]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(a.procs) as pool:
        futures = {(arm, name): pool.submit(_run, arm, lr, args) for arm, name, lr in jobs}
        results = {key: f.result() for key, f in futures.items()}
    head = (
        f"tiny Qwen2 in the transformers Trainer, warmup_stable_decay (warmup 0, decay 10%), "
        f"{a.steps} steps, batch {a.batch_size}x{a.seq_len}, window {a.window}, lr_grid "
        f"{a.lr_grid:g}, AdaLRS options {json.dumps(options)}, signal train, seed {a.seed}"
    )
    lines = [
        head,
        "",
        "| start | arm | mode | val loss | / fixed same start | final LR / lr_grid | steps run / steps |",
        "|---|---|---|---|---|---|---|",
    ]
    labels = {"1/f": f"lr_grid/{a.factor:g}", "1": "lr_grid", "f": f"{a.factor:g}x lr_grid"}
    for name in starts:
        fixed = results.get(("fixed", name))
        for arm in arms:
            r = results[(arm, name)]
            ratio = (
                r["val_loss"] / fixed["val_loss"]
                if fixed and math.isfinite(fixed["val_loss"])
                else float("nan")
            )
            lines.append(
                f"| {labels[name]} | {arm} | "
                f"{r['mode'] or '-'} | {r['val_loss']:.4f} | {ratio:.4f} | "
                f"{r['final_lr_ratio']:.3g} | {r['ran'] / a.steps:.2f} |"
            )
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    (out / "summary.json").write_text(
        json.dumps({"args": args, "results": [results[k] for k in results]}, indent=1)
    )
    print(table)


if __name__ == "__main__":
    main()
