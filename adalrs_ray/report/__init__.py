"""Head-to-head cost comparison of the search arms: tables, Markdown/HTML report, PNG plots.

The question the report answers is the one of the AdaLRS paper (Dong et al., NeurIPS 2025,
arXiv 2506.13274, Sec. 4 and Fig. 2): how much compute does each LR-search arm (grid, ASHA,
HyperBand, PBT, AdaLRS, ...) spend to come within p% of the best validation loss any arm reached,
and which LR does it end up with compared with the grid's best LR.

Input is the tidy per-report results table of ``docs/design.md`` (one row per report, in order of
arrival). Everything here is pure pandas/numpy/matplotlib: no Ray import, so a report can be
rebuilt on any machine from the saved files (``adalrs-ray report DIR`` from a shell).

Modules, each importing only ones listed before it:

* :mod:`~adalrs_ray.report.contract`: column names, file names, statuses (stdlib only, imported
  by the Tune scheduler, the arms and the trainables too);
* :mod:`~adalrs_ray.report.results`: validate, load and merge the tidy table; its AdaLRS events;
* :mod:`~adalrs_ray.report.tables`: the per-trial table, the reference, the per-arm summary;
* :mod:`~adalrs_ray.report.plots`: the PNG plots (matplotlib without pyplot);
* :mod:`~adalrs_ray.report.document`: a Markdown/HTML document and the formatting of its cells;
* :mod:`~adalrs_ray.report.sections`: what the report says, one function per section;
* :mod:`~adalrs_ray.report.render`: the report's files, written or rebuilt from a directory.

The public names below load lazily (PEP 562): importing :mod:`adalrs_ray.report.contract` does
not import pandas.

Example::

    from adalrs_ray.report import build_report_from_dir, summarize, write_report

    summary = summarize(df, baseline_steps=10_000)        # one row per arm
    paths = write_report(df, "runs/cmp/report", baseline_steps=10_000)
    build_report_from_dir("runs/cmp")                     # rebuild from results.parquet or
                                                          # adalrs_compute_log.jsonl

Exact definitions of every column and plot: ``docs/report.md``.

May import: pandas, numpy, matplotlib and :mod:`adalrs_ray.core`. Never ray or torch.
"""

from __future__ import annotations

from adalrs_ray.core.lazy import lazy_exports

_MODULES = {
    "adalrs_ray.report.contract": (
        "ARM_CUM_COLUMNS",
        "COMPUTE_COLUMNS",
        "CUM_COLUMNS",
        "DEFAULT_THRESHOLDS",
        "FAILED_STATUSES",
        "ID_COLUMNS",
        "INT_COLUMNS",
        "META_FILE_NAME",
        "NAN_OK_COLUMNS",
        "POSITIVE_COLUMNS",
        "REQUIRED_COLUMNS",
        "RESULT_FILE_NAMES",
        "TRIAL_STATUS_FILE",
        "UNFINISHED_STATUSES",
        "UNIT_LABEL",
        "UNITS",
    ),
    "adalrs_ray.report.results": (
        "find_results_file",
        "iter_events",
        "load_results",
        "merge_arms",
        "normalize_log",
        "read_trial_status_file",
        "validate_results",
    ),
    "adalrs_ray.report.tables": (
        "reference_point",
        "summarize",
        "threshold_label",
        "threshold_target",
        "trial_table",
    ),
    "adalrs_ray.report.plots": (
        "adalrs_trials",
        "plot_adalrs",
        "plot_best_so_far",
        "plot_val_curves",
        "scale_path",
    ),
    "adalrs_ray.report.render": ("build_report_from_dir", "read_meta", "write_report"),
}
# name -> module that defines it; imported on first access (PEP 562).
_LAZY = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
