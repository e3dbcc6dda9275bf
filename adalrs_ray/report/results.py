"""The tidy results table: its validation, its AdaLRS events, and loading it from the files a
comparison leaves behind (a saved ``results.parquet`` or the Tune side's compute log), plus
merging whole arms of several runs.

Rules of the table: :func:`validate_results` and ``docs/report.md``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adalrs_ray.report.contract import (
    ARM_CUM_COLUMNS,
    COMPUTE_COLUMNS,
    CUM_COLUMNS,
    ID_COLUMNS,
    INT_COLUMNS,
    NAN_OK_COLUMNS,
    POSITIVE_COLUMNS,
    REQUIRED_COLUMNS,
    RESULT_FILE_NAMES,
    TRIAL_STATUS_FILE,
    UNITS,
)

logger = logging.getLogger(__name__)


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

    trial_ids = out["trial_id"].tolist()
    out["adalrs_events"] = [  # most reports carry no event: "[]" is already normal
        v if isinstance(v, str) and v == "[]" else _normalise_events(v, i, trial_ids[i])
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
    return json.dumps([dict(e) for e in events], default=json_default)


def json_default(obj: Any) -> Any:
    """``default=`` of :func:`json.dumps` for the report: numpy scalars as Python numbers,
    anything else as its ``str``."""
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
        if raw == "[]":  # a validated table holds JSON strings
            continue
        for ev in json.loads(raw):
            records.append(
                {
                    "arm": arm,
                    "trial_id": tid,
                    "lr0": lr0,
                    "row": i,
                    "step": number_or_nan(ev.get("step")),
                    "kind": str(ev.get("kind")),
                    "scale_before": number_or_nan(ev.get("scale_before")),
                    "scale_after": number_or_nan(ev.get("scale_after")),
                    "tried_scale": number_or_nan(ev.get("tried_scale")),
                }
            )
    cols = ["arm", "trial_id", "lr0", "row", "step", "kind"]
    cols += ["scale_before", "scale_after", "tried_scale"]
    return pd.DataFrame.from_records(records, columns=cols)


def number_or_nan(v: Any) -> float:
    """``float(v)``, or NaN when ``v`` is not a number (an event field that is missing)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


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
            rec["adalrs_events"] = json.dumps(rec["adalrs_events"], default=json_default)
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
