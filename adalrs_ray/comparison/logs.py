"""The files a comparison leaves behind, written while it runs and read back afterwards.

:class:`ComparisonFiles` appends one line per report to ``adalrs_compute_log.jsonl`` and rewrites
``adalrs_comparison.json`` (arms, each trial's final status, the exploit log) in the experiment
directory; a failed write is logged, never raised, so the log cannot kill an experiment.
:func:`load_comparison` rebuilds the tables from a saved directory; :func:`results_frame` and
:func:`compute_frame` build them from the rows and trial records. The file format is documented in
docs/tune.md. No Tune import: a comparison's tables rebuild anywhere.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from adalrs_ray.comparison.accounting import EXTRA_COLUMNS, RESULT_COLUMNS
from adalrs_ray.report.contract import COMPARISON_FILE, COMPUTE_LOG_FILE, LOG_VERSION

logger = logging.getLogger(__name__)


class ComparisonFiles:
    """Writes the compute log and the comparison file of a run into ``log_dir`` (no-ops while
    ``log_dir`` is ``None``, e.g. stub trials without storage)."""

    def __init__(self, log_dir: str | os.PathLike | None = None) -> None:
        self.log_dir = None if log_dir is None else str(log_dir)

    def append_row(self, row: Mapping[str, Any]) -> None:
        """Append one report row to the compute log (one JSON object per line)."""
        if self.log_dir is None:
            return
        try:
            os.makedirs(self.log_dir, exist_ok=True)
            with open(os.path.join(self.log_dir, COMPUTE_LOG_FILE), "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as exc:  # never kill the experiment over the log
            logger.warning("could not append to the compute log in %s: %s", self.log_dir, exc)

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        """Replace the comparison file with ``meta`` (atomically: written aside, then moved)."""
        if self.log_dir is None:
            return
        path = os.path.join(self.log_dir, COMPARISON_FILE)
        try:
            os.makedirs(self.log_dir, exist_ok=True)
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(meta, f, indent=1)
            os.replace(tmp, path)
        except OSError as exc:
            logger.warning("could not write %s: %s", path, exc)


def results_frame(rows: Sequence[Mapping[str, Any]], trials: Sequence[Mapping[str, Any]]):
    """The tidy per-report table: :data:`RESULT_COLUMNS` then :data:`EXTRA_COLUMNS`, one row per
    report, ``status`` being the trial's final status (see :data:`STATUSES`)."""
    import pandas as pd

    status = {t["trial_id"]: t.get("status") for t in trials}
    frame = pd.DataFrame(list(rows), columns=[c for c in (*RESULT_COLUMNS, *EXTRA_COLUMNS)])
    frame["status"] = frame["trial_id"].map(status)
    return frame


def compute_frame(
    results,
    trials: Sequence[Mapping[str, Any]],
    by: str = "arm",
    *,
    arms: Sequence[Mapping[str, Any]] | None = None,
    mode: str = "min",
):
    """Compute per trial or per arm from a results table and the trial records.

    ``arms`` (the ``arms`` list of the comparison file) orders the arms and names their
    schedulers; ``mode`` says whether the best metric is the min or the max.

    Per trial: ``arm, trial_id, slot, lr0, status, reports, steps, tokens, worker_s, restarts,
    retries, restart_overhead_s, exploits, rewound_steps, backtracked_steps, final_step, final_lr,
    last_metric, best_metric``. Per arm: ``arm, scheduler, trials, completed, stopped, errors,
    reports, steps, tokens, worker_s, steps_in_stopped_trials, restarts, retries,
    restart_overhead_s, exploits, rewound_steps, backtracked_steps, best_metric, best_trial_id, best_lr``.
    """
    import pandas as pd

    if by not in ("arm", "trial"):
        raise ValueError(f"by is {by!r}, but must be 'arm' or 'trial'")
    if mode not in ("min", "max"):
        raise ValueError(f"mode is {mode!r}, but must be 'min' or 'max'")
    per_trial = []
    groups = dict(tuple(results.groupby("trial_id", sort=False))) if len(results) else {}
    for t in trials:
        g = groups.get(t["trial_id"])
        rec = {
            "arm": t["arm"],
            "trial_id": t["trial_id"],
            "slot": t.get("slot"),
            "lr0": t.get("lr0"),
            "status": t.get("status"),
            "reports": 0,
            "steps": 0.0,
            "tokens": 0.0,
            "worker_s": 0.0,
            "restarts": 0,
            "retries": 0,
            "restart_overhead_s": 0.0,
            "exploits": int(t.get("exploits") or 0),
            "rewound_steps": 0.0,
            "backtracked_steps": 0.0,
            "final_step": math.nan,
            "final_lr": math.nan,
            "last_metric": math.nan,
            "best_metric": math.nan,
        }
        if g is not None and len(g):
            metric = pd.to_numeric(g["metric"], errors="coerce")
            rec.update(
                reports=len(g),
                steps=float(g["steps_done"].sum()),
                tokens=float(g["tokens_done"].sum()),
                worker_s=float(g["worker_s_done"].sum()),
                restarts=int(g["restart"].astype(bool).sum()),
                # restarts after a failed process (Tune's max_failures), among the restarts
                retries=int((g["restart_kind"].astype(str) == "retry").sum()),
                restart_overhead_s=float(pd.to_numeric(g["restart_overhead_s"]).fillna(0).sum()),
                rewound_steps=float(g["rewound_steps"].sum()),
                backtracked_steps=float(g["backtracked_steps"].sum()),
                final_step=g["step"].iloc[-1],
                final_lr=g["lr"].iloc[-1],
                last_metric=metric.iloc[-1],
                best_metric=metric.min() if mode == "min" else metric.max(),
            )
        per_trial.append(rec)
    trial_frame = pd.DataFrame(per_trial)
    if by == "trial":
        return trial_frame
    arm_rows = []
    order = [a["key"] for a in arms] if arms else list(dict.fromkeys(t["arm"] for t in trials))
    sched_of = {a["key"]: a.get("scheduler") for a in arms} if arms else {}
    for key in order:
        g = trial_frame[trial_frame["arm"] == key] if len(trial_frame) else trial_frame
        best_id, best_lr, best = None, math.nan, math.nan
        if len(results):
            r = results[results["arm"] == key]
            metric = pd.to_numeric(r["metric"], errors="coerce")
            if metric.notna().any():
                idx = metric.idxmin() if mode == "min" else metric.idxmax()
                best, best_id, best_lr = metric[idx], r.at[idx, "trial_id"], r.at[idx, "lr"]
        n = len(g)
        arm_rows.append(
            {
                "arm": key,
                "scheduler": sched_of.get(key),
                "trials": n,
                "completed": int((g["status"] == "completed").sum()) if n else 0,
                "stopped": int((g["status"] == "stopped").sum()) if n else 0,
                "errors": int((g["status"] == "error").sum()) if n else 0,
                "reports": int(g["reports"].sum()) if n else 0,
                "steps": float(g["steps"].sum()) if n else 0.0,
                "tokens": float(g["tokens"].sum()) if n else 0.0,
                "worker_s": float(g["worker_s"].sum()) if n else 0.0,
                "steps_in_stopped_trials": float(g.loc[g["status"] == "stopped", "steps"].sum())
                if n
                else 0.0,
                "restarts": int(g["restarts"].sum()) if n else 0,
                "retries": int(g["retries"].sum()) if n else 0,
                "restart_overhead_s": float(g["restart_overhead_s"].sum()) if n else 0.0,
                "exploits": int(g["exploits"].sum()) if n else 0,
                "rewound_steps": float(g["rewound_steps"].sum()) if n else 0.0,
                "backtracked_steps": float(g["backtracked_steps"].sum()) if n else 0.0,
                "best_metric": best,
                "best_trial_id": best_id,
                "best_lr": best_lr,
            }
        )
    return pd.DataFrame(arm_rows)


class ComparisonLog(NamedTuple):
    """A saved comparison: ``meta`` (metric, mode, budgets, arms), ``trials`` (one row per
    trial: arm, slot, lr0, budget_steps, final status) and ``results`` (the tidy per-report
    table)."""

    meta: dict[str, Any]
    trials: Any
    results: Any

    def compute_table(self, by: str = "arm"):
        return compute_frame(
            self.results,
            self.trials.to_dict("records"),
            by,
            arms=self.meta.get("arms"),
            mode=self.meta.get("mode", "min"),
        )


def find_log_dir(path: str | os.PathLike) -> Path:
    """The directory holding the comparison files: ``path`` itself, or the one directory below
    it that holds them (an experiment's storage path). Raises ``FileNotFoundError``."""
    root = Path(path)
    if (root / COMPARISON_FILE).is_file():
        return root
    found = sorted(p.parent for p in root.glob(f"*/{COMPARISON_FILE}"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(
            f"no {COMPARISON_FILE} in {root} or its subdirectories: is it the experiment "
            "directory of a run scheduled by AdaLRSComparison?"
        )
    raise FileNotFoundError(
        f"{root} holds several comparisons ({[str(p) for p in found]}); pass one of them"
    )


def load_comparison(path: str | os.PathLike) -> ComparisonLog:
    """Rebuild the trial and per-report tables of a saved comparison (its experiment directory,
    or the storage path above it)."""
    import pandas as pd

    folder = find_log_dir(path)
    with open(folder / COMPARISON_FILE) as f:
        meta = json.load(f)
    if meta.get("version") != LOG_VERSION:
        raise ValueError(
            f"{folder / COMPARISON_FILE} has version {meta.get('version')!r}, but this code "
            f"reads version {LOG_VERSION}"
        )
    rows = []
    log = folder / COMPUTE_LOG_FILE
    if log.is_file():
        with open(log) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except ValueError:  # a line cut by a crash: keep what is whole
                    logger.warning("%s line %d is not JSON: skipped", log, n)
    trials = meta.get("trials", [])
    trial_frame = pd.DataFrame(
        trials, columns=["trial_id", "arm", "slot", "lr0", "budget_steps", "status", "exploits"]
    )
    return ComparisonLog(meta=meta, trials=trial_frame, results=results_frame(rows, trials))


__all__ = [
    "ComparisonFiles",
    "ComparisonLog",
    "compute_frame",
    "find_log_dir",
    "load_comparison",
    "results_frame",
]
