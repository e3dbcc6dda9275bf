"""``adalrs-ray train`` and ``adalrs-ray sweep``: the LM pretraining task from the command line.

``train`` runs one pretraining run of :mod:`train_loops.lm` (AdaLRS on or off) and writes
``metrics.parquet``, ``summary.json`` and checkpoints to ``--out``.

``sweep`` is the pilot study behind Hypothesis 1 of Dong et al. (arXiv 2506.13274, Sec. 3): a grid
of constant learning rates over a log range, the final loss and the loss-descent velocity at
matched loss levels per LR; the analysis and the runs are :mod:`adalrs_ray.experiments.sweep`,
this module parses the arguments and calls :func:`~adalrs_ray.experiments.sweep.run_sweep`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    p.add_argument(
        "--signal",
        choices=("train", "probe"),
        default="train",
        help="what AdaLRS observes: the training loss, or the loss of a fixed held-out probe "
        "batch after every step (less noisy, one forward pass of --probe-sequences per step)",
    )
    p.add_argument(
        "--probe-sequences",
        type=int,
        help="sequences of the probe batch (default with --signal probe: --batch-size); "
        "also logs probe_loss without --signal probe",
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
    p.add_argument(
        "--cpus-per-worker",
        type=float,
        help="CPUs each Ray Train worker reserves (default: 1, less on a smaller cluster)",
    )
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        help="GPUs each Ray Train worker reserves (0: none; default: 1 when the cluster has a "
        "GPU per worker, else 0)",
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
        adalrs_signal=args.signal,
        probe_sequences=(
            args.probe_sequences
            if args.probe_sequences is not None
            else (args.batch_size if args.signal == "probe" else 0)
        ),
        checkpoint_every=args.checkpoint_every,
        out_dir=args.out or _default_out("train"),
        resume=args.resume,
        init_from=args.init_from,
    )
    ray_train = args.workers != 1 or args.address
    if not ray_train and (args.cpus_per_worker is not None or args.gpus_per_worker is not None):
        raise ValueError(
            "--cpus-per-worker and --gpus-per-worker are resources of Ray Train workers, but "
            "must come with --workers N > 1 or --address"
        )
    if ray_train:  # Ray Train V2 workers: adalrs_ray.ray_train
        from train_loops.lm_ray_train import run_lm_trainer

        summary = run_lm_trainer(
            cfg,
            args.workers,
            args.address,
            cpus_per_worker=args.cpus_per_worker,
            gpus_per_worker=args.gpus_per_worker,
        )
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
    from adalrs_ray.experiments.sweep import lr_grid, run_sweep

    lrs = lr_grid(args.lr_min, args.lr_max, args.points)
    out = Path(args.out or _default_out("sweep"))
    result = run_sweep(
        _config(args, schedule=args.schedule, save_final=False),
        lrs,
        out,
        window=args.slope_window,
        levels=args.levels,
        procs=args.procs,
        command=_sweep_command(args),
        progress=not args.quiet,
    )
    if not args.quiet:
        print(result.markdown)
        print(f"-> {out}/sweep.md, sweep.parquet, sweep.png")
    return 0
