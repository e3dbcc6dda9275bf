"""Head-to-head cost comparison of the search arms: tables, Markdown/HTML report, PNG plots.

The question the report answers is the one of the AdaLRS paper (Dong et al., NeurIPS 2025,
arXiv 2506.13274, Sec. 4 and Fig. 2): how much compute does each LR-search arm (grid, ASHA,
HyperBand, PBT, AdaLRS, ...) spend to come within p% of the best validation loss any arm reached,
and which LR does it end up with compared with the grid's best LR.

Input is the tidy per-report results table of ``docs/design.md`` (one row per report, in order of
arrival). Everything here is pure pandas/numpy/matplotlib: no Ray import, so a report can be
rebuilt on any machine from the saved files.

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

import argparse
import base64
import html
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adalrs_ray.report.contract import (
    ARM_CUM_COLUMNS,
    COMPUTE_COLUMNS,
    CUM_COLUMNS,
    DEFAULT_THRESHOLDS,
    FAILED_STATUSES,
    ID_COLUMNS,
    INT_COLUMNS,
    META_FILE_NAME,
    NAN_OK_COLUMNS,
    POSITIVE_COLUMNS,
    REQUIRED_COLUMNS,
    RESULT_FILE_NAMES,
    TRIAL_STATUS_FILE,
    UNFINISHED_STATUSES,
    UNIT_LABEL,
    UNITS,
)

logger = logging.getLogger(__name__)


def threshold_label(p: float) -> str:
    """Column suffix for threshold ``p``: 0.01 -> ``"within_1pct"``, 0.005 -> ``"within_0.5pct"``."""
    return f"within_{p * 100:.10g}pct"


# ----------------------------------------------------------------------------- validation
def validate_results(df: pd.DataFrame) -> pd.DataFrame:
    """Check the tidy results table and return a normalised copy.

    Rules (each violation raises ``ValueError`` naming the column, the row and the rule):

    * ``df`` is a non-empty DataFrame holding every column of :data:`REQUIRED_COLUMNS`
      (missing ones are all named); extra columns are kept.
    * ``arm``, ``trial_id``, ``status`` are non-null; they become strings (``status`` upper case).
      A trial belongs to exactly one arm.
    * ``iteration``, ``step`` are non-null integers.
    * ``lr0, loss, val_loss, lr, scale, wall_s`` are numbers; NaN is allowed (a NaN or infinite
      ``val_loss`` is handled as a failed measurement, never raised); ``lr0`` and ``scale`` are
      > 0 where finite.
    * the compute columns (``*_done``, ``cum_*``, ``arm_cum_*``) are finite and >= 0, ``cum_*`` never
      decrease within a trial and ``arm_cum_*`` never decrease within an arm in row order: rows
      must be in order of arrival.
    * ``adalrs_events`` is a JSON list of dicts with at least ``step`` and ``kind`` (a list
      object is accepted too; empty/null means no events). It becomes a JSON string.
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"results must be a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise ValueError("results table is empty: need at least one report row")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"results table is missing required column(s) {missing}; "
            f"the tidy table needs {list(REQUIRED_COLUMNS)}"
        )
    out = df.reset_index(drop=True).copy()

    for col in ID_COLUMNS:
        null = out[col].isna()
        if null.any():
            raise ValueError(
                f"column {col!r} must not be null (row {int(np.flatnonzero(null)[0])})"
            )
        out[col] = out[col].astype(str)
    out["status"] = out["status"].str.strip().str.upper()

    for col in INT_COLUMNS + NAN_OK_COLUMNS + COMPUTE_COLUMNS:
        out[col] = _to_float(out[col], col)
    for col in INT_COLUMNS:
        vals = out[col].to_numpy()
        bad = ~np.isfinite(vals) | (vals != np.round(vals))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"column {col!r} must hold integers, got {vals[i]!r} at row {i}")
        out[col] = out[col].astype("int64")
    for col in POSITIVE_COLUMNS:
        vals = out[col].to_numpy()
        bad = np.isfinite(vals) & (vals <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"column {col!r} must be > 0 where finite, got {vals[i]!r} at row {i}")
    for col in COMPUTE_COLUMNS:
        vals = out[col].to_numpy()
        bad = ~np.isfinite(vals) | (vals < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"compute column {col!r} must be finite and >= 0, got {vals[i]!r} at row {i}"
            )

    arms_per_trial = out.groupby("trial_id", sort=False)["arm"].nunique()
    multi = arms_per_trial[arms_per_trial > 1]
    if len(multi):
        tid = multi.index[0]
        arms = sorted(out.loc[out["trial_id"] == tid, "arm"].unique())
        raise ValueError(f"trial {tid!r} appears in several arms {arms}: a trial has one arm")

    for key, cols in (("trial_id", CUM_COLUMNS), ("arm", ARM_CUM_COLUMNS)):
        for col in cols:
            dec = out.groupby(key, sort=False)[col].diff() < 0
            if dec.any():
                i = int(np.flatnonzero(dec.to_numpy())[0])
                raise ValueError(
                    f"column {col!r} decreases at row {i} ({key} {out[key].iloc[i]!r}): "
                    "cumulative compute never decreases, so rows must be in order of arrival"
                )

    out["adalrs_events"] = [
        _normalise_events(v, i, out["trial_id"].iloc[i])
        for i, v in enumerate(out["adalrs_events"].tolist())
    ]
    out["adalrs_events"] = out["adalrs_events"].astype(str)
    return out


def _to_float(series: pd.Series, col: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(series):
        raise ValueError(f"column {col!r} must be numeric, got booleans")
    conv = pd.to_numeric(series, errors="coerce").astype("float64")
    bad = conv.isna() & series.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"column {col!r} must be numeric, got {series.iloc[i]!r} at row {i}")
    return conv


def _normalise_events(value: Any, row: int, trial_id: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "[]"
    if isinstance(value, str):
        if not value.strip():
            return "[]"
        try:
            events = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"adalrs_events at row {row} (trial {trial_id!r}) is not valid JSON: {exc}"
            ) from None
    else:
        events = list(value) if isinstance(value, (list, tuple, np.ndarray)) else value
    if not isinstance(events, list) or not all(
        isinstance(e, Mapping) and "step" in e and "kind" in e for e in events
    ):
        raise ValueError(
            f"adalrs_events at row {row} (trial {trial_id!r}) must be a JSON list of dicts "
            f'with "step" and "kind", got {str(value)[:120]!r}'
        )
    return json.dumps([dict(e) for e in events], default=_json_default)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def iter_events(df: pd.DataFrame) -> pd.DataFrame:
    """One row per AdaLRS event of a validated table: ``arm, trial_id, lr0, row, step, kind,
    scale_before, scale_after, tried_scale`` (``row`` is the report the event arrived with;
    ``tried_scale`` is the failed upscale target of a backtrack, NaN otherwise)."""
    records = []
    for i, (arm, tid, lr0, raw) in enumerate(
        zip(df["arm"], df["trial_id"], df["lr0"], df["adalrs_events"])
    ):
        for ev in json.loads(raw):
            records.append(
                {
                    "arm": arm,
                    "trial_id": tid,
                    "lr0": lr0,
                    "row": i,
                    "step": _num(ev.get("step")),
                    "kind": str(ev.get("kind")),
                    "scale_before": _num(ev.get("scale_before")),
                    "scale_after": _num(ev.get("scale_after")),
                    "tried_scale": _num(ev.get("tried_scale")),
                }
            )
    cols = ["arm", "trial_id", "lr0", "row", "step", "kind"]
    cols += ["scale_before", "scale_after", "tried_scale"]
    return pd.DataFrame.from_records(records, columns=cols)


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


# ----------------------------------------------------------------------------- tables
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
    events = iter_events(df)
    rows = []
    for tid, g in df.groupby("trial_id", sort=False):
        last = g.iloc[-1]
        final_vl = float(last["val_loss"])
        status = str(last["status"])
        reasons = []
        if status in FAILED_STATUSES:
            reasons.append(f"status {status}")
        if not math.isfinite(final_vl):
            reasons.append(f"final val_loss is {final_vl}")
        if reasons:
            outcome = "failed"
        elif status in UNFINISHED_STATUSES:
            outcome = "unfinished"
        else:
            outcome = "ok"
        vl = g["val_loss"].to_numpy()
        finite = vl[np.isfinite(vl)]
        ev = events[events["trial_id"] == tid]["kind"].value_counts()
        row = {
            "arm": last["arm"],
            "trial_id": tid,
            "lr0": float(g["lr0"].iloc[0]),
            "status": status,
            "outcome": outcome,
            "failure": "; ".join(reasons),
            "reports": len(g),
            "final_step": int(last["step"]),
            "final_val_loss": final_vl,
            "best_val_loss": float(finite.min()) if finite.size else math.nan,
            "final_scale": float(last["scale"]),
            "final_base_lr": _base_lr(last) * _scale_or_one(last["scale"]),
            "steps": float(last["cum_steps"]),
            "tokens": float(last["cum_tokens"]),
            "worker_s": float(last["cum_worker_s"]),
        }
        for kind in _EVENT_COUNT_KINDS:
            row[kind] = int(ev.get(kind, 0))
        rows.append(row)
    out = pd.DataFrame(rows)
    for kind in _EVENT_COUNT_KINDS:
        out[kind] = out[kind].astype("int64")
    return out


def _base_lr(row: pd.Series) -> float:
    """The trial's base LR at this report: ``lr_next`` (the trial's config LR after the report,
    an optional column the Tune scheduler logs; PBT changes it) when present and finite, else
    ``lr0``."""
    nxt = _num(row.get("lr_next"))
    return nxt if math.isfinite(nxt) and nxt > 0 else float(row["lr0"])


def _scale_or_one(scale: float) -> float:
    """A missing (NaN) scale means no AdaLRS multiplier: 1."""
    return float(scale) if math.isfinite(scale) else 1.0


def _check_thresholds(thresholds: Iterable[float]) -> tuple[float, ...]:
    try:
        ps = tuple(float(p) for p in thresholds)
    except (TypeError, ValueError):
        raise ValueError(f"thresholds must be a sequence of numbers, got {thresholds!r}") from None
    if not ps:
        raise ValueError("thresholds must not be empty, e.g. (0.01, 0.02, 0.05)")
    for p in ps:
        if not math.isfinite(p) or p < 0:
            raise ValueError(f"threshold {p!r} must be finite and >= 0 (0.01 means within 1%)")
    if len({threshold_label(p) for p in ps}) != len(ps):
        raise ValueError(f"thresholds must be distinct (to 10 significant digits), got {ps}")
    return ps


def _check_positive(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number > 0 or None, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return v


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
    ps = _check_thresholds(thresholds)
    baseline = _check_positive("baseline_steps", baseline_steps)
    grid_best_lr = _check_positive("grid_best_lr", grid_best_lr)
    if reference_loss is not None:
        ref = float(reference_loss)
        if not math.isfinite(ref):
            raise ValueError(f"reference_loss must be finite, got {reference_loss!r}")
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


# ----------------------------------------------------------------------------- loading
def normalize_log(df: pd.DataFrame) -> pd.DataFrame:
    """Turn a compute log (rows as the Tune side logged them) into the tidy table.

    * rows with ``record == "status"`` (``{"record": "status", "trial_id", "status"}``) are not
      reports: they set the status of every report row of that trial (the latest wins);
    * missing ``cum_*`` / ``arm_cum_*`` columns are derived as running sums of ``*_done`` per
      trial / per arm in row order (the definition of docs/design.md);
    * ``adalrs_events`` given as lists become JSON strings (done by :func:`validate_results`).
    """
    out = df.reset_index(drop=True).copy()
    if "record" in out.columns:
        is_status = out["record"].astype(str) == "status"
        status_rows = out[is_status]
        out = out[~is_status].drop(columns=["record"]).reset_index(drop=True)
        for tid, status in zip(status_rows.get("trial_id", []), status_rows.get("status", [])):
            mask = out["trial_id"].astype(str) == str(tid) if "trial_id" in out else None
            if mask is None or not mask.any():
                logger.warning("status record for trial %r without any report: ignored", tid)
                continue
            out.loc[mask, "status"] = status
    for key, prefix in (("trial_id", "cum_"), ("arm", "arm_cum_")):
        for u in UNITS:
            col, src = f"{prefix}{u}", f"{u}_done"
            if col not in out.columns and key in out.columns and src in out.columns:
                out[col] = pd.to_numeric(out[src], errors="coerce").groupby(out[key]).cumsum()
    return out


def _read_jsonl(path: Path) -> pd.DataFrame:
    lines = path.read_text(encoding="utf-8").splitlines()
    last = max((n for n, line in enumerate(lines, start=1) if line.strip()), default=0)
    records = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if n == last:  # a line cut by a crash while appending: keep what is whole
                logger.warning("%s: last line %d is not complete JSON: skipped", path, n)
                continue
            raise ValueError(f"{path}: line {n} is not valid JSON: {exc}") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}: line {n} must be a JSON object, got {line[:80]!r}")
        if isinstance(rec.get("adalrs_events"), list):
            rec["adalrs_events"] = json.dumps(rec["adalrs_events"], default=_json_default)
        records.append(rec)
    return pd.DataFrame.from_records(records)


def read_trial_status_file(directory: str | Path) -> dict[str, Any]:
    """The Tune side's :data:`TRIAL_STATUS_FILE` in ``directory`` as a dict ({} if absent)."""
    f = Path(directory) / TRIAL_STATUS_FILE
    if not f.is_file():
        return {}
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{f} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("trials", []), list):
        raise ValueError(f'{f} must hold a JSON object with a "trials" list')
    return meta


def _status_records(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"record": "status", "trial_id": str(t["trial_id"]), "status": t["status"]}
        for t in meta.get("trials", [])
        if isinstance(t, Mapping) and t.get("trial_id") is not None and t.get("status")
    ]


def find_results_file(path: str | Path) -> Path:
    """The results file for ``path``: the file itself; else the first of
    :data:`RESULT_FILE_NAMES` in the directory ``path``; else the first of them in the one
    subdirectory of ``path`` that has any (the storage path above a Tune experiment)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise ValueError(f"results path {str(p)!r} does not exist")
    for folder in (p, None):
        if folder is None:
            subs = sorted(
                {c.parent for name in RESULT_FILE_NAMES for c in p.glob(f"*/{name}") if c.is_file()}
            )
            if len(subs) > 1:
                raise ValueError(
                    f"{str(p)!r} holds results in several subdirectories "
                    f"{[s.name for s in subs]}: pass one of them"
                )
            if not subs:
                break
            folder = subs[0]
        for name in RESULT_FILE_NAMES:
            if (folder / name).is_file():
                return folder / name
    raise ValueError(
        f"no results in directory {str(p)!r} or its subdirectories: expected one of "
        f"{list(RESULT_FILE_NAMES)}"
    )


def load_results(path: str | Path) -> pd.DataFrame:
    """Load and validate a results table.

    ``path`` is a ``.parquet`` file, a JSON-lines file (``.jsonl``, one report per line), or a
    directory (or the directory above it) holding one of :data:`RESULT_FILE_NAMES`:
    ``results.parquet`` (a saved tidy table, used as is) is preferred, then the compute logs
    ``adalrs_compute_log.jsonl``, ``comparison_log.parquet``, ``comparison_log.jsonl``. A compute
    log is completed by :func:`normalize_log`, with the final trial statuses of
    :data:`TRIAL_STATUS_FILE` when that file sits beside it. A crash-cut last line of a JSON-lines
    file is skipped with a warning; any other bad line, an empty file or a table that breaks
    :func:`validate_results` raises ``ValueError``.
    """
    f = find_results_file(path)
    suffix = f.suffix.lower()
    if suffix == ".parquet":
        raw = pd.read_parquet(f)
    elif suffix in (".jsonl", ".json", ".ndjson"):
        raw = _read_jsonl(f)
    else:
        raise ValueError(f"results file {str(f)!r} must be .parquet or .jsonl, got {suffix!r}")
    if len(raw) == 0:
        raise ValueError(f"results file {str(f)!r} holds no reports")
    if f.name != "results.parquet":
        status = _status_records(read_trial_status_file(f.parent))
        if status:
            raw = pd.concat([raw, pd.DataFrame(status)], ignore_index=True)
    df = normalize_log(raw)
    if len(df) == 0:
        raise ValueError(f"results file {str(f)!r} holds no reports (only status records)")
    try:
        return validate_results(df)
    except ValueError as exc:
        hint = ""
        if "status" not in df.columns:
            hint = (
                f" (no 'status' column and no {TRIAL_STATUS_FILE} with the trials' final status "
                "beside it)"
            )
        raise ValueError(f"{f}: {exc}{hint}") from None


def merge_arms(
    base: pd.DataFrame, *additions: tuple[pd.DataFrame, Sequence[str], str]
) -> pd.DataFrame:
    """``base`` with whole arms of other results tables appended: one report over several runs.

    Each addition is ``(df, arms, source)``: every row of ``df`` whose arm is in ``arms`` is
    appended, in its own order of arrival; ``source`` names the table in errors. An arm is taken
    whole from one table, so its compute (``arm_cum_*``, counted within the arm) stays exactly
    what that run measured. The caller checks that the runs trained the same task with the same
    budget (``adalrs-ray report --add-arms`` compares their ``compare_config.json``).

    Raises ``ValueError`` naming the arm or trial when an arm is not in its table, when an arm
    would come from two tables, or when a trial id occurs in two tables.
    """
    merged = validate_results(base)
    for df, arms, source in additions:
        df = validate_results(df)
        arms = list(arms)
        if not arms:
            raise ValueError(f"no arms given to take from {source}")
        have = list(dict.fromkeys(df["arm"]))
        missing = [a for a in arms if a not in have]
        if missing:
            raise ValueError(f"arm(s) {missing} not in {source}; its arms are {have}")
        present = set(merged["arm"])
        twice = [a for a in arms if a in present]
        if twice:
            raise ValueError(
                f"arm(s) {twice} from {source} are already in the report: an arm must come "
                "whole from one run"
            )
        part = df[df["arm"].isin(arms)]
        clash = sorted(set(part["trial_id"]) & set(merged["trial_id"]))
        if clash:
            raise ValueError(
                f"trial id(s) {clash[:3]} of {source} are already in the report: "
                "were both tables made by the same run?"
            )
        merged = pd.concat([merged, part], ignore_index=True)
    return validate_results(merged)


# ----------------------------------------------------------------------------- plots
def _figure(ncols: int, nrows: int = 1, width: float = 5.0, height: float = 3.6):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(width * ncols, height * nrows), dpi=100, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _arm_colors(arms: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {a: cmap(i % 10) for i, a in enumerate(arms)}


def _save(fig, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def _with_breaks(x: np.ndarray, *ys: np.ndarray) -> tuple[np.ndarray, ...]:
    """Insert NaN where x goes backwards (a backtrack rewinds ``step``) so lines break there."""
    back = np.flatnonzero(np.diff(x) < 0) + 1
    if back.size == 0:
        return (x, *ys)
    return tuple(np.insert(np.asarray(a, dtype=float), back, np.nan) for a in (x, *ys))


def plot_best_so_far(df: pd.DataFrame, path: Path, summary: pd.DataFrame | None = None) -> Path:
    """Plot (a): best-so-far val_loss of each arm against its arm-cumulative compute (log x),
    one column per compute unit that is non-zero (steps, tokens, worker-seconds). With the
    targets of ``summary`` known, a second row zooms on them (dotted lines, labelled p%)."""
    arms = list(pd.unique(df["arm"]))
    colors = _arm_colors(arms)
    units = [u for u in UNITS if (df[f"arm_cum_{u}"] > 0).any()] or ["steps"]
    targets = _targets_from_summary(summary)
    fig, axes = _figure(len(units), 2 if targets else 1, height=3.2)
    curves = {}
    for arm in arms:
        g = df[df["arm"] == arm]
        vl = g["val_loss"].where(np.isfinite(g["val_loss"]))
        curves[arm] = (g, vl.cummin().ffill().to_numpy(dtype=float))
    for r, row in enumerate(axes):
        for ax, u in zip(row, units):
            for arm in arms:
                g, best = curves[arm]
                x = g[f"arm_cum_{u}"].to_numpy(dtype=float)
                keep = (x > 0) & np.isfinite(best)
                if keep.any():
                    ax.plot(x[keep], best[keep], drawstyle="steps-post", color=colors[arm],
                            label=arm)  # fmt: skip
            ax.set_xscale("log")
            ax.set_xlabel(f"arm-cumulative {UNIT_LABEL[u]} (log)")
            ax.set_ylabel("best val_loss so far" + (" (zoom)" if r else ""))
            ax.grid(True, which="both", alpha=0.3)
            if r == 0:
                continue
            for lab, target in targets:
                ax.axhline(target, color="grey", lw=0.8, ls=":")
                ax.annotate(lab, (1.0, target), xycoords=("axes fraction", "data"), fontsize=7,
                            ha="right", va="bottom", color="grey")  # fmt: skip
            ref = float(summary["reference_loss"].iloc[0])
            span = max(t for _, t in targets) - ref or max(abs(ref), 1.0) * 0.01
            ax.set_ylim(ref - 0.5 * span, ref + 3.0 * span)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=8)
    else:
        axes[0][0].text(0.5, 0.5, "no finite val_loss", transform=axes[0][0].transAxes,
                        ha="center")  # fmt: skip
    fig.suptitle("Best validation loss against the compute each arm spent")
    return _save(fig, path)


def _targets_from_summary(summary: pd.DataFrame | None) -> list[tuple[str, float]]:
    if summary is None or len(summary) == 0:
        return []
    ref = float(summary["reference_loss"].iloc[0])
    if not math.isfinite(ref):
        return []
    out = []
    for c in summary.columns:
        if c.startswith("steps_to_within_") and c.endswith("pct"):
            p = float(c[len("steps_to_within_") : -3]) / 100
            out.append((f"{p * 100:g}%", threshold_target(ref, p)))
    return out


def adalrs_trials(df: pd.DataFrame, adalrs_arms: Iterable[str] | None = None) -> list[str]:
    """Trial ids of AdaLRS trials: trials of ``adalrs_arms`` if given, else of every arm with
    any AdaLRS event or any finite scale != 1."""
    if adalrs_arms is not None:
        arms = set(adalrs_arms)
    else:
        has_ev = df["adalrs_events"] != "[]"
        sc = df["scale"].to_numpy(dtype=float)
        moved = np.isfinite(sc) & (sc != 1.0)
        arms = set(df.loc[has_ev | moved, "arm"])
    return list(pd.unique(df.loc[df["arm"].isin(arms), "trial_id"]))


def scale_path(rows: pd.DataFrame, events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``rows``: one trial's rows of a :func:`validate_results` table (its index is the row
    number :func:`iter_events` refers to); ``events``: that trial's :func:`iter_events` rows.

    The AdaLRS scale of one trial as ``(step, scale)`` points in order of arrival, to be drawn
    as a step function: before each report's own point ``(step, scale)`` come its events, each
    as ``(event step, scale_before)`` and ``(event step, scale_after)`` (the jump). A NaN point
    breaks the path where ``step`` goes backwards (a backtrack that rewound the run). Scales
    inside an LR ramp are only seen at reports."""
    xs: list[float] = []
    ys: list[float] = []
    by_row = events.groupby("row", sort=False) if len(events) else None
    for i, (step, scale) in zip(rows.index, zip(rows["step"], rows["scale"])):
        pts = []
        if by_row is not None and i in by_row.groups:
            for _, e in by_row.get_group(i).iterrows():
                pts += [(e["step"], e["scale_before"]), (e["step"], e["scale_after"])]
        pts.append((float(step), float(scale)))
        for x, y in pts:
            if xs and not math.isnan(xs[-1]) and x < xs[-1]:
                xs.append(math.nan)
                ys.append(math.nan)
            xs.append(float(x))
            ys.append(float(y))
    return np.asarray(xs), np.asarray(ys)


def plot_adalrs(df: pd.DataFrame, path: Path, trial_ids: Sequence[str]) -> Path:
    """Plot (b), in the manner of the paper's Fig. 2: left, the base LR ``lr0 * scale`` (or the
    scale alone when lr0 is unknown) against ``step`` for each AdaLRS trial, with kept upscales
    (``keep``) as ^ at the new LR, failed upscales (``backtrack``) as x at the LR that was tried,
    loss-rise downscales as v and non-finite losses as *; right, the training loss (solid) and
    val_loss (dotted) of the same trials. Lines break where a backtrack rewinds ``step``."""
    from matplotlib.lines import Line2D

    fig, axes = _figure(2, width=5.5)
    ax_lr, ax_loss = axes[0]
    events = iter_events(df)
    colors = _arm_colors(list(trial_ids))
    use_lr0 = bool(np.isfinite(df.loc[df["trial_id"].isin(trial_ids), "lr0"]).all())
    for tid in trial_ids:
        g = df[df["trial_id"] == tid]
        c = colors[tid]
        base = float(g["lr0"].iloc[0]) if use_lr0 else 1.0
        step = g["step"].to_numpy(dtype=float)
        ev = events[events["trial_id"] == tid]
        x, sc = scale_path(g, ev)
        label = f"{tid} (lr0={base:.3g})" if use_lr0 else tid
        ax_lr.plot(x, base * sc, color=c, drawstyle="steps-post", marker=".", ms=3, label=label)
        for col, ls in (("loss", "-"), ("val_loss", ":")):
            y = g[col].to_numpy(dtype=float)
            ax_loss.plot(*_with_breaks(step, y), color=c, ls=ls, marker=".", ms=3,
                         label=tid if col == "loss" else None)  # fmt: skip
        for kind, col, marker, color in (
            ("keep", "scale_after", "^", "tab:green"),
            ("backtrack", "tried_scale", "x", "tab:red"),
            ("boundary_downscale", "scale_after", "v", "tab:orange"),
            ("nonfinite_loss", "scale_before", "*", "black"),
        ):
            e = ev[ev["kind"] == kind]
            if len(e) == 0:
                continue
            y = e[col].fillna(e["scale_before"]).to_numpy(dtype=float) * base
            ax_lr.scatter(e["step"], y, marker=marker, color=color, s=50, zorder=3)
    ax_lr.set_yscale("log")
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("base LR (lr0 x scale)" if use_lr0 else "AdaLRS scale")
    ax_lr.grid(True, which="both", alpha=0.3)
    handles, _ = ax_lr.get_legend_handles_labels()
    for marker, color, text in (
        ("^", "tab:green", "kept upscale"),
        ("x", "tab:red", "failed upscale (backtrack)"),
        ("v", "tab:orange", "loss-rise downscale"),
        ("*", "black", "non-finite loss"),
    ):
        handles.append(Line2D([], [], ls="", marker=marker, color=color, label=text))
    ax_lr.legend(handles=handles, fontsize=7)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss (solid: train, dotted: val)")
    ax_loss.grid(True, alpha=0.3)
    ax_loss.legend(fontsize=7)
    fig.suptitle("AdaLRS learning-rate trajectories and losses")
    return _save(fig, path)


def plot_val_curves(df: pd.DataFrame, path: Path, trials: pd.DataFrame) -> Path:
    """Plot (c): val_loss against ``step`` of every trial, one panel per arm; failed trials are
    dashed red with an x at their last finite report."""
    arms = list(pd.unique(df["arm"]))
    ncols = min(3, len(arms))
    nrows = math.ceil(len(arms) / ncols)
    fig, axes = _figure(ncols, nrows, width=4.5, height=3.2)
    failed = set(trials.loc[trials["outcome"] == "failed", "trial_id"])
    for k, arm in enumerate(arms):
        ax = axes[k // ncols][k % ncols]
        for tid in pd.unique(df.loc[df["arm"] == arm, "trial_id"]):
            g = df[df["trial_id"] == tid]
            x, y = _with_breaks(g["step"].to_numpy(dtype=float), g["val_loss"].to_numpy(float))
            if tid in failed:
                ax.plot(x, y, color="tab:red", ls="--", lw=1, marker=".", ms=3,
                        label=f"{tid} (failed)")  # fmt: skip
                fin = np.isfinite(y)
                if fin.any():
                    j = np.flatnonzero(fin)[-1]
                    ax.scatter([x[j]], [y[j]], marker="x", color="tab:red", zorder=3)
            else:
                ax.plot(x, y, lw=1, marker=".", ms=3, label=tid)
        ax.set_title(arm)
        ax.set_xlabel("step")
        ax.set_ylabel("val_loss")
        ax.grid(True, alpha=0.3)
        if len(ax.get_lines()) <= 8:
            ax.legend(fontsize=6)
    for k in range(len(arms), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    fig.suptitle("Validation loss of every trial, by arm")
    return _save(fig, path)


# ----------------------------------------------------------------------------- formatting
def _fmt(v: Any, kind: str = "g") -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "n/a"
    if math.isinf(f):
        return str(f)
    if kind == "int":
        return f"{f:,.0f}" if f == round(f) else f"{f:,.1f}"
    if kind == "loss":
        return f"{f:.5g}"
    if kind == "ratio":
        return f"{f:.3g}"
    if kind == "s":
        return f"{f:,.1f}"
    return f"{f:.4g}"


def _never(v: Any, kind: str) -> str:
    return "never" if v is None or (isinstance(v, float) and math.isnan(v)) else _fmt(v, kind)


class _Doc:
    """A report as a list of blocks rendered both to Markdown and to self-contained HTML."""

    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: Sequence[str]) -> None:
        self.blocks.append(("ul", list(items)))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.blocks.append(("table", list(headers), [list(r) for r in rows]))

    def img(self, path: Path, alt: str) -> None:
        self.blocks.append(("img", path, alt))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "ul":
                out.append("\n".join(f"- {it}" for it in b[1]))
            elif b[0] == "table":
                out.append(_md_table(b[1], b[2]))
            elif b[0] == "img":
                out.append(f"![{b[2]}]({b[1].name})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        body = []
        for b in self.blocks:
            if b[0] == "h":
                body.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                body.append(f"<p>{html.escape(b[1])}</p>")
            elif b[0] == "ul":
                items = "".join(f"<li>{html.escape(it)}</li>" for it in b[1])
                body.append(f"<ul>{items}</ul>")
            elif b[0] == "table":
                head = "".join(f"<th>{html.escape(h)}</th>" for h in b[1])
                rows = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                    for r in b[2]
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif b[0] == "img":
                data = base64.b64encode(Path(b[1]).read_bytes()).decode("ascii")
                body.append(
                    f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(b[2])}</figcaption></figure>"
                )
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body)
            + "\n</body>\n</html>\n"
        )


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;"
    "color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.85em}"
    "th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f0f0f0}"
    "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    "figure{margin:1em 0}figcaption{font-size:0.85em;color:#555}"
)


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the report
def _thresholds_of(summary: pd.DataFrame) -> list[float]:
    return [
        float(c[len("steps_to_within_") : -3]) / 100
        for c in summary.columns
        if c.startswith("steps_to_within_")
    ]


def _build_doc(
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
) -> _Doc:
    doc = _Doc()
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
        doc.p(f"Reference loss (given): {_fmt(ref, 'loss')}.")
    else:
        doc.p(
            f"Reference loss, the best val_loss any arm reached: {_fmt(ref, 'loss')} "
            f"(arm {ref_point['arm']}, trial {ref_point['trial_id']}, step {ref_point['step']})."
        )
    if math.isfinite(ref):
        doc.p(
            "Targets: "
            + ", ".join(
                f"within {p * 100:g}%: val_loss <= {_fmt(threshold_target(ref, p), 'loss')}"
                for p in ps
            )
            + "."
        )

    doc.h(2, "Summary per arm")
    base_note = f"x full run = total steps / {_fmt(baseline_steps, 'int')}" if baseline_steps else (
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
                _fmt(r["trials"]),
                _fmt(r["failed_trials"]),
                _fmt(r["unfinished_trials"]),
                _fmt(r["best_final_val_loss"], "loss"),
                _fmt(r["best_trial"]) or "none",
                _fmt(r["total_steps"], "int"),
                _fmt(r["total_tokens"], "int"),
                _fmt(r["total_worker_s"], "s"),
                _fmt(r["total_full_runs"], "ratio"),
                _fmt(r["total_grid_frac"], "ratio"),
            ]
            for _, r in summary.iterrows()
        ],
    )
    doc.p(f"{base_note}; {grid_note}. best final val_loss: over finished, non-failed trials.")

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
                    _fmt(threshold_target(ref, p), "loss") if math.isfinite(ref) else "n/a",
                    _never(r[f"steps_to_{lab}"], "int"),
                    _never(r[f"tokens_to_{lab}"], "int"),
                    _never(r[f"worker_s_to_{lab}"], "s"),
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
                f"(its best val_loss at any report: {_fmt(_arm_best(df, r['arm']), 'loss')})."
            )
    doc.ul(never) if never else doc.p("Every arm reached every target.")

    doc.h(2, "Learning rate found")
    doc.table(
        ["arm", "best trial", "found LR (lr0 x scale)", "grid best LR", "ratio to grid best"],
        [
            [
                r["arm"],
                _fmt(r["best_trial"]) or "none",
                _fmt(r["found_lr"]),
                _fmt(r["grid_best_lr"]),
                _fmt(r["lr_ratio_to_grid_best"], "ratio"),
            ]
            for _, r in summary.iterrows()
        ],
    )

    doc.h(2, "Failed and unfinished trials")
    bad = trials[trials["outcome"] != "ok"]
    if len(bad) == 0:
        doc.p("No trial failed; every trial finished.")
    else:
        doc.ul(
            [
                f"{r['outcome'].upper()}: trial {r['trial_id']} of arm {r['arm']} "
                f"(lr0 {_fmt(r['lr0'])}, reports: {r['reports']}, last step {r['final_step']}, "
                f"status {r['status']})" + (f": {r['failure']}" if r["failure"] else "")
                for _, r in bad.iterrows()
            ]
        )

    doc.h(2, "Trials")
    doc.table(
        ["arm", "trial", "lr0", "outcome", "reports", "last step", "final val_loss",
         "best val_loss", "final scale", "final base LR", "steps", "keeps", "backtracks"],
        [
            [
                r["arm"], r["trial_id"], _fmt(r["lr0"]), r["outcome"], _fmt(r["reports"]),
                _fmt(r["final_step"]), _fmt(r["final_val_loss"], "loss"),
                _fmt(r["best_val_loss"], "loss"), _fmt(r["final_scale"]),
                _fmt(r["final_base_lr"]), _fmt(r["steps"], "int"), _fmt(r["keep"]),
                _fmt(r["backtrack"]),
            ]
            for _, r in trials.iterrows()
        ],
    )  # fmt: skip

    events = iter_events(df)
    events = events[~events["kind"].isin(("search_start", "search_end"))]
    if len(events):
        doc.h(2, "AdaLRS events")
        shown = events.head(_MAX_EVENT_ROWS)
        doc.table(
            ["trial", "step", "kind", "scale before", "scale after", "tried scale"],
            [
                [r["trial_id"], _fmt(r["step"], "int"), r["kind"], _fmt(r["scale_before"]),
                 _fmt(r["scale_after"]), _fmt(r["tried_scale"])]
                for _, r in shown.iterrows()
            ],
        )  # fmt: skip
        if len(events) > len(shown):
            doc.p(f"First {len(shown)} of {len(events)} events; all are in results.parquet.")

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

    if extra:
        doc.h(2, "Settings")
        doc.table(["key", "value"], [[str(k), _extra_value(v)] for k, v in extra.items()])
    return doc


_MAX_EVENT_ROWS = 200


def _ratio_cell(reached: bool, value: float) -> str:
    """ "never" if the target was not reached, "n/a" if the ratio has no denominator."""
    if not reached:
        return "never"
    return _fmt(value, "ratio")


def _arm_best(df: pd.DataFrame, arm: str) -> float:
    vl = df.loc[df["arm"] == arm, "val_loss"].to_numpy(dtype=float)
    vl = vl[np.isfinite(vl)]
    return float(vl.min()) if vl.size else math.nan


def _extra_value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=_json_default)


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
    plot (b). A failed trial (NaN val_loss, status ERROR) never stops the report: it is listed
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
    if extra is not None and not isinstance(extra, Mapping):
        raise ValueError(f"extra must be a mapping of settings or None, got {type(extra).__name__}")
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
        "thresholds": list(_check_thresholds(thresholds)),
        "grid_arm": grid_arm,
        "grid_best_lr": grid_best_lr,
        "reference_loss": reference_loss,
        "adalrs_arms": list(adalrs_arms) if adalrs_arms is not None else None,
        "extra": dict(extra) if extra is not None else None,
    }
    paths["meta"] = out / META_FILE_NAME
    paths["meta"].write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")

    plots: dict[str, Path] = {}
    plots["best_so_far"] = plot_best_so_far(df, out / "best_so_far.png", summary)
    ada = adalrs_trials(df, adalrs_arms)
    if ada:
        plots["adalrs_lr"] = plot_adalrs(df, out / "adalrs_lr.png", ada)
    plots["val_curves"] = plot_val_curves(df, out / "val_curves.png", trials)
    paths.update(plots)

    doc = _build_doc(
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
_META_KEYS += ("reference_loss", "adalrs_arms", "extra")


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
        if isinstance(total, (int, float)) and not isinstance(total, bool) and total > 0:
            kwargs["baseline_steps"] = total
            logger.info("baseline_steps = %s (total_steps of %s)", total, TRIAL_STATUS_FILE)
    return write_report(df, out_dir if out_dir is not None else d, **kwargs)


# ----------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m adalrs_ray.report DIR [--out OUT] [--baseline-steps N] ...``: rebuild the
    report of a saved directory (see :func:`build_report_from_dir`)."""
    parser = argparse.ArgumentParser(
        prog="python -m adalrs_ray.report",
        description="Build the AdaLRS comparison report from results.parquet or "
        "adalrs_compute_log.jsonl (or comparison_log.jsonl) in DIR.",
    )
    parser.add_argument("directory", help="directory with results.parquet or a compute log")
    parser.add_argument("--out", default=None, help="output directory (default: DIR)")
    parser.add_argument("--title", default=None)
    parser.add_argument("--baseline-steps", type=float, default=None,
                        help="optimizer steps of one full-budget run (enables 'x full run')")  # fmt: skip
    parser.add_argument("--thresholds", type=float, nargs="+", default=None,
                        help="p of 'within p%%' as fractions, e.g. 0.01 0.02 0.05")  # fmt: skip
    parser.add_argument("--grid-arm", default=None, help="name of the grid arm (default: grid)")
    parser.add_argument("--grid-best-lr", type=float, default=None)
    parser.add_argument("--reference-loss", type=float, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options = {
        k: v
        for k, v in {
            "title": args.title,
            "baseline_steps": args.baseline_steps,
            "thresholds": args.thresholds,
            "grid_arm": args.grid_arm,
            "grid_best_lr": args.grid_best_lr,
            "reference_loss": args.reference_loss,
        }.items()
        if v is not None
    }
    try:
        paths = build_report_from_dir(args.directory, args.out, **options)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
