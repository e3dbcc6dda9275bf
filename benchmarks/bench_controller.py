"""Cost of one AdaLRS.observe call, against a baseline measured in the same run.

The baseline is the cheapest thing a training loop does per step anyway: appending a float to a
list. The controller is fed a realistic stream (the simulator at its optimum, window 100), so
trials, ramps, validations and reference searches are all included in the median and the mean.

    python benchmarks/bench_controller.py [--steps 200000] [--window 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from adalrs_ray.core.controller import AdaLRS, AdaLRSConfig
from adalrs_ray.core.simulator import LossSimulator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    sim = LossSimulator(seed=0, rate=2e-5, noise=0.05)
    losses = [sim.step(sim.lr_opt * 0.2) for _ in range(args.steps)]
    per_call, baseline = [], []
    for _ in range(args.repeats):
        ctl = AdaLRS(
            AdaLRSConfig(total_steps=args.steps, window=args.window, start_ratio=0.0, end_ratio=1.0)
        )
        observe = ctl.observe
        t0 = time.perf_counter()
        for t, loss in enumerate(losses):
            observe(t, loss)
        per_call.append((time.perf_counter() - t0) / args.steps)
        sink: list[float] = []
        append = sink.append
        t0 = time.perf_counter()
        for _t, loss in enumerate(losses):
            append(loss)
        baseline.append((time.perf_counter() - t0) / args.steps)
        trials = sum(e["kind"] == "trial_start" for e in ctl.events)
    obs = statistics.median(per_call)
    base = statistics.median(baseline)
    print(
        f"observe: {obs * 1e6:.2f} us per call (median of {args.repeats} runs of "
        f"{args.steps} steps, window {args.window}, {trials} trials per run)"
    )
    print(f"baseline list.append: {base * 1e6:.3f} us per call")
    print(f"ratio observe / append: {obs / base:.1f}x   goal: observe < 5 us")


if __name__ == "__main__":
    main()
