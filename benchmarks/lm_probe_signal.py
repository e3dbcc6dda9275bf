"""How noisy is the velocity AdaLRS sees: the training loss against a fixed probe batch (issue 13,
item 2: a low-noise velocity signal, with its cost in forward passes).

AdaLRS fits a least-squares slope (the loss-descent velocity) to each window of k losses. With
the training loss, every step sees another batch, so the slope carries the batch-to-batch
sampling noise; the loss of one fixed held-out probe batch, measured after every update, does
not. This trains the tiny Qwen2 (no AdaLRS) for a few seeds and, in every non-overlapping window
of the search interval, fits the slope of the training loss and of probe batches of several
sizes measured on the same model at the same steps. It reports, per signal:

* ``t = |v| / se``: the slope against its own standard error (median over windows and seeds);
* ``cv``: the spread of the slope of one window across seeds, std / |mean| (median over
  windows): how far one run's velocity is from what the LR does on average;
* ``ratio noise``: the median absolute deviation across seeds of ln(v_t / v_{t-1}), the quantity
  the trigger thresholds (theta = 0.9 is a 0.105 change);
* ``cost``: the probe's wall time as a fraction of the training step's, measured in the same
  run (baseline: the training step), next to the FLOP estimate P / (3 B).

    python benchmarks/lm_probe_signal.py --out runs/probe_signal          # the quick preset's LM
    python benchmarks/lm_probe_signal.py --batch-size 64 --seq-len 128 --schedule wsd \\
        --steps 2000 --window 64 --lr 3.16e-3 --out runs/probe_signal_F       # setting F
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _slope(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares velocity -dL/dt and its standard error."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    resid = sum((y - my - b * (x - mx)) ** 2 for x, y in zip(xs, ys, strict=True))
    se = math.sqrt(resid / max(n - 2, 1) / sxx)
    return -b, se


def _run(kw: dict, probe_sizes: list[int]) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import numpy as np
    import torch

    from train_loops.lm import LMConfig, LMTrainer, LoopHooks

    probes: dict[int, list[float]] = {p: [] for p in probe_sizes}
    probe_s = {p: 0.0 for p in probe_sizes}
    trainer: LMTrainer | None = None

    def on_step(t: int, row: dict) -> None:
        seqs = trainer.seqs["validation"]
        n = len(seqs)
        with torch.no_grad():
            trainer.model.eval()
            for p in probe_sizes:  # the last p sequences, disjoint from the evaluation's
                t0 = time.perf_counter()
                idx = np.arange(n - p, n)
                probes[p].append(float(trainer._loss(trainer._batch(seqs, idx))))
                probe_s[p] += time.perf_counter() - t0
            trainer.model.train()

    trainer = LMTrainer(LMConfig(**kw), LoopHooks(on_step=on_step))
    trainer.setup()
    t0 = time.perf_counter()
    summary = trainer.train()
    total = time.perf_counter() - t0
    return {
        "seed": kw["seed"],
        "train": [float(x) for x in trainer.metrics["loss"]],
        "probes": {str(p): v for p, v in probes.items()},
        "probe_s": {str(p): v for p, v in probe_s.items()},
        "train_s": total - sum(probe_s.values()),
        "val_loss": summary["val_loss"],
    }


def _windows(losses: list[float], start: int, end: int, k: int) -> list[tuple[float, float]]:
    out = []
    for s in range(start, end - k + 1, k):
        out.append(_slope(list(range(s, s + k)), losses[s : s + k]))
    return out


def _median(xs: list[float]) -> float:
    xs = [x for x in xs if math.isfinite(x)]
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--schedule", default="cosine")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--probe-sizes", type=int, nargs="+", default=[16, 64])
    p.add_argument(
        "--search", type=float, nargs=2, default=[0.05, 0.5], help="start/end ratio of the fits"
    )
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--out", default="runs/probe_signal")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    jobs = [
        dict(
            preset="tiny",
            lr=args.lr,
            steps=args.steps,
            schedule=args.schedule,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            seed=s,
            num_threads=1,
            eval_batches=4,
            save_final=False,
            log_every=10**9,
        )
        for s in args.seeds
    ]
    with ProcessPoolExecutor(args.procs) as pool:
        runs = list(pool.map(_run, jobs, [args.probe_sizes] * len(jobs)))

    start, end, k = int(args.search[0] * args.steps), int(args.search[1] * args.steps), args.window
    signals = {"train": [r["train"] for r in runs]}
    for size in args.probe_sizes:
        signals[f"probe {size}"] = [r["probes"][str(size)] for r in runs]
    rows = []
    for name, per_seed in signals.items():
        fits = [_windows(losses, start, end, k) for losses in per_seed]  # seed x window
        t_stats = [abs(v) / se if se > 0 else float("inf") for f in fits for v, se in f]
        by_window = list(zip(*fits, strict=True))
        cvs = []
        for w in by_window:
            vs = [v for v, _ in w]
            m = statistics.fmean(vs)
            cvs.append(statistics.pstdev(vs) / abs(m) if m else float("inf"))
        log_ratios = []  # per window pair: the seeds' ln(v_t / v_{t-1}) and its spread
        for a, b in zip(by_window, by_window[1:], strict=False):
            lr_ = [math.log(vb / va) for (va, _), (vb, _) in zip(a, b, strict=True) if va > 0 < vb]
            if len(lr_) >= 2:
                med = statistics.median(lr_)
                log_ratios.append(statistics.median(abs(x - med) for x in lr_))
        size = int(name.split()[1]) if name != "train" else None
        rows.append(
            {
                "signal": name,
                "t_median": _median(t_stats),
                "cv_median": _median(cvs),
                "log_ratio_mad": _median(log_ratios),
                "windows": len(by_window),
                "cost_measured": None
                if size is None
                else sum(r["probe_s"][str(size)] for r in runs) / sum(r["train_s"] for r in runs),
                "cost_flops": None if size is None else size / (3 * args.batch_size),
            }
        )
    train_row = rows[0]
    lines = [
        f"tiny Qwen2, {args.schedule}, lr {args.lr:g}, {args.steps} steps, batch "
        f"{args.batch_size}x{args.seq_len}, window {k} over steps [{start}, {end}), seeds "
        f"{args.seeds}",
        "",
        "| signal | median t = abs(v)/se | x train | median cv across seeds | x train | "
        "MAD ln(v_t/v_t-1) | x train | cost / training step (measured) | FLOP estimate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cost = "-" if r["cost_measured"] is None else f"{r['cost_measured']:.3f}"
        flops = "-" if r["cost_flops"] is None else f"{r['cost_flops']:.3f}"
        lines.append(
            f"| {r['signal']} | {r['t_median']:.2f} | {r['t_median'] / train_row['t_median']:.2f}"
            f" | {r['cv_median']:.3f} | {r['cv_median'] / train_row['cv_median']:.2f} | "
            f"{r['log_ratio_mad']:.3f} | {r['log_ratio_mad'] / train_row['log_ratio_mad']:.2f}"
            f" | {cost} | {flops} |"
        )
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    (out / "summary.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    (out / "losses.json").write_text(json.dumps(runs))
    print(text)


if __name__ == "__main__":
    main()
