"""How autocorrelated is AdaLRS's velocity signal, and how often does the boundary rule fire on
noise: the windows of a finished LM run (``metrics.parquet`` of ``adalrs-ray train`` or
``benchmarks/lm_adalrs_recovery.py``), over a stretch of steps.

For each column (the fixed probe batch's loss and the training loss) and consecutive windows of
``--window`` steps: the pooled lag-1 autocorrelation rho of the least-squares residuals, the
inflation sqrt((1 + rho) / (1 - rho)) that ``error_ar1`` applies to e, the median |v| / se with
the bare and the corrected standard error, and how many pairs of consecutive windows both rise
(the paper's boundary condition) and both rise by more than 2 se (``boundary_tested``), bare and
corrected. In a stretch where the loss has stopped falling every such pair is noise.

    python benchmarks/lm_signal_autocorrelation.py RUN_DIR/x1_adalrs/metrics.parquet
        [--window 20] [--from-step 1000] [--to-step 2000]
"""

from __future__ import annotations

import argparse
import statistics

import pandas as pd

from adalrs_ray.core.decisions import ar1_inflation, residual_lag1_sums, window_stats

COLUMNS = (
    "windows",
    "rho",
    "inflation",
    "median |v|/se",
    "median |v|/se corrected",
    "pairs",
    "both rise",
    "both rise > 2 se",
    "both rise > 2 se corrected",
)


def report(steps: list[int], losses: list[float], k: int) -> dict:
    m = len(steps) // k * k  # whole windows only
    stats = window_stats(steps[:m], losses[:m], k, k)
    lag1 = squares = 0.0
    for w in stats:
        a, b = residual_lag1_sums(steps[w.start : w.start + k], losses[w.start : w.start + k])
        lag1, squares = lag1 + a, squares + b
    vs = [(w.velocity, w.se) for w in stats]
    f = ar1_inflation(lag1, squares)
    pairs = list(zip(vs, vs[1:]))

    def rose_twice(scale: float) -> int:
        return sum(v1 < -2 * scale * s1 and v2 < -2 * scale * s2 for (v1, s1), (v2, s2) in pairs)

    values = (
        len(vs),
        lag1 / squares if squares > 0 else 0.0,
        f,
        statistics.median(abs(v) / s for v, s in vs),
        statistics.median(abs(v) / (s * f) for v, s in vs),
        len(pairs),
        sum(v1 < 0 and v2 < 0 for (v1, _), (v2, _) in pairs),
        rose_twice(1.0),
        rose_twice(f),
    )
    return dict(zip(COLUMNS, values))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("metrics", help="a run's metrics.parquet")
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--from-step", type=int, default=0)
    p.add_argument("--to-step", type=int, default=None)
    args = p.parse_args()
    df = pd.read_parquet(args.metrics)
    df = df[df.step >= args.from_step]
    if args.to_step is not None:
        df = df[df.step < args.to_step]
    print(f"{args.metrics}: steps [{args.from_step}, {args.to_step}), window {args.window}")
    print("| signal | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for col in ("probe_loss", "loss"):
        if col not in df or df[col].isna().all():
            continue
        sub = df[df[col].notna()]
        r = report([int(s) for s in sub.step], [float(x) for x in sub[col]], args.window)
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.values()]
        print(f"| {col} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
