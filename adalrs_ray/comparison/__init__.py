"""The Ray Tune comparison: one Tuner runs every LR-search arm and accounts the compute each spent.

Holds the composite scheduler :class:`AdaLRSComparison` (:mod:`~adalrs_ray.comparison.scheduler`),
which keeps only the Tune hooks; its compute accounting, :class:`ComputeAccount`
(:mod:`~adalrs_ray.comparison.accounting`, no Tune import); the files a comparison writes and their
loaders (:mod:`~adalrs_ray.comparison.logs`); the one adapter to Tune's private API
(:mod:`~adalrs_ray.comparison.tune_adapter`) and the trial side of the contract,
:class:`TuneReporter` (:mod:`~adalrs_ray.comparison.reporter`), and :class:`AdaLRSTrial`
(:mod:`~adalrs_ray.comparison.trial`), which makes a user's own PyTorch loop a comparison trial;
Tune's own per-trial loggers for a run, :func:`tune_loggers` (:mod:`~adalrs_ray.comparison.loggers`);
a Ray Train ``TorchTrainer`` per trial, :func:`run_train_trial`
(:mod:`~adalrs_ray.comparison.train_trial`).

May import: :mod:`adalrs_ray.core`, the report's contract (:mod:`adalrs_ray.report.contract`), the
arms (:mod:`search_algos`), the torch binding and Ray Train utility below them, ``ray.tune`` and
``ray.train``. Never a task (:mod:`train_loops`), the experiments or
the CLI.
"""

from __future__ import annotations

from adalrs_ray.core.lazy import lazy_exports

# name -> module that defines it, imported on first access (PEP 562): a trainable that imports
# the reporter does not import the scheduler, ray.tune's schedulers or the arms.
_LAZY = {
    "EXTRA_COLUMNS": "adalrs_ray.comparison.accounting",
    "RESULT_COLUMNS": "adalrs_ray.comparison.accounting",
    "STATUSES": "adalrs_ray.comparison.accounting",
    "ComputeAccount": "adalrs_ray.comparison.accounting",
    "backtracked_steps": "adalrs_ray.comparison.accounting",
    "ComparisonLog": "adalrs_ray.comparison.logs",
    "compute_frame": "adalrs_ray.comparison.logs",
    "find_log_dir": "adalrs_ray.comparison.logs",
    "load_comparison": "adalrs_ray.comparison.logs",
    "results_frame": "adalrs_ray.comparison.logs",
    "TuneReporter": "adalrs_ray.comparison.reporter",
    "AdaLRSTrial": "adalrs_ray.comparison.trial",
    "TrainPlacementGroupReaper": "adalrs_ray.comparison.train_trial",
    "run_train_trial": "adalrs_ray.comparison.train_trial",
    "explicit_loggers": "adalrs_ray.comparison.loggers",
    "tune_loggers": "adalrs_ray.comparison.loggers",
    "AdaLRSComparison": "adalrs_ray.comparison.scheduler",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
