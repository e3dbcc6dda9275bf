"""The LR sweep: the pilot study behind Hypothesis 1 of Dong et al. (arXiv 2506.13274, Sec. 3).

A grid of learning rates over a log range (:func:`lr_grid`), one LM run of :mod:`train_loops.lm`
per LR (:func:`run_sweep`); for each LR the final training loss and the loss-descent velocity V
(how fast the loss falls per step) *at matched loss levels*, so that LRs are compared where their
models are equally trained. The paper's claim is that L(eta) and V(eta) are near-convex in eta
and share one optimum; :func:`run_sweep` writes a table (``sweep.parquet``, ``sweep.md``), the
optima (``sweep.json``) and a plot (``sweep.png``) that show whether they do.

Velocity at a loss level L (see :func:`velocity_at_level`): the first window of ``window``
steps whose mean loss is at or below L; V is minus the least-squares slope of its losses. The
levels are spread between the highest level every run passes through and the lowest one at
least half the runs reach (:func:`matched_levels`).

Example::

    from train_loops.lm import LMConfig
    from adalrs_ray.experiments.sweep import lr_grid, run_sweep

    base = LMConfig(steps=300, schedule="constant", device="cpu")
    result = run_sweep(base, lr_grid(1e-4, 1e-1, 7), "runs/sweep", levels=3)
    print(result.markdown)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adalrs_ray.core.stats import log_spaced, slope

logger = logging.getLogger(__name__)

__all__ = [
    "SweepResult",
    "analyse_sweep",
    "lr_grid",
    "matched_levels",
    "optima",
    "plot_sweep",
    "run_sweep",
    "slope",
    "sweep_markdown",
    "trailing_mean",
    "velocity_at_level",
]


# ------------------------------------------------------------------------------ analysis
def trailing_mean(losses: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` losses at each step (NaN for the first window-1 steps and
    from the first non-finite loss on)."""
    x = np.asarray(losses, dtype=float)
    out = np.full(len(x), np.nan)
    if len(x) < window:
        return out
    c = np.concatenate([[0.0], np.cumsum(np.where(np.isfinite(x), x, np.nan))])
    out[window - 1 :] = (c[window:] - c[:-window]) / window
    return out


def velocity_at_level(losses: np.ndarray, level: float, window: int) -> tuple[float, float]:
    """``(V, t*)``: descent velocity of the first ``window``-step window whose mean loss is at or
    below ``level``; that window ends at step t*.

    V = -(least-squares slope of the window's raw losses), in loss per step, positive when the
    loss falls. This is how AdaLRS compares velocities at matched loss (the reference window is
    the one whose mean loss is closest to the new window's). ``(nan, nan)`` if the run never
    gets down to ``level``.
    """
    sm = trailing_mean(losses, window)
    hit = np.flatnonzero(np.nan_to_num(sm, nan=np.inf) <= level)
    if hit.size == 0:
        return float("nan"), float("nan")
    t = int(hit[0])
    return -slope(np.asarray(losses[t - window + 1 : t + 1])), float(t)


def matched_levels(curves: Sequence[np.ndarray], window: int, n: int) -> list[float]:
    """``n`` loss levels, evenly spaced between the highest level every run passes through (the
    lowest first trailing mean) and the lowest one that at least half the runs reach (the
    median of the runs' minimum trailing means)."""
    firsts, mins = [], []
    for c in curves:
        sm = trailing_mean(c, window)
        finite = sm[np.isfinite(sm)]
        if finite.size:
            firsts.append(finite[0])
            mins.append(finite.min())
    if not firsts or n < 1:
        return []
    hi, lo = min(firsts), float(np.median(mins))
    if not hi > lo:
        return []
    return [float(v) for v in np.linspace(hi, lo, n + 2)[1:-1]]


def analyse_sweep(runs: Sequence[dict[str, Any]], window: int, n_levels: int) -> Any:
    """The pilot-study table: one row per LR (``runs``: dicts with lr, losses, status, val_loss)."""
    import pandas as pd

    curves = [np.asarray(r["losses"], dtype=float) for r in runs]
    levels = matched_levels(curves, window, n_levels)
    rows = []
    for r, c in zip(runs, curves):
        finite_tail = c[-window:]
        final = float(np.mean(finite_tail)) if np.all(np.isfinite(finite_tail)) else float("nan")
        row = {
            "lr": r["lr"],
            "status": r["status"],
            "steps": len(c),
            "final_loss": final,
            "final_val_loss": r.get("val_loss", float("nan")),
        }
        for level in levels:
            v, t = velocity_at_level(c, level, window)
            row[f"v@{level:.3f}"] = v
            row[f"t@{level:.3f}"] = t
        rows.append(row)
    df = pd.DataFrame(rows).sort_values("lr").reset_index(drop=True)
    df.attrs["levels"] = levels
    return df


def optima(df: Any) -> dict[str, Any]:
    """Best LR by final loss and by velocity at each level; whether they agree within one grid
    point (Hypothesis 1)."""
    out: dict[str, Any] = {"levels": list(df.attrs.get("levels", []))}
    loss = df["final_loss"].to_numpy(dtype=float)
    if not np.isfinite(loss).any():
        out.update(lr_by_loss=None, lr_by_velocity={}, shared_optimum=False)
        return out
    i_loss = int(np.nanargmin(loss))
    out["lr_by_loss"] = float(df["lr"].iloc[i_loss])
    by_v, idx = {}, []
    for col in [c for c in df.columns if c.startswith("v@")]:
        v = df[col].to_numpy(dtype=float)
        if np.isfinite(v).any():
            j = int(np.nanargmax(v))
            by_v[col[2:]] = float(df["lr"].iloc[j])
            idx.append(j)
    out["lr_by_velocity"] = by_v
    out["shared_optimum"] = bool(idx) and all(abs(j - i_loss) <= 1 for j in idx)
    return out


def _fmt(v: float | None) -> str:
    return "none" if v is None else f"{v:.3g}"


def sweep_markdown(df: Any, best: dict[str, Any], command: str) -> str:
    """The table, the optima and a legend as Markdown (``sweep.md``)."""
    cols = list(df.columns)
    lines = [
        "# LR sweep (AdaLRS pilot study, Hypothesis 1)",
        "",
        f"Command: `{command}`",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, float):
                cells.append(f"{v:.4g}" if c != "lr" else f"{v:.3g}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"- best LR by final loss: {_fmt(best['lr_by_loss'])}",
        "- best LR by descent velocity at each matched loss level: "
        + ", ".join(f"{level}: {_fmt(lr)}" for level, lr in best["lr_by_velocity"].items()),
        f"- shared optimum (within one grid point): {best['shared_optimum']}",
        "",
        "`v@L`: loss-descent velocity (-slope, loss per step) of the first slope window whose "
        "mean loss is <= L; `t@L`: the last step of that window. `final_loss`: mean training loss of the last slope window.",
        "",
    ]
    return "\n".join(lines)


def plot_sweep(
    runs: Sequence[dict[str, Any]], df: Any, best: dict[str, Any], window: int, path: Path
) -> None:
    """Three panels: loss curves, final loss vs LR, velocity at matched levels vs LR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    cmap = plt.get_cmap("viridis")
    for i, r in enumerate(sorted(runs, key=lambda r: r["lr"])):
        sm = trailing_mean(np.asarray(r["losses"], dtype=float), window)
        axes[0].plot(sm, color=cmap(i / max(1, len(runs) - 1)), label=f"{r['lr']:.2g}")
    for level in best["levels"]:
        axes[0].axhline(level, color="grey", ls="--", lw=0.8)
    axes[0].set(
        xlabel="step", ylabel=f"training loss (trailing mean of {window})", title="loss curves"
    )
    axes[0].legend(title="LR", fontsize=7)
    lr = df["lr"].to_numpy(dtype=float)
    axes[1].plot(lr, df["final_loss"], "o-")
    if best["lr_by_loss"] is not None:
        axes[1].axvline(
            best["lr_by_loss"], color="C3", ls=":", label=f"best {best['lr_by_loss']:.2g}"
        )
        axes[1].legend()
    axes[1].set(xscale="log", xlabel="learning rate", ylabel="final training loss", title="L(eta)")
    for k, col in enumerate(c for c in df.columns if c.startswith("v@")):
        axes[2].plot(lr, df[col], "o-", color=f"C{k}", label=f"at loss {col[2:]}")
        j = best["lr_by_velocity"].get(col[2:])
        if j is not None:
            axes[2].axvline(j, color=f"C{k}", ls=":")
    axes[2].set(
        xscale="log",
        xlabel="learning rate",
        ylabel="descent velocity (loss/step)",
        title="V(eta) at matched loss",
    )
    axes[2].legend(fontsize=7)
    fig.suptitle(f"shared optimum: {best['shared_optimum']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def lr_grid(lr_min: float, lr_max: float, points: int) -> list[float]:
    """``points`` LRs evenly spaced in log between ``lr_min`` and ``lr_max`` (both included).

    :func:`adalrs_ray.core.stats.log_spaced` (``np.geomspace``), unrounded: a sweep's run
    directories are named after these values and reused by them.
    """
    for name, v in (("lr_min", lr_min), ("lr_max", lr_max)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"--{name.replace('_', '-')} is {v}, but must be a finite number > 0")
    if not lr_min < lr_max:
        raise ValueError(f"--lr-min {lr_min} must be < --lr-max {lr_max}")
    if points < 2:
        raise ValueError(f"--points is {points}, but must be >= 2")
    return log_spaced(lr_min, lr_max, points)


# ------------------------------------------------------------------------------ the sweep
@dataclass(frozen=True)
class SweepResult:
    """What :func:`run_sweep` wrote: the table (one row per LR), the optima, ``sweep.md``'s text
    and the slope window."""

    table: Any
    optima: dict[str, Any]
    markdown: str
    window: int


def run_sweep(
    base: Any,
    lrs: Sequence[float],
    out: str | Path,
    *,
    window: int | None = None,
    levels: int = 3,
    procs: int = 1,
    command: str = "",
    progress: bool = False,
) -> SweepResult:
    """Train one LM run per LR and write the pilot study's table, optima and plot to ``out``.

    Args:
        base: the :class:`train_loops.lm.LMConfig` of every run; each run gets its ``lr``, the
            directory ``<out>/runs/lr<i>_<lr>`` and ``save_final=False``. A run whose directory
            holds the summary of a finished run of the same config is reused, not trained again.
        lrs: the learning rates (e.g. :func:`lr_grid`).
        out: the sweep directory: ``sweep.parquet``, ``sweep.md``, ``sweep.json``, ``sweep.png``.
        window: steps per slope fit and per final-loss mean (default ``max(5, steps // 20)``).
        levels: matched loss levels (>= 1).
        procs: runs trained at once, each in its own process (>= 1).
        command: the command line shown in ``sweep.md``.
        progress: a progress bar (on a terminal).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from train_loops.lm import LMConfig, run

    steps = base.steps
    window = window or max(5, steps // 20)
    if not 2 <= window <= steps:
        raise ValueError(f"--slope-window is {window}, but must be in [2, --steps={steps}]")
    if levels < 1:
        raise ValueError(f"--levels is {levels}, but must be >= 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if procs < 1:
        raise ValueError(f"--procs is {procs}, but must be >= 1")
    cfgs, summaries = [], {}
    for i, lr in enumerate(lrs):
        run_dir = out / "runs" / f"lr{i:02d}_{lr:.3g}"
        cfg = dataclasses.replace(base, lr=lr, out_dir=str(run_dir), save_final=False)
        cfgs.append(cfg)
        summary_path = run_dir / "summary.json"
        if summary_path.is_file():  # reuse a finished run of the same config
            old = json.loads(summary_path.read_text())
            if LMConfig.from_dict(old["config"]) == cfg and old["status"] != "stopped":
                summaries[i] = old
                logger.info("reusing %s", run_dir)
    todo = [i for i in range(len(lrs)) if i not in summaries]
    bar = tqdm(
        total=len(lrs),
        initial=len(summaries),
        desc="sweep",
        disable=not progress or not sys.stderr.isatty(),
    )
    if procs == 1 or len(todo) <= 1:
        for i in todo:
            summaries[i] = run(cfgs[i])
            bar.update()
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(min(procs, len(todo))) as pool:
            futures = {pool.submit(run, cfgs[i]): i for i in todo}
            for fut in as_completed(futures):
                summaries[futures[fut]] = fut.result()
                bar.update()
    bar.close()
    runs = []
    for i, lr in enumerate(lrs):
        metrics = Path(cfgs[i].out_dir) / "metrics.parquet"
        losses = pd.read_parquet(metrics, columns=["loss"])["loss"].to_numpy()
        runs.append(
            {
                "lr": lr,
                "losses": losses,
                "status": summaries[i]["status"],
                "val_loss": summaries[i]["val_loss"],
            }
        )
    df = analyse_sweep(runs, window, levels)
    best = optima(df)
    markdown = sweep_markdown(df, best, command)
    df.to_parquet(out / "sweep.parquet", index=False)
    (out / "sweep.md").write_text(markdown)
    (out / "sweep.json").write_text(json.dumps({"window": window, **best}, indent=2))
    plot_sweep(runs, df, best, window, out / "sweep.png")
    return SweepResult(table=df, optima=best, markdown=markdown, window=window)
