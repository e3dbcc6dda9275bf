"""AdaLRS on the real LM task: started 10x too small and 10x too large, against the same start
without AdaLRS (issue: "a real pretraining task"; the paper's Figure 2 on a laptop).

For each start LR in {lr_grid / 10, 10 x lr_grid} it trains the tiny Qwen2 preset on the
standard-library corpus twice, with and without AdaLRS, same seed and data order, and reports:
the final effective LR as a ratio to lr_grid (goal: within a factor 3), and the final validation
loss of AdaLRS against the same-start run without it (goal: lower). Runs go two at a time in
worker processes with one torch thread each. Writes a Markdown table, a JSON summary and a
Figure-2-like plot (effective LR per step with kept and failed upscales marked, loss curves).

    python benchmarks/lm_adalrs_recovery.py --out runs/recovery            # defaults below
    python benchmarks/lm_adalrs_recovery.py --steps 400 --window 10 --out /tmp/r   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _finished(kw: dict, reuse_from: str | None) -> dict | None:
    """The summary of a finished run of the same config (out_dir aside) in the run's own
    directory or under ``reuse_from``, so a rerun with other AdaLRS options retrains only what
    changed (the runs are deterministic for a given config)."""
    from train_loops.lm import LMConfig

    want = LMConfig(**kw)
    name = Path(kw["out_dir"]).name
    for d in [Path(kw["out_dir"])] + ([Path(reuse_from) / name] if reuse_from else []):
        path = d / "summary.json"
        if not path.is_file():
            continue
        old = json.loads(path.read_text())
        cfg = dict(old.get("config", {}), out_dir=kw["out_dir"])
        # an AdaLRS run also needs the controller's config as the loop resolved it (the same
        # options mean another rule when a default changes; summaries without it are retrained)
        same_rule = not want.adalrs or old.get("adalrs_config") == want.adalrs_config().to_dict()
        if old.get("status") != "stopped" and LMConfig.from_dict(cfg) == want and same_rule:
            if d != Path(kw["out_dir"]):  # the plot reads the metrics from the run's own dir
                shutil.copytree(d, kw["out_dir"], dirs_exist_ok=True)
            return old
    return None


def _train(kw: dict, reuse_from: str | None = None) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from train_loops.lm import LMConfig, run

    summary = _finished(kw, reuse_from) or run(LMConfig(**kw))
    return {
        k: summary[k]
        for k in (
            "val_loss",
            "test_loss",
            "final_lr",
            "final_scale",
            "status",
            "steps_per_s",
            "wall_s",
            "adalrs_events",
        )
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--lr-grid",
        type=float,
        default=3.16e-3,
        help="best LR of the cosine grid (docs/lm_task.md)",
    )
    p.add_argument("--factor", type=float, default=10.0, help="starts at lr_grid / f and f x")
    p.add_argument(
        "--side",
        choices=("both", "below", "above"),
        default="both",
        help="which starts to run: lr_grid / f (below), f x lr_grid (above) or both",
    )
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--schedule", default="cosine")
    p.add_argument(
        "--warmup", type=int, default=150, help="warmup steps of the base schedule (all runs)"
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument(
        "--adalrs-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another AdaLRSConfig field (VALUE as JSON, else a string), repeatable; default: "
        "start_ratio=0.05 end_ratio=0.5",
    )
    p.add_argument(
        "--signal",
        choices=("train", "probe"),
        default="train",
        help="what AdaLRS observes: the training loss or a fixed probe batch's loss (AdaLRS runs)",
    )
    p.add_argument(
        "--probe-sequences",
        type=int,
        default=64,
        help="sequences of the probe batch with --signal probe",
    )
    p.add_argument("--out", default="runs/lm_adalrs_recovery")
    p.add_argument(
        "--reuse-from",
        metavar="DIR",
        help="an earlier --out: its finished runs of the same config are reused, not retrained "
        "(runs already finished in --out are always reused)",
    )
    args = p.parse_args()
    from adalrs_ray.cli.train import parse_adalrs_opts

    try:
        options = {"start_ratio": 0.05, "end_ratio": 0.5, **parse_adalrs_opts(args.adalrs_opt)}
    except ValueError as exc:
        p.error(str(exc))

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    below = (f"x1/{args.factor:g}", args.lr_grid / args.factor)
    above = (f"x{args.factor:g}", args.lr_grid * args.factor)
    starts = dict({"both": [below, above], "below": [below], "above": [above]}[args.side])
    jobs = {}
    for label, lr in starts.items():
        for adalrs in (True, False):
            name = f"{label.replace('/', '_')}_{'adalrs' if adalrs else 'fixed'}"
            jobs[(label, adalrs)] = dict(
                preset="tiny",
                lr=lr,
                steps=args.steps,
                schedule=args.schedule,
                warmup_steps=args.warmup,
                batch_size=args.batch_size,
                seq_len=args.seq_len,
                seed=args.seed,
                adalrs=adalrs,
                window=args.window if adalrs else None,
                adalrs_options=options if adalrs else {},
                adalrs_signal=args.signal if adalrs else "train",
                probe_sequences=args.probe_sequences if adalrs and args.signal == "probe" else 0,
                num_threads=1,
                eval_batches=16,
                out_dir=str(out / name),
                save_final=False,
                log_every=10**9,
            )
    try:  # a bad option is one line here, not a traceback out of a worker process
        from train_loops.lm import LMConfig

        for kw in jobs.values():
            LMConfig(**kw)  # validates the AdaLRS config too when AdaLRS is on
    except ValueError as e:
        p.error(str(e))
    with ProcessPoolExecutor(args.procs) as pool:
        futures = {key: pool.submit(_train, kw, args.reuse_from) for key, kw in jobs.items()}
        results = {key: f.result() for key, f in futures.items()}

    rows = []
    for label, lr in starts.items():
        on, off = results[(label, True)], results[(label, False)]
        peak = lr * on["final_scale"]
        rows.append(
            {
                "start": label,
                "start_lr": lr,
                "final_scale": on["final_scale"],
                "found_lr": peak,
                "found_over_grid": peak / args.lr_grid,
                "val_adalrs": on["val_loss"],
                "val_fixed": off["val_loss"],
                "val_gain": off["val_loss"] - on["val_loss"],
                "within_3x": 1 / 3 <= peak / args.lr_grid <= 3,
                "better": on["val_loss"] < off["val_loss"],
                "events": [
                    f"{e['step']} {e['kind']}"
                    for e in on["adalrs_events"]
                    if e["kind"]
                    in ("keep", "backtrack", "boundary_downscale", "inconclusive", "nonfinite_loss")
                ],
            }
        )
    (out / "summary.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    lines = [
        f"tiny Qwen2, {args.schedule} (warmup {args.warmup}), {args.steps} steps, batch {args.batch_size}x"
        f"{args.seq_len}, window {args.window}, lr_grid {args.lr_grid:g}, AdaLRS options "
        f"{json.dumps(options)}, signal {args.signal}"
        + (f" ({args.probe_sequences} sequences)" if args.signal == "probe" else ""),
        "",
        "| start | start LR | AdaLRS found (peak LR) | found / lr_grid | val loss AdaLRS | "
        "val loss same start, no AdaLRS | within 3x | better |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['start']} | {r['start_lr']:.3g} | {r['found_lr']:.3g} | "
            f"{r['found_over_grid']:.2f} | {r['val_adalrs']:.4f} | {r['val_fixed']:.4f} | "
            f"{'yes' if r['within_3x'] else 'NO'} | {'yes' if r['better'] else 'NO'} |"
        )
    for r in rows:
        lines.append(f"\n{r['start']} decisions: " + ", ".join(r["events"]))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _plot(out, jobs, starts, args)


def _plot(out: Path, jobs: dict, starts: dict, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = dict(zip(starts, ("tab:blue", "tab:red")))
    for (label, adalrs), kw in jobs.items():
        m = pd.read_parquet(Path(kw["out_dir"]) / "metrics.parquet")
        style = "-" if adalrs else ":"
        tag = f"{label} {'AdaLRS' if adalrs else 'fixed'}"
        axes[0].plot(m["step"], m["lr"], style, color=colors[label], label=tag)
        loss = m["loss"].rolling(25, min_periods=1).mean()
        axes[1].plot(m["step"], loss, style, color=colors[label], label=tag)
        if adalrs:
            summary = json.loads((Path(kw["out_dir"]) / "summary.json").read_text())
            lr_at = dict(zip(m["step"], m["lr"]))
            for e in summary["adalrs_events"]:
                if e["kind"] in ("keep", "backtrack"):
                    marker = "^" if e["kind"] == "keep" else "x"
                    y = lr_at.get(e["step"], math.nan)
                    axes[0].plot(e["step"], y, marker, color="k", ms=8)
    axes[0].axhline(args.lr_grid, color="gray", lw=0.8, ls="--", label="lr_grid")
    axes[0].set_yscale("log")
    axes[0].set_ylim(bottom=min(starts.values()) / 30)  # the schedule's decay to 0 off-axis
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("effective LR (^ kept upscale, x backtrack)")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("training loss (25-step mean)")
    axes[1].set_ylim(top=min(4.0, axes[1].get_ylim()[1]))
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    names = [
        f"lr_grid/{args.factor:g}" if lr < args.lr_grid else f"{args.factor:g}x"
        for lr in starts.values()
    ]
    fig.suptitle("AdaLRS on tiny Qwen2 from " + " and ".join(names))
    fig.tight_layout()
    fig.savefig(out / "lr_trajectories.png", dpi=110)


if __name__ == "__main__":
    main()
