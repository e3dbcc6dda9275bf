"""What the report says, section by section: :func:`build_doc` turns the tables of
:mod:`adalrs_ray.report.tables` and the plots of :mod:`adalrs_ray.report.plots` into a
:class:`~adalrs_ray.report.document.Doc` (overview and reference, summary per arm, compute to
reach each target, LR found, failed trials, every trial, AdaLRS events, plots, settings).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adalrs_ray.report.document import Doc, fmt, fmt_or_never
from adalrs_ray.report.results import iter_events, json_default
from adalrs_ray.report.tables import threshold_label, threshold_target


def build_doc(
    df: pd.DataFrame,
    summary: pd.DataFrame,
    trials: pd.DataFrame,
    plots: Mapping[str, Path],
    title: str,
    extra: Mapping[str, Any] | None,
    baseline_steps: float | None,
    grid_arm: str | None,
    ref_point: Mapping[str, Any],
    reference_overridden: bool,
) -> Doc:
    """The whole report as a :class:`Doc`: ``df`` is the validated table, ``summary`` and
    ``trials`` its :func:`~adalrs_ray.report.tables.summarize` and
    :func:`~adalrs_ray.report.tables.trial_table`, ``plots`` the PNGs drawn (by name),
    ``ref_point`` the :func:`~adalrs_ray.report.tables.reference_point` of ``df`` and
    ``reference_overridden`` whether the reference loss was given instead."""
    doc = Doc()
    _overview(doc, df, summary, trials, title, ref_point, reference_overridden)
    _summary_per_arm(doc, summary, baseline_steps, grid_arm)
    _compute_to_targets(doc, df, summary)
    _learning_rates(doc, summary)
    _failed_trials(doc, trials)
    _retried_trials(doc, df)
    _trials(doc, trials)
    _adalrs_events(doc, df)
    _plots(doc, plots)
    _settings(doc, extra)
    return doc


def _overview(
    doc: Doc,
    df: pd.DataFrame,
    summary: pd.DataFrame,
    trials: pd.DataFrame,
    title: str,
    ref_point: Mapping[str, Any],
    reference_overridden: bool,
) -> None:
    """Title, what was compared and how compute counts, the reference loss and the targets."""
    ps = _thresholds_of(summary)
    ref = float(summary["reference_loss"].iloc[0])
    doc.h(1, title)
    doc.p(
        f"{len(df)} reports of {len(trials)} trials in {len(summary)} arms "
        f"({', '.join(summary['arm'])}). Compute is counted per arm in order of arrival: "
        "the compute to reach a target is the arm's cumulative compute (all of its trials, "
        "parallel, failed and backtracked ones included) at its first report, from any of its "
        "trials, whose val_loss is within p% of the reference. Definitions: docs/report.md."
    )
    if not math.isfinite(ref):
        doc.p("No report has a finite val_loss: there is no reference and no arm reached a target.")
    elif reference_overridden:
        doc.p(f"Reference loss (given): {fmt(ref, 'loss')}.")
    else:
        doc.p(
            f"Reference loss, the best val_loss any arm reached: {fmt(ref, 'loss')} "
            f"(arm {ref_point['arm']}, trial {ref_point['trial_id']}, step {ref_point['step']})."
        )
    if math.isfinite(ref):
        doc.p(
            "Targets: "
            + ", ".join(
                f"within {p * 100:g}%: val_loss <= {fmt(threshold_target(ref, p), 'loss')}"
                for p in ps
            )
            + "."
        )


def _summary_per_arm(
    doc: Doc, summary: pd.DataFrame, baseline_steps: float | None, grid_arm: str | None
) -> None:
    """Trials, best final val_loss and total compute of each arm."""
    doc.h(2, "Summary per arm")
    base_note = f"x full run = total steps / {fmt(baseline_steps, 'int')}" if baseline_steps else (
        "x full run: n/a (no baseline_steps given)"
    )  # fmt: skip
    grid_note = (
        f"x grid = total steps / total steps of arm {grid_arm}"
        if grid_arm in set(summary["arm"])
        else "x grid: n/a (no grid arm)"
    )
    doc.table(
        [
            "arm",
            "trials",
            "failed",
            "unfinished",
            "best final val_loss",
            "best trial",
            "total steps",
            "total tokens",
            "total worker-s",
            "x full run",
            "x grid",
        ],  # fmt: skip
        [
            [
                r["arm"],
                fmt(r["trials"]),
                fmt(r["failed_trials"]),
                fmt(r["unfinished_trials"]),
                fmt(r["best_final_val_loss"], "loss"),
                fmt(r["best_trial"]) or "none",
                fmt(r["total_steps"], "int"),
                fmt(r["total_tokens"], "int"),
                fmt(r["total_worker_s"], "s"),
                fmt(r["total_full_runs"], "ratio"),
                fmt(r["total_grid_frac"], "ratio"),
            ]
            for _, r in summary.iterrows()
        ],
    )
    doc.p(f"{base_note}; {grid_note}. best final val_loss: over finished, non-failed trials.")


def _compute_to_targets(doc: Doc, df: pd.DataFrame, summary: pd.DataFrame) -> None:
    """Compute each arm spent to come within p% of the reference; the arms that never did."""
    ps = _thresholds_of(summary)
    ref = float(summary["reference_loss"].iloc[0])
    doc.h(2, "Compute to reach within p% of the reference")
    rows = []
    for _, r in summary.iterrows():
        for p in ps:
            lab = threshold_label(p)
            reached = not math.isnan(r[f"steps_to_{lab}"])
            rows.append(
                [
                    r["arm"],
                    f"{p * 100:g}%",
                    fmt(threshold_target(ref, p), "loss") if math.isfinite(ref) else "n/a",
                    fmt_or_never(r[f"steps_to_{lab}"], "int"),
                    fmt_or_never(r[f"tokens_to_{lab}"], "int"),
                    fmt_or_never(r[f"worker_s_to_{lab}"], "s"),
                    _ratio_cell(reached, r[f"full_runs_to_{lab}"]),
                    _ratio_cell(reached, r[f"grid_frac_to_{lab}"]),
                ]
            )
    doc.table(
        [
            "arm",
            "within",
            "target val_loss",
            "steps",
            "tokens",
            "worker-s",
            "x full run",
            "x grid total",
        ],  # fmt: skip
        rows,
    )
    never = []
    for _, r in summary.iterrows():
        missed = [f"{p * 100:g}%" for p in ps if math.isnan(r[f"steps_to_{threshold_label(p)}"])]
        if missed:
            never.append(
                f"Arm {r['arm']} never reached within {', '.join(missed)} of the reference "
                f"(its best val_loss at any report: {fmt(_arm_best(df, r['arm']), 'loss')})."
            )
    doc.ul(never) if never else doc.p("Every arm reached every target.")


def _learning_rates(doc: Doc, summary: pd.DataFrame) -> None:
    """The LR each arm found against the grid's best LR."""
    doc.h(2, "Learning rate found")
    doc.table(
        ["arm", "best trial", "found LR (lr0 x scale)", "grid best LR", "ratio to grid best"],
        [
            [
                r["arm"],
                fmt(r["best_trial"]) or "none",
                fmt(r["found_lr"]),
                fmt(r["grid_best_lr"]),
                fmt(r["lr_ratio_to_grid_best"], "ratio"),
            ]
            for _, r in summary.iterrows()
        ],
    )


def _failed_trials(doc: Doc, trials: pd.DataFrame) -> None:
    """Every failed or unfinished trial and why."""
    doc.h(2, "Failed and unfinished trials")
    bad = trials[trials["outcome"] != "ok"]
    if len(bad) == 0:
        doc.p("No trial failed; every trial finished.")
    else:
        doc.ul(
            [
                f"{r['outcome'].upper()}: trial {r['trial_id']} of arm {r['arm']} "
                f"(lr0 {fmt(r['lr0'])}, reports: {r['reports']}, last step {r['final_step']}, "
                f"status {r['status']})" + (f": {r['failure']}" if r["failure"] else "")
                for _, r in bad.iterrows()
            ]
        )


def _retried_trials(doc: Doc, df: pd.DataFrame) -> None:
    """Trials Tune retried after their process failed (``restart_kind == "retry"`` in the
    scheduler's log): one line each, with its restart overhead."""
    if "restart_kind" not in df.columns:
        return
    retries = df[df["restart_kind"].astype(str) == "retry"]
    if len(retries) == 0:
        return
    doc.h(2, "Retried trials")
    doc.p(
        f"{len(retries)} retr{'y' if len(retries) == 1 else 'ies'} of "
        f"{retries['trial_id'].nunique()} trial(s) after a failed process (Tune's "
        "max_failures), each from the trial's last checkpoint. The steps the failed process "
        "ran after that checkpoint were never reported: they are lost, and the wall time from "
        "its last report to the first report after the retry, less that report's own work, "
        "is the restart overhead."
    )
    per_arm = retries.groupby("arm", sort=False)
    doc.p(
        "Per arm: "
        + ", ".join(
            f"{arm} {len(g)} retr{'y' if len(g) == 1 else 'ies'} of {g['trial_id'].nunique()} "
            f"trial(s), {fmt(g['restart_overhead_s'].astype('float64').sum(), 's')} s overhead"
            for arm, g in per_arm
        )
        + "."
    )
    rows = []
    for _, r in retries.iterrows():
        rows.append(
            f"trial {r['trial_id']} of arm {r['arm']}: retried before its report at step "
            f"{int(r['step'])}, restart overhead {fmt(r.get('restart_overhead_s'), 's')} s"
        )
    doc.ul(rows)


def _trials(doc: Doc, trials: pd.DataFrame) -> None:
    """One row per trial (:func:`~adalrs_ray.report.tables.trial_table`)."""
    doc.h(2, "Trials")
    doc.table(
        ["arm", "trial", "lr0", "outcome", "reports", "last step", "final val_loss",
         "best val_loss", "final scale", "final base LR", "steps", "keeps", "backtracks"],
        [
            [
                r["arm"], r["trial_id"], fmt(r["lr0"]), r["outcome"], fmt(r["reports"]),
                fmt(r["final_step"]), fmt(r["final_val_loss"], "loss"),
                fmt(r["best_val_loss"], "loss"), fmt(r["final_scale"]),
                fmt(r["final_base_lr"]), fmt(r["steps"], "int"), fmt(r["keep"]),
                fmt(r["backtrack"]),
            ]
            for _, r in trials.iterrows()
        ],
    )  # fmt: skip


def _adalrs_events(doc: Doc, df: pd.DataFrame) -> None:
    """The AdaLRS events (search start/end left out), at most ``_MAX_EVENT_ROWS``; no section
    without events."""
    events = iter_events(df)
    events = events[~events["kind"].isin(("search_start", "search_end"))]
    if len(events):
        doc.h(2, "AdaLRS events")
        shown = events.head(_MAX_EVENT_ROWS)
        doc.table(
            ["trial", "step", "kind", "scale before", "scale after", "tried scale"],
            [
                [r["trial_id"], fmt(r["step"], "int"), r["kind"], fmt(r["scale_before"]),
                 fmt(r["scale_after"]), fmt(r["tried_scale"])]
                for _, r in shown.iterrows()
            ],
        )  # fmt: skip
        if len(events) > len(shown):
            doc.p(f"First {len(shown)} of {len(events)} events; all are in results.parquet.")


def _plots(doc: Doc, plots: Mapping[str, Path]) -> None:
    """The plots drawn, with captions."""
    doc.h(2, "Plots")
    captions = {
        "best_so_far": "(a) Best-so-far val_loss against arm-cumulative compute (log x); "
        "dotted lines: targets.",
        "adalrs_lr": "(b) AdaLRS LR trajectories (^ kept upscale, x failed upscale) and losses.",
        "val_curves": "(c) val_loss of every trial by arm; failed trials dashed red.",
    }
    for key, caption in captions.items():
        if key in plots:
            doc.img(plots[key], caption)
    if "adalrs_lr" not in plots:
        doc.p("(b) not drawn: no AdaLRS trial in this table.")


def _settings(doc: Doc, extra: Mapping[str, Any] | None) -> None:
    """The run's settings (``extra``), if any."""
    if extra:
        doc.h(2, "Settings")
        doc.table(["key", "value"], [[str(k), _extra_value(v)] for k, v in extra.items()])


def _thresholds_of(summary: pd.DataFrame) -> list[float]:
    return [
        float(c[len("steps_to_within_") : -3]) / 100
        for c in summary.columns
        if c.startswith("steps_to_within_")
    ]


_MAX_EVENT_ROWS = 200


def _ratio_cell(reached: bool, value: float) -> str:
    """ "never" if the target was not reached, "n/a" if the ratio has no denominator."""
    if not reached:
        return "never"
    return fmt(value, "ratio")


def _arm_best(df: pd.DataFrame, arm: str) -> float:
    vl = df.loc[df["arm"] == arm, "val_loss"].to_numpy(dtype=float)
    vl = vl[np.isfinite(vl)]
    return float(vl.min()) if vl.size else math.nan


def _extra_value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=json_default)
