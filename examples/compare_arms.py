"""AdaLRS against a grid, HyperBand and PBT in one ``tune.Tuner``, then the cost report.

The Python-API form of ``adalrs-ray compare``: AdaLRS (Dong et al., "AdaLRS", NeurIPS 2025,
arXiv 2506.13274) started 10x below the reference LR searches the LR inside ONE run; the other
arms search the same range [lr_ref/10, lr_ref*10] the usual way. The composite scheduler
``AdaLRSComparison`` runs all of them in one Tuner and counts the compute each arm spends; the
report says how much each needed to come within 1/2/5% of the best loss any arm found.

    python examples/compare_arms.py --out runs/example              # tiny Qwen2 LM, 15 x 300 steps
    python examples/compare_arms.py --smoke-test --out /tmp/example   # loss simulator, seconds

Uses an already initialised Ray (``ray.is_initialized()``) as is; otherwise starts a local one
and shuts it down at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's console output off
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

import ray  # noqa: E402
from ray import tune  # noqa: E402

from adalrs_ray.comparison import AdaLRSComparison  # noqa: E402
from adalrs_ray.report import load_results, write_report  # noqa: E402
from search_algos import get_arm  # noqa: E402
from train_loops.trainables import get_trainable  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/compare_arms_example")
    parser.add_argument("--smoke-test", action="store_true", help="simulator, tiny budget")
    args = parser.parse_args(argv)

    if args.smoke_test:  # the loss simulator: optimum LR 1e-3, milliseconds per report
        trainable, lr_ref, total_steps, report_every, window = "synthetic", 1e-3, 2000, 500, 50
        shared = {"lr_opt": 1e-3, "sim": {"noise": 0.02}}
        sizes = {"grid": 3, "hyperband": 2, "pbt": 2}
    else:  # the tiny Qwen2 LM on the standard-library corpus (docs/lm_task.md)
        trainable, lr_ref, total_steps, report_every, window = "lm", 3e-3, 300, 25, 15
        shared = {"preset": "tiny", "seq_len": 64, "batch_size": 16, "eval_batches": 4}
        shared.update(schedule="cosine", num_threads=1, device="cpu")
        sizes = {"grid": 5, "hyperband": 5, "pbt": 4}
    lo, hi = lr_ref / 10, lr_ref * 10

    arms = [
        # AdaLRS from 10x too small: one full-budget run that adapts its LR
        get_arm("adalrs", lrs=(lo,), adalrs={"window": window}, label="adalrs_x0.1"),
        get_arm("grid", lr_min=lo, lr_max=hi, num_trials=sizes["grid"]),
        get_arm("hyperband", lr_min=lo, lr_max=hi, num_trials=sizes["hyperband"]),
        get_arm("pbt", lr_min=lo, lr_max=hi, num_trials=sizes["pbt"]),
    ]
    sched = AdaLRSComparison(arms, total_steps=total_steps, report_every=report_every)

    out = Path(args.out).resolve()
    if (out / "tune").exists():
        parser.error(f"{out / 'tune'} exists (an earlier run): choose another --out")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")  # fmt: skip
    try:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        tuner = tune.Tuner(
            get_trainable(trainable, cpu=cpus / 4),  # 4 trials at once
            param_space=sched.param_space(shared),
            tune_config=tune.TuneConfig(scheduler=sched, reuse_actors=True),
            run_config=tune.RunConfig(storage_path=str(out), name="tune", verbose=0),
        )
        results = tuner.fit()
    finally:
        if started:
            ray.shutdown()

    compute = sched.compute_table()  # steps, tokens, worker-seconds per arm
    print(compute[["arm", "trials", "steps", "best_metric", "best_lr"]].to_string(index=False))
    paths = write_report(
        load_results(out / "tune"), out, baseline_steps=total_steps, adalrs_arms=["adalrs_x0.1"]
    )
    print(f"{len(results.errors)} failed trial(s); report: {paths['markdown']}")
    return {"paths": paths, "compute": compute, "errors": len(results.errors)}


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    raise SystemExit(1 if main()["errors"] else 0)
