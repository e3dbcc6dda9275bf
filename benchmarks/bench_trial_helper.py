"""Cost per step of AdaLRSTrial around a PyTorch loop, as a ratio to the same loop without it.

The loop trains an MLP (``--width``, ``--layers``, ``--batch``) with AdamW for ``--steps`` steps
on a regression made here. The baseline is the bare loop (``for step in range(steps)``); the
same loop then runs with :class:`~adalrs_ray.comparison.AdaLRSTrial` (``report`` given, so no
Ray: the helper's own work is timed, i.e. the LR hook, the controller, AdaLRS snapshots and
restores, the metrics and a checkpoint written with ``torch.save`` every ``--report-every``
steps), once with ``adalrs`` off (the plain schedule) and once on. Every repeat runs the three
in turn, so load from other processes affects all of them; the medians and the ratios to the
baseline's median are printed (and written as JSON with ``--json``).

    .venv/bin/python benchmarks/bench_trial_helper.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from adalrs_ray.comparison import AdaLRSTrial


def build(width: int, layers: int, seed: int = 0):
    torch.manual_seed(seed)
    mods: list[nn.Module] = [nn.Linear(16, width), nn.GELU()]
    for _ in range(layers - 1):
        mods += [nn.Linear(width, width), nn.GELU()]
    model = nn.Sequential(*mods, nn.Linear(width, 1))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def batches(steps: int, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(steps):
        x = torch.randn(batch, 16, generator=g)
        out.append((x, x.sum(dim=1, keepdim=True).sin()))
    return out


def train_step(model, opt, x, y) -> torch.Tensor:
    loss = nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def bare(args, data) -> float:
    model, opt = build(args.width, args.layers)
    t0 = time.perf_counter()
    for step in range(args.steps):
        train_step(model, opt, *data[step])
    return time.perf_counter() - t0


def with_helper(args, data, adalrs: dict | None) -> float:
    model, opt = build(args.width, args.layers)
    config = {
        "lr": 1e-3,
        "total_steps": args.steps,
        "report_every": args.report_every,
        "adalrs": adalrs,
    }
    t0 = time.perf_counter()
    trial = AdaLRSTrial(config, model, opt, schedule="cosine", report=lambda m, d: None)
    for step in trial.steps():
        trial.step(train_step(model, opt, *data[step]))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--report-every", type=int, default=50)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the result here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = batches(args.steps, args.batch)
    adalrs = {"window": max(2, args.steps // 30)}
    times: dict[str, list[float]] = {"bare": [], "plain": [], "adalrs": []}
    for _ in range(args.repeats):
        times["bare"].append(bare(args, data))
        times["plain"].append(with_helper(args, data, None))
        times["adalrs"].append(with_helper(args, data, adalrs))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "args": vars(args),
        "ms_per_step": {k: 1000 * v / args.steps for k, v in med.items()},
        "ratio_to_bare": {k: v / med["bare"] for k, v in med.items()},
        "times_s": times,
    }
    print(f"{'loop':<8} {'ms/step':>8} {'x bare':>7}")
    for k in times:
        print(f"{k:<8} {result['ms_per_step'][k]:8.3f} {result['ratio_to_bare'][k]:7.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
