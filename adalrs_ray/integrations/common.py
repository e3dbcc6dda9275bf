"""What both trainer integrations share: the per-step loss, its reduction across ranks, the
controller argument, and a stand-in for the trainer's LR scheduler that lets the binding step it.

The trainers step their LR scheduler themselves after each optimizer step. The binding
(:class:`~adalrs_ray.torch_binding.AdaLRSScheduler`) must step the base schedule itself (it puts
the unscaled LR back around chainable schedulers and knows when a step happened), so the
integrations hand the trainer a :class:`BindingSteppedSchedule`: its ``step()`` does nothing,
its ``state_dict``/``load_state_dict`` are the real scheduler's (the trainer's own checkpoint of
the schedule stays what it was), and ``get_last_lr()`` is the effective LR ``base x scale`` (so
the trainer logs the LR the optimizer used).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from adalrs_ray.core.controller import AdaLRS, AdaLRSConfig

logger = logging.getLogger(__name__)

__all__ = [
    "BindingSteppedSchedule",
    "LossAccumulator",
    "controller_rewinds",
    "make_controller",
    "reduce_mean_across_ranks",
    "unwrap_optimizer",
]


def make_controller(controller: Any, *, rewinds: bool = False) -> Any:
    """An :class:`AdaLRS` from an ``AdaLRSConfig``, or the controller given.

    ``rewinds``: whether the integration takes its batches from a
    :class:`~adalrs_ray.torch_binding.RewindableLoader`, so that a config's
    ``backtrack_mode="auto"`` resolves to ``"rewind"`` (and the fields left at ``None`` to the
    rewinding default). Without it, ``backtrack_mode="rewind"`` is refused.
    """
    if not isinstance(rewinds, bool):
        raise ValueError(f"The value of `rewind` is {rewinds!r}, but must be a bool")
    if isinstance(controller, AdaLRSConfig):
        controller = AdaLRS(controller.resolved(rewinds=rewinds))
    for attr in ("observe", "state_dict", "load_state_dict"):
        if not callable(getattr(controller, attr, None)):
            raise ValueError(
                f"`controller` must be an AdaLRS, an AdaLRSConfig or an object with "
                f"observe/state_dict/load_state_dict; got {type(controller).__name__}"
            )
    if controller_rewinds(controller) and not rewinds:
        raise ValueError(
            "The value of `backtrack_mode` is 'rewind', but must be 'continue' in a trainer "
            "integration that does not rewind its data (rewind=False, or an integration "
            "without a rewindable loader): leave it at 'auto', which resolves to 'continue' here"
        )
    return controller


def controller_rewinds(controller: Any) -> bool:
    """Whether the controller runs ``backtrack_mode="rewind"`` (a controller without a config
    is taken to continue)."""
    return getattr(getattr(controller, "config", None), "backtrack_mode", "continue") == "rewind"


def reduce_mean_across_ranks(loss: torch.Tensor) -> torch.Tensor:
    """The mean of a 0-d ``loss`` over all ranks when torch.distributed is initialised, else
    ``loss``. One scalar all-reduce (SUM, then divided by the world size: gloo has no AVG), so
    every rank feeds the controller the same value and takes the same decisions."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return loss
    world = torch.distributed.get_world_size()
    if world == 1:
        return loss
    buf = loss.detach().clone().to(torch.float64 if loss.device.type == "cpu" else torch.float32)
    torch.distributed.all_reduce(buf, op=torch.distributed.ReduceOp.SUM)
    return buf / world


def gather_to_rank_zero(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0, ``None`` on the others; ``[obj]`` when
    torch.distributed is not initialised or runs one rank. A collective (``gather_object``):
    every rank must call it at the same point."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


class LossAccumulator:
    """Sums the micro-batch losses of one optimizer step.

    Both trainers hand out each micro-batch's loss already divided by the number of micro-batches
    of the step (``gradient_accumulation_steps``, ``accumulate_grad_batches``; transformers also
    when it normalises by the number of items), as they do for their own logged loss; the sum
    over one step's micro-batches is then the step's mean loss. Kept on the device, so adding
    costs no synchronisation; :meth:`pop` reads it once per optimizer step.
    """

    def __init__(self) -> None:
        self._sum: torch.Tensor | None = None
        self.count = 0

    def add(self, loss: Any) -> None:
        if not isinstance(loss, torch.Tensor):
            loss = torch.tensor(float(loss))
        if loss.numel() != 1:
            raise ValueError(
                f"the training loss must be a 0-d tensor; got a tensor of shape {tuple(loss.shape)}"
            )
        loss = loss.detach().reshape(())
        self._sum = loss.clone() if self._sum is None else self._sum + loss
        self.count += 1

    def pop(self) -> torch.Tensor:
        if self._sum is None:
            raise RuntimeError(
                "an optimizer step finished but no training loss was recorded for it; the "
                "integration's loss hook was not called (see the integration's docstring)"
            )
        value, self._sum, self.count = self._sum, None, 0
        return value


class BindingSteppedSchedule:
    """Stands in for the trainer's LR scheduler while AdaLRS drives it (see the module doc).

    ``base`` is the trainer's scheduler or ``None`` (a constant LR). Until :meth:`bind` is
    called, ``get_last_lr`` is the base scheduler's (or the groups' LRs).
    """

    def __init__(self, base: Any, optimizer: torch.optim.Optimizer | None = None) -> None:
        if isinstance(base, torch.optim.lr_scheduler.ReduceLROnPlateau):
            raise ValueError(
                "the trainer's LR scheduler is a ReduceLROnPlateau: a loss-driven schedule "
                "would fight AdaLRS; use a step-driven schedule"
            )
        self.base = base
        self.optimizer = optimizer if base is None else base.optimizer
        self._binding: Any = None

    def bind(self, binding: Any) -> None:
        self._binding = binding

    def step(self, *args: Any, **kwargs: Any) -> None:
        """Does nothing: the binding steps the base schedule after each observation."""

    def get_last_lr(self) -> list[float]:
        if self._binding is not None:
            return self._binding.lr
        if self.base is not None:
            return self.base.get_last_lr()
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict() if self.base is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.base is not None:
            self.base.load_state_dict(state_dict)


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer behind wrappers that keep it as ``.optimizer`` (accelerate's
    ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``): the binding's step pre-hook
    must sit on the optimizer whose ``step`` really runs."""
    seen = 0
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer) and seen < 8:
        optimizer = optimizer.optimizer
        seen += 1
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(
            f"the trainer's optimizer must be a torch.optim.Optimizer; got "
            f"{type(optimizer).__name__}"
        )
    return optimizer
