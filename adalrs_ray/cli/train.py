"""``adalrs-ray train`` and ``adalrs-ray sweep``: the LM pretraining task from the command line.

``train`` runs one pretraining run of :mod:`train_loops.lm` (AdaLRS on or off) and writes
``metrics.parquet``, ``summary.json`` and checkpoints to ``--out``.

``sweep`` is the pilot study behind Hypothesis 1 of Dong et al. (arXiv 2506.13274, Sec. 3): a grid
of constant learning rates over a log range; for each LR the final training loss and the
loss-descent velocity V (how fast the loss falls per step) *at matched loss levels*, so that LRs
are compared where their models are equally trained. The paper's claim is that L(eta) and
V(eta) are near-convex in eta and share one optimum; the sweep writes a table
(``sweep.parquet``, ``sweep.md``) and a plot (``sweep.png``) that show whether they do.

Velocity at a loss level L (see :func:`velocity_at_level`): the first window of ``window``
steps whose mean loss is at or below L; V is minus the least-squares slope of its losses. The levels are spread between the highest level every run
passes through and the lowest one at least half the runs reach (:func:`matched_levels`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ arguments
def _add_common(p: argparse.ArgumentParser) -> None:
    from train_loops.model import DTYPES, PRESETS

    g = p.add_argument_group("data and model")
    g.add_argument("--data", help="directory, text file or .parquet (default: the stdlib corpus)")
    g.add_argument("--text-column", default="text", help="Parquet text column (default: text)")
    g.add_argument("--tokenizer", choices=("byte", "bpe"), default="byte")
    g.add_argument("--bpe-vocab", type=int, default=4096, help="BPE vocabulary size")
    g.add_argument("--cache-dir", help="token cache (default $ADALRS_RAY_CACHE or ~/.cache)")
    g.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    g.add_argument("--seq-len", type=int, default=128)
    g.add_argument("--batch-size", type=int, default=16, help="sequences per step per worker")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=1000)
    g.add_argument("--warmup", type=int, default=0, help="warmup steps of the base schedule")
    g.add_argument("--weight-decay", type=float, default=0.1)
    g.add_argument("--grad-clip", type=float, default=1.0, help="0 disables clipping")
    g = p.add_argument_group("run")
    g.add_argument("--eval-every", type=int, default=0)
    g.add_argument("--eval-batches", type=int, default=8)
    g.add_argument("--report-every", type=int, help="steps per report (default: AdaLRS window)")
    g.add_argument("--log-every", type=int, default=100)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, npu, mps (':index' ok)")
    g.add_argument("--dtype", choices=DTYPES, default="float32", help="bfloat16: autocast")
    g.add_argument("--threads", type=int, help="torch.set_num_threads")
    g.add_argument("--quiet", action="store_true", help="no progress bar, no summary")


def parse_adalrs_opts(items: Sequence[str] | None) -> dict[str, Any]:
    """``--adalrs-opt KEY=VALUE`` items as a dict (VALUE parsed as JSON, else kept a string)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--adalrs-opt {item!r} must look like KEY=VALUE (e.g. lam=0.95)")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _config(args: argparse.Namespace, **overrides: Any) -> Any:
    from train_loops.lm import LMConfig

    kw: dict[str, Any] = dict(
        preset=args.preset,
        data=args.data,
        text_column=args.text_column,
        tokenizer=args.tokenizer,
        bpe_vocab_size=args.bpe_vocab,
        cache_dir=args.cache_dir,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        steps=args.steps,
        warmup_steps=args.warmup,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        eval_every=args.eval_every,
        eval_batches=args.eval_batches,
        report_every=args.report_every,
        log_every=args.log_every,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        num_threads=args.threads,
    )
    kw.update(overrides)
    return LMConfig(**kw)


class _Progress:
    """A tqdm bar driven by ``LoopHooks.on_step``; disabled when quiet or not on a terminal."""

    def __init__(self, total: int, quiet: bool, desc: str):
        from tqdm.auto import tqdm

        disable = quiet or not sys.stderr.isatty()
        self.bar = tqdm(total=total, desc=desc, disable=disable, dynamic_ncols=True)

    def on_step(self, step: int, row: dict[str, Any]) -> None:
        self.bar.n = step + 1
        if step % 10 == 0:
            self.bar.set_postfix(
                loss=f"{row['loss']:.3f}",
                lr=f"{row['lr']:.2e}",
                scale=f"{row['scale']:.2f}",
                refresh=False,
            )
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


# ------------------------------------------------------------------------------ train
def register(subparsers: Any) -> None:
    """Add the ``train`` and ``sweep`` sub-commands (see :mod:`adalrs_ray.cli`)."""
    p = subparsers.add_parser(
        "train",
        help="pretrain a Qwen2 LM (AdaLRS on or off)",
        description="Pretrain a randomly initialised Qwen2 LM on a corpus, AdaLRS on or off; "
        "writes metrics.parquet, summary.json and checkpoints to --out.",
    )
    _add_common(p)
    p.add_argument("--lr", type=float, default=1e-3, help="peak LR of the base schedule")
    p.add_argument("--schedule", choices=("constant", "cosine", "wsd"), default="cosine")
    p.add_argument("--adalrs", action="store_true", help="search the LR with AdaLRS")
    p.add_argument("--window", type=int, help="AdaLRS window k (default: the controller's)")
    p.add_argument(
        "--adalrs-opt",
        action="append",
        metavar="KEY=VALUE",
        help="another AdaLRSConfig field, e.g. lam=0.95, end_ratio=0.35 (repeatable)",
    )
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.add_argument("--out", help="run directory (default runs/train-<time>)")
    p.add_argument("--resume", help="checkpoint or run directory to resume")
    p.add_argument("--init-from", help="checkpoint or run directory: weights only")
    p.add_argument(
        "--workers", type=int, default=1, help="Ray Train V2 workers (>1: data parallel on Ray)"
    )
    p.add_argument(
        "--address", help="Ray cluster to join ('auto' or host:port; default: a local Ray)"
    )
    p.set_defaults(func=cmd_train)

    s = subparsers.add_parser(
        "sweep",
        help="pilot study: constant-LR grid, final loss and descent velocity per LR",
        description="Hypothesis 1 of the AdaLRS paper: train one run per LR of a log grid and "
        "compare the final loss and the loss-descent velocity at matched loss levels; "
        "writes sweep.parquet, sweep.md and sweep.png to --out.",
    )
    _add_common(s)
    s.add_argument("--lr-min", type=float, default=1e-4)
    s.add_argument("--lr-max", type=float, default=1e-1)
    s.add_argument("--points", type=int, default=7, help="LRs in the log grid")
    s.add_argument("--schedule", choices=("constant", "cosine", "wsd"), default="constant")
    s.add_argument("--slope-window", type=int, help="steps per slope fit (default steps//20)")
    s.add_argument("--levels", type=int, default=3, help="matched loss levels")
    s.add_argument(
        "--procs",
        type=int,
        default=1,
        help="runs trained at once, each in its own process (give each --threads cores)",
    )
    s.add_argument("--out", help="sweep directory (default runs/sweep-<time>)")
    s.set_defaults(func=cmd_sweep)


def _default_out(kind: str) -> str:
    return str(Path("runs") / f"{kind}-{_dt.datetime.now():%Y%m%d-%H%M%S}")


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from train_loops.lm import LMTrainer, LoopHooks

    cfg = _config(
        args,
        lr=args.lr,
        schedule=args.schedule,
        adalrs=args.adalrs,
        window=args.window,
        adalrs_options=parse_adalrs_opts(args.adalrs_opt),
        checkpoint_every=args.checkpoint_every,
        out_dir=args.out or _default_out("train"),
        resume=args.resume,
        init_from=args.init_from,
    )
    if args.workers != 1 or args.address:  # Ray Train V2 workers: adalrs_ray.ray_train
        from train_loops.lm_ray_train import run_lm_trainer

        summary = run_lm_trainer(cfg, args.workers, args.address)
    else:
        progress = _Progress(cfg.steps, args.quiet, "train")
        trainer = LMTrainer(cfg, LoopHooks(on_step=progress.on_step))
        try:
            with logging_redirect_tqdm():
                trainer.setup()
                progress.bar.n = trainer.step
                summary = trainer.train()
        finally:
            progress.close()
            trainer.cleanup()
    if not args.quiet:
        print(
            f"{summary['status']}: {summary['steps']} steps, train loss {summary['train_loss']:.4f}, "
            f"val loss {summary['val_loss']:.4f} (ppl {summary['val_ppl']:.2f}), test loss "
            f"{summary['test_loss']:.4f}, final lr {summary['final_lr']:.3g} "
            f"(scale {summary['final_scale']:.3g}), {summary['steps_per_s']:.1f} steps/s -> "
            f"{cfg.out_dir}"
        )
    return 0 if summary["status"] == "completed" else 1


# ------------------------------------------------------------------------------ sweep analysis
def slope(y: np.ndarray) -> float:
    """Least-squares slope of ``y`` against 0..n-1 (NaN if fewer than 2 finite points)."""
    y = np.asarray(y, dtype=float)
    x = np.arange(len(y), dtype=float)
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    x, y = x[ok], y[ok]
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc * xc).sum())


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


def _g(v: float | None) -> str:
    return "none" if v is None else f"{v:.3g}"


def _markdown(df: Any, best: dict[str, Any], command: str) -> str:
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
        f"- best LR by final loss: {_g(best['lr_by_loss'])}",
        "- best LR by descent velocity at each matched loss level: "
        + ", ".join(f"{level}: {_g(lr)}" for level, lr in best["lr_by_velocity"].items()),
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
    """``points`` LRs evenly spaced in log between ``lr_min`` and ``lr_max`` (both included)."""
    for name, v in (("lr_min", lr_min), ("lr_max", lr_max)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"--{name.replace('_', '-')} is {v}, but must be a finite number > 0")
    if not lr_min < lr_max:
        raise ValueError(f"--lr-min {lr_min} must be < --lr-max {lr_max}")
    if points < 2:
        raise ValueError(f"--points is {points}, but must be >= 2")
    return [float(v) for v in np.geomspace(lr_min, lr_max, points)]


def _sweep_command(args: argparse.Namespace) -> str:
    """The sweep's defining options as a command line (for the table's header)."""
    parts = ["adalrs-ray sweep"]
    if args.data:
        parts.append(f"--data {args.data}")
    parts.append(f"--preset {args.preset} --schedule {args.schedule}")
    parts.append(f"--lr-min {args.lr_min:g} --lr-max {args.lr_max:g} --points {args.points}")
    parts.append(f"--steps {args.steps} --batch-size {args.batch_size} --seq-len {args.seq_len}")
    if args.warmup:
        parts.append(f"--warmup {args.warmup}")
    parts.append(f"--seed {args.seed} --tokenizer {args.tokenizer}")
    return " ".join(parts)


def cmd_sweep(args: argparse.Namespace) -> int:
    import pandas as pd
    from tqdm.auto import tqdm

    from train_loops.lm import LMConfig, run

    lrs = lr_grid(args.lr_min, args.lr_max, args.points)
    window = args.slope_window or max(5, args.steps // 20)
    if not 2 <= window <= args.steps:
        raise ValueError(f"--slope-window is {window}, but must be in [2, --steps={args.steps}]")
    if args.levels < 1:
        raise ValueError(f"--levels is {args.levels}, but must be >= 1")
    out = Path(args.out or _default_out("sweep"))
    out.mkdir(parents=True, exist_ok=True)
    if args.procs < 1:
        raise ValueError(f"--procs is {args.procs}, but must be >= 1")
    cfgs, summaries = [], {}
    for i, lr in enumerate(lrs):
        run_dir = out / "runs" / f"lr{i:02d}_{lr:.3g}"
        cfg = _config(args, lr=lr, schedule=args.schedule, out_dir=str(run_dir), save_final=False)
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
        disable=args.quiet or not sys.stderr.isatty(),
    )
    if args.procs == 1 or len(todo) <= 1:
        for i in todo:
            summaries[i] = run(cfgs[i])
            bar.update()
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(min(args.procs, len(todo))) as pool:
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
    df = analyse_sweep(runs, window, args.levels)
    best = optima(df)
    command = _sweep_command(args)
    df.to_parquet(out / "sweep.parquet", index=False)
    (out / "sweep.md").write_text(_markdown(df, best, command))
    (out / "sweep.json").write_text(json.dumps({"window": window, **best}, indent=2))
    plot_sweep(runs, df, best, window, out / "sweep.png")
    if not args.quiet:
        print(_markdown(df, best, command))
        print(f"-> {out}/sweep.md, sweep.parquet, sweep.png")
    return 0
