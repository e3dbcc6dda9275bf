"""The tables of the report: one row per trial (:func:`trial_table`) and the per-arm cost
summary (:func:`summarize`: compute to come within p% of the best loss any arm reached, and the
LR each arm found), with the reference and targets they are measured against.

Exact definitions of every column: ``docs/report.md``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from adalrs_ray.core.checks import check, check_number, is_number
from adalrs_ray.report.contract import (
    DEFAULT_THRESHOLDS,
    FAILED_STATUSES,
    UNFINISHED_STATUSES,
    UNITS,
)
from adalrs_ray.report.results import iter_events, validate_results

logger = logging.getLogger(__name__)


def threshold_label(p: float) -> str:
    """Column suffix for threshold ``p``: 0.01 -> ``"within_1pct"``, 0.005 -> ``"within_0.5pct"``."""
    return f"within_{p * 100:.10g}pct"


_EVENT_COUNT_KINDS = ("keep", "backtrack", "inconclusive", "boundary_downscale", "nonfinite_loss")


def trial_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trial (order of first report), from the last report of each trial.

    Columns: ``arm, trial_id, lr0, status`` (status of the last row), ``outcome`` (``"ok"``,
    ``"failed"`` or ``"unfinished"``), ``failure`` (why it failed, else ``""``), ``reports``,
    ``final_step``, ``final_val_loss``, ``best_val_loss`` (min finite over its reports),
    ``final_scale``, ``final_base_lr`` (``lr0 * scale`` of the last row, or ``lr_next * scale``
    when the optional ``lr_next`` column is there; a NaN scale counts as 1: the base LR the
    trial ends with, AdaLRS multiplier included), ``steps``, ``tokens``, ``worker_s`` (its ``cum_*`` at
    the last row) and the counts of AdaLRS events ``keep, backtrack, inconclusive,
    boundary_downscale, nonfinite_loss``.

    A trial is *failed* when its last status is ERROR/FAILED or its last val_loss is NaN or
    infinite; else *unfinished* when its last status is RUNNING/PENDING/PAUSED; else *ok*.
    """
    df = validate_results(df)
    # vectorised over trials (a loop over them cost ~1 ms per trial); the readable loop it
    # replaces is the reference of tests/test_report.py's differential test
    groups = df.groupby("trial_id", sort=False)
    first = groups.head(1).set_index("trial_id")
    last = groups.tail(1).set_index("trial_id").loc[first.index]
    final_vl = last["val_loss"].astype("float64")
    status = last["status"].astype(str)
    failed_status = status.isin(list(FAILED_STATUSES))
    nonfinite = ~np.isfinite(final_vl.to_numpy())
    failure = [
        "; ".join(([f"status {st}"] if fs else []) + ([f"final val_loss is {vl}"] if nf else []))
        for st, fs, nf, vl in zip(status, failed_status, nonfinite, final_vl.tolist())
    ]
    outcome = np.where(
        failed_status.to_numpy() | nonfinite,
        "failed",
        np.where(status.isin(list(UNFINISHED_STATUSES)).to_numpy(), "unfinished", "ok"),
    )
    vl = df["val_loss"].astype("float64")
    best = vl.where(np.isfinite(vl.to_numpy())).groupby(df["trial_id"], sort=False).min()
    scale = last["scale"].astype("float64")
    base_lr = last["lr0"].astype("float64")
    if "lr_next" in last.columns:
        nxt = pd.to_numeric(last["lr_next"], errors="coerce").astype("float64")
        use = np.isfinite(nxt.to_numpy()) & (nxt.to_numpy() > 0)
        base_lr = base_lr.where(~use, nxt)
    out = pd.DataFrame(
        {
            "arm": last["arm"].to_numpy(),
            "trial_id": first.index.to_numpy(),
            "lr0": first["lr0"].astype("float64").to_numpy(),
            "status": status.to_numpy(),
            "outcome": outcome,
            "failure": failure,
            "reports": groups.size().loc[first.index].to_numpy(),
            "final_step": last["step"].astype("int64").to_numpy(),
            "final_val_loss": final_vl.to_numpy(),
            "best_val_loss": best.loc[first.index].to_numpy(),
            "final_scale": scale.to_numpy(),
            "final_base_lr": (base_lr * scale.where(np.isfinite(scale.to_numpy()), 1.0)).to_numpy(),
            "steps": last["cum_steps"].astype("float64").to_numpy(),
            "tokens": last["cum_tokens"].astype("float64").to_numpy(),
            "worker_s": last["cum_worker_s"].astype("float64").to_numpy(),
        }
    )
    events = iter_events(df)
    counts = (
        events.groupby(["trial_id", "kind"]).size()
        if len(events)
        else pd.Series(
            dtype="int64", index=pd.MultiIndex.from_tuples([], names=["trial_id", "kind"])
        )
    )
    for kind in _EVENT_COUNT_KINDS:
        per_trial = (
            counts.xs(kind, level="kind")
            if kind in counts.index.get_level_values("kind")
            else pd.Series(dtype="int64")
        )
        out[kind] = per_trial.reindex(out["trial_id"]).fillna(0).astype("int64").to_numpy()
    return out


def check_thresholds(thresholds: Iterable[float]) -> tuple[float, ...]:
    """The p of "within p%" as floats: a non-empty sequence of distinct (to 10 significant
    digits) finite numbers >= 0, else ``ValueError`` naming the value and the rule."""
    try:
        items = None if isinstance(thresholds, str) else tuple(thresholds)
    except TypeError:
        items = None
    check(
        items is not None,
        f"thresholds is {thresholds!r}, but must be a sequence of numbers, "
        f"e.g. {DEFAULT_THRESHOLDS}",
    )
    check(
        len(items) > 0,
        f"thresholds is {thresholds!r}, but must not be empty, e.g. {DEFAULT_THRESHOLDS}",
    )
    for i, p in enumerate(items):
        check(
            is_number(_unwrap(p)) and _unwrap(p) >= 0,
            f"thresholds[{i}] is {p!r}, but must be a number, finite and >= 0 "
            "(0.01 means within 1%)",
        )
    ps = tuple(float(p) for p in items)
    check(
        len({threshold_label(p) for p in ps}) == len(ps),
        f"thresholds is {ps}, but must be distinct (to 10 significant digits)",
    )
    return ps


def _positive_or_none(name: str, value: Any) -> float | None:
    """``value`` as a float: None, or a finite number > 0."""
    check_number(name, _unwrap(value), low=0, optional=True)
    return None if value is None else float(value)


def _unwrap(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (what :mod:`adalrs_ray.core.checks` takes)."""
    return value.item() if isinstance(value, np.generic) else value


def reference_point(df: pd.DataFrame) -> dict[str, Any]:
    """The best loss any arm reached: the minimum finite ``val_loss`` over all reports of all
    trials (failed and unfinished trials included: they did reach it). Returns ``loss, arm,
    trial_id, step, row``; ``loss`` is NaN (and the rest None) when no report has a finite
    val_loss."""
    vl = df["val_loss"].to_numpy(dtype=float)
    finite = np.isfinite(vl)
    if not finite.any():
        return {"loss": math.nan, "arm": None, "trial_id": None, "step": None, "row": None}
    i = int(np.flatnonzero(finite)[np.argmin(vl[finite])])
    return {
        "loss": float(vl[i]),
        "arm": df["arm"].iloc[i],
        "trial_id": df["trial_id"].iloc[i],
        "step": int(df["step"].iloc[i]),
        "row": i,
    }


def threshold_target(reference: float, p: float) -> float:
    """Loss to reach for "within p% of ``reference``": ``reference + p * |reference|`` (equals
    ``reference * (1 + p)`` for a positive loss and stays above the reference if it is <= 0)."""
    return reference + p * abs(reference)


def summarize(
    df: pd.DataFrame,
    baseline_steps: float | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    grid_arm: str | None = "grid",
    grid_best_lr: float | None = None,
    reference_loss: float | None = None,
) -> pd.DataFrame:
    """Per-arm cost summary, one row per arm in order of first appearance.

    Args:
        df: the tidy results table (validated with :func:`validate_results`).
        baseline_steps: optimizer steps of ONE full-budget training run (e.g. ``total_steps`` of
            the AdaLRS run); enables the ``*full_runs*`` ratio columns.
        thresholds: the p of "within p% of the best loss"; 0.01 is 1%.
        grid_arm: name of the grid arm, the denominator of the ``*grid_frac*`` columns and the
            source of ``grid_best_lr`` (ignored when absent from ``df``).
        grid_best_lr: the grid's best LR if known from elsewhere; by default the final base LR
            of the grid arm's best trial.
        reference_loss: override the reference ("best loss any arm reached"), e.g. a known
            target loss; by default :func:`reference_point` of ``df``.

    Columns (exact definitions in ``docs/report.md``):

    * ``trials, failed_trials, unfinished_trials`` (see :func:`trial_table`);
    * ``best_final_val_loss``, ``best_trial``: minimum over the arm's *ok* trials of the
      val_loss of each trial's last report (failed and unfinished trials excluded; NaN if none);
    * ``total_steps, total_tokens, total_worker_s``: ``arm_cum_*`` at the arm's last report;
    * ``total_full_runs`` = total_steps / baseline_steps; ``total_grid_frac`` = total_steps /
      the grid arm's total_steps;
    * ``reference_loss``: the reference R; for each p the target is ``R + p*|R|``;
    * per p (suffix ``within_{100p}pct``): ``steps_to_*, tokens_to_*, worker_s_to_*`` = the
      arm's ``arm_cum_*`` at its FIRST report (order of arrival) of ANY of its trials with a
      finite val_loss <= target, NaN if never reached ("never" in the report). As the arm
      cumulative counter sums every trial of the arm, compute of parallel, failed and
      backtracked trials all counts. ``full_runs_to_*`` = steps_to / baseline_steps;
      ``grid_frac_to_*`` = steps_to / the grid arm's total_steps;
    * ``found_lr``: ``final_base_lr`` of ``best_trial`` (``lr0 * scale`` at its last report, see
      :func:`trial_table`);
      ``grid_best_lr``; ``lr_ratio_to_grid_best`` = found_lr / grid_best_lr.
    """
    df = validate_results(df)
    ps = check_thresholds(thresholds)
    baseline = _positive_or_none("baseline_steps", baseline_steps)
    grid_best_lr = _positive_or_none("grid_best_lr", grid_best_lr)
    check_number("reference_loss", _unwrap(reference_loss), optional=True)
    if reference_loss is not None:
        ref = float(reference_loss)
    else:
        ref = reference_point(df)["loss"]
        if not math.isfinite(ref):
            logger.warning("no report has a finite val_loss: no arm reaches any threshold")
    trials = trial_table(df)

    rows = []
    for arm, g in df.groupby("arm", sort=False):
        t = trials[trials["arm"] == arm]
        ok = t[t["outcome"] == "ok"]
        row: dict[str, Any] = {
            "arm": arm,
            "trials": len(t),
            "failed_trials": int((t["outcome"] == "failed").sum()),
            "unfinished_trials": int((t["outcome"] == "unfinished").sum()),
        }
        if len(ok):
            best = ok.loc[ok["final_val_loss"].idxmin()]
            row["best_final_val_loss"] = float(best["final_val_loss"])
            row["best_trial"] = best["trial_id"]
            found_lr = float(best["final_base_lr"])
        else:
            row["best_final_val_loss"] = math.nan
            row["best_trial"] = None
            found_lr = math.nan
        for u in UNITS:
            row[f"total_{u}"] = float(g[f"arm_cum_{u}"].iloc[-1])
        row["reference_loss"] = ref
        vl = g["val_loss"].to_numpy(dtype=float)
        finite = np.isfinite(vl)
        for p in ps:
            lab = threshold_label(p)
            hit = np.flatnonzero(finite & (vl <= threshold_target(ref, p))) if finite.any() else []
            for u in UNITS:
                row[f"{u}_to_{lab}"] = (
                    float(g[f"arm_cum_{u}"].iloc[hit[0]]) if len(hit) else math.nan
                )
        row["found_lr"] = found_lr
        rows.append(row)
    out = pd.DataFrame(rows)

    grid_total = math.nan
    if grid_arm is not None and grid_arm in set(out["arm"]):
        grow = out[out["arm"] == grid_arm].iloc[0]
        if grow["total_steps"] > 0:
            grid_total = float(grow["total_steps"])
        if grid_best_lr is None:
            grid_best_lr = float(grow["found_lr"])
    elif grid_arm is not None:
        logger.info("no arm named %r: grid ratios are NaN", grid_arm)
    base = baseline if baseline is not None else math.nan

    out["total_full_runs"] = out["total_steps"] / base
    out["total_grid_frac"] = out["total_steps"] / grid_total
    for p in ps:
        lab = threshold_label(p)
        out[f"full_runs_to_{lab}"] = out[f"steps_to_{lab}"] / base
        out[f"grid_frac_to_{lab}"] = out[f"steps_to_{lab}"] / grid_total
    out["grid_best_lr"] = grid_best_lr if grid_best_lr is not None else math.nan
    out["lr_ratio_to_grid_best"] = out["found_lr"] / out["grid_best_lr"]

    cols = ["arm", "trials", "failed_trials", "unfinished_trials", "best_final_val_loss"]
    cols += ["best_trial", "total_steps", "total_tokens", "total_worker_s", "total_full_runs"]
    cols += ["total_grid_frac", "reference_loss"]
    for p in ps:
        lab = threshold_label(p)
        cols += [f"{u}_to_{lab}" for u in UNITS]
        cols += [f"full_runs_to_{lab}", f"grid_frac_to_{lab}"]
    cols += ["found_lr", "grid_best_lr", "lr_ratio_to_grid_best"]
    out = out[cols]
    for c in ("trials", "failed_trials", "unfinished_trials"):
        out[c] = out[c].astype("int64")
    float_cols = [c for c in cols if c not in ("arm", "best_trial", "trials")]
    float_cols = [c for c in float_cols if c not in ("failed_trials", "unfinished_trials")]
    out[float_cols] = out[float_cols].astype("float64")
    out["arm"] = out["arm"].astype(str)
    # "str": pandas 3's string dtype, so the table survives a Parquet round trip unchanged;
    # .where keeps a missing best trial missing (pandas 2 would write the string "None")
    out["best_trial"] = out["best_trial"].astype("str").where(out["best_trial"].notna())
    return out
