"""Cost per optimizer step of each trainer integration of AdaLRS, as a ratio to the same loop
without it, measured in the same run.

Three pairs, each on the same MLP (``--width``, ``--layers``, ``--batch``), AdamW and a cosine
schedule with warmup, for ``--steps`` optimizer steps:

* plain PyTorch loop: the base schedule stepped by hand (baseline) vs
  :class:`~adalrs_ray.torch_binding.AdaLRSScheduler` on the same schedule;
* transformers ``Trainer`` (baseline) vs :class:`~adalrs_ray.integrations.hf_trainer.AdaLRSTrainer`
  with :class:`~adalrs_ray.integrations.hf_trainer.AdaLRSTrainerCallback`;
* Lightning ``Trainer`` (baseline) vs the same with
  :class:`~adalrs_ray.integrations.lightning.AdaLRSLightningCallback`.

AdaLRS runs the real controller with ``window = steps // 25``, so that an LR trial (its
snapshot and its judgement) happens during the timed steps (one trial in the default setting). A step is timed from one optimizer step's end to the
next (a timing callback that runs after AdaLRS's), after ``--warmup`` steps, so the trainers'
start-up is left out. Every repeat runs the six variants in turn (load from other processes
hits all of them); the medians over repeats and each integration's ratio to its own baseline
are printed (and written as JSON with ``--json``). One torch thread.

    .venv/bin/python benchmarks/bench_integrations.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
import warnings

import torch
from torch import nn

from adalrs_ray import AdaLRS, AdaLRSConfig
from adalrs_ray.torch_binding import AdaLRSScheduler, get_base_schedule

LR = 3e-3


def build(args):
    torch.manual_seed(0)
    mods: list[nn.Module] = [nn.Linear(16, args.width), nn.GELU()]
    for _ in range(args.layers - 1):
        mods += [nn.Linear(args.width, args.width), nn.GELU()]
    return nn.Sequential(*mods, nn.Linear(args.width, 1))


def data(args):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.steps * args.batch, 16, generator=g)
    return x, x.sum(dim=1).sin()


def controller(args):
    return AdaLRS(AdaLRSConfig(total_steps=args.steps, window=max(2, args.steps // 25)))


def per_step(stamps: list[float], warmup: int) -> float:
    return (stamps[-1] - stamps[warmup]) / (len(stamps) - 1 - warmup)


# ----------------------------------------------------------------------------- plain loop
def plain_loop(args, adalrs: bool) -> float:
    model = build(args)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    base = get_base_schedule("cosine", opt, args.steps, warmup_steps=args.steps // 10)
    sched = AdaLRSScheduler(opt, controller(args), base, model=model) if adalrs else None
    x, y = data(args)
    stamps = []
    for t in range(args.steps):
        xb, yb = x[t * args.batch : (t + 1) * args.batch], y[t * args.batch : (t + 1) * args.batch]
        loss = nn.functional.mse_loss(model(xb).squeeze(-1), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step(loss.detach())
        else:
            base.step()
        stamps.append(time.perf_counter())
    return per_step(stamps, args.warmup)


# ----------------------------------------------------------------------------- HF Trainer
class _HFModel(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.net = build(args)

    def forward(self, x, labels=None):
        pred = self.net(x).squeeze(-1)
        return {"loss": nn.functional.mse_loss(pred, labels), "logits": pred}


class _Rows(torch.utils.data.Dataset):
    def __init__(self, args):
        self.x, self.y = data(args)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def hf_trainer(args, adalrs: bool) -> float:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from adalrs_ray.integrations.hf_trainer import AdaLRSTrainer, AdaLRSTrainerCallback

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch,
            learning_rate=LR,
            lr_scheduler_type="cosine",
            warmup_steps=args.steps // 10,
            logging_steps=10**9,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        callbacks = [AdaLRSTrainerCallback(controller(args))] if adalrs else []
        cls = AdaLRSTrainer if adalrs else Trainer
        trainer = cls(
            model=_HFModel(args), args=targs, train_dataset=_Rows(args), callbacks=callbacks
        )
        trainer.add_callback(Stamp())
        trainer.train()
    return per_step(stamps, args.warmup)


# ----------------------------------------------------------------------------- Lightning
def lightning_fit(args, adalrs: bool) -> float:
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from adalrs_ray.integrations.lightning import AdaLRSLightningCallback

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = build(args)

        def training_step(self, batch, batch_idx):
            xb, yb = batch
            return nn.functional.mse_loss(self.net(xb).squeeze(-1), yb)

        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.parameters(), lr=LR)
            sched = get_base_schedule("cosine", opt, args.steps, warmup_steps=args.steps // 10)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    stamps: list[float] = []

    class Stamp(Callback):
        def on_train_batch_end(self, *a, **k):
            stamps.append(time.perf_counter())

    x, y = data(args)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=args.batch
    )
    callbacks = [AdaLRSLightningCallback(controller(args))] if adalrs else []
    trainer = L.Trainer(
        max_steps=args.steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[*callbacks, Stamp()],
    )
    trainer.fit(Module(), loader)
    return per_step(stamps, args.warmup)


PAIRS = {
    "plain PyTorch loop": plain_loop,
    "transformers Trainer": hf_trainer,
    "Lightning": lightning_fit,
}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if not 0 <= args.warmup < args.steps - 1:
        raise ValueError(
            f"The value of `warmup` is {args.warmup}, but must be in [0, steps - 1) "
            f"(steps {args.steps})"
        )
    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "transformers", "adalrs_ray"):
        logging.getLogger(name).setLevel(logging.ERROR)
    times: dict[str, dict[str, list[float]]] = {k: {"without": [], "with": []} for k in PAIRS}
    for _ in range(args.repeats):
        for name, fn in PAIRS.items():
            times[name]["without"].append(fn(args, False))
            times[name]["with"].append(fn(args, True))
    rows = {}
    print(
        f"MLP {args.width} x {args.layers}, batch {args.batch}, {args.steps} steps, "
        f"{args.repeats} repeats, medians, 1 thread, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'loop':<22} {'without AdaLRS':>16} {'with AdaLRS':>14} {'ratio':>7}")
    for name, t in times.items():
        without, with_ = statistics.median(t["without"]), statistics.median(t["with"])
        rows[name] = {
            "without_ms": 1e3 * without,
            "with_ms": 1e3 * with_,
            "ratio": with_ / without,
            "ratios_per_repeat": [w / o for w, o in zip(t["with"], t["without"])],
        }
        print(
            f"{name:<22} {1e3 * without:>13.3f} ms {1e3 * with_:>11.3f} ms {with_ / without:>6.3f}x"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
