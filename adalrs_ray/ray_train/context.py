"""AdaLRS inside a Ray Train V2 ``train_loop_per_worker``.

AdaLRS (Dong et al., NeurIPS 2025, arXiv 2506.13274) decides one LR multiplier from the training
loss (Algorithm 1). Data-parallel workers see different batches, so each would see a different
loss; this module makes every rank feed the controller the *same* number and therefore take the
same decisions:

* :func:`reduce_mean` averages the loss over all ranks with one scalar all-reduce on the loss's
  own device (gloo on CPU, NCCL/HCCL on accelerators); the controller and every rank's
  :class:`~adalrs_ray.torch_binding.AdaLRSScheduler` get the identical float.
* Every rank applies the multiplier to its own optimizer, and on SNAPSHOT/RESTORE each rank
  saves/restores *its own* model and optimizer tensors (the local shard under FSDP/TP, the
  replica under DDP) in its own store; no rank needs another's state.
* :class:`AdaLRSTrainContext` puts the controller, the LR scale, model, optimizer, each rank's RNG
  and loop state (data position) and each rank's snapshot in Ray Train checkpoints and resumes
  from ``ray.train.get_checkpoint()``, so a worker group restarted by
  ``FailureConfig(max_failures=...)`` takes the decisions of an uninterrupted run.
* A lost snapshot (the store raises :class:`~adalrs_ray.torch_binding.snapshot.SnapshotMissingError`) is never
  restored silently: every rank raises :class:`SnapshotLostError`; Ray Train then restarts the
  group from the last checkpoint (policy ``"checkpoint"``), or :class:`LostSnapshotPolicy`
  with ``"fail"`` fails the run.
* Metrics go to ``ray.train.report`` every ``report_every`` steps (Train V2 forwards at most one
  report per ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` and workers wait for it: never per step).

The LM task on Ray Train (``adalrs-ray train --workers N``) is built on this module in
:mod:`train_loops.lm_ray_train`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ray.train import UserCallback

from adalrs_ray.core.compute import ComputeCounter
from adalrs_ray.core.controller import Action, Decision
from adalrs_ray.core.stats import nanmean
from adalrs_ray.torch_binding.rng import get_rng_state, set_rng_state
from adalrs_ray.torch_binding.snapshot import SnapshotMissingError, SnapshotStore

logger = logging.getLogger(__name__)

__all__ = [
    "LOST_SNAPSHOT_POLICIES",
    "SNAPSHOT_STORES",
    "AdaLRSTrainContext",
    "LostSnapshotPolicy",
    "PendingMean",
    "SnapshotLostError",
    "default_store_key",
    "make_snapshot_store",
    "reduce_mean",
    "reduce_mean_async",
]

CHECKPOINT_VERSION = 1
SHARED_FILE = "adalrs_shared.pt"
RANK_FILE = "adalrs_rank{rank:05d}.pt"
LOST_SNAPSHOT_POLICIES = ("checkpoint", "fail")
SNAPSHOT_STORES = ("memory", "object_store")


class SnapshotLostError(SnapshotMissingError):
    """AdaLRS asked to backtrack but a rank's snapshot is gone (its node died, its holder was
    killed, the object was lost). Raised on every rank; never a silent wrong restore."""


# --------------------------------------------------------------------------- reduction


def _dist_ready(group: Any = None) -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


class PendingMean:
    """A scalar all-reduce in flight (:func:`reduce_mean_async`); :meth:`wait` gives the mean.

    Start it right after the forward pass: the reduction then runs while ``backward()`` and
    ``optimizer.step()`` run (on gloo it shares their rendezvous instead of adding one).
    """

    def __init__(self, tensor: torch.Tensor, work: Any, world_size: int) -> None:
        self._tensor, self._work, self._world = tensor, work, world_size
        self._value: float | None = None

    def wait(self) -> float:
        if self._value is None:
            if self._work is not None:
                self._work.wait()
            self._value = float(self._tensor.item()) / self._world
            self._tensor = self._work = None
        return self._value


def _scalar(value: torch.Tensor | float) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"reduce_mean: `value` must be a scalar (0-d or one element); got a tensor of "
                f"shape {tuple(value.shape)}"
            )
        # a copy: never reduce in place into the caller's (autograd) tensor
        return value.detach().reshape(()).to(torch.float32, copy=True)
    return torch.tensor(float(value), dtype=torch.float32)


def reduce_mean_async(value: torch.Tensor | float, group: Any = None) -> PendingMean:
    """Start :func:`reduce_mean` without waiting; ``.wait()`` returns the same float."""
    t = _scalar(value)
    if not _dist_ready(group):
        return PendingMean(t, None, 1)
    import torch.distributed as dist

    work = dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group, async_op=True)
    return PendingMean(t, work, dist.get_world_size(group))


def reduce_mean(value: torch.Tensor | float, group: Any = None) -> float:
    """Mean of a scalar over all ranks of ``group``, as a float, with one scalar all-reduce.

    The all-reduce runs on ``value``'s device (so NCCL/HCCL get a device tensor and gloo a CPU
    one); a float is put on the CPU. Every rank returns the same float, bit for bit, so
    every rank's controller takes the same decisions. Without an initialised process group
    (or with one rank) the value itself is returned. NaN/inf propagate (the controller handles
    them on purpose).
    """
    return reduce_mean_async(value, group).wait()


def _all_reduce_sum(values: list[float], device: torch.device, group: Any = None) -> list[float]:
    """Sums of a few floats over all ranks (one all-reduce; identity without a group)."""
    if not _dist_ready(group):
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64 if device.type == "cpu" else torch.float32)
    t = t.to(device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return [float(x) for x in t.cpu().tolist()]


# --------------------------------------------------------------------------- stores


def make_snapshot_store(kind: str = "memory", key: str | None = None) -> SnapshotStore:
    """A snapshot store by name: ``"memory"`` (default) or ``"object_store"``.

    ``"memory"``: :class:`~adalrs_ray.torch_binding.snapshot.InMemorySnapshotStore`, the fastest (a plain
    copy; see docs/ray_train.md for the numbers); a restarted worker gets its snapshot back from
    the checkpoint. ``"object_store"``: :class:`~adalrs_ray.ray_train.object_store.ObjectStoreSnapshotStore`
    under ``key`` in the node's object store; it also survives the worker process.
    """
    if kind == "memory":
        from adalrs_ray.torch_binding.snapshot import InMemorySnapshotStore

        return InMemorySnapshotStore()
    if kind == "object_store":
        from adalrs_ray.ray_train.object_store import ObjectStoreSnapshotStore

        return ObjectStoreSnapshotStore(key=key)
    raise ValueError(
        f"The value of `snapshot_store` is {kind!r}, but must be one of {SNAPSHOT_STORES}"
    )


def _train_context() -> Any | None:
    """``ray.train.get_context()`` inside a Train worker, else None."""
    try:
        import ray.train

        return ray.train.get_context()
    except Exception:  # not in a Train worker (RuntimeError/ValueError across versions)
        return None


def default_store_key() -> str:
    """``"<run name>/rank<r>"`` inside a Train worker (stable across restarts), else a pid key."""
    ctx = _train_context()
    if ctx is None:
        return f"pid{os.getpid()}"
    return f"{ctx.get_experiment_name()}/rank{ctx.get_world_rank()}"


# --------------------------------------------------------------------------- failure policy


def _lost_in(exc: BaseException | None) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, SnapshotMissingError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class LostSnapshotPolicy(UserCallback):
    """Ray Train callback (driver side) applying the lost-snapshot policy to worker errors.

    Ray Train V2 retries every worker error up to ``FailureConfig.max_failures`` times, from the
    latest reported checkpoint. With ``policy="checkpoint"`` (default) that is what happens to a
    :class:`SnapshotLostError`: the rerun gets each rank's snapshot back from the checkpoint (or
    takes it again if it came after the checkpoint) and reaches the same decisions; this callback
    only logs it. With ``policy="fail"`` the callback raises as soon as any worker reports a lost
    snapshot, which ends the run without retrying (``trainer.fit()`` raises a ``ControllerError``
    carrying this message).

    Example::

        RunConfig(callbacks=[LostSnapshotPolicy("fail")], failure_config=FailureConfig(3))
    """

    def __init__(self, policy: str = "checkpoint") -> None:
        if policy not in LOST_SNAPSHOT_POLICIES:
            raise ValueError(
                f"The value of `policy` is {policy!r}, but must be one of {LOST_SNAPSHOT_POLICIES}"
            )
        self.policy = policy

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        lost = {rank: e for rank, e in worker_exceptions.items() if _lost_in(e)}
        if not lost:
            return
        detail = "; ".join(f"rank {r}: {e}" for r, e in sorted(lost.items()))
        if self.policy == "fail":
            raise SnapshotLostError(
                f"AdaLRS snapshot lost ({detail}); lost-snapshot policy 'fail' ends the run"
            )
        logger.warning(
            "AdaLRS snapshot lost (%s); policy 'checkpoint': Ray Train restarts the workers from "
            "the latest checkpoint if FailureConfig.max_failures allows it",
            detail,
        )


# --------------------------------------------------------------------------- the context


class AdaLRSTrainContext:
    """Per-worker glue between an :class:`~adalrs_ray.torch_binding.AdaLRSScheduler` and Ray Train.

    Build it on every rank after the model is wrapped (DDP/FSDP) and the scheduler exists, call
    :meth:`resume` once, then :meth:`step` after each ``optimizer.step()``::

        ctx = AdaLRSTrainContext(sched, model=model, optimizer=opt, report_every=200)
        ctx.resume()                                   # from ray.train.get_checkpoint(), if any
        while ctx.next_step < total_steps:
            loss = train_step(batch_for(ctx.next_step))  # forward, backward, optimizer.step()
            ctx.step(loss, tokens=n_tokens)              # reduce, decide, snapshot/restore, report
        ctx.finish()

    Args:
        scheduler: this rank's AdaLRSScheduler (its store holds this rank's snapshot).
        model, optimizer: what checkpoints save and resume restore (the wrapped model is fine).
        report_every: steps between ``ray.train.report`` calls (default: the AdaLRS window k).
        checkpoint_every: attach a checkpoint to every n-th report (0: never).
        sharded: ``False`` (DDP, replicas): rank 0 writes model and optimizer state once.
            ``True`` (FSDP/TP, shards): each rank writes its own ``model.state_dict()`` and
            ``optimizer.state_dict()`` to its own file and reads back only its own.
        checkpoint_snapshot: each rank writes its AdaLRS snapshot to its own checkpoint file,
            so a resumed run can still backtrack a trial begun before the checkpoint. Without it
            a resumed run relies on its store still holding the snapshot
            (``ObjectStoreSnapshotStore`` on the same node).
        get_loop_state, set_loop_state: this rank's loop state (e.g. data position) for
            checkpoints; plain types and tensors only (checkpoints load with
            ``weights_only=True``).
        metrics_fn: extra metrics merged into each report (e.g. ``{"val_loss": ...}``); called
            on every rank at each report.
        group: process group of the reductions (default: the world).
    """

    def __init__(
        self,
        scheduler: Any,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        report_every: int | None = None,
        checkpoint_every: int = 1,
        sharded: bool = False,
        checkpoint_snapshot: bool = True,
        get_loop_state: Callable[[], Any] | None = None,
        set_loop_state: Callable[[Any], None] | None = None,
        metrics_fn: Callable[[], dict[str, Any]] | None = None,
        group: Any = None,
    ) -> None:
        for attr in ("step", "state_dict", "load_state_dict", "store", "controller", "last_step"):
            if not hasattr(scheduler, attr):
                raise ValueError(
                    f"`scheduler` must be an AdaLRSScheduler; {type(scheduler).__name__} has no "
                    f"{attr!r}"
                )
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"`model` must be a torch.nn.Module; got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(
                f"`optimizer` must be a torch.optim.Optimizer; got {type(optimizer).__name__}"
            )
        if report_every is None:
            report_every = int(getattr(scheduler.controller.config, "window", 0) or 50)
        if isinstance(report_every, bool) or not isinstance(report_every, int) or report_every < 1:
            raise ValueError(f"The value of `report_every` is {report_every!r}, but must be >= 1")
        if (
            isinstance(checkpoint_every, bool)
            or not isinstance(checkpoint_every, int)
            or checkpoint_every < 0
        ):
            raise ValueError(
                f"The value of `checkpoint_every` is {checkpoint_every!r}, but must be an int >= 0"
            )
        if (get_loop_state is None) != (set_loop_state is None):
            raise ValueError("give both `get_loop_state` and `set_loop_state`, or neither")
        self.scheduler = scheduler
        self.model = model
        self.optimizer = optimizer
        self.report_every = report_every
        self.checkpoint_every = checkpoint_every
        self.sharded = bool(sharded)
        self.checkpoint_snapshot = bool(checkpoint_snapshot)
        self._get_loop_state = get_loop_state
        self._set_loop_state = set_loop_state
        self._metrics_fn = metrics_fn
        self._group = group
        ctx = _train_context()
        self.rank = ctx.get_world_rank() if ctx is not None else 0
        self.world_size = ctx.get_world_size() if ctx is not None else 1
        self._in_train = ctx is not None
        self.last_loss: float | None = None  # the reduced loss fed to the controller last
        self._new_interval()

    # ------------------------------------------------------------------ properties
    @property
    def next_step(self) -> int:
        """The step the loop runs next (after resume, after a ``rewind`` backtrack)."""
        return int(self.scheduler.last_step) + 1

    @property
    def device(self) -> torch.device:
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")

    def _new_interval(self) -> None:
        self._acc_losses: list[float] = []
        self._acc_events: list[dict[str, Any]] = []
        self._compute = ComputeCounter(self.world_size)
        self._last: dict[str, Any] = {}

    # ------------------------------------------------------------------ per step
    def reduce_mean(self, value: torch.Tensor | float) -> float:
        """:func:`reduce_mean` over this context's group."""
        return reduce_mean(value, self._group)

    def reduce_async(self, value: torch.Tensor | float) -> PendingMean:
        """:func:`reduce_mean_async` over this context's group; pass the result to :meth:`step`."""
        return reduce_mean_async(value, self._group)

    def step(
        self,
        loss: torch.Tensor | float | PendingMean,
        *,
        tokens: int = 0,
        reduced: bool = False,
    ) -> Decision:
        """Reduce ``loss`` over all ranks, feed the scheduler, report every ``report_every`` steps.

        Call after ``optimizer.step()`` with this rank's loss of the step (a 0-d tensor or a
        float), or with :meth:`reduce_async`'s handle started after the forward pass (the
        reduction then overlaps ``backward()``); pass ``reduced=True`` if the loop already
        averaged the loss over the ranks (then no collective is issued here). ``tokens``: tokens this rank processed in the step. Returns
        the controller's decision (identical on every rank). Raises :class:`SnapshotLostError`
        on every rank if any rank's snapshot is lost at a RESTORE.
        """
        if isinstance(loss, PendingMean):
            value = loss.wait()
        elif not reduced:
            value = self.reduce_mean(loss)
        elif isinstance(loss, torch.Tensor):
            value = float(loss.detach().item())
        else:
            value = float(loss)
        step = self.next_step
        lr = float(self.optimizer.param_groups[0]["lr"])  # the LR this step was taken with
        scale = float(self.scheduler.scale)
        lost: SnapshotMissingError | None = None
        try:
            decision = self.scheduler.step(value)
        except SnapshotMissingError as err:
            lost = err
            decision = None
        if lost is not None or decision.action in (Action.SNAPSHOT, Action.RESTORE):
            self._check_snapshots(step, lost)
        self.last_loss = value
        self._acc_losses.append(value)
        self._acc_events.extend(decision.events)
        self._compute.count(1, tokens)
        self._last = {"step": step, "lr": lr, "scale": scale}
        if (step + 1) % self.report_every == 0:
            self.report(checkpoint=None)
        return decision

    def _check_snapshots(self, step: int, lost: SnapshotMissingError | None) -> None:
        """All ranks agree that every rank saved/restored its snapshot (one scalar collective on
        SNAPSHOT and RESTORE steps only: a rank whose store failed stops every rank)."""
        n_lost = _all_reduce_sum([1.0 if lost else 0.0], self.device, self._group)[0]
        if n_lost == 0:
            return
        if lost is not None:
            logger.error("step %d: rank %d lost its AdaLRS snapshot: %s", step, self.rank, lost)
        raise SnapshotLostError(
            f"step {step}: {int(n_lost)} of {self.world_size} ranks could not save or restore "
            f"their AdaLRS snapshot"
            + (f" (this rank: {lost})" if lost is not None else " (not this rank)")
            + "; nothing was restored silently. Ray Train restarts from the latest checkpoint "
            "(FailureConfig.max_failures) unless LostSnapshotPolicy('fail') ends the run"
        ) from lost

    # ------------------------------------------------------------------ reports
    def metrics(self) -> dict[str, Any]:
        """The metrics of the interval since the last report (docs/design.md keys)."""
        tokens = _all_reduce_sum([self._compute.tokens], self.device, self._group)[0]
        metrics = {
            "step": self._last.get("step", self.next_step - 1),
            "loss": nanmean(self._acc_losses),
            "lr": self._last.get("lr", float(self.optimizer.param_groups[0]["lr"])),
            "scale": self._last.get("scale", float(self.scheduler.scale)),
            **self._compute.increments(),
            "adalrs_events": json.dumps(self._acc_events),
        }
        metrics["tokens_done"] = int(tokens)  # summed over the ranks
        if self._metrics_fn is not None:
            metrics.update(self._metrics_fn())
        return metrics

    def report(self, checkpoint: bool | None = None, extra: dict[str, Any] | None = None) -> None:
        """``ray.train.report`` the interval's metrics, with a checkpoint if due (or forced).

        Collective: every rank must call it at the same steps (:meth:`step` does so).
        """
        import ray.train

        metrics = self.metrics()
        if extra:
            metrics.update(extra)
        if checkpoint is None:
            # by step, not by report count, so a resumed run checkpoints at the same steps
            n = (int(metrics["step"]) + 1) // self.report_every
            checkpoint = bool(self.checkpoint_every) and n % self.checkpoint_every == 0
        if not self._in_train:
            logger.info("report (no Ray Train session): %s", metrics)
            self._new_interval()
            return
        if checkpoint:
            with tempfile.TemporaryDirectory(prefix="adalrs_ckpt_") as tmp:
                self.save_checkpoint(tmp)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
        self._new_interval()

    def finish(self, checkpoint: bool = False, close: bool = True) -> None:
        """Report the steps since the last report (if any), then :meth:`close` the store."""
        if self._compute.steps:
            self.report(checkpoint=checkpoint)
        if close:
            self.close()

    def close(self) -> None:
        """Free this rank's snapshot (object-store memory included)."""
        self.scheduler.store.clear()

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, directory: str | os.PathLike) -> None:
        """Write this rank's part of a checkpoint into ``directory``.

        Rank 0 writes ``adalrs_shared.pt`` (controller, base schedule, step counter, and model +
        optimizer unless ``sharded``); every rank writes ``adalrs_rank<r>.pt`` (its RNG, loop
        state, snapshot, the position and kept batches of its ``RewindableLoader`` if the
        scheduler has one, and its model + optimizer shard if ``sharded``). Ray Train merges the
        ranks' directories into one checkpoint.
        """
        directory = Path(directory)
        sched = self.scheduler.state_dict(include_snapshot=False)
        data = sched.pop("data", None)  # each rank's loader holds its own shard of the data
        if self.rank == 0:
            shared = {
                "version": CHECKPOINT_VERSION,
                "world_size": self.world_size,
                "sharded": self.sharded,
                "scheduler": sched,
            }
            if not self.sharded:
                shared["model"] = self.model.state_dict()
                shared["optimizer"] = self.optimizer.state_dict()
            torch.save(shared, directory / SHARED_FILE)
        own: dict[str, Any] = {
            "version": CHECKPOINT_VERSION,
            "rank": self.rank,
            "rng": get_rng_state(),
            "loop_state": self._get_loop_state() if self._get_loop_state else None,
            "snapshot": None,
            "data": data,
        }
        store = self.scheduler.store
        if self.checkpoint_snapshot and store.has_snapshot():
            snap_step, tensors, meta = store.load()
            own["snapshot"] = {"step": snap_step, "tensors": tensors, "meta": meta}
        if self.sharded:
            own["model"] = self.model.state_dict()
            own["optimizer"] = self.optimizer.state_dict()
        torch.save(own, directory / RANK_FILE.format(rank=self.rank))

    def load_checkpoint(self, directory: str | os.PathLike) -> int:
        """Restore what :meth:`save_checkpoint` wrote; returns :attr:`next_step`."""
        directory = Path(directory)
        shared_path = directory / SHARED_FILE
        own_path = directory / RANK_FILE.format(rank=self.rank)
        for path in (shared_path, own_path):
            if not path.is_file():
                raise ValueError(
                    f"checkpoint {str(directory)!r} has no {path.name} (written by an "
                    "AdaLRSTrainContext with another world size, or not by one at all)"
                )
        shared = torch.load(shared_path, map_location="cpu", weights_only=True)
        own = torch.load(own_path, map_location="cpu", weights_only=True)
        for name, state in ((SHARED_FILE, shared), (own_path.name, own)):
            if state.get("version") != CHECKPOINT_VERSION:
                raise ValueError(
                    f"{name} in {str(directory)!r} has version {state.get('version')!r}, but "
                    f"this code reads version {CHECKPOINT_VERSION}"
                )
        if shared["world_size"] != self.world_size:
            raise ValueError(
                f"checkpoint {str(directory)!r} was written by {shared['world_size']} workers but "
                f"this run has {self.world_size}: per-rank snapshots, RNG and shards cannot be "
                "redistributed; resume with the same number of workers"
            )
        if bool(shared["sharded"]) != self.sharded:
            raise ValueError(
                f"checkpoint {str(directory)!r} has sharded={shared['sharded']} but this context "
                f"has sharded={self.sharded}"
            )
        src = own if self.sharded else shared
        self.model.load_state_dict(src["model"])
        self.optimizer.load_state_dict(src["optimizer"])
        sched_state = dict(shared["scheduler"])
        snap = own["snapshot"]
        store = self.scheduler.store
        if snap is None and not self.checkpoint_snapshot and store.has_snapshot():
            # The store still holds a snapshot (e.g. this node's object store kept it across the
            # restart): keep it. A wrong one is refused at restore time by its step.
            step, tensors, meta = store.load()
            snap = {"step": step, "tensors": tensors, "meta": meta}
        sched_state["snapshot"] = snap
        sched_state["data"] = own.get("data")  # this rank's loader (older files: none)
        self.scheduler.load_state_dict(sched_state)
        set_rng_state(own["rng"])
        if self._set_loop_state is not None:
            self._set_loop_state(own["loop_state"])
        logger.info(
            "rank %d resumed from %s at step %d (scale %g, snapshot %s)",
            self.rank,
            directory,
            self.next_step,
            self.scheduler.scale,
            None if sched_state["snapshot"] is None else sched_state["snapshot"]["step"],
        )
        return self.next_step

    def resume(self) -> int:
        """Load ``ray.train.get_checkpoint()`` if there is one; returns :attr:`next_step`."""
        if not self._in_train:
            return self.next_step
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            # a fresh start: drop what an earlier attempt may have left under this rank's key
            self.scheduler.store.clear()
            return self.next_step
        with checkpoint.as_directory() as directory:
            return self.load_checkpoint(directory)
