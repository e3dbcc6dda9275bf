"""The Ray Tune comparison: one Tuner runs every LR-search arm and accounts the compute each spent.

Holds the composite scheduler :class:`AdaLRSComparison` (:mod:`~adalrs_ray.comparison.scheduler`),
which keeps only the Tune hooks; its compute accounting, :class:`ComputeAccount`
(:mod:`~adalrs_ray.comparison.accounting`, no Tune import); the files a comparison writes and their
loaders (:mod:`~adalrs_ray.comparison.logs`); the one adapter to Tune's private API
(:mod:`~adalrs_ray.comparison.tune_adapter`) and the trial side of the contract,
:class:`TuneReporter` (:mod:`~adalrs_ray.comparison.reporter`).

May import: :mod:`adalrs_ray.core`, the report's contract (:mod:`adalrs_ray.report.contract`), the
arms (:mod:`search_algos`) and ``ray.tune``. Never a task (:mod:`train_loops`), the experiments or
the CLI.
"""

from __future__ import annotations

from adalrs_ray.comparison.accounting import (
    EXTRA_COLUMNS,
    RESULT_COLUMNS,
    STATUSES,
    ComputeAccount,
    backtracked_steps,
)
from adalrs_ray.comparison.logs import (
    ComparisonLog,
    compute_frame,
    find_log_dir,
    load_comparison,
    results_frame,
)
from adalrs_ray.comparison.reporter import TuneReporter
from adalrs_ray.comparison.scheduler import AdaLRSComparison

__all__ = [
    "EXTRA_COLUMNS",
    "RESULT_COLUMNS",
    "STATUSES",
    "AdaLRSComparison",
    "ComparisonLog",
    "ComputeAccount",
    "TuneReporter",
    "backtracked_steps",
    "compute_frame",
    "find_log_dir",
    "load_comparison",
    "results_frame",
]
