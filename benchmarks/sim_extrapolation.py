"""How well ``reference="trajectory"`` predicts the loss an unchanged LR would reach.

The trajectory reference fits a line in ln(step) through H (two windows of 64 steps here) and
extrapolates it to the validation window (64 steps after a 64-step ramp). This prints, on both
simulators at constant LRs, the bias (prediction minus truth, mean over noise draws) and the
spread of that prediction, for the line (degree 1, what the controller uses) and for a
quadratic in ln(step) (degree 2), at three points of the run.

    python benchmarks/sim_extrapolation.py [--draws 50] [--noise 0.05]
"""

from __future__ import annotations

import argparse

import numpy as np

from adalrs_ray.core.lm_simulator import LMLossSimulator
from adalrs_ray.core.simulator import LossSimulator

CASES = {
    "lm, 1x": (lambda: LMLossSimulator(noise=0.0), 1.0),
    "lm, 10x": (lambda: LMLossSimulator(noise=0.0), 10.0),
    "lm, 1/10": (lambda: LMLossSimulator(noise=0.0), 0.1),
    "basic, 1x": (lambda: LossSimulator(noise=0.0), 1.0),
    "basic, 1/10": (lambda: LossSimulator(noise=0.0), 0.1),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=50)
    p.add_argument("--noise", type=float, default=0.05)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    print("| case | H starts at step | line: bias, sd | quadratic: bias, sd |")
    print("|---|---|---|---|")
    for name, (make, ratio) in CASES.items():
        for h0 in (100, 300, 500):
            sim = make()
            ys = np.array([sim.step(sim.lr_opt * ratio) for _ in range(1000)])
            hx = np.arange(h0, h0 + 128)
            vx = np.arange(h0 + 192, h0 + 256)
            truth = ys[vx].mean()
            cells = []
            for deg in (1, 2):
                errs = []
                for _ in range(args.draws):
                    y = ys[hx] + rng.normal(0.0, args.noise, len(hx))
                    coef = np.polyfit(np.log(hx + 1.0), y, deg)
                    errs.append(np.polyval(coef, np.log(vx + 1.0)).mean() - truth)
                cells.append(f"{np.mean(errs):+.4f}, {np.std(errs):.4f}")
            print(f"| {name} | {h0} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
