"""Restart overhead inside AdaLRSComparison, measured from the gaps between results.

Runs a PBT arm (synchronous, so every trial pauses and restarts at each sync point) and a grid
arm (never restarts) side by side on the synthetic trainable, with ``reuse_actors`` on and off,
and prints the median restart overhead of each restart kind against the median gap between two
ordinary results of the same run (the baseline: the cost of one report window).

    python benchmarks/bench_tune_comparison.py            # 4 PBT trials, 12 reports
    python benchmarks/bench_tune_comparison.py --smoke-test
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _local_ray import init_local_ray  # noqa: E402

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def run(reuse: bool, population: int, reports: int, storage: str) -> dict:
    from ray import tune

    from adalrs_ray.comparison import AdaLRSComparison
    from search_algos import get_arm
    from train_loops.trainables import get_trainable

    every = 20
    sched = AdaLRSComparison(
        [
            get_arm("grid", num_trials=2),
            get_arm("pbt", num_trials=population, perturbation_interval=2, synch=True),
        ],
        total_steps=reports * every,
        report_every=every,
    )
    t0 = time.perf_counter()
    tune.Tuner(
        get_trainable("synthetic", cpu=0.2),
        param_space=sched.param_space({"seconds_per_step": 0.001}),
        tune_config=tune.TuneConfig(scheduler=sched, reuse_actors=reuse),
        run_config=tune.RunConfig(storage_path=storage, name=f"reuse_{reuse}", verbose=0),
    ).fit()
    wall = time.perf_counter() - t0
    rows = sched.results_table()
    normal = rows[(~rows["restart"].astype(bool)) & rows["gap_s"].notna()]["gap_s"]
    out = {"wall_s": wall, "baseline_gap_s": float(normal.median()), "kinds": {}}
    for kind, group in rows[rows["restart"].astype(bool)].groupby("restart_kind"):
        out["kinds"][kind] = (len(group), float(group["restart_overhead_s"].median()))
    table = sched.compute_table().set_index("arm")
    out["exploits"] = int(table.loc["pbt", "exploits"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke-test", action="store_true", help="tiny run for CI")
    args = parser.parse_args()
    population, reports = (2, 4) if args.smoke_test else (4, 12)

    ray = init_local_ray()
    try:
        with tempfile.TemporaryDirectory() as storage:
            for reuse in (True, False):
                r = run(reuse, population, reports, storage)
                base = r["baseline_gap_s"]
                print(
                    f"reuse_actors={reuse}: fit {r['wall_s']:.1f} s, {r['exploits']} exploits, "
                    f"baseline gap between results {base * 1e3:.0f} ms"
                )
                for kind, (n, med) in sorted(r["kinds"].items()):
                    print(
                        f"  restart kind {kind:8s} n={n:3d} median overhead {med:6.2f} s "
                        f"= {med / base:6.1f} x baseline gap"
                    )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
