"""What a fault in a trial costs (issue 15, item 6; docs/tune.md, "Faults in trials").

Three ``--task sim`` comparisons (``run_compare``) on a local Ray with 2 CPUs:

* **clean**: arms ``adalrs,grid`` (3 trials), ``--steps`` steps, a report every ``--every``;
* **killed**: the same, with every trial's process exiting once at step ``--fault-at`` (the
  simulator trainable's ``fault_at_step`` hook) and ``max_failures=1``: Tune retries each trial
  from its last checkpoint. Reported: the wall time against the clean run, each retry's
  ``restart_overhead_s`` and the steps every trial reported (the steps the dead process ran after
  its checkpoint are lost, never counted);
* **corrupt**: one grid trial killed the same way, whose last checkpoint is truncated (by a
  ``tune.Callback.on_trial_recover``) before Tune's retry: the trial must fail with the
  checkpoint's path in its error, and the run end. Reported: its wall time against the same
  trial without faults, and the time from the first failure to the retry's failure (the
  ``Failure #`` stamps of the trial's ``error.txt``).

    python benchmarks/bench_faults.py                      # 600 steps, reports every 200
    python benchmarks/bench_faults.py --steps 300 --every 100 --fault-at 150   # quicker
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import tempfile
import time
from pathlib import Path


def _run(out: Path, fault_at: int | None, markers: Path, **overrides):
    import pandas as pd

    from adalrs_ray.experiments.compare import run_compare
    from adalrs_ray.experiments.presets import get_preset

    callbacks = overrides.pop("callbacks", ())
    trial_config = {}
    if fault_at is not None:
        markers.mkdir(parents=True, exist_ok=True)
        trial_config = {"fault_at_step": fault_at, "fault_marker_dir": str(markers)}
    preset = get_preset("sim").with_overrides(trial_config=trial_config, **overrides)
    t0 = time.monotonic()
    result = run_compare(preset, out, progress=False, max_failures=1, callbacks=callbacks)
    wall = time.monotonic() - t0
    df = pd.read_parquet(out / "results.parquet") if (out / "results.parquet").exists() else None
    return wall, result, df


def _failure_gap(out: Path) -> float | None:
    """Seconds between the first two ``Failure #`` stamps of the (only) trial's error.txt."""
    stamps = []
    for path in (out / "tune").glob("*/error.txt"):
        stamps += re.findall(r"Failure # \d+ \(occurred at (\S+)\)", path.read_text())
    if len(stamps) < 2:
        return None
    t = [dt.datetime.strptime(s, "%Y-%m-%d_%H-%M-%S") for s in stamps[:2]]
    return (t[1] - t[0]).total_seconds()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=200, help="steps between reports")
    ap.add_argument("--fault-at", type=int, default=300, help="the step each process dies at")
    args = ap.parse_args()
    if not 0 < args.fault_at < args.steps:
        raise SystemExit(f"--fault-at is {args.fault_at}, but must be in (0, --steps)")

    from _local_ray import init_local_ray
    from ray.tune import Callback

    from train_loops.trainables.synthetic import STATE_FILE

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray = init_local_ray()
    base = dict(total_steps=args.steps, report_every=args.every)
    three = dict(base, adalrs={"window": 10}, adalrs_starts=(0.1,), arms=("adalrs", "grid"))
    three["grid_points"] = 2
    one = dict(base, arms=("grid",), grid_points=1)

    class Corrupt(Callback):
        def on_trial_recover(self, iteration, trials, trial, **info):
            with open(os.path.join(trial.checkpoint.path, STATE_FILE), "r+") as f:
                f.truncate(10)

    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            clean, _, _ = _run(root / "clean", None, root / "m0", **three)
            killed, res, df = _run(root / "killed", args.fault_at, root / "m1", **three)
            retries = df[df["restart_kind"] == "retry"]
            per_trial = df.groupby("trial_id")["steps_done"].sum()
            print(f"3 trials, {args.steps} steps, reports every {args.every}")
            print(f"  clean:  {clean:6.1f} s")
            print(
                f"  killed: {killed:6.1f} s ({killed - clean:+.1f} s), {len(retries)} retries, "
                f"restart_overhead_s {sorted(round(x, 1) for x in retries['restart_overhead_s'])}, "
                f"steps per trial {sorted(per_trial.astype(int).tolist())}, "
                f"errors {len(res['errors'])}"
            )
            one_clean, _, _ = _run(root / "one", None, root / "m2", **one)
            one_bad, res, _ = _run(
                root / "corrupt", args.fault_at, root / "m3", **one, callbacks=[Corrupt()]
            )
            print("1 trial, its checkpoint truncated before the retry")
            print(f"  clean:   {one_clean:6.1f} s")
            gap = _failure_gap(root / "corrupt")
            print(
                f"  corrupt: {one_bad:6.1f} s ({one_bad - one_clean:+.1f} s), "
                f"failure to retry's failure {gap} s, errors {len(res['errors'])}: "
                f"{res['errors'][0].splitlines()[-1][:160] if res['errors'] else '-'}"
            )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
