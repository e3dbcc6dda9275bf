"""The trial side of the comparison for a user's own PyTorch loop: :class:`AdaLRSTrial`.

One object per Tune trial does what every comparison trainable must (docs/tune.md,
"Trainables"): it reads the comparison keys of the trial config (``lr``, ``total_steps``,
``report_every``, ``adalrs``), wraps the user's optimizer and base schedule in
:class:`~adalrs_ray.torch_binding.AdaLRSScheduler` (AdaLRS of Dong et al., NeurIPS 2025, arXiv
2506.13274: the LR of step t is ``lr x schedule(t) x scale``; ``scale`` stays 1 without
``adalrs``), restores model, optimizer, schedule, controller and RNG states from the trial's
checkpoint and then makes the trial's ``lr`` the base LR again (the optimizer's state dict brings
back the old one; PBT's mutation must survive, Ray issue #62173), and reports every
``report_every`` steps the metric keys of docs/design.md with the compute increments, the AdaLRS
events and a checkpoint.

Example (a Tune function trainable; the lines marked ``# +`` are the glue)::

    def train(config):
        model = Net()
        opt = torch.optim.AdamW(model.parameters(), lr=config["lr"])
        trial = AdaLRSTrial(config, model, opt, schedule="cosine",  # +
                            evaluate=lambda: val_loss(model))       # +
        for step in trial.steps():                                  # +
            x, y = batch(step)
            loss = loss_fn(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
            trial.step(loss)                                        # +

With a ``DataLoader`` instead of data indexed by step, pass ``data=loader`` and loop over
``for step, (x, y) in trial.batches():``: a :class:`~adalrs_ray.torch_binding.RewindableLoader`
then hands out the batches, so an AdaLRS backtrack rewinds them with the model (the default
runs in ``"rewind"`` mode) and a checkpoint holds the loader's position.

Inside a Ray Train V2 worker (a ``TorchTrainer`` per trial) the same code reports with
``ray.train.report`` on every rank (rank 0 attaches the checkpoint: data-parallel replicas),
averages the loss over the ranks before the controller sees it, and resumes from
``ray.train.get_checkpoint()`` or else from the Tune checkpoint the trial passed in the worker
config under :data:`RESUME_KEY`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch

from adalrs_ray.comparison.reporter import TuneReporter
from adalrs_ray.core.checks import check, check_int, check_number, is_number
from adalrs_ray.core.controller import Action, AdaLRS, AdaLRSConfig, Decision
from adalrs_ray.torch_binding import (
    AdaLRSScheduler,
    RewindableLoader,
    SnapshotStore,
    base_schedule_lambda,
)
from adalrs_ray.torch_binding.rng import get_rng_state, set_rng_state

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FILE",
    "PLACEMENT_GROUP_METRIC",
    "PROGRESS_FILE",
    "RESUME_KEY",
    "AdaLRSTrial",
]

#: The file an :class:`AdaLRSTrial` checkpoint holds (``torch.save`` of a plain dict).
CHECKPOINT_FILE = "adalrs_trial.pt"
#: Key of a Train worker's config holding the Tune trial's checkpoint to start from.
RESUME_KEY = "adalrs_resume_from"
#: Written into every checkpoint: ``{"next_step", "steps"}``, where the run stands (read by
#: :func:`~adalrs_ray.comparison.train_trial.run_train_trial` without loading the state).
PROGRESS_FILE = "adalrs_tune_progress.json"
#: Reported from a Train worker: the hex id of the Train run's placement group (for
#: :class:`~adalrs_ray.comparison.train_trial.TrainPlacementGroupReaper`).
PLACEMENT_GROUP_METRIC = "train_placement_group"
STATE_VERSION = 1
_STATE_KEYS = ("version", "next_step", "lr", "adalrs_on", "model", "optimizer", "scheduler")


class _FixedScale:
    """The controller of a trial without AdaLRS: the multiplier stays 1, nothing is snapshotted.

    Lets the plain schedule run through the same :class:`AdaLRSScheduler` LR plumbing (the LR is
    derived before every ``optimizer.step()``, whatever an optimizer load wrote into it)."""

    scale = 1.0

    def observe(self, step: int, loss: float) -> Decision:
        return Decision(Action.CONTINUE, 1.0)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "fixed"}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check(
            dict(state) == {"kind": "fixed"},
            "the checkpoint was made with AdaLRS on, but this trial's `adalrs` is None",
        )


def _train_context() -> Any:
    """The Ray Train context inside a Train worker, else None (a Tune function, a script)."""
    try:
        import ray.train

        return ray.train.get_context()
    except Exception:  # not in a Train worker (RuntimeError/ValueError across versions)
        return None


def _lr_value(group: Mapping[str, Any]) -> float:
    lr = group["lr"]
    return float(lr.item()) if isinstance(lr, torch.Tensor) else float(lr)


class AdaLRSTrial:
    """One Tune trial of the comparison around a user's own PyTorch loop.

    Args:
        config: the trial config. Reads ``lr`` (base LR, > 0; PBT changes it between
            restarts), ``total_steps`` (>= 1), ``report_every`` (1..total_steps) and ``adalrs``
            (``None``: a plain schedule; a mapping: :class:`~adalrs_ray.AdaLRSConfig` arguments
            except ``total_steps``, which is the trial's); ignores every other key (yours).
        model: the module trained (checkpointed, and snapshotted by AdaLRS). A DDP-wrapped
            module is fine.
        optimizer: the optimizer over ``model``'s parameters. Its param groups' LRs give only
            their ratios: group g's base LR is ``lr x lr_g / lr_0``.
        schedule: the base schedule under the multiplier: ``None`` (constant), a name of
            :data:`~adalrs_ray.torch_binding.BASE_SCHEDULES` (``"constant"``, ``"cosine"``,
            ``"wsd"``) over ``total_steps`` with ``schedule_options`` (``warmup_steps``,
            ``min_lr_ratio``, ``decay_ratio``), or a pure function ``step -> factor``.
        schedule_options: options of a named schedule.
        evaluate: called at each report (on every rank), returns the validation loss (a float)
            or a mapping of metrics with ``val_loss`` (all are reported). Default: ``val_loss``
            is the mean training loss of the window.
        tokens_per_step: tokens of one optimizer step over all workers, for ``tokens_done``
            (``step(loss, tokens=...)`` overrides it per step).
        scaler: an AMP ``GradScaler``: snapshotted with the model and checkpointed.
        store: where AdaLRS keeps its snapshot (default: in memory).
        checkpoint: where to resume from. ``"auto"``: ``tune.get_checkpoint()`` in a Tune
            function; in a Ray Train worker ``ray.train.get_checkpoint()``, else
            ``config[RESUME_KEY]``; nothing with a custom ``report``. ``None``: start fresh. A
            directory path, or any checkpoint object with ``as_directory()``.
        report: ``f(metrics, checkpoint_dir)`` called at each report instead of Tune/Train (for
            a loop outside Ray: log the metrics, copy the directory before returning).
        data: the training batches (a ``DataLoader`` or any re-iterable; a
            :class:`~adalrs_ray.torch_binding.RewindableLoader` is taken as it is), handed out by
            :meth:`batches`. They are then wrapped in a ``RewindableLoader``, so AdaLRS's default
            runs in ``"rewind"`` mode (a backtrack replays the batches since the snapshot) and
            every checkpoint holds the loader's position.
        rewinds: the loop indexes its data by the step :meth:`steps` yields, so a backtrack
            that moves the step back replays the same batches: AdaLRS's default then runs in
            ``"rewind"`` mode (as with ``data``). ``False`` (default, without ``data``): the
            default runs in ``"continue"`` mode.

    Raises ``ValueError`` naming the value and the rule for a bad config or argument, and for a
    checkpoint that does not fit (AdaLRS on in one and off in the other; a changed ``lr`` with
    AdaLRS on, whose history was measured at the old LR).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        schedule: str | Callable[[int], float] | None = None,
        schedule_options: Mapping[str, Any] | None = None,
        evaluate: Callable[[], float | Mapping[str, Any]] | None = None,
        tokens_per_step: float = 0.0,
        scaler: Any = None,
        store: SnapshotStore | None = None,
        checkpoint: Any = "auto",
        report: Callable[[dict[str, Any], str | None], None] | None = None,
        data: Iterable | None = None,
        rewinds: bool = False,
    ) -> None:
        check(isinstance(config, Mapping), f"config is {config!r}, but must be a mapping")
        for key in ("lr", "total_steps", "report_every"):
            check(
                key in config,
                f"config has no {key!r}: the trial reads lr, total_steps, "
                "report_every and adalrs (AdaLRSComparison.param_space fills them)",
            )
        self.lr = config["lr"]
        check_number("lr", self.lr, low=0)
        self.lr = float(self.lr)
        self.total_steps = config["total_steps"]
        self.report_every = config["report_every"]
        check_int("total_steps", self.total_steps, 1)
        check_int("report_every", self.report_every, 1)
        check(
            self.report_every <= self.total_steps,
            f"report_every is {self.report_every}, but must be <= total_steps ({self.total_steps})",
        )
        adalrs = config.get("adalrs")
        check(
            adalrs is None or isinstance(adalrs, Mapping),
            f"adalrs is {adalrs!r}, but must be None or a mapping of AdaLRSConfig arguments",
        )
        check(
            adalrs is None or "total_steps" not in adalrs,
            "adalrs must not set total_steps: the trial's total_steps is AdaLRS's",
        )
        check(
            isinstance(model, torch.nn.Module),
            f"model is a {type(model).__name__}, but must be a torch.nn.Module",
        )
        check(
            isinstance(optimizer, torch.optim.Optimizer),
            f"optimizer is a {type(optimizer).__name__}, but must be a torch.optim.Optimizer",
        )
        check(
            evaluate is None or callable(evaluate),
            f"evaluate is {evaluate!r}, but must be None or a function returning the val loss",
        )
        check(
            report is None or callable(report),
            f"report is {report!r}, but must be None or a function f(metrics, checkpoint_dir)",
        )
        check(
            is_number(tokens_per_step) and tokens_per_step >= 0,
            f"tokens_per_step is {tokens_per_step!r}, but must be a number >= 0",
        )
        check(isinstance(rewinds, bool), f"rewinds is {rewinds!r}, but must be a bool")
        if data is not None and not isinstance(data, RewindableLoader):
            data = RewindableLoader(data)
        self.data: RewindableLoader | None = data
        self.model, self.optimizer = model, optimizer
        self.adalrs = adalrs is not None
        self._evaluate, self._report_fn = evaluate, report
        self._scaler = scaler

        # the trial's LR as every group's base LR (keeping the ratios between groups)
        first = _lr_value(optimizer.param_groups[0])
        check(first > 0, f"the optimizer's first param group has lr {first!r}, but must be > 0")
        self._base_lrs = [self.lr * _lr_value(g) / first for g in optimizer.param_groups]
        for group, lr in zip(optimizer.param_groups, self._base_lrs):
            group["initial_lr"] = lr
            group["lr"] = lr
        base = self._base_schedule(schedule, schedule_options)
        if self.adalrs:
            cfg = AdaLRSConfig.from_dict({"total_steps": self.total_steps, **dict(adalrs)})
            controller: Any = AdaLRS(cfg.resolved(rewinds=rewinds or data is not None))
        else:
            controller = _FixedScale()
        self.scheduler = AdaLRSScheduler(
            optimizer, controller, base, model=model, scaler=scaler, store=store, data=data
        )

        ctx = _train_context() if report is None else None
        self._in_train = ctx is not None
        self.rank = ctx.get_world_rank() if ctx is not None else 0
        self.world_size = ctx.get_world_size() if ctx is not None else 1
        self._reporter = TuneReporter(tokens_per_step=tokens_per_step, num_workers=self.world_size)
        self._losses: list[float] = []
        self._events: list[dict[str, Any]] = []
        self._calls = 0  # step() calls, to catch a loop body that never calls it

        source = self._checkpoint_source(checkpoint, config)
        if source is not None:
            self._resume(source)
        self._reporter.increments()  # the clock of the first window starts now

    # ------------------------------------------------------------------ set-up
    def _base_schedule(
        self, schedule: Any, options: Mapping[str, Any] | None
    ) -> Callable[[int], float] | None:
        check(
            options is None or isinstance(options, Mapping),
            f"schedule_options is {options!r}, but must be None or a mapping",
        )
        if isinstance(schedule, str):
            return base_schedule_lambda(schedule, self.total_steps, **dict(options or {}))
        check(not options, "schedule_options apply to a named schedule only")
        if schedule is None:
            return None
        check(
            callable(schedule) and not isinstance(schedule, torch.optim.lr_scheduler.LRScheduler),
            f"schedule is {schedule!r}, but must be None, a schedule name or a function "
            "step -> factor (for a LambdaLR pass its lr_lambda: the trial owns the LR)",
        )
        return schedule

    def _checkpoint_source(self, checkpoint: Any, config: Mapping[str, Any]) -> Any:
        if checkpoint is None:
            return None
        if not (isinstance(checkpoint, str) and checkpoint == "auto"):
            return checkpoint
        if self._report_fn is not None:
            return None
        if self._in_train:
            import ray.train

            return ray.train.get_checkpoint() or config.get(RESUME_KEY)
        from ray import tune

        return tune.get_checkpoint()

    def _resume(self, source: Any) -> None:
        # a Ray checkpoint is os.PathLike but refuses os.fspath: ask for its directory first
        if callable(getattr(source, "as_directory", None)):
            with source.as_directory() as folder:
                self._load(folder)
        elif isinstance(source, (str, os.PathLike)):
            self._load(os.fspath(source))
        else:
            raise ValueError(
                f"checkpoint is {source!r}, but must be 'auto', None, a directory or a "
                "checkpoint with as_directory()"
            )

    def _load(self, folder: str) -> None:
        path = os.path.join(folder, CHECKPOINT_FILE)
        check(os.path.isfile(path), f"checkpoint {folder!r} holds no {CHECKPOINT_FILE}")
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        state = torch.load(path, map_location=device, weights_only=True)
        missing = [k for k in _STATE_KEYS if k not in state]
        check(not missing, f"checkpoint {path!r} is missing keys {missing}")
        check(
            state["version"] == STATE_VERSION,
            f"checkpoint version is {state['version']!r}, but this code reads {STATE_VERSION}",
        )
        check(
            bool(state["adalrs_on"]) == self.adalrs,
            f"the checkpoint was made with AdaLRS {'on' if state['adalrs_on'] else 'off'}, but "
            f"this trial's adalrs is {'set' if self.adalrs else 'None'}",
        )
        old = float(state["lr"])
        if self.adalrs and not math.isclose(old, self.lr, rel_tol=1e-12):
            raise ValueError(
                f"the trial's lr is {self.lr}, the checkpoint's {old}: with AdaLRS on the base "
                "LR cannot change between restarts (its history was measured at the old LR)"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])  # brings back the old LR ...
        sched = dict(state["scheduler"])
        sched["initial_lrs"] = list(self._base_lrs)  # ... the trial's LR wins (PBT's mutation)
        self.scheduler.load_state_dict(sched)
        if self._scaler is not None and state.get("scaler") is not None:
            self._scaler.load_state_dict(state["scaler"])
        if state.get("rng") is not None:
            set_rng_state(state["rng"], device)
        if old != self.lr:
            logger.info(
                "trial resumed at step %d with lr %g (checkpoint: %g)", self.next_step, self.lr, old
            )
        else:
            logger.debug("trial resumed at step %d", self.next_step)

    # ------------------------------------------------------------------ properties
    @property
    def next_step(self) -> int:
        """The step the loop runs next (0-based; moves back after a ``rewind`` backtrack)."""
        return int(self.scheduler.last_step) + 1

    @property
    def scale(self) -> float:
        """The AdaLRS multiplier for the coming step (1.0 without AdaLRS)."""
        return self.scheduler.scale

    @property
    def current_lr(self) -> float:
        """Effective LR of the first param group for the coming step: base x schedule x scale."""
        return self.scheduler.lr[0]

    @property
    def controller(self) -> Any:
        """The AdaLRS controller (a fixed multiplier of 1 without AdaLRS)."""
        return self.scheduler.controller

    # ------------------------------------------------------------------ the loop
    def steps(self) -> Iterator[int]:
        """The indices of the steps to run, from the resumed step to ``total_steps - 1``; call
        :meth:`step` once in each iteration (a ``rewind`` backtrack repeats indices)."""
        while self.next_step < self.total_steps:
            step, calls = self.next_step, self._calls
            yield step
            if self._calls == calls:  # the body did not call step(): stop instead of looping
                raise RuntimeError(
                    f"the loop body of step {step} did not call trial.step(loss); call it once "
                    "per iteration of trial.steps()"
                )

    def batches(self) -> Iterator[tuple[int, Any]]:
        """``(step, batch)`` for every step :meth:`steps` yields, the batch from ``data``
        (after a ``rewind`` backtrack, the batches of the steps taken back again); call
        :meth:`step` once in each iteration."""
        check(
            self.data is not None,
            "batches() hands out the batches of `data`, but the trial was built without data=; "
            "pass data=loader, or loop over steps() and index your data by the step",
        )
        stream = iter(self.data)
        for step in self.steps():
            yield step, next(stream)

    def step(self, loss: float | torch.Tensor, *, tokens: float | None = None) -> Decision:
        """Feed the loss of the step that just finished (after ``optimizer.step()``).

        In a Ray Train worker the loss is averaged over the ranks first (one scalar
        all-reduce), so every rank's controller decides the same. Performs the AdaLRS snapshot
        or backtrack, sets the next step's LR, and reports (with a checkpoint) after every
        ``report_every``-th step and after the last one. Returns the controller's decision.
        """
        if self._in_train and self.world_size > 1:
            from adalrs_ray.ray_train import reduce_mean

            loss = reduce_mean(loss.detach() if isinstance(loss, torch.Tensor) else loss)
        lr, scale = _lr_value(self.optimizer.param_groups[0]), self.scheduler.scale
        decision = self.scheduler.step(loss)
        self._losses.append(float(loss.detach().item() if isinstance(loss, torch.Tensor) else loss))
        self._events.extend(decision.events)
        self._reporter.count(1, tokens)
        self._calls += 1
        finished = self.scheduler.last_step + 1  # steps finished (after a rewind: fewer)
        if finished >= self.total_steps or finished % self.report_every == 0:
            self._report(lr, scale)
        return decision

    # ------------------------------------------------------------------ reporting
    def _metrics(self, lr: float, scale: float) -> dict[str, Any]:
        mean = sum(self._losses) / len(self._losses) if self._losses else math.nan
        metrics: dict[str, Any] = {
            "step": int(self.scheduler.last_step),
            "loss": mean,
            "val_loss": mean,
            "lr": lr,
            "scale": scale,
            "adalrs_events": json.dumps(self._events),
        }
        if self._evaluate is not None:
            value = self._evaluate()
            if isinstance(value, Mapping):
                metrics.update(value)
            else:
                metrics["val_loss"] = float(value)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds: model, optimizer, AdaLRS scheduler (controller, step, held
        snapshot), scaler, RNG states, the next step and the trial's LR."""
        return {
            "version": STATE_VERSION,
            "next_step": self.next_step,
            "lr": self.lr,
            "adalrs_on": self.adalrs,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(include_snapshot=True),
            "scaler": self._scaler.state_dict() if self._scaler is not None else None,
            "rng": get_rng_state(),
        }

    def _report(self, lr: float, scale: float) -> None:
        metrics = self._metrics(lr, scale)
        metrics.update(self._reporter.increments())
        self._losses, self._events = [], []
        folder = None
        try:
            if self.rank == 0:
                folder = tempfile.mkdtemp(prefix="adalrs_trial_")
                torch.save(self.state_dict(), os.path.join(folder, CHECKPOINT_FILE))
                with open(os.path.join(folder, PROGRESS_FILE), "w") as f:
                    json.dump({"next_step": self.next_step, "steps": self.total_steps}, f)
            if self._report_fn is not None:
                self._report_fn(metrics, folder)
            elif self._in_train:
                import ray.train
                import ray.util

                pg = ray.util.get_current_placement_group()
                metrics["world_size"] = self.world_size
                metrics[PLACEMENT_GROUP_METRIC] = pg.id.hex() if pg else None
                ckpt = ray.train.Checkpoint.from_directory(folder) if folder else None
                ray.train.report(metrics, checkpoint=ckpt)
            else:
                from ray import tune

                ckpt = tune.Checkpoint.from_directory(folder) if folder else None
                tune.report(metrics, checkpoint=ckpt)  # copies the checkpoint before returning
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------------ end
    def close(self) -> None:
        """Remove the LR hook from the optimizer and drop the held snapshot."""
        self.scheduler.close()
        self.scheduler.store.clear()

    def __enter__(self) -> AdaLRSTrial:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"AdaLRSTrial(lr={self.lr:g}, next_step={self.next_step}/{self.total_steps}, "
            f"report_every={self.report_every}, adalrs={self.adalrs}, scale={self.scale:g})"
        )
