"""How often a trial's verdict moves the LR toward the optimum and how often away from it, per
direction: the per-trial error rate behind a search's drift over long runs (docs/controller.md,
"The search stops at a bracket").

On the runs of ``benchmarks/sim_modes.py`` (its modes, configs and starts; no constant runs
are needed here), every trial a config runs is counted by direction and outcome, and each
kept trial is classed by whether it moved the LR multiple r = lr / lr_opt closer to 1 (``|ln
r|`` fell: toward) or away from it. ``lr_opt`` is the simulator's best constant LR for a fresh
model; on the LM-like simulator the weights a too-large LR grows move the best LR for the
damaged model up a little, so "away" is an upper bound there.

    python benchmarks/sim_trial_keeps.py [--seeds 80] [--configs default,default_before_bracket]
        [--modes lm,basic] [--horizons 1,8] [--starts 0.1,10]
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter

from sim_modes import CONFIGS, MODES, _longer, make_config

from adalrs_ray.core.simulator import simulate

OUTCOMES = ("keep", "backtrack", "inconclusive")


def count(mode, cfg, starts, seeds) -> Counter:
    """Trials by (direction, outcome) and kept ones by (direction, toward/away), summed over
    starts and seeds; "runs" is the number of runs."""
    c: Counter = Counter()
    for start in starts:
        for seed in seeds:
            sim = mode.make(seed)
            res = simulate(sim, mode.schedule(sim.lr_opt * start, mode.total), cfg)
            c["runs"] += 1
            for e in res.events:
                if e["kind"] not in OUTCOMES or "direction" not in e:
                    continue
                d = e["direction"]
                c[(d, e["kind"])] += 1
                if e["kind"] == "keep":
                    before = abs(math.log(e["scale_before"] * start))
                    after = abs(math.log(e["scale_after"] * start))
                    c[(d, "toward" if after < before else "away")] += 1
    return c


def row(mname: str, name: str, c: Counter) -> str:
    runs = c["runs"]
    cells = []
    for d in ("up", "down"):
        n = sum(c[(d, k)] for k in OUTCOMES)
        cells += [
            f"{n / runs:.1f}",
            f"{c[(d, 'toward')]} / {c[(d, 'away')]}",
            f"{100 * c[(d, 'away')] / n:.1f}%" if n else "-",
        ]
    return f"| {mname} | {name} | {runs} | " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=80)
    ap.add_argument("--configs", default="default,default_before_bracket")
    ap.add_argument("--modes", default="lm,basic")
    ap.add_argument("--horizons", default="1,8")
    ap.add_argument("--starts", default="0.1,10")
    ap.add_argument("--out", default=None, help="also write the Markdown table here")
    args = ap.parse_args()
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"--configs names {unknown}, but the configs are {sorted(CONFIGS)}")
    starts = [float(s) for s in args.starts.split(",")]
    seeds = range(args.seeds)
    t0 = time.perf_counter()
    lines = [
        "| mode | config | runs | up trials / run | up keeps toward / away | up keeps away "
        "per trial | down trials / run | down keeps toward / away | down keeps away per trial |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for mname in args.modes.split(","):
        for h in (float(x) for x in args.horizons.split(",")):
            mode = _longer(MODES[mname], h)
            label = mname if h == 1 else f"{mname} x{h:g}"
            for name in names:
                line = row(
                    label, name, count(mode, make_config(mode, CONFIGS[name]), starts, seeds)
                )
                lines.append(line)
                print(line, flush=True)
    lines.append(
        f"\nCommand: `python benchmarks/sim_trial_keeps.py --seeds {args.seeds} --configs "
        f"{args.configs} --modes {args.modes} --horizons {args.horizons} --starts "
        f"{args.starts}` (starts {starts}: each run counts every trial; {time.perf_counter() - t0:.0f} s)"
    )
    print(lines[-1])
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
