"""The report's PNG plots: (a) best-so-far val_loss against the compute each arm spent, (b) the
AdaLRS LR trajectories and losses (the paper's Fig. 2), (c) the val_loss of every trial by arm.

Matplotlib through :class:`matplotlib.figure.Figure` only, never pyplot: no global state and no
GUI backend, so plots draw in any thread and on a headless machine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adalrs_ray.report.contract import UNIT_LABEL, UNITS
from adalrs_ray.report.results import iter_events
from adalrs_ray.report.tables import threshold_target


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


def plot_adalrs(
    df: pd.DataFrame, path: Path, trial_ids: Sequence[str], lr_trial_ids: Sequence[str] = ()
) -> Path:
    """Plot (b), in the manner of the paper's Fig. 2: left, the base LR ``lr0 * scale`` (or the
    scale alone when lr0 is unknown) against ``step`` for each AdaLRS trial, with kept upscales
    (``keep``) as ^ at the new LR, failed upscales (``backtrack``) as x at the LR that was tried,
    loss-rise downscales as v and non-finite losses as *; right, the training loss (solid) and
    val_loss (dotted) of the same trials. Lines break where a backtrack rewinds ``step``.
    ``lr_trial_ids``: trials of optimizers that set their own LR (Prodigy, Schedule-Free), drawn
    dashed with the effective ``lr`` they report (at each report) and their losses."""
    from matplotlib.lines import Line2D

    fig, axes = _figure(2, width=5.5)
    ax_lr, ax_loss = axes[0]
    events = iter_events(df)
    colors = _arm_colors([*trial_ids, *lr_trial_ids])
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
    for tid in lr_trial_ids:
        g = df[df["trial_id"] == tid]
        step = g["step"].to_numpy(dtype=float)
        label = f"{tid} ({g['arm'].iloc[0]}: its effective LR)"
        ax_lr.plot(step, g["lr"].to_numpy(dtype=float), color=colors[tid], ls="--", marker=".",
                   ms=3, label=label)  # fmt: skip
        for col, ls in (("loss", "-"), ("val_loss", ":")):
            y = g[col].to_numpy(dtype=float)
            ax_loss.plot(step, y, color=colors[tid], ls=ls, marker=".", ms=3,
                         label=tid if col == "loss" else None)  # fmt: skip
    ax_lr.set_yscale("log")
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("base LR (lr0 x scale)" if use_lr0 else "AdaLRS scale")
    if lr_trial_ids:
        ax_lr.set_ylabel("AdaLRS: lr0 x scale; dashed: effective LR")
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
