"""Language-model pretraining loop with AdaLRS on or off (Dong et al., arXiv 2506.13274).

A recipe in the shape of torchtune's (``setup``, ``train``, ``evaluate``, ``save_checkpoint``,
``load_checkpoint``, ``cleanup``) around nanoGPT's loop: a randomly initialised Qwen2 model
(:mod:`train_loops.model`), AdamW, a base schedule (constant / cosine / WSD) and, with
``adalrs=True``, the AdaLRS multiplier of :class:`adalrs_ray.torch_binding.AdaLRSScheduler`
on top of it (the effective LR at step t is ``base(t) * scale``).

The loop is single-process by default and pluggable through :class:`LoopHooks` so that a Ray
Train worker or a Tune trainable can run it unchanged: ``reduce_mean`` (an all-reduce across
workers), ``rank``/``world_size`` (disjoint data), ``report`` (called every ``report_every``
steps with the metric keys of docs/design.md), ``should_stop``, ``wrap_model`` (DDP),
``snapshot_store`` (where AdaLRS keeps its backtracking snapshot).

Everything is checkpointed -- model, optimizer, base schedule and controller, data position,
torch/python/numpy RNG, the metrics so far -- so a resumed run reproduces the uninterrupted run's
losses and learning rates exactly (same device, same ``torch`` thread count).

Example::

    from train_loops.lm import LMConfig, LMTrainer
    trainer = LMTrainer(LMConfig(preset="tiny", steps=200, lr=3e-3, out_dir="runs/a"))
    trainer.setup()
    summary = trainer.train()        # also writes runs/a/metrics.parquet and summary.json
    trainer.cleanup()
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from adalrs_ray.core.compute import ComputeCounter
from adalrs_ray.core.stats import nanmean
from adalrs_ray.torch_binding.rng import get_rng_state, set_rng_state
from train_loops import data as lmdata
from train_loops import model as lmmodel

logger = logging.getLogger(__name__)

SCHEDULES = ("constant", "cosine", "wsd")
#: what AdaLRS observes: the training loss of the step, or the loss of a fixed probe batch
ADALRS_SIGNALS = ("train", "probe")
#: optimizers of the run: AdamW, or one of the single-run LR-free ones (the extra ``lrfree``)
OPTIMIZERS = ("adamw", "prodigy", "schedulefree")
#: the package and the extra each LR-free optimizer needs
LRFREE_PACKAGES = {"prodigy": "prodigyopt", "schedulefree": "schedulefree"}
# 2: the RNG states in the format of adalrs_ray.torch_binding.rng (version 1 is still read)
STATE_VERSION = 2
METRIC_COLUMNS = (
    "step",
    "lr",
    "scale",
    "loss",
    "grad_norm",
    "tokens",
    "wall_s",
    "val_loss",
    "action",
    "event",
    "probe_loss",
)
# fields whose checkpoint value wins on resume (they define the state being resumed); for all
# other fields the value given now wins (where to write, how often to log, which device).
STATE_FIELDS = (
    "preset",
    "data",
    "text_column",
    "tokenizer",
    "bpe_vocab_size",
    "seq_len",
    "batch_size",
    "lr",
    "steps",
    "optimizer",
    "schedule",
    "warmup_steps",
    "weight_decay",
    "beta1",
    "beta2",
    "eps",
    "grad_clip",
    "adalrs",
    "window",
    "adalrs_options",
    "adalrs_signal",
    "probe_sequences",
    "seed",
    "dtype",
)


@dataclass
class LMConfig:
    """Configuration of one pretraining run.

    Args:
        preset: model size, a key of :data:`train_loops.model.PRESETS`.
        data: corpus path (directory, text file or Parquet); ``None``: the standard library.
        text_column: the Parquet text column.
        tokenizer: ``"byte"`` or ``"bpe"`` (trained on the train split, ``bpe_vocab_size``).
        cache_dir: token and tokenizer cache (default ``$ADALRS_RAY_CACHE`` or
            ``~/.cache/adalrs_ray``).
        seq_len, batch_size: tokens per sequence; sequences per step *per worker*.
        lr: eta_0, the peak of the base schedule.
        optimizer: ``"adamw"``; ``"prodigy"`` (Prodigy, Mishchenko & Defazio 2023: ``lr`` is a
            multiplier of the step size d it estimates, 1.0 recommended; the base schedule
            applies on top, the logged LR is d x lr); or ``"schedulefree"`` (Schedule-Free
            AdamW, Defazio et al. 2024: constant ``lr`` with its own linear warmup of
            ``warmup_steps``, no base schedule decay; evaluation and checkpoints see its
            averaged weights). Both need the extra ``lrfree`` and refuse ``adalrs``.
        steps: T, optimizer steps of the whole run.
        schedule: base schedule ``constant``, ``cosine`` or ``wsd`` (final 10% linear decay).
        warmup_steps: linear warmup of the base schedule.
        weight_decay, beta1, beta2, eps: AdamW (no decay on norms and biases).
        grad_clip: max global gradient norm; 0 disables clipping (the norm is still logged).
        adalrs: multiply the base schedule by the AdaLRS scale.
        window: k, AdaLRS window (``None``: the controller's default).
        adalrs_options: further :class:`adalrs_ray.AdaLRSConfig` fields (alpha, beta, lam, ...).
        adalrs_signal: the loss AdaLRS observes after each step: ``"train"`` (the step's
            training loss, as in the paper) or ``"probe"`` (the loss of a fixed held-out probe
            batch after the step's update: the same sequences every step, so the
            batch-to-batch sampling noise drops out of the velocity fits; a non-finite training
            loss is still passed on as is). Needs ``probe_sequences``.
        probe_sequences: sequences of the fixed probe batch (0: no probe). They are the last
            ones of the validation split, disjoint from those ``evaluate`` reads, split across
            ranks; their loss is logged per step as ``probe_loss``. Cost: one forward pass of
            ``probe_sequences`` per step, about ``probe_sequences / (3 * batch_size)`` of a
            training step.
        eval_every: extra validation every this many steps (0: only at reports and the end).
        eval_batches: batches per evaluation (per split, fixed sequences, in order).
        report_every: steps between ``LoopHooks.report`` calls (``None``: the AdaLRS window
            when AdaLRS is on, else 50); each report runs a validation.
        log_every: steps between log lines.
        checkpoint_every: steps between checkpoints (0: only the final one).
        keep_checkpoints: how many checkpoints to keep in ``out_dir/checkpoints``.
        save_final: write a checkpoint at the end of the run.
        nan_patience: with AdaLRS, stop as diverged after this many consecutive non-finite
            losses (without AdaLRS the first one stops the run).
        seed: model init, data order and RNG.
        device: ``auto``, ``cpu``, ``cuda``, ``npu``, ``mps`` (optionally ``:index``).
        dtype: ``float32`` or ``bfloat16`` (autocast).
        num_threads: ``torch.set_num_threads`` (``None``: leave as is).
        out_dir: run directory (``None``: write nothing).
        resume: checkpoint directory, or a run directory (its latest checkpoint), to resume.
        init_from: checkpoint or run directory whose *weights only* start this run
            (continual pretraining); optimizer, schedule and data start fresh.
    """

    preset: str = "tiny"
    data: str | None = None
    text_column: str = "text"
    tokenizer: str = "byte"
    bpe_vocab_size: int = 4096
    cache_dir: str | None = None
    seq_len: int = 128
    batch_size: int = 16
    lr: float = 1e-3
    steps: int = 1000
    optimizer: str = "adamw"
    schedule: str = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    adalrs: bool = False
    window: int | None = None
    adalrs_options: dict[str, Any] = field(default_factory=dict)
    adalrs_signal: str = "train"
    probe_sequences: int = 0
    eval_every: int = 0
    eval_batches: int = 8
    report_every: int | None = None
    log_every: int = 50
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    save_final: bool = True
    nan_patience: int = 10
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    num_threads: int | None = None
    out_dir: str | None = None
    resume: str | None = None
    init_from: str | None = None

    def __post_init__(self) -> None:
        def positive_int(name: str, minimum: int = 1) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"{name} is {v!r}, but must be an integer >= {minimum}")

        for name in ("seq_len", "batch_size", "steps", "eval_batches", "log_every"):
            positive_int(name)
        for name in (
            "warmup_steps",
            "eval_every",
            "checkpoint_every",
            "nan_patience",
            "probe_sequences",
        ):
            positive_int(name, 0)
        positive_int("keep_checkpoints")
        if self.report_every is not None:
            positive_int("report_every")
        if self.num_threads is not None:
            positive_int("num_threads")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr is {self.lr!r}, but must be a finite number > 0")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer is {self.optimizer!r}, but must be one of {OPTIMIZERS}")
        if self.optimizer != "adamw" and self.adalrs:
            raise ValueError(
                f"optimizer is {self.optimizer!r} and adalrs is on, but AdaLRS scales the LR of "
                "AdamW only; the LR-free optimizers run without it (adalrs=False)"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule is {self.schedule!r}, but must be one of {SCHEDULES}")
        if self.warmup_steps >= self.steps and self.schedule != "constant":
            raise ValueError(
                f"warmup_steps is {self.warmup_steps}, but must be < steps={self.steps} for "
                f"schedule {self.schedule!r}"
            )
        for name in ("weight_decay", "grad_clip"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} is {v!r}, but must be a finite number >= 0")
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise ValueError(f"{name} is {v!r}, but must be in [0, 1)")
        if self.preset not in lmmodel.PRESETS:
            raise ValueError(
                f"preset is {self.preset!r}, but must be one of {sorted(lmmodel.PRESETS)}"
            )
        if self.tokenizer not in ("byte", "bpe"):
            raise ValueError(f"tokenizer is {self.tokenizer!r}, but must be 'byte' or 'bpe'")
        if self.dtype not in lmmodel.DTYPES:
            raise ValueError(f"dtype is {self.dtype!r}, but must be one of {lmmodel.DTYPES}")
        if self.resume is not None and self.init_from is not None:
            raise ValueError(
                f"resume={self.resume!r} and init_from={self.init_from!r} were both given: "
                "resume continues a run, init_from starts a new one from its weights; pick one"
            )
        if self.adalrs_signal not in ADALRS_SIGNALS:
            raise ValueError(
                f"adalrs_signal is {self.adalrs_signal!r}, but must be one of {ADALRS_SIGNALS}"
            )
        if self.adalrs_signal == "probe" and self.probe_sequences == 0:
            raise ValueError(
                "adalrs_signal is 'probe', but probe_sequences is 0: give the size of the "
                "probe batch (probe_sequences >= 1)"
            )
        if not isinstance(self.adalrs_options, dict):
            raise ValueError(f"adalrs_options is {self.adalrs_options!r}, but must be a dict")
        for bad in ("total_steps", "window"):
            if bad in self.adalrs_options:
                raise ValueError(
                    f"adalrs_options sets {bad!r}; it comes from LMConfig "
                    f"({'steps' if bad == 'total_steps' else 'window'})"
                )
        if self.adalrs:
            self.adalrs_config()  # the controller validates its own fields

    @property
    def resolved_report_every(self) -> int:
        if self.report_every is not None:
            return self.report_every
        if self.adalrs:
            return int(self.adalrs_config().window)
        return min(50, self.steps)

    def adalrs_config(self) -> Any:
        """The :class:`adalrs_ray.AdaLRSConfig` of this run (validated by the controller),
        resolved for a loop that rewinds its data (``backtrack_mode="auto"`` is ``"rewind"``
        here: the loop replays its batches after a restore)."""
        from adalrs_ray.core.controller import AdaLRSConfig

        return AdaLRSConfig.from_dict(
            {"total_steps": self.steps, "window": self.window, **self.adalrs_options}
        ).resolved(rewinds=True)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LMConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown LMConfig fields {unknown}; valid: {sorted(names)}")
        return cls(**d)


def _identity_reduce(t: torch.Tensor) -> float:
    return float(t.detach().float().item())


@dataclass
class LoopHooks:
    """How the loop talks to whatever runs it (a process, a Ray Train worker, a Tune trial).

    Attributes:
        rank, world_size: this worker's data shard; only rank 0 writes files and checkpoints.
        reduce_mean: mean of a 0-d tensor over all workers, as a float (identity by default;
            an all-reduce under Ray Train). Called collectively on every rank.
        report: ``report(metrics, checkpoint_dir)`` every ``report_every`` steps and at the end,
            on every rank; ``checkpoint_dir`` is the checkpoint written at that step (rank 0),
            else None. Keys: step, loss, val_loss, lr, scale, steps_done, tokens_done,
            worker_s_done, adalrs_events (docs/design.md).
        should_stop: polled before each step; True ends the run with status ``stopped``.
        snapshot_store: the AdaLRS snapshot store (None: the binding's in-memory default).
        wrap_model: applied to the model after it is on its device (e.g. DDP).
        device: overrides ``LMConfig.device`` (e.g. ``ray.train.torch.get_device()``).
        checkpoint_on_report: write a checkpoint at every report (for Tune/Train restores).
        on_step: ``on_step(step, row)`` after every step (progress bars).
    """

    rank: int = 0
    world_size: int = 1
    reduce_mean: Callable[[torch.Tensor], float] = _identity_reduce
    report: Callable[[dict[str, Any], str | None], None] | None = None
    should_stop: Callable[[], bool] | None = None
    snapshot_store: Any = None
    wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None
    device: str | torch.device | None = None
    checkpoint_on_report: bool = False
    on_step: Callable[[int, dict[str, Any]], None] | None = None


def _base_schedule(cfg: LMConfig, optimizer: torch.optim.Optimizer) -> Any:
    """The base LR schedule eta_0 * f(t): a ``LambdaLR`` from the torch binding's factory.
    Schedule-Free AdamW has none (constant; its warmup is its own ``warmup_steps``)."""
    from adalrs_ray.torch_binding import get_base_schedule

    if cfg.optimizer == "schedulefree":
        return get_base_schedule("constant", optimizer, cfg.steps, warmup_steps=0)
    return get_base_schedule(cfg.schedule, optimizer, cfg.steps, warmup_steps=cfg.warmup_steps)


def import_lrfree(optimizer: str) -> Any:
    """The module of the LR-free ``optimizer`` (``prodigy``, ``schedulefree``); ``ValueError``
    naming the extra to install when its package is missing."""
    import importlib

    package = LRFREE_PACKAGES[optimizer]
    try:
        return importlib.import_module(package)
    except ImportError:
        raise ValueError(
            f"optimizer {optimizer!r} needs the package {package!r}: install the extra with "
            "pip install 'adalrs-ray[lrfree]'"
        ) from None


def build_optimizer(cfg: LMConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` over the param ``groups`` (each with its weight decay):
    AdamW, Prodigy (decoupled weight decay, safeguard_warmup when there is a warmup) or
    Schedule-Free AdamW (``warmup_steps`` its own warmup), all with betas and eps of ``cfg``."""
    betas = (cfg.beta1, cfg.beta2)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.eps)
    module = import_lrfree(cfg.optimizer)
    if cfg.optimizer == "prodigy":
        return module.Prodigy(
            groups,
            lr=cfg.lr,
            betas=betas,
            eps=cfg.eps,
            decouple=True,
            safeguard_warmup=cfg.warmup_steps > 0,
        )
    return module.AdamWScheduleFree(
        groups, lr=cfg.lr, betas=betas, eps=cfg.eps, warmup_steps=cfg.warmup_steps
    )


def effective_lr(optimizer: torch.optim.Optimizer, kind: str) -> float:
    """The LR the next step of the first param group applies: ``lr`` (AdamW, after the base
    schedule); Prodigy's ``d * lr``; Schedule-Free's ``lr`` times its warmup factor
    ``min(1, (k + 1) / warmup_steps)`` (the ``scheduled_lr`` it logs after the step)."""
    group = optimizer.param_groups[0]
    lr = float(group["lr"])
    if kind == "prodigy":
        return float(group["d"]) * lr
    if kind == "schedulefree" and group["warmup_steps"] and group["k"] < group["warmup_steps"]:
        return lr * (group["k"] + 1) / group["warmup_steps"]
    return lr


def _rng_state_v1(old: dict[str, Any]) -> dict[str, Any]:
    """The ``rng`` entry of a version-1 checkpoint (this module's own format until version 2) in
    the format of :mod:`adalrs_ray.torch_binding.rng`, so old checkpoints still resume."""
    version, internal, gauss_next = old["python"]
    name, keys, pos, has_gauss, cached = old["numpy"]
    state = {
        "torch": old["torch"],
        "python": (version, torch.tensor(internal, dtype=torch.int64), gauss_next),
        "numpy": (name, torch.tensor(keys, dtype=torch.int64), int(pos), int(has_gauss), cached),
    }
    if old.get("device") is not None:  # the state of the current device only
        state["accelerator"] = (old["device_type"], [old["device"]])
    return state


def _read_trainer_state(ckpt: Path) -> dict[str, Any]:
    """``trainer_state.pt`` of a checkpoint; ``ValueError`` naming it when it is unreadable
    (a corrupt checkpoint fails the run or trial with this message, never hangs it)."""
    path = ckpt / "trainer_state.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a truncated or garbage file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"checkpoint file {str(path)!r} is unreadable: {first}") from None
    if not isinstance(state, dict) or "config" not in state:
        raise ValueError(f"checkpoint file {str(path)!r} is not an LM trainer state")
    return state


def _by_age(ckpts: list[Path]) -> list[Path]:
    """Checkpoints oldest first: by the time their state was written, then by name. After an
    AdaLRS rewind the newest checkpoint can carry a smaller step than an older one."""

    def key(c: Path) -> tuple[int, str]:
        state = c / "trainer_state.pt"
        return (state.stat().st_mtime_ns if state.is_file() else 0, c.name)

    return sorted(ckpts, key=key)


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a checkpoint or run directory (its latest checkpoint)."""
    p = Path(path).expanduser()
    if (p / "trainer_state.pt").is_file():
        return p
    ckpts = sorted((p / "checkpoints").glob("step-*")) if p.is_dir() else []
    ckpts = _by_age([c for c in ckpts if (c / "trainer_state.pt").is_file()])
    if not ckpts:
        raise ValueError(
            f"checkpoint path {str(p)!r} is neither a checkpoint directory (with trainer_state.pt) "
            "nor a run directory with checkpoints/step-*"
        )
    return ckpts[-1]


class LMTrainer:
    """The pretraining recipe: ``setup()``, ``train()``, ``evaluate()``, checkpoints, ``cleanup()``."""

    def __init__(self, config: LMConfig, hooks: LoopHooks | None = None):
        self.cfg = config
        self.hooks = hooks or LoopHooks()
        if not 0 <= self.hooks.rank < self.hooks.world_size:
            raise ValueError(
                f"rank is {self.hooks.rank}, but must be in [0, world_size={self.hooks.world_size})"
            )
        self.is_main = self.hooks.rank == 0
        self.out_dir = Path(config.out_dir).expanduser() if config.out_dir else None
        self._set_up = False

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg, hooks = self.cfg, self.hooks
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        if cfg.resume is not None:
            ckpt = find_checkpoint(cfg.resume)
            saved = _read_trainer_state(ckpt)
            cfg = self.cfg = self._merge_config(saved["config"])
        self.device = (
            torch.device(hooks.device)
            if hooks.device is not None
            else lmmodel.resolve_device(cfg.device)
        )
        self.data = lmdata.load_lm_data(
            cfg.data,
            text_column=cfg.text_column,
            tokenizer=cfg.tokenizer,
            bpe_vocab_size=cfg.bpe_vocab_size,
            cache_dir=cfg.cache_dir,
        )
        self.seqs = {
            s: lmdata.PackedSequences(self.data.splits[s], cfg.seq_len, s) for s in lmdata.SPLITS
        }
        for split, seqs in self.seqs.items():
            if len(seqs) < hooks.world_size:
                raise ValueError(
                    f"the {split!r} split of data {self.data.source!r} has "
                    f"{self.data.num_tokens(split)} tokens, fewer than one sequence of "
                    f"seq_len+1={cfg.seq_len + 1} per worker; use more data or a shorter seq_len"
                )
        self.sampler = lmdata.ShardedBatchSampler(
            len(self.seqs["train"]),
            cfg.batch_size,
            seed=cfg.seed,
            rank=hooks.rank,
            world_size=hooks.world_size,
        )
        self.tokens_per_step = cfg.batch_size * cfg.seq_len * hooks.world_size
        self._probe_idx = self._probe_indices() if cfg.probe_sequences else None

        self.raw_model = lmmodel.build_model(
            cfg.preset, self.data.vocab_size, cfg.seq_len, cfg.seed
        )
        self.n_params = lmmodel.count_parameters(self.raw_model)
        if cfg.init_from is not None:
            self._load_weights(find_checkpoint(cfg.init_from))
        self.raw_model.to(self.device)
        self.model = hooks.wrap_model(self.raw_model) if hooks.wrap_model else self.raw_model

        decay, no_decay = [], []
        for p in self.raw_model.parameters():
            if p.requires_grad:
                (decay if p.dim() >= 2 else no_decay).append(p)
        self.optimizer = build_optimizer(
            cfg,
            [
                {"params": decay, "weight_decay": cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
        )
        base = _base_schedule(cfg, self.optimizer)
        if cfg.adalrs:
            from adalrs_ray.core.controller import AdaLRS
            from adalrs_ray.torch_binding import AdaLRSScheduler

            self.adalrs_config = cfg.adalrs_config()
            self.scheduler = AdaLRSScheduler(
                self.optimizer,
                AdaLRS(self.adalrs_config),
                base=base,
                model=self.raw_model,
                scaler=None,
                store=hooks.snapshot_store,
            )
        else:
            self.adalrs_config = None
            self.scheduler = base

        # run state (all of it goes into checkpoints)
        self.step = 0
        self.tokens = 0
        self.steps_executed = 0
        self.wall_s = 0.0
        self.nonfinite_streak = 0
        self.status = "running"
        self.metrics: dict[str, list[Any]] = {c: [] for c in METRIC_COLUMNS}
        self.evals: list[dict[str, Any]] = []
        self._acc = self._new_acc()
        self._compute = ComputeCounter(self.hooks.world_size)  # steps, tokens since the report
        self._loop_snapshot: dict[str, Any] | None = None
        if cfg.adalrs and self.scheduler.store.has_snapshot():  # the opening's, before step 0
            self._loop_snapshot = {"step": -1, "sampler": self.sampler.state_dict()}
        self._last_eval: tuple[int, float] | None = None
        self._last_ckpt_step: int | None = None

        if cfg.resume is not None:
            self.load_checkpoint(find_checkpoint(cfg.resume))
        if self.out_dir is not None and self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self._set_up = True
        logger.info(
            "setup: preset %s (%s params), device %s, %s tokens/step, %d train sequences, "
            "schedule %s, adalrs %s, starting at step %d",
            cfg.preset,
            f"{self.n_params:,}",
            self.device,
            self.tokens_per_step,
            len(self.seqs["train"]),
            cfg.schedule,
            "on" if cfg.adalrs else "off",
            self.step,
        )

    def _merge_config(self, saved: dict[str, Any]) -> LMConfig:
        """The config to resume with; logs each differing field and which value wins."""
        current = self.cfg.to_dict()
        merged = dict(current)
        for name, old in saved.items():
            if name not in current or name == "resume":
                continue
            new = current[name]
            if new == old:
                continue
            if name in STATE_FIELDS:
                merged[name] = old
                logger.warning(
                    "resume: config %s=%r differs from the checkpoint's %r; the checkpoint's "
                    "value wins (it defines the state being resumed)",
                    name,
                    new,
                    old,
                )
            else:
                logger.info(
                    "resume: config %s=%r differs from the checkpoint's %r; the given value wins",
                    name,
                    new,
                    old,
                )
        merged["init_from"] = None  # the checkpoint's weights replace any init_from weights
        return LMConfig.from_dict(merged)

    def _load_weights(self, ckpt: Path) -> None:
        from safetensors.torch import load_model

        path = ckpt / "model.safetensors"
        if not path.is_file():
            raise ValueError(f"init_from checkpoint {str(ckpt)!r} has no model.safetensors")
        try:
            load_model(self.raw_model, path, strict=True, device="cpu")
        except RuntimeError as exc:
            raise ValueError(
                f"weights in {str(path)!r} do not fit preset {self.cfg.preset!r} with vocab "
                f"{self.data.vocab_size}: {str(exc).splitlines()[0]}"
            ) from exc
        logger.info("initialised weights from %s", path)

    @staticmethod
    def _new_acc() -> dict[str, Any]:
        return {"losses": [], "wall_s": 0.0, "events": []}

    # ------------------------------------------------------------------ helpers
    def _scale(self) -> float:
        return float(self.scheduler.scale) if self.cfg.adalrs else 1.0

    def _lr(self) -> float:
        return effective_lr(self.optimizer, self.cfg.optimizer)

    def _swap_weights(self, mode: str) -> None:
        """Schedule-Free AdamW: ``optimizer.train()`` (the point gradients are taken at) or
        ``optimizer.eval()`` (its averaged weights: evaluation and checkpoints); a no-op for
        the others and when already in that mode."""
        if self.cfg.optimizer == "schedulefree":
            getattr(self.optimizer, mode)()

    def _sf_train_mode(self) -> bool:
        """Whether Schedule-Free AdamW is in train mode (False for the other optimizers)."""
        return self.cfg.optimizer == "schedulefree" and bool(
            self.optimizer.param_groups[0]["train_mode"]
        )

    def _batch(self, seqs: lmdata.PackedSequences, idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(seqs.get(idx)).to(self.device, non_blocking=True)

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        x, y = batch[:, :-1], batch[:, 1:]
        with lmmodel.autocast(self.device, self.cfg.dtype):
            logits = self.model(input_ids=x).logits
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(
        self, split: str = "validation", max_batches: int | None = None
    ) -> dict[str, float]:
        """Mean token loss and perplexity on the first sequences of ``split`` (all ranks)."""
        if split not in lmdata.SPLITS:
            raise ValueError(f"split is {split!r}, but must be one of {lmdata.SPLITS}")
        seqs = self.seqs[split]
        batches = lmdata.eval_batches(
            len(seqs),
            self.cfg.batch_size,
            max_batches or self.cfg.eval_batches,
            rank=self.hooks.rank,
            world_size=self.hooks.world_size,
        )
        was_training = self.model.training
        sf_train = self._sf_train_mode()
        self._swap_weights("eval")
        self.model.eval()
        total = torch.zeros((), device=self.device)
        count = 0
        for idx in batches:
            total += self._loss(self._batch(seqs, idx)) * len(idx)
            count += len(idx)
        self.model.train(was_training)
        if sf_train:
            self._swap_weights("train")
        loss = self.hooks.reduce_mean(total / max(count, 1))
        ppl = math.exp(loss) if loss < 700 else float("inf")
        return {"loss": loss, "ppl": ppl}

    def _probe_indices(self) -> np.ndarray:
        """This rank's share of the fixed probe batch: the last ``probe_sequences`` sequences of
        the validation split, after the ones :meth:`evaluate` reads."""
        cfg, hooks = self.cfg, self.hooks
        n, p = len(self.seqs["validation"]), cfg.probe_sequences
        if p % hooks.world_size:
            raise ValueError(
                f"probe_sequences is {p}, but must be a multiple of the {hooks.world_size} "
                "workers (each worker probes an equal share)"
            )
        evaluated = sum(
            len(b)
            for b in lmdata.eval_batches(
                n, cfg.batch_size, cfg.eval_batches, rank=0, world_size=hooks.world_size
            )
        )
        evaluated *= hooks.world_size
        if evaluated + p > n:
            raise ValueError(
                f"probe_sequences is {p}, but the validation split of data "
                f"{self.data.source!r} has {n} sequences of seq_len={cfg.seq_len}, "
                f"{evaluated} of them used by evaluation: the probe batch must not overlap "
                f"them, so probe_sequences must be <= {n - evaluated}"
            )
        return np.arange(n - p, n)[hooks.rank :: hooks.world_size]

    @torch.no_grad()
    def _probe_loss(self) -> float:
        """The loss of the fixed probe batch on the model as it is now (mean over ranks)."""
        was_training = self.model.training
        sf_train = self._sf_train_mode()
        self._swap_weights("eval")
        self.model.eval()
        loss = self._loss(self._batch(self.seqs["validation"], self._probe_idx))
        self.model.train(was_training)
        if sf_train:
            self._swap_weights("train")
        return self.hooks.reduce_mean(loss)

    def _validate(self, step: int) -> float:
        if self._last_eval is not None and self._last_eval[0] == step:
            return self._last_eval[1]
        val = self.evaluate("validation")["loss"]
        self._last_eval = (step, val)
        self.evals.append({"step": step, "split": "validation", "loss": val})
        self.metrics["val_loss"][-1] = val
        return val

    # ------------------------------------------------------------------ training
    def train(self) -> dict[str, Any]:
        """Run until ``steps``, divergence or ``should_stop``; returns the summary."""
        if not self._set_up:
            raise RuntimeError("call setup() before train()")
        cfg, hooks = self.cfg, self.hooks
        report_every = cfg.resolved_report_every
        self.model.train()
        self._swap_weights("train")
        session_t0 = time.perf_counter()
        self._compute.restart_clock(session_t0)
        session_steps = 0
        self.status = "running"
        while self.step < cfg.steps:
            if hooks.should_stop is not None and hooks.should_stop():
                self.status = "stopped"
                logger.info("stop requested before step %d", self.step)
                break
            t = self.step
            t0 = time.perf_counter()
            lr, scale = self._lr(), self._scale()
            batch = self._batch(self.seqs["train"], self.sampler.next_indices())
            loss = self._loss(batch)
            loss.backward()
            loss_value = hooks.reduce_mean(loss.detach())
            max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), max_norm))
            finite = math.isfinite(loss_value) and math.isfinite(grad_norm)
            if finite:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

            probe = self._probe_loss() if self._probe_idx is not None else float("nan")
            # a non-finite training step is passed on as it is (a failed trial or divergence)
            signal = probe if cfg.adalrs_signal == "probe" and finite else loss_value
            action, events, restore_step = "continue", (), None
            with warnings.catch_warnings():
                if not finite:  # torch warns when a schedule steps before any optimizer.step
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler")
                if cfg.adalrs:
                    decision = self.scheduler.step(signal)
                    action, events = decision.action.value, tuple(decision.events)
                    restore_step = decision.restore_step
                else:
                    self.scheduler.step()

            dt = time.perf_counter() - t0
            self.wall_s += dt
            self.tokens += self.tokens_per_step
            self.steps_executed += 1
            session_steps += 1
            self._record(t, lr, scale, loss_value, grad_norm, action, events, probe)
            self._acc["losses"].append(loss_value)
            self._compute.count(1, self.tokens_per_step)
            self._acc["wall_s"] += dt
            self._acc["events"].extend(events)

            self.step = t + 1
            if action == "snapshot":
                self._loop_snapshot = {"step": t, "sampler": self.sampler.state_dict()}
            elif action == "restore" and self.adalrs_config.backtrack_mode == "rewind":
                self._rewind(restore_step)

            if not finite:
                self.nonfinite_streak += 1
                logger.warning(
                    "step %d: non-finite loss %s or gradient norm %s; update skipped",
                    t,
                    loss_value,
                    grad_norm,
                )
                if not cfg.adalrs or self.nonfinite_streak >= cfg.nan_patience:
                    self.status = "diverged"
                    logger.error(
                        "run diverged at step %d (%s)",
                        t,
                        "AdaLRS off" if not cfg.adalrs else f"{self.nonfinite_streak} in a row",
                    )
                    break
            else:
                self.nonfinite_streak = 0

            if cfg.eval_every and self.step % cfg.eval_every == 0:
                self._validate(t)
            if t % cfg.log_every == 0 or self.step == cfg.steps:
                logger.info(
                    "step %d/%d loss %.4f lr %.3g scale %.3g grad_norm %.3g%s",
                    t,
                    cfg.steps,
                    loss_value,
                    lr,
                    scale,
                    grad_norm,
                    f" events {[e['kind'] for e in events]}" if events else "",
                )
            if self._compute.steps >= report_every:
                self._report(t, save=hooks.checkpoint_on_report)
            elif cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
            if hooks.on_step is not None:
                hooks.on_step(t, {c: self.metrics[c][-1] for c in METRIC_COLUMNS})
        else:
            self.status = "completed"

        session_wall = time.perf_counter() - session_t0
        final_ckpt = None
        if self.cfg.save_final and self.steps_executed and self.step != self._last_ckpt_step:
            final_ckpt = self.save_checkpoint()  # the state as of the last step, before reports
        # a stopped run (Tune STOP/PAUSE, should_stop) does not report its partial window: the
        # steps since the last report are reported by the run that resumes from final_ckpt
        if self.status != "stopped" and self._compute.steps:
            self._report(self.metrics["step"][-1], save=False, checkpoint=final_ckpt)
        return self._finish(session_steps, session_wall)

    def set_base_lr(self, lr: float) -> None:
        """Make ``lr`` the base LR of a set-up (typically resumed) run: the base schedule's
        ``base_lrs``, each param group's ``initial_lr`` and its current ``lr`` (= lr x schedule
        factor x AdaLRS scale) are rescaled by ``lr / cfg.lr``. Population Based Training changes
        a trial's LR between restarts while its checkpoint restores the old one. A no-op when
        ``lr`` equals ``cfg.lr``; ``ValueError`` when AdaLRS is on (it owns the LR multiplier and
        its history is measured at the old base LR) or ``lr`` is not a finite number > 0."""
        if (
            isinstance(lr, bool)
            or not isinstance(lr, (int, float))
            or not (math.isfinite(lr) and lr > 0)
        ):
            raise ValueError(f"set_base_lr: lr is {lr!r}, but must be a finite number > 0")
        if not self._set_up:
            raise RuntimeError("call setup() before set_base_lr()")
        old = float(self.cfg.lr)
        if float(lr) == old:
            return
        if self.cfg.adalrs:
            raise ValueError(
                f"set_base_lr: the run's base LR would change from {old} to {lr}, but the run "
                "has AdaLRS on; only runs without AdaLRS (PBT) change the LR between restarts"
            )
        ratio = float(lr) / old
        self.scheduler.base_lrs = [b * ratio for b in self.scheduler.base_lrs]
        for group in self.optimizer.param_groups:
            group["initial_lr"] = float(group["initial_lr"]) * ratio
            group["lr"] = float(group["lr"]) * ratio
        self.cfg.lr = float(lr)
        logger.info("base LR %g -> %g", old, lr)

    def _record(self, t, lr, scale, loss, grad_norm, action, events, probe) -> None:
        m = self.metrics
        m["step"].append(t)
        m["lr"].append(lr)
        m["scale"].append(scale)
        m["loss"].append(loss)
        m["grad_norm"].append(grad_norm)
        m["tokens"].append(self.tokens)
        m["wall_s"].append(self.wall_s)
        m["val_loss"].append(float("nan"))
        m["action"].append(action)
        m["event"].append(json.dumps(list(events)) if events else "")
        m["probe_loss"].append(probe)

    def _rewind(self, restore_step: int | None) -> None:
        snap = self._loop_snapshot
        if restore_step is None or snap is None or snap["step"] != restore_step:
            raise RuntimeError(
                f"AdaLRS asked to rewind to step {restore_step}, but the loop's data snapshot "
                f"is at {None if snap is None else snap['step']}"
            )
        self.step = restore_step + 1
        self.sampler.load_state_dict(snap["sampler"])
        logger.info("rewound the step counter and data position to step %d", self.step)

    def _report(self, t: int, save: bool, checkpoint: Path | None = None) -> None:
        acc = self._acc
        val = self._validate(t)
        metrics = {
            "step": t,
            "loss": nanmean(acc["losses"]),
            "val_loss": val,
            "lr": self.metrics["lr"][-1],
            "scale": self.metrics["scale"][-1],
            # steps and tokens since the previous report; wall time since then in this process
            # (steps, evaluations, checkpoints) times the workers: the compute this report
            # accounts for
            **self._compute.take(),
            "adalrs_events": json.dumps(acc["events"]),
        }
        self._acc = self._new_acc()
        due = self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0
        if checkpoint is None and (save or due):
            checkpoint = self.save_checkpoint()
        if self.hooks.report is not None:
            self.hooks.report(metrics, str(checkpoint) if checkpoint is not None else None)

    def _finish(self, session_steps: int, session_wall: float) -> dict[str, Any]:
        final = {s: self.evaluate(s) for s in ("train", "validation", "test")}
        for split, res in final.items():
            self.evals.append({"step": self.step - 1, "split": split, "loss": res["loss"]})
        losses = self.metrics["loss"]
        tail = losses[-max(1, min(len(losses), self.cfg.resolved_report_every)) :]
        summary = {
            "status": self.status,
            "steps": self.step,
            "steps_executed": self.steps_executed,
            "tokens": self.tokens,
            "wall_s": self.wall_s,
            "steps_per_s": session_steps / session_wall if session_wall > 0 else float("nan"),
            "final_lr": self.metrics["lr"][-1] if losses else float("nan"),
            "final_scale": self.metrics["scale"][-1] if losses else float("nan"),
            "train_loss_running": nanmean(tail),
            "train_loss": final["train"]["loss"],
            "train_ppl": final["train"]["ppl"],
            "val_loss": final["validation"]["loss"],
            "val_ppl": final["validation"]["ppl"],
            "test_loss": final["test"]["loss"],
            "test_ppl": final["test"]["ppl"],
            "n_params": self.n_params,
            "vocab_size": self.data.vocab_size,
            "data": self.data.source,
            "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
            "adalrs_events": self.scheduler_events(),
            # the controller's config as this loop resolved it (backtrack_mode "auto": rewind)
            "adalrs_config": self.adalrs_config.to_dict() if self.adalrs_config else None,
            "config": self.cfg.to_dict(),
        }
        if self.is_main and self.out_dir is not None:
            self.write_metrics()
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        logger.info(
            "%s after %d steps: train %.4f val %.4f test %.4f (ppl %.2f), %.1f steps/s",
            self.status,
            self.step,
            summary["train_loss"],
            summary["val_loss"],
            summary["test_loss"],
            summary["test_ppl"],
            summary["steps_per_s"],
        )
        return summary

    def scheduler_events(self) -> list[dict[str, Any]]:
        if not self.cfg.adalrs:
            return []
        ctl = getattr(self.scheduler, "controller", None)
        if ctl is not None:
            return ctl.events
        events: list[dict[str, Any]] = []
        for e in self.metrics["event"]:
            if e:
                events.extend(json.loads(e))
        return events

    def metrics_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame({c: self.metrics[c] for c in METRIC_COLUMNS})

    def write_metrics(self) -> Path | None:
        """Write ``metrics.parquet`` (one row per step) to the run directory (rank 0)."""
        if not self.is_main or self.out_dir is None:
            return None
        path = self.out_dir / "metrics.parquet"
        tmp = path.with_name("metrics.parquet.tmp")
        self.metrics_frame().to_parquet(tmp, index=False)
        tmp.replace(path)
        return path

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything but the weights (those go to model.safetensors)."""
        return {
            "version": STATE_VERSION,
            "step": self.step,
            "tokens": self.tokens,
            "steps_executed": self.steps_executed,
            "wall_s": self.wall_s,
            "nonfinite_streak": self.nonfinite_streak,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": get_rng_state(self.device),
            "metrics": self.metrics,
            "evals": self.evals,
            # the report window so far: losses, steps, tokens, wall_s, events
            "report_acc": {**self._acc, **self._compute.state_dict()},
            "loop_snapshot": self._loop_snapshot,
            "last_eval": list(self._last_eval) if self._last_eval else None,
            "config": self.cfg.to_dict(),
            "data_fingerprint": self.data.fingerprint,
        }

    def save_checkpoint(self, path: str | Path | None = None) -> Path | None:
        """Write a checkpoint (rank 0): ``model.safetensors``, ``config.json``, trainer state.

        Schedule-Free AdamW is saved in the mode it is in, train mode during training: the
        weights are its training point y and ``train_mode`` is in the optimizer state, so a
        resume goes on bit for bit (an eval/train round trip is not exact in floating point);
        :meth:`evaluate` on the resumed trainer sees its averaged weights."""
        from safetensors.torch import save_model

        if not self.is_main:
            return None
        if path is None:
            if self.out_dir is None:
                return None
            path = self.out_dir / "checkpoints" / f"step-{self.step:07d}"
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_model(self.raw_model, str(tmp / "model.safetensors"))
        self.raw_model.config.to_json_file(str(tmp / "config.json"))
        torch.save(self.state_dict(), tmp / "trainer_state.pt")
        (tmp / "lm_config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
        if self.out_dir is not None and path.parent == self.out_dir / "checkpoints":
            self.write_metrics()
            old = _by_age([p for p in path.parent.glob("step-*") if not p.name.endswith(".tmp")])
            old = [p for p in old if p != path] + [path]  # the one just written is the newest
            for p in old[: -self.cfg.keep_checkpoints]:
                shutil.rmtree(p, ignore_errors=True)
        self._last_ckpt_step = self.step
        logger.info("checkpoint at step %d: %s", self.step, path)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything :meth:`save_checkpoint` wrote (model, optimizer, schedule, AdaLRS,
        data position, RNG, metrics)."""
        from safetensors.torch import load_model

        ckpt = find_checkpoint(path)
        state = _read_trainer_state(ckpt)
        if state.get("version") not in (1, STATE_VERSION):
            raise ValueError(
                f"checkpoint {str(ckpt)!r} has trainer state version {state.get('version')}, "
                f"but this code reads versions 1 and {STATE_VERSION}"
            )
        if state["data_fingerprint"] != self.data.fingerprint:
            logger.warning(
                "resume: the data at %s changed since the checkpoint (fingerprint differs); "
                "the data position is kept, but the sequences it points to may differ",
                self.data.source,
            )
        try:
            load_model(
                self.raw_model, ckpt / "model.safetensors", strict=True, device=str(self.device)
            )
        except Exception as exc:  # truncated, garbage (SafetensorError), wrong shapes
            raise ValueError(
                f"checkpoint {str(ckpt)!r}: model.safetensors is unreadable or does not match "
                f"the model: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        rng = _rng_state_v1(state["rng"]) if state["version"] == 1 else state["rng"]
        set_rng_state(rng, self.device)
        self.step = int(state["step"])
        self.tokens = int(state["tokens"])
        self.steps_executed = int(state["steps_executed"])
        self.wall_s = float(state["wall_s"])
        self.nonfinite_streak = int(state["nonfinite_streak"])
        saved = state["metrics"]
        rows = len(saved["step"])
        # probe_loss is newer than the checkpoint format: absent means no probe was run
        self.metrics = {
            c: list(saved[c]) if c in saved or c != "probe_loss" else [float("nan")] * rows
            for c in METRIC_COLUMNS
        }
        self.evals = list(state["evals"])
        acc = state["report_acc"]
        self._acc = {k: acc[k] for k in ("losses", "wall_s", "events")}
        self._compute.load_state_dict(acc)
        self._loop_snapshot = state["loop_snapshot"]
        self._last_eval = tuple(state["last_eval"]) if state["last_eval"] else None
        self._last_ckpt_step = self.step
        logger.info("resumed from %s at step %d", ckpt, self.step)

    def cleanup(self) -> None:
        """Release the model, optimizer and data (the run directory stays)."""
        for name in ("model", "raw_model", "optimizer", "scheduler", "data", "seqs"):
            if hasattr(self, name):
                delattr(self, name)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self._set_up = False


def run(config: LMConfig, hooks: LoopHooks | None = None) -> dict[str, Any]:
    """``setup()``, ``train()``, ``cleanup()``; returns the summary."""
    trainer = LMTrainer(config, hooks)
    trainer.setup()
    try:
        return trainer.train()
    finally:
        trainer.cleanup()
