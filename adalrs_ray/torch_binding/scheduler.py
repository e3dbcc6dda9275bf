"""PyTorch binding of AdaLRS: a multiplier on any base LR schedule, plus snapshot/restore.

AdaLRS (Dong et al., NeurIPS 2025, arXiv 2506.13274) controls one number, the multiplier
``scale`` on the base schedule: the effective LR of param group ``g`` at step ``t`` is
``base_lr_g(t) * scale``, which is why AdaLRS works with cosine, WSD or any schedule. The
controller (:class:`adalrs_ray.AdaLRS`) decides ``scale`` and when to snapshot or backtrack
(Algorithm 1); :class:`AdaLRSScheduler` applies those decisions to a torch optimizer.

Example:
    >>> import torch
    >>> from adalrs_ray import AdaLRS, AdaLRSConfig
    >>> from adalrs_ray.torch_binding import AdaLRSScheduler, get_base_schedule
    >>> model = torch.nn.Linear(4, 1)
    >>> opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    >>> base = get_base_schedule("cosine", opt, total_steps=1000, warmup_steps=50)
    >>> sched = AdaLRSScheduler(opt, AdaLRS(AdaLRSConfig(total_steps=1000, window=50)),
    ...                         base, model=model)  # doctest: +SKIP
    >>> for t in range(1000):  # doctest: +SKIP
    ...     loss = model(torch.randn(8, 4)).pow(2).mean()
    ...     opt.zero_grad(); loss.backward(); opt.step()
    ...     decision = sched.step(loss.detach())
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from adalrs_ray.core.checks import check, is_number
from adalrs_ray.core.controller import Action
from adalrs_ray.torch_binding.rewind import RewindableLoader
from adalrs_ray.torch_binding.rng import get_rng_state, set_rng_state
from adalrs_ray.torch_binding.snapshot import (
    InMemorySnapshotStore,
    SnapshotMissingError,
    SnapshotStore,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BASE_SCHEDULES",
    "AdaLRSScheduler",
    "base_schedule_lambda",
    "get_base_schedule",
]

STATE_VERSION = 1
_META_FORMAT = 1
_STATE_KEYS = ("version", "last_step", "controller", "base_kind", "base", "initial_lrs", "snapshot")
_BACKTRACK_MODES = ("continue", "rewind")


# --------------------------------------------------------------------------- base schedules
# Each factory returns transformers' own LambdaLR, whose lambda is a pure function of the step
# (a functools.partial of a module-level function): the schedule needs no state but the step.


def _check_min_lr_ratio(value: Any) -> None:
    check(
        is_number(value) and 0 <= value < 1,
        f"The value of `min_lr_ratio` is {value!r}, but must be in [0, 1)",
    )


def _constant(optimizer: torch.optim.Optimizer, total_steps: int, *, warmup_steps: int = 0):
    from transformers import get_constant_schedule_with_warmup

    return get_constant_schedule_with_warmup(optimizer, num_warmup_steps=warmup_steps)


def _cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
):
    from transformers import (
        get_cosine_schedule_with_warmup,
        get_cosine_with_min_lr_schedule_with_warmup,
    )

    _check_min_lr_ratio(min_lr_ratio)
    if min_lr_ratio == 0.0:
        return get_cosine_schedule_with_warmup(
            optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps
        )
    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer,
        num_warmup_steps=warmup_steps,
        num_training_steps=total_steps,
        min_lr_rate=min_lr_ratio,
    )


def _wsd(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    decay_ratio: float = 0.1,
    min_lr_ratio: float = 0.0,
):
    from transformers import get_wsd_schedule

    check(
        is_number(decay_ratio) and 0 < decay_ratio <= 1,
        f"The value of `decay_ratio` is {decay_ratio!r}, but must be in (0, 1]",
    )
    _check_min_lr_ratio(min_lr_ratio)
    decay_steps = max(1, round(decay_ratio * total_steps))
    if warmup_steps + decay_steps > total_steps:
        raise ValueError(
            f"wsd: warmup_steps ({warmup_steps}) + decay steps ({decay_steps} = decay_ratio "
            f"{decay_ratio} * total_steps {total_steps}) must be <= total_steps"
        )
    return get_wsd_schedule(
        optimizer,
        num_warmup_steps=warmup_steps,
        num_decay_steps=decay_steps,
        num_training_steps=total_steps,
        warmup_type="linear",
        decay_type="linear",
        min_lr_ratio=min_lr_ratio,
    )


#: name -> factory(optimizer, total_steps, **kwargs) -> LambdaLR. "wsd" is warmup, stable, then a
#: linear decay over the last ``decay_ratio`` (10%) of the steps, as in the paper's WSD runs.
BASE_SCHEDULES: dict[str, Callable[..., LRScheduler]] = {
    "constant": _constant,
    "cosine": _cosine,
    "wsd": _wsd,
}


def get_base_schedule(
    name: str, optimizer: torch.optim.Optimizer, total_steps: int, **kwargs: Any
) -> LRScheduler:
    """Build a base LR schedule by name: a ``LambdaLR`` on ``optimizer`` (transformers' own).

    Args:
        name: one of :data:`BASE_SCHEDULES`: ``"constant"`` (``warmup_steps``), ``"cosine"``
            (``warmup_steps``, ``min_lr_ratio``: warmup then half-cosine to ``min_lr_ratio``),
            ``"wsd"`` (``warmup_steps``, ``decay_ratio`` = 0.1, ``min_lr_ratio``: warmup, stable,
            linear decay over the last ``decay_ratio`` of the run, the paper's WSD).
        optimizer: the optimizer whose groups' ``lr`` are the peak LRs.
        total_steps: length of the run in optimizer steps.
        **kwargs: the schedule's options listed above; any other raises ``ValueError``.
    """
    factory = BASE_SCHEDULES.get(name)
    if factory is None:
        raise ValueError(
            f"The value of `name` is {name!r}, but must be one of {sorted(BASE_SCHEDULES)}"
        )
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(
            f"`optimizer` must be a torch.optim.Optimizer; got {type(optimizer).__name__}"
        )
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"The value of `total_steps` is {total_steps!r}, but must be an int >= 1")
    warmup = kwargs.get("warmup_steps", 0)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup < total_steps:
        raise ValueError(
            f"The value of `warmup_steps` is {warmup!r}, but must be an int with "
            f"0 <= warmup_steps < total_steps ({total_steps})"
        )
    try:
        inspect.signature(factory).bind(optimizer, total_steps, **kwargs)
    except TypeError as err:
        allowed = [p for p in inspect.signature(factory).parameters][2:]
        raise ValueError(
            f"schedule {name!r} got unexpected options {sorted(kwargs)}; it accepts {allowed}"
        ) from err
    return factory(optimizer, total_steps, **kwargs)


def base_schedule_lambda(name: str, total_steps: int, **kwargs: Any) -> Callable[[int], float]:
    """The pure ``step -> factor`` function of a named schedule (see :func:`get_base_schedule`).

    Usable as ``base=`` of :class:`AdaLRSScheduler`, or to plot or test a schedule.
    """
    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    return get_base_schedule(name, dummy, total_steps, **kwargs).lr_lambdas[0]


# --------------------------------------------------------------------------- small helpers


def _is_dtensor(t: torch.Tensor) -> bool:
    return hasattr(t, "device_mesh") and callable(getattr(t, "to_local", None))


def _local(t: torch.Tensor) -> torch.Tensor:
    """The rank-local tensor behind ``t`` (its shard if a DTensor, under FSDP2/TP), else ``t``.

    Shares storage with ``t``, so copying into it restores ``t`` in place. Call under no_grad.
    """
    return t.to_local() if _is_dtensor(t) else t


def _freeze(value: Any) -> Any:
    """Lists to tuples, recursively (a layout read back from JSON compares equal)."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _as_dtensor_like(param: torch.Tensor, local: torch.Tensor, key: str) -> torch.Tensor:
    """Rebuild a DTensor optimizer state from its saved shard, with ``param``'s sharding."""
    if not _is_dtensor(param) or tuple(param.to_local().shape) != tuple(local.shape):
        raise ValueError(
            f"cannot rebuild the sharded optimizer state {key!r}: its shard shape "
            f"{tuple(local.shape)} differs from its parameter's; restore into an optimizer "
            "with the same state structure as at the snapshot"
        )
    from torch.distributed.tensor import DTensor

    local = local.to(param.to_local().device)
    return DTensor.from_local(
        local,
        param.device_mesh,
        param.placements,
        run_check=False,
        shape=param.shape,
        stride=param.stride(),
    )


def _set_lr(group: dict, value: float) -> None:
    if isinstance(group["lr"], torch.Tensor):  # capturable/fused optimizers keep lr as a tensor
        group["lr"].fill_(value)
    else:
        group["lr"] = value


def _as_float(loss: Any) -> float:
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(
                f"`loss` must be a float or a 0-d tensor (already reduced); got a tensor of "
                f"shape {tuple(loss.shape)}"
            )
        return float(loss.detach().item())
    if isinstance(loss, numbers.Real) and not isinstance(loss, bool):
        return float(loss)
    raise ValueError(f"`loss` must be a float or a 0-d tensor; got {type(loss).__name__}: {loss!r}")


# --------------------------------------------------------------------------- the scheduler


class AdaLRSScheduler:
    """Apply an AdaLRS controller to a torch optimizer: LR multiplier, snapshots, backtracking.

    The effective LR of param group ``g`` for step ``t`` is ``base_lr_g(t) * controller.scale``
    (the paper's multiplier on the base schedule), so the ratios between param groups are kept.
    The binding derives every group's LR from the base schedule and the controller before each
    ``optimizer.step()`` (an optimizer step pre-hook) and never trusts ``group["lr"]``: an
    ``optimizer.load_state_dict`` that brings back an old LR (PyTorch issue #65342) cannot undo
    the multiplier.

    Args:
        optimizer: the optimizer to drive. Its groups' ``lr`` (or ``initial_lr``) are the base
            (peak) LRs ``eta_0`` of the paper.
        controller: an :class:`adalrs_ray.AdaLRS` (or anything with ``observe(step, loss)``,
            ``scale``, ``state_dict()``, ``load_state_dict()``).
        base: the base schedule: ``None`` (constant), a torch ``LRScheduler`` built on
            ``optimizer`` (``LambdaLR``, transformers' schedules, or chainable ones such as
            ``CosineAnnealingLR``/``ExponentialLR``; the binding steps it, do not step it
            yourself), or a callable ``step -> factor`` applied to each group's initial LR.
        model: the module whose ``state_dict()`` tensors (parameters and persistent buffers) are
            snapshotted. Without it, only the optimizer's parameters are.
        scaler: an AMP ``GradScaler`` whose state is snapshotted and restored with the model.
        store: where snapshots live; default a new :class:`InMemorySnapshotStore`.
        rng: snapshot RNG states (torch CPU, accelerator, python ``random``, numpy) and restore
            them in ``"rewind"`` backtrack mode.
        data: the :class:`~adalrs_ray.torch_binding.RewindableLoader` the loop takes its
            batches from: in ``"rewind"`` mode a rewind replays the batches since the snapshot
            (in ``"continue"`` mode it only streams); its position is part of
            :meth:`state_dict` either way. A loop that indexes its data by step
            (``last_step + 1``) needs none.

    Backtracking (``controller.config.backtrack_mode``; ``AdaLRS(config)`` runs the default
    ``"auto"`` as ``"continue"``, ``AdaLRS(config.resolved(rewinds=True))`` as ``"rewind"``):
    ``"continue"`` restores model,
    optimizer and scaler state; the step counter, the data stream and the base schedule move on.
    ``"rewind"`` also restores the base-schedule state and the RNG states and moves the step
    counter back to ``restore_step + 1``; the caller must rewind its data (``last_step`` says
    where), or take its batches from a :class:`~adalrs_ray.torch_binding.RewindableLoader`
    given as ``data``, which does it.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        controller: Any,
        base: LRScheduler | Callable[[int], float] | None = None,
        *,
        model: torch.nn.Module | None = None,
        scaler: Any = None,
        store: SnapshotStore | None = None,
        rng: bool = True,
        data: RewindableLoader | None = None,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(
                f"`optimizer` must be a torch.optim.Optimizer; got {type(optimizer).__name__}"
            )
        for attr in ("observe", "state_dict", "load_state_dict"):
            if not callable(getattr(controller, attr, None)):
                raise ValueError(
                    f"`controller` must be an AdaLRS controller with observe(step, loss), scale, "
                    f"state_dict() and load_state_dict(); {type(controller).__name__} has no "
                    f"{attr}()"
                )
        if not hasattr(controller, "scale"):
            raise ValueError(f"`controller` ({type(controller).__name__}) has no `scale`")
        mode = getattr(getattr(controller, "config", None), "backtrack_mode", "continue")
        if mode not in _BACKTRACK_MODES:
            raise ValueError(
                f"The value of `controller.config.backtrack_mode` is {mode!r}, but must be one "
                f"of {list(_BACKTRACK_MODES)}"
            )
        if isinstance(base, ReduceLROnPlateau):
            raise ValueError(
                "`base` is a ReduceLROnPlateau: a loss-driven schedule would fight AdaLRS; use a "
                "step-driven schedule"
            )
        if isinstance(base, LRScheduler):
            # A wrapper that keeps the optimizer as `.optimizer` and shares its param groups
            # (accelerate's AcceleratedOptimizer, which the transformers Trainer's schedule is
            # built on) drives the same groups: accepted.
            if base.optimizer is not optimizer and not (
                getattr(base.optimizer, "optimizer", None) is optimizer
                and base.optimizer.param_groups is optimizer.param_groups
            ):
                raise ValueError(
                    f"`base` ({type(base).__name__}) is bound to another optimizer "
                    f"({type(base.optimizer).__name__} at {id(base.optimizer):#x}); build it on "
                    "the optimizer given to AdaLRSScheduler"
                )
            if base.last_epoch != 0:
                logger.warning(
                    "base scheduler has already been stepped (last_epoch=%d); its current LR is "
                    "used for step 0",
                    base.last_epoch,
                )
            kind = "scheduler"
        elif base is None:
            kind = "none"
        elif callable(base):
            kind = "callable"
        else:
            raise ValueError(
                f"`base` must be None, a torch LRScheduler or a callable step -> factor; got "
                f"{type(base).__name__}: {base!r}"
            )
        if model is not None and not isinstance(model, torch.nn.Module):
            raise ValueError(f"`model` must be a torch.nn.Module; got {type(model).__name__}")
        if scaler is not None and not (
            callable(getattr(scaler, "state_dict", None))
            and callable(getattr(scaler, "load_state_dict", None))
        ):
            raise ValueError(
                f"`scaler` must be a GradScaler (state_dict/load_state_dict); got "
                f"{type(scaler).__name__}"
            )
        if store is None:
            store = InMemorySnapshotStore()
        elif not isinstance(store, SnapshotStore):
            raise ValueError(f"`store` must be a SnapshotStore; got {type(store).__name__}")
        if not isinstance(rng, bool):
            raise ValueError(f"The value of `rng` is {rng!r}, but must be a bool")
        if data is not None and not isinstance(data, RewindableLoader):
            raise ValueError(f"`data` must be a RewindableLoader; got {type(data).__name__}")

        self._optimizer = optimizer
        self._controller = controller
        self._base = base
        self._base_kind = kind
        self._model = model
        self._scaler = scaler
        self._store = store
        self._rng = rng
        self._mode = mode
        self._data = data
        self._last_step = -1
        self._snapshot_layout: list | None = None  # layout of the store's snapshot, if known
        if kind == "scheduler":
            self._initial_lrs = [float(g["initial_lr"]) for g in optimizer.param_groups]
        else:
            for g in optimizer.param_groups:
                g.setdefault("initial_lr", float(g["lr"]))
            self._initial_lrs = [float(g["initial_lr"]) for g in optimizer.param_groups]
        self._base_lrs = self._derive_base_lrs()
        self._apply_lr()
        self._hook = optimizer.register_step_pre_hook(self._pre_step_hook)
        begin = getattr(controller, "begin", None)  # AdaLRS's opening: before the first step
        opening = callable(begin) and begin().action == Action.SNAPSHOT
        if opening:
            self._snapshot(-1)
            self._apply_lr()
        if data is not None:
            data.bind(self._last_step, -1 if opening else None, keeps=mode == "rewind")

    # ------------------------------------------------------------------ properties
    @property
    def controller(self) -> Any:
        """The AdaLRS controller."""
        return self._controller

    @property
    def store(self) -> SnapshotStore:
        """The snapshot store."""
        return self._store

    @property
    def scale(self) -> float:
        """The AdaLRS multiplier for the coming step."""
        return float(self._controller.scale)

    @property
    def data(self) -> RewindableLoader | None:
        """The :class:`RewindableLoader` a rewind takes back (``None``: none given)."""
        return self._data

    @property
    def last_step(self) -> int:
        """The last finished step (0-based; -1 before the first ``step``)."""
        return self._last_step

    @property
    def base_lrs(self) -> list[float]:
        """Unscaled base-schedule LR of each group for the coming step."""
        return list(self._base_lrs)

    @property
    def lr(self) -> list[float]:
        """Effective LR of each group for the coming step: ``base_lr_g(t) * scale``."""
        scale = self.scale
        return [b * scale for b in self._base_lrs]

    # ------------------------------------------------------------------ LR plumbing
    def _derive_base_lrs(self) -> list[float]:
        if self._base_kind == "scheduler":
            return [float(x) for x in self._base.get_last_lr()]
        if self._base_kind == "none":
            return list(self._initial_lrs)
        step = self._last_step + 1
        factor = self._base(step)
        if (
            isinstance(factor, bool)
            or not isinstance(factor, numbers.Real)
            or not math.isfinite(factor)
            or factor < 0
        ):
            raise ValueError(
                f"`base` returned {factor!r} for step {step}, but must return a finite float >= 0"
            )
        return [lr0 * float(factor) for lr0 in self._initial_lrs]

    def _apply_lr(self) -> None:
        groups = self._optimizer.param_groups
        if len(groups) != len(self._base_lrs):
            raise ValueError(
                f"the optimizer has {len(groups)} param groups but AdaLRSScheduler was built for "
                f"{len(self._base_lrs)}; build a new scheduler after add_param_group"
            )
        scale = self.scale
        for group, base_lr in zip(groups, self._base_lrs):
            _set_lr(group, base_lr * scale)
            group["adalrs_base_lr"] = base_lr  # informational; never read back

    def _pre_step_hook(self, optimizer, args, kwargs) -> None:
        self._apply_lr()

    def _advance_base(self, step_scheduler: bool = True) -> None:
        """Move the base schedule to step ``last_step + 1`` and write the next LRs.
        ``step_scheduler=False``: a base scheduler restored from the snapshot taken before the
        first step already stands at step 0."""
        if self._base_kind == "scheduler" and step_scheduler:
            # Chainable schedulers (CosineAnnealingLR, ExponentialLR, ...) compute from
            # group["lr"]: hand them the unscaled value they produced last.
            for group, base_lr in zip(self._optimizer.param_groups, self._base.get_last_lr()):
                _set_lr(group, float(base_lr))
            self._base.step()
        self._base_lrs = self._derive_base_lrs()
        self._apply_lr()

    def close(self) -> None:
        """Remove the optimizer hook (the optimizer keeps its current LRs) and let go of the
        ``data`` loader."""
        self._hook.remove()
        if self._data is not None:
            self._data.unbind()

    # ------------------------------------------------------------------ main entry
    def step(self, loss: float | torch.Tensor) -> Any:
        """Feed the loss of the step that just finished; act on the controller's decision.

        ``loss`` is a float or a 0-d tensor, already reduced across ranks when distributed
        (reading a device tensor synchronises). Performs SNAPSHOT/RESTORE, advances the base
        schedule and writes the next step's LR into every param group. Returns the controller's
        ``Decision``.
        """
        value = _as_float(loss)
        step = self._last_step + 1
        decision = self._controller.observe(step, value)
        action = decision.action
        next_last = step
        if action == Action.SNAPSHOT:
            self._snapshot(step)
        elif action == Action.RESTORE:
            restored = self._restore(step, getattr(decision, "restore_step", None))
            if self._mode == "rewind":
                next_last = restored
        self._last_step = next_last
        if self._data is not None:
            self._data.after_step(
                step,
                snapshot=action == Action.SNAPSHOT,
                restore_to=next_last if next_last != step else None,
            )
            if getattr(self._controller, "phase", None) == "frozen":  # no rewind can follow
                self._data.release()
        # the snapshot before the first step (the opening's) holds a base scheduler that
        # already gives step 0's LR; every other snapshot holds the one of its own step
        self._advance_base(step_scheduler=not (self._mode == "rewind" and next_last == -1))
        return decision

    # ------------------------------------------------------------------ snapshot / restore
    @torch.no_grad()
    def _live(self) -> tuple[list[torch.Tensor], list[tuple], list[list], int]:
        """Flatten live state: (tensors, layout, non-tensor optimizer values, n model tensors).

        Model (or parameter) tensors come first, then optimizer state tensors per parameter
        index and sorted key; ``layout`` describes each entry (a picklable structure).
        """
        tensors: list[torch.Tensor] = []
        layout: list[tuple] = []
        if self._model is not None:
            seen: dict[int, str] = {}
            for name, t in self._model.state_dict(keep_vars=True).items():
                if id(t) in seen:  # tied weights: one copy, restored once
                    layout.append(("alias", name, seen[id(t)]))
                    continue
                seen[id(t)] = name
                local = _local(t)
                tensors.append(local)
                layout.append(("model", name, tuple(local.shape), str(local.dtype)))
        params = [p for g in self._optimizer.param_groups for p in g["params"]]
        if self._model is None:
            for i, p in enumerate(params):
                local = _local(p)
                tensors.append(local)
                layout.append(("param", i, tuple(local.shape), str(local.dtype)))
        n_model = len(tensors)
        values: list[list] = []
        state = self._optimizer.state
        for i, p in enumerate(params):
            pstate = state.get(p)
            if not pstate:
                continue
            for key in sorted(pstate, key=str):
                v = pstate[key]
                if isinstance(v, torch.Tensor):
                    local = _local(v)
                    tensors.append(local)
                    entry = ("opt", i, key, tuple(local.shape), str(local.dtype), _is_dtensor(v))
                    layout.append(entry)
                else:
                    layout.append(("opt_value", i, key))
                    values.append([i, key, v])
        return tensors, layout, values, n_model

    def _snapshot(self, step: int) -> None:
        tensors, layout, values, n_model = self._live()
        meta = {
            "format": _META_FORMAT,
            "step": step,
            "layout": layout,
            "n_model": n_model,
            "opt_values": values,
            "scaler": self._scaler.state_dict() if self._scaler is not None else None,
            "base": self._base.state_dict() if self._base_kind == "scheduler" else None,
            "rng": get_rng_state() if self._rng else None,
        }
        self._store.save(step, tensors, meta)  # the store deep-copies meta
        self._snapshot_layout = tuple(layout)
        logger.info(
            "AdaLRS snapshot after step %d: %d tensors, %d bytes held",
            step,
            len(tensors),
            self._store.nbytes,
        )

    def _restore(self, step: int, restore_step: int | None) -> int:
        if not self._store.has_snapshot():
            raise SnapshotMissingError(
                f"the controller asked to RESTORE at step {step} (to the snapshot taken after "
                f"step {restore_step}), but {type(self._store).__name__} holds no snapshot: it "
                "was cleared or lost (the controller only asks RESTORE after a SNAPSHOT)"
            )
        tensors, layout, _, n_model = self._live()
        layout = tuple(layout)
        if self._snapshot_layout is not None and layout == self._snapshot_layout:
            # Fast path: same structure as when saved, one copy straight into the live tensors.
            saved_step, meta = self._store.load_into(tensors)
            self._check_restored(step, restore_step, saved_step)
            self._restore_opt_values(meta)
            path = "in place"
        else:
            saved_step, owned, meta = self._store.load()
            self._check_restored(step, restore_step, saved_step)
            if _freeze(meta["layout"]) == layout:
                with torch.no_grad():
                    for dst, src in zip(tensors, owned):
                        dst.copy_(src)
                self._restore_opt_values(meta)
                path = "in place (from owned copies)"
            else:
                self._restore_by_load(tensors, layout, n_model, owned, meta)
                path = "optimizer.load_state_dict (optimizer state structure changed)"
        if self._scaler is not None and meta["scaler"]:
            self._scaler.load_state_dict(meta["scaler"])
        if self._mode == "rewind":
            if self._base_kind == "scheduler":
                self._base.load_state_dict(meta["base"])
            if self._rng and meta["rng"] is not None:
                set_rng_state(meta["rng"])
        logger.info(
            "AdaLRS restore at step %d to the snapshot of step %d via %s (mode %s)",
            step,
            saved_step,
            path,
            self._mode,
        )
        return saved_step

    @staticmethod
    def _check_restored(step: int, restore_step: int | None, saved_step: int) -> None:
        if restore_step is not None and restore_step != saved_step:
            raise SnapshotMissingError(
                f"the controller asked to RESTORE at step {step} to the snapshot of step "
                f"{restore_step}, but the store held the snapshot of step {saved_step}; the "
                f"snapshot of step {restore_step} is lost"
            )

    def _restore_opt_values(self, meta: dict) -> None:
        params = [p for g in self._optimizer.param_groups for p in g["params"]]
        for i, key, v in meta["opt_values"]:
            self._optimizer.state[params[i]][key] = v  # meta is already a private copy

    def _restore_by_load(
        self,
        live: list[torch.Tensor],
        layout: list[tuple],
        n_model: int,
        owned: list[torch.Tensor],
        meta: dict,
    ) -> None:
        saved_layout = _freeze(meta["layout"])
        model_kinds = ("model", "alias", "param")
        if [e for e in layout if e[0] in model_kinds] != [
            e for e in saved_layout if e[0] in model_kinds
        ]:
            raise ValueError(
                "the model's state_dict (names, shapes or dtypes) differs from the snapshot's; "
                "AdaLRS can only restore into the model it snapshotted"
            )
        with torch.no_grad():
            for dst, src in zip(live[:n_model], owned[: meta["n_model"]]):
                dst.copy_(src)
        params = [p for g in self._optimizer.param_groups for p in g["params"]]
        state: dict[int, dict] = {}
        pos = meta["n_model"]
        for entry in saved_layout:
            if entry[0] == "opt":
                _, i, key, shape, _, was_dtensor = entry
                value = owned[pos]
                if was_dtensor:
                    value = _as_dtensor_like(params[i], value, key)
                state.setdefault(i, {})[key] = value
                pos += 1
        for i, key, v in meta["opt_values"]:
            state.setdefault(i, {})[key] = v
        current = self._optimizer.state_dict()
        self._optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, include_snapshot: bool = True) -> dict[str, Any]:
        """Controller, base schedule, step counter and (by default) the held snapshot.

        The snapshot is included so that a run checkpointed in the middle of an upscale trial
        can still backtrack after resuming; pass ``include_snapshot=False`` to leave it out
        (a resumed run that must backtrack then raises :class:`SnapshotMissingError`).
        """
        snapshot = None
        if include_snapshot and self._store.has_snapshot():
            snap_step, tensors, meta = self._store.load()
            snapshot = {"step": snap_step, "tensors": tensors, "meta": meta}
        return {
            "version": STATE_VERSION,
            "last_step": self._last_step,
            "controller": self._controller.state_dict(),
            "base_kind": self._base_kind,
            "base": copy.deepcopy(self._base.state_dict())
            if self._base_kind == "scheduler"
            else None,
            "initial_lrs": list(self._initial_lrs),
            "snapshot": snapshot,
            "data": None if self._data is None else self._data.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the checkpoint's values win over the constructor's."""
        if not isinstance(state_dict, dict):
            raise ValueError(f"`state_dict` must be a dict; got {type(state_dict).__name__}")
        missing = [k for k in _STATE_KEYS if k not in state_dict]
        if missing:
            raise ValueError(f"AdaLRSScheduler state_dict is missing keys {missing}")
        if state_dict["version"] != STATE_VERSION:
            raise ValueError(
                f"The value of `version` is {state_dict['version']!r}, but this AdaLRSScheduler "
                f"reads version {STATE_VERSION}"
            )
        if state_dict["base_kind"] != self._base_kind:
            raise ValueError(
                f"the checkpoint's base schedule is of kind {state_dict['base_kind']!r} but this "
                f"scheduler's is {self._base_kind!r}"
            )
        initial = state_dict["initial_lrs"]
        if len(initial) != len(self._optimizer.param_groups):
            raise ValueError(
                f"the checkpoint has {len(initial)} param groups but the optimizer has "
                f"{len(self._optimizer.param_groups)}"
            )
        last = state_dict["last_step"]
        if isinstance(last, bool) or not isinstance(last, int) or last < -1:
            raise ValueError(f"The value of `last_step` is {last!r}, but must be an int >= -1")
        snapshot = state_dict["snapshot"]
        if snapshot is not None and not {"step", "tensors", "meta"} <= set(snapshot):
            raise ValueError("the checkpoint's `snapshot` must have keys step, tensors, meta")
        data = state_dict.get("data")  # optional: checkpoints of bindings without `data`
        if self._data is not None and data is None:
            raise ValueError(
                "this AdaLRSScheduler takes its batches from a RewindableLoader, but the "
                "checkpoint holds no loader position (`data`): it was written by a binding "
                "without one, so the resumed run cannot replay the same batches"
            )
        if self._data is not None:
            self._data.load_state_dict(data)

        self._controller.load_state_dict(state_dict["controller"])
        if self._base_kind == "scheduler":
            self._base.load_state_dict(copy.deepcopy(state_dict["base"]))
        if [float(x) for x in initial] != self._initial_lrs:
            logger.info(
                "initial LRs from the checkpoint %s replace %s", list(initial), self._initial_lrs
            )
        self._initial_lrs = [float(x) for x in initial]
        for group, lr0 in zip(self._optimizer.param_groups, self._initial_lrs):
            if self._base_kind != "scheduler":
                group["initial_lr"] = lr0
        self._last_step = last
        if snapshot is None:
            self._store.clear()
            self._snapshot_layout = None
        else:
            self._store.save(snapshot["step"], snapshot["tensors"], snapshot["meta"])
            self._snapshot_layout = _freeze(snapshot["meta"]["layout"])
        self._base_lrs = self._derive_base_lrs()
        self._apply_lr()

    def __repr__(self) -> str:
        return (
            f"AdaLRSScheduler(last_step={self._last_step}, scale={self.scale:g}, "
            f"base={self._base_kind}, mode={self._mode}, store={self._store!r})"
        )
