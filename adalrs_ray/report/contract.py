"""The comparison's contract: what a trial receives and reports, the tidy results table, and the
files a comparison leaves behind (docs/design.md).

Pure data (stdlib only). Every side of the contract imports it from here: the arms
(:mod:`search_algos`), the trainables (:mod:`train_loops.trainables`), the Tune scheduler
(:mod:`adalrs_ray.comparison`) and the report (:mod:`adalrs_ray.report`).
"""

from __future__ import annotations

# Compute a trial reports as increments since its previous report (the scheduler sums them).
from adalrs_ray.core.compute import INCREMENT_KEYS as INCREMENT_KEYS

#: Config keys every slot of the comparison carries (the trainable contract, docs/tune.md).
SLOT_KEYS: tuple[str, ...] = ("arm", "lr", "total_steps", "report_every", "adalrs")
#: Config keys only some arms' slots carry: ``optimizer`` (the single-run LR-free arms,
#: :mod:`search_algos.prodigy`, :mod:`search_algos.schedulefree`). When one slot of a comparison
#: has such a key, every trial gets it, ``None`` where its slot has none.
OPTIONAL_SLOT_KEYS: tuple[str, ...] = ("optimizer",)
#: The keys :class:`~adalrs_ray.comparison.AdaLRSComparison` fills per trial: the slot keys plus
#: the slot index (and the optional slot keys some arms set).
TRIAL_KEYS: tuple[str, ...] = ("slot", *SLOT_KEYS, *OPTIONAL_SLOT_KEYS)

#: Columns of the tidy results table (docs/design.md), in canonical order.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "arm",
    "trial_id",
    "status",
    "lr0",
    "iteration",
    "step",
    "loss",
    "val_loss",
    "lr",
    "scale",
    "steps_done",
    "tokens_done",
    "worker_s_done",
    "cum_steps",
    "cum_tokens",
    "cum_worker_s",
    "arm_cum_steps",
    "arm_cum_tokens",
    "arm_cum_worker_s",
    "wall_s",
    "adalrs_events",
)
ID_COLUMNS = ("arm", "trial_id", "status")
INT_COLUMNS = ("iteration", "step")
# float columns where NaN is a legitimate value (no LR known, loss diverged, ...)
NAN_OK_COLUMNS = ("lr0", "loss", "val_loss", "lr", "scale", "wall_s")
POSITIVE_COLUMNS = ("lr0", "scale")  # > 0 where finite
# compute accounting: finite and >= 0 on every row
UNITS = ("steps", "tokens", "worker_s")
DONE_COLUMNS = tuple(f"{u}_done" for u in UNITS)
CUM_COLUMNS = tuple(f"cum_{u}" for u in UNITS)
ARM_CUM_COLUMNS = tuple(f"arm_cum_{u}" for u in UNITS)
COMPUTE_COLUMNS = DONE_COLUMNS + CUM_COLUMNS + ARM_CUM_COLUMNS

#: Default p of "within p% of the best loss": 1%, 2%, 5%.
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.01, 0.02, 0.05)

#: Trial statuses that mean "still going" (Tune's names); any other final status is finished.
UNFINISHED_STATUSES = frozenset({"RUNNING", "PENDING", "PAUSED"})
#: Final statuses that mark a trial as failed whatever its last val_loss.
FAILED_STATUSES = frozenset({"ERROR", "FAILED"})

#: One line per report, appended by the scheduler on every result.
COMPUTE_LOG_FILE = "adalrs_compute_log.jsonl"
#: Arms, each trial's final status and the exploit log, written by the scheduler.
COMPARISON_FILE = "adalrs_comparison.json"
#: Version of the compute log and the comparison file.
LOG_VERSION = 1

#: File names :func:`adalrs_ray.report.load_results` looks for in a directory, in order of
#: preference: the tidy
#: table a report saved, the compute log of :class:`adalrs_ray.comparison.AdaLRSComparison`,
#: then a compute log under the generic names.
RESULT_FILE_NAMES: tuple[str, ...] = (
    "results.parquet",
    COMPUTE_LOG_FILE,
    "comparison_log.parquet",
    "comparison_log.jsonl",
)
#: Written by the Tune scheduler beside its compute log: ``{"trials": [{"trial_id", "status"}, ...],
#: "total_steps": ...}``; gives the final status of each trial and the default ``baseline_steps``.
TRIAL_STATUS_FILE = COMPARISON_FILE
#: Report options saved next to the results, reused by :func:`build_report_from_dir`.
META_FILE_NAME = "report_meta.json"

UNIT_LABEL = {"steps": "steps", "tokens": "tokens", "worker_s": "worker-s"}


#: Under a ``compare`` output directory: the Tune experiment directory and the resolved settings.
TUNE_NAME = "tune"
CONFIG_FILE = "compare_config.json"
