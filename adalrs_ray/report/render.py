"""The report as files: :func:`write_report` writes the tables (Parquet), the plots (PNG) and the
document (Markdown and self-contained HTML) of a results table; :func:`build_report_from_dir`
rebuilds them from a saved directory with the options :func:`read_meta` finds there.

Files and their definitions: ``docs/report.md``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from adalrs_ray.core.checks import check, is_number
from adalrs_ray.report.contract import DEFAULT_THRESHOLDS, META_FILE_NAME, TRIAL_STATUS_FILE
from adalrs_ray.report.plots import adalrs_trials, plot_adalrs, plot_best_so_far, plot_val_curves
from adalrs_ray.report.results import (
    find_results_file,
    json_default,
    load_results,
    read_trial_status_file,
    validate_results,
)
from adalrs_ray.report.sections import build_doc
from adalrs_ray.report.tables import check_thresholds, reference_point, summarize, trial_table

logger = logging.getLogger(__name__)


def write_report(
    df: pd.DataFrame,
    out_dir: str | Path,
    title: str = "AdaLRS comparison: compute to reach the best loss",
    extra: Mapping[str, Any] | None = None,
    *,
    baseline_steps: float | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    grid_arm: str | None = "grid",
    grid_best_lr: float | None = None,
    reference_loss: float | None = None,
    adalrs_arms: Sequence[str] | None = None,
    lr_arms: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write the whole report into ``out_dir`` (created if needed) and return ``{name: path}``.

    Files: ``results.parquet`` (the validated tidy table), ``summary.parquet``
    (:func:`summarize`), ``trials.parquet`` (:func:`trial_table`), ``report_meta.json`` (the
    options below, so :func:`build_report_from_dir` rebuilds the same report), ``report.md``
    (links the PNGs beside it), ``report.html`` (self-contained: PNGs embedded as base64 data
    URIs, inline CSS) and the plots ``best_so_far.png`` (a), ``adalrs_lr.png`` (b, only when
    there are AdaLRS trials, see :func:`adalrs_trials`) and ``val_curves.png`` (c).

    ``extra`` (JSON-serialisable mapping, e.g. the run's settings) is shown as a table. The
    keyword options are those of :func:`summarize`; ``adalrs_arms`` selects the trials of
    plot (b); ``lr_arms`` adds to it the trials of arms whose optimizer sets its own LR (the
    LR-free arms), drawn with the effective LR they report. A failed trial (NaN val_loss, status ERROR) never stops the report: it is listed
    as failed.
    """
    df = validate_results(df)
    summary = summarize(
        df,
        baseline_steps=baseline_steps,
        thresholds=thresholds,
        grid_arm=grid_arm,
        grid_best_lr=grid_best_lr,
        reference_loss=reference_loss,
    )
    check(
        extra is None or isinstance(extra, Mapping),
        f"extra is a {type(extra).__name__}, but must be a mapping of settings or None",
    )
    trials = trial_table(df)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    paths["results"] = out / "results.parquet"
    df.to_parquet(paths["results"], engine="pyarrow", index=False)
    paths["summary"] = out / "summary.parquet"
    summary.to_parquet(paths["summary"], engine="pyarrow", index=False)
    paths["trials"] = out / "trials.parquet"
    trials.to_parquet(paths["trials"], engine="pyarrow", index=False)
    meta = {
        "title": title,
        "baseline_steps": baseline_steps,
        "thresholds": list(check_thresholds(thresholds)),
        "grid_arm": grid_arm,
        "grid_best_lr": grid_best_lr,
        "reference_loss": reference_loss,
        "adalrs_arms": list(adalrs_arms) if adalrs_arms is not None else None,
        "lr_arms": list(lr_arms) if lr_arms is not None else None,
        "extra": dict(extra) if extra is not None else None,
    }
    paths["meta"] = out / META_FILE_NAME
    paths["meta"].write_text(json.dumps(meta, indent=2, default=json_default) + "\n")

    plots: dict[str, Path] = {}
    plots["best_so_far"] = plot_best_so_far(df, out / "best_so_far.png", summary)
    ada = adalrs_trials(df, adalrs_arms)
    own_lr = [t for t in pd.unique(df.loc[df["arm"].isin(lr_arms or ()), "trial_id"])]
    if ada or own_lr:
        plots["adalrs_lr"] = plot_adalrs(df, out / "adalrs_lr.png", ada, own_lr)
    plots["val_curves"] = plot_val_curves(df, out / "val_curves.png", trials)
    paths.update(plots)

    doc = build_doc(
        df,
        summary,
        trials,
        plots,
        title,
        extra,
        baseline_steps,
        grid_arm,
        reference_point(df),
        reference_loss is not None,
    )
    paths["markdown"] = out / "report.md"
    paths["markdown"].write_text(doc.markdown(), encoding="utf-8")
    paths["html"] = out / "report.html"
    paths["html"].write_text(doc.html(title), encoding="utf-8")
    logger.info("report written to %s", paths["html"])
    return paths


_META_KEYS = ("title", "baseline_steps", "thresholds", "grid_arm", "grid_best_lr")
_META_KEYS += ("reference_loss", "adalrs_arms", "lr_arms", "extra")


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The report options saved in ``directory/report_meta.json`` ({} if absent)."""
    f = Path(directory) / META_FILE_NAME
    if not f.is_file():
        return {}
    try:
        meta = json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{f} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{f} must hold a JSON object")
    unknown = sorted(set(meta) - set(_META_KEYS))
    if unknown:
        raise ValueError(f"{f}: unknown key(s) {unknown}; known keys are {list(_META_KEYS)}")
    return meta


def build_report_from_dir(
    directory: str | Path, out_dir: str | Path | None = None, **options: Any
) -> dict[str, Path]:
    """Rebuild the report from a saved directory; returns the paths of :func:`write_report`.

    The results come from :func:`load_results` (``results.parquet``, else the compute log
    ``adalrs_compute_log.jsonl`` / ``comparison_log.parquet`` / ``comparison_log.jsonl``, in
    ``directory`` or the one subdirectory that has them). The options of :func:`write_report`
    are, by priority: ``options`` given here, then ``report_meta.json`` beside the results, then
    ``baseline_steps`` = ``total_steps`` of :data:`TRIAL_STATUS_FILE` (the budget of one trial).
    Writes into ``out_dir`` (default: ``directory``).
    """
    d = Path(directory)
    if not d.is_dir():
        raise ValueError(f"report directory {str(d)!r} does not exist or is not a directory")
    unknown = sorted(set(options) - set(_META_KEYS))
    if unknown:
        raise ValueError(f"unknown report option(s) {unknown}; known: {list(_META_KEYS)}")
    folder = find_results_file(d).parent
    df = load_results(d)
    kwargs = {**read_meta(folder), **options}
    if kwargs.get("baseline_steps") is None:
        total = read_trial_status_file(folder).get("total_steps")
        if is_number(total) and total > 0:
            kwargs["baseline_steps"] = total
            logger.info("baseline_steps = %s (total_steps of %s)", total, TRIAL_STATUS_FILE)
    return write_report(df, out_dir if out_dir is not None else d, **kwargs)
