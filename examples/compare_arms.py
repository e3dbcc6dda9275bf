"""AdaLRS against a grid, HyperBand and PBT in one ``tune.Tuner``, then the cost report.

The Python-API form of ``adalrs-ray compare``: AdaLRS (Dong et al., "AdaLRS", NeurIPS 2025,
arXiv 2506.13274) started 10x below the reference LR searches the LR inside ONE run; the other
arms search the same range [lr_ref/10, lr_ref*10] the usual way. The composite scheduler
``AdaLRSComparison`` runs all of them in one Tuner and counts the compute each arm spends; the
report says how much each needed to come within 1/2/5% of the best loss any arm found.

    python examples/compare_arms.py --out runs/example              # tiny Qwen2 LM, 15 x 300 steps
    python examples/compare_arms.py --smoke-test --out /tmp/example   # loss simulator, seconds

Every trial directory under ``OUT/tune`` gets Tune's own logs (TensorBoard event files,
``progress.csv``, ``result.json``: ``tensorboard --logdir OUT/tune``); ``--no-loggers``: none.

It describes the comparison as a :class:`~adalrs_ray.experiments.presets.ComparePreset` and runs
it with :func:`adalrs_ray.experiments.compare.run_compare`, the function behind
``adalrs-ray compare``. Uses an already initialised Ray (``ray.is_initialized()``) as is;
otherwise starts a local one and shuts it down at the end.
"""

from __future__ import annotations

import argparse
import logging

from adalrs_ray.experiments.compare import run_compare
from adalrs_ray.experiments.presets import ComparePreset


def example_preset(smoke_test: bool) -> ComparePreset:
    """AdaLRS from 10x too small (one full-budget run that adapts its LR) against a grid,
    HyperBand and PBT over [lr_ref/10, lr_ref*10], 4 trials at once."""
    if smoke_test:  # the loss simulator: optimum LR 1e-3, milliseconds per report
        task, lr_ref, total_steps, report_every, window = "sim", 1e-3, 2000, 500, 50
        shared = {"lr_opt": 1e-3, "sim": {"noise": 0.02}}
        sizes = {"grid": 3, "hyperband": 2, "pbt": 2}
    else:  # the tiny Qwen2 LM on the standard-library corpus (docs/lm_task.md)
        task, lr_ref, total_steps, report_every, window = "lm", 3e-3, 300, 25, 15
        shared = {"preset": "tiny", "seq_len": 64, "batch_size": 16, "eval_batches": 4}
        shared.update(schedule="cosine", num_threads=1, device="cpu")
        sizes = {"grid": 5, "hyperband": 5, "pbt": 4}
    return ComparePreset(
        name="example-smoke" if smoke_test else "example",
        description="examples/compare_arms.py",
        task=task,
        total_steps=total_steps,
        report_every=report_every,
        lr_ref=lr_ref,
        lr_span=10.0,
        arms=("adalrs", "grid", "hyperband", "pbt"),
        adalrs_starts=(0.1,),  # arm adalrs_x0.1
        adalrs={"window": window},
        arm_settings={arm: {"num_trials": n} for arm, n in sizes.items()},
        trial_config=shared,
        max_concurrent=4,
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/compare_arms_example")
    parser.add_argument("--smoke-test", action="store_true", help="simulator, tiny budget")
    parser.add_argument(
        "--no-loggers",
        dest="loggers",
        action="store_false",
        help="no Tune logs per trial (default: TensorBoard, progress.csv, result.json)",
    )
    args = parser.parse_args(argv)

    try:
        result = run_compare(
            example_preset(args.smoke_test), args.out, progress=False, loggers=args.loggers
        )
    except ValueError as exc:  # e.g. an earlier run in --out
        parser.error(str(exc))

    compute = result["compute"]  # steps, tokens, worker-seconds per arm
    print(compute[["arm", "trials", "steps", "best_metric", "best_lr"]].to_string(index=False))
    errors = len(result["errors"])
    print(f"{errors} failed trial(s); report: {result['paths']['markdown']}")
    return {"paths": result["paths"], "compute": compute, "errors": errors}


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    raise SystemExit(1 if main()["errors"] else 0)
