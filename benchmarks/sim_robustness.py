"""The paper's robustness table and backtracking ablation on both simulator modes, for the
paper's rule and for a beyond-the-paper configuration (issue 13, item 4).

Robustness (paper Table 4: the LR found from a too-small and a too-large start for five
(alpha, beta, lambda) settings) and the ablation (paper Fig. 4a: the same runs with RESTORE
ignored). Each cell: the median over seeds of the final LR / optimum and of the final loss
against the constant run from the same start (both simulators' noise-free final levels).

    python benchmarks/sim_robustness.py [--seeds 20] [--config trajectory] [--out table.md]
"""

from __future__ import annotations

import argparse
import statistics
import time

from sim_modes import CONFIGS, MODES, make_config

from adalrs_ray.core.controller import AdaLRSConfig
from adalrs_ray.core.simulator import simulate

SETTINGS = (
    (3.0, 2.0, 0.99),
    (2.0, 1.67, 0.99),
    (1.5, 1.43, 0.99),
    (2.0, 1.67, 0.95),
    (2.0, 1.67, 0.9),
)
STARTS = (0.1, 10.0)


def cell(mode, cfg: AdaLRSConfig, start: float, seeds, fixed, backtracking=True) -> str:
    lrs, rel = [], []
    for seed in seeds:
        sim = mode.make(seed)
        res = simulate(
            sim, mode.schedule(sim.lr_opt * start, mode.total), cfg, backtracking=backtracking
        )
        lrs.append(res.final_scale * start)
        rel.append(mode.final(sim) / fixed[seed] - 1.0)
    return f"{statistics.median(lrs):.2f}x, {statistics.median(rel):+.1%}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--config", default="trajectory", help=f"one of {sorted(CONFIGS)}")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    seeds = range(args.seeds)
    lines = []
    t0 = time.time()
    for mname, mode in MODES.items():
        fixed = {}
        for start in STARTS:
            fixed[start] = {}
            for seed in seeds:
                sim = mode.make(seed)
                simulate(sim, mode.schedule(sim.lr_opt * start, mode.total), None, mode.total)
                fixed[start][seed] = mode.final(sim)
        lines += [
            f"\n{mname}: final LR / optimum, final loss vs the constant run (medians of "
            f"{args.seeds} seeds)\n",
            "| alpha / beta / lambda | rule | from 1/10 | from 10x | from 1/10, no restore "
            "| from 10x, no restore |",
            "|---|---|---|---|---|---|",
        ]
        for alpha, beta, lam in SETTINGS:
            for rule in ("paper", args.config):
                base = make_config(mode, CONFIGS[rule]).to_dict()
                cfg = AdaLRSConfig(**{**base, "alpha": alpha, "beta": beta, "lam": lam})
                cells = [cell(mode, cfg, s, seeds, fixed[s]) for s in STARTS]
                cells += [cell(mode, cfg, s, seeds, fixed[s], backtracking=False) for s in STARTS]
                lines.append(
                    f"| {alpha:g} / {beta:g} / {lam:g} | {rule} | " + " | ".join(cells) + " |"
                )
                print(lines[-1], flush=True)
    print(f"({time.time() - t0:.0f} s)")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
