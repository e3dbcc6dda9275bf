"""Start and restart cost of the TorchTrainer-per-trial trainable against the in-process one.

Runs the same synchronous PBT arm (2 trials, a sync point every 2 reports, where both trials
pause and restart, one of them from the other's checkpoint) on the tiny LM twice in one Ray
session: with ``lm`` (trained in-process inside the Tune trial; the baseline) and with
``lm_torchtrainer`` (a Ray Train V2 TorchTrainer with 2 workers per trial). Prints, for each, the
median start cost (first result's arrival minus its ``worker_s_done``, queueing included), the
median restart overhead per restart kind (from the comparison's compute log: the gap minus
``worker_s_done``), the median gap between two ordinary results, and the ratios against the
baseline. Ray runs with the dashboard off (as ``adalrs-ray compare`` starts it), so Ray Train's
own placement-group cleaner cannot work: the placement groups left at the end and those the
``TrainPlacementGroupReaper`` had to remove are printed too. Last, the fixed cost of any Train
run here: a ``TorchTrainer.fit`` of 2 workers whose loop only reports once (no torch work).

    python benchmarks/bench_tune_torchtrainer.py              # 6 reports, sync points at 2, 4, 6
    python benchmarks/bench_tune_torchtrainer.py --smoke-test
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _local_ray import init_local_ray  # noqa: E402

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

LM = {
    "preset": "tiny",
    "seq_len": 32,
    "batch_size": 4,
    "eval_batches": 2,
    "num_threads": 1,
    "device": "cpu",
    "schedule": "constant",
}
TRAIN = {"workers": 2, "cpus_per_worker": 0.25, "health_check_interval_s": 0.1}


def run(trainable: str, reports: int, storage: str) -> dict:
    from ray import tune
    from ray.util.placement_group import placement_group_table

    from adalrs_ray.comparison import AdaLRSComparison
    from search_algos import get_arm
    from train_loops.trainables import get_trainable
    from train_loops.trainables.lm_torchtrainer import TrainPlacementGroupReaper

    every = 8
    pbt = get_arm("pbt", num_trials=2, perturbation_interval=2, synch=True, lrs=(1e-4, 3e-3))
    sched = AdaLRSComparison([pbt], total_steps=reports * every, report_every=every)
    shared = dict(LM, **(TRAIN if trainable == "lm_torchtrainer" else {}))
    cpu = 0.1 if trainable == "lm_torchtrainer" else 0.5
    reaper = TrainPlacementGroupReaper()
    t0 = time.perf_counter()
    results = tune.Tuner(
        get_trainable(trainable, cpu=cpu),
        param_space=sched.param_space(shared),
        tune_config=tune.TuneConfig(scheduler=sched, reuse_actors=True),
        run_config=tune.RunConfig(
            storage_path=storage,
            name=trainable,
            verbose=0,
            callbacks=[reaper],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        ),
    ).fit()
    wall = time.perf_counter() - t0
    if results.errors:
        raise RuntimeError(f"{trainable}: {results.errors[0]}")
    rows = sched.results_table()
    first = rows.groupby("trial_id").head(1)
    normal = rows[(~rows["restart"].astype(bool)) & rows["gap_s"].notna()]["gap_s"]
    out = {
        "wall_s": wall,
        "start_s": statistics.median(first["wall_s"] - first["worker_s_done"]),
        "gap_s": float(normal.median()),
        "kinds": {},
        "exploits": len(sched.exploit_log()),
        "reaped": len(reaper.removed),
        "pgs_left": sum(v["state"] != "REMOVED" for v in placement_group_table().values()),
    }
    for kind, group in rows[rows["restart"].astype(bool)].groupby("restart_kind"):
        values = sorted(group["restart_overhead_s"])
        out["kinds"][kind] = (len(values), statistics.median(values), values[0], values[-1])
    return out


def _report_once(config: dict) -> None:
    import ray.train

    ray.train.report({"done": 1})


def noop_fit_s(storage: str, repeats: int) -> list[float]:
    """Wall seconds of ``TorchTrainer.fit`` with 2 workers that only report once."""
    import ray.train
    from ray.train.torch import TorchTrainer

    out = []
    for i in range(repeats):
        t0 = time.perf_counter()
        TorchTrainer(
            _report_once,
            scaling_config=ray.train.ScalingConfig(
                num_workers=2, resources_per_worker={"CPU": 0.25}
            ),
            run_config=ray.train.RunConfig(name=f"noop{i}", storage_path=storage),
        ).fit()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke-test", action="store_true", help="tiny run for CI")
    args = parser.parse_args()
    reports = 3 if args.smoke_test else 6

    ray = init_local_ray()
    try:
        with tempfile.TemporaryDirectory() as storage:
            res = {name: run(name, reports, storage) for name in ("lm", "lm_torchtrainer")}
            noop = noop_fit_s(storage, 1 if args.smoke_test else 3)
    finally:
        ray.shutdown()
    base = res["lm"]
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 cores)")
    for name, r in res.items():
        print(
            f"{name}: fit {r['wall_s']:.0f} s, {r['exploits']} exploits, start "
            f"{r['start_s']:.1f} s ({r['start_s'] / base['start_s']:.1f} x lm), ordinary gap "
            f"between results {r['gap_s']:.2f} s ({r['gap_s'] / base['gap_s']:.1f} x lm); "
            f"placement groups left {r['pgs_left']}, removed by the reaper {r['reaped']}"
        )
        for kind, (n, med, lo, hi) in sorted(r["kinds"].items()):
            ref = base["kinds"].get(kind, (0, float("nan")))[1]
            print(
                f"  restart kind {kind:8s} n={n:2d} overhead median {med:5.1f} s "
                f"(min {lo:.1f}, max {hi:.1f}) = {med / ref:.1f} x lm"
            )
    print(
        f"no-op TorchTrainer.fit, 2 workers: median {statistics.median(noop):.1f} s "
        f"(min {min(noop):.1f}, max {max(noop):.1f}) = "
        f"{statistics.median(noop) / res['lm_torchtrainer']['kinds']['exploit'][1]:.2f} x "
        "lm_torchtrainer's exploit overhead"
    )


if __name__ == "__main__":
    main()
