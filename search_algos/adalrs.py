"""AdaLRS arm: one full-budget run per starting LR with AdaLRS adapting the LR inside the trial.

AdaLRS (Dong et al., "AdaLRS: Loss-Guided Adaptive Learning Rate Search", NeurIPS 2025,
arXiv 2506.13274, Algorithm 1) searches the LR online by maximising the loss-descent velocity, so
one run replaces a sweep. The arm runs one trial per starting LR under a FIFO scheduler; the
trainable builds ``AdaLRSConfig(total_steps=<budget>, **adalrs)`` from the trial config and
applies the controller's multiplier to its base schedule. Steps spent in failed upscale trials
(backtracking) stay in the trial's compute account.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from adalrs_ray.core.checks import check
from search_algos.base import Arm
from search_algos.registry import register_arm


@register_arm
@dataclass(frozen=True)
class AdaLRSArm(Arm):
    """AdaLRS inside each trial, one trial per starting LR (FIFO, full budget).

    Args:
        lrs: explicit starting LRs; ``None`` uses ``num_trials`` log-spaced LRs in
            [lr_min, lr_max] (default 3: too small, middle, too large).
        adalrs: keyword arguments of :class:`adalrs_ray.AdaLRSConfig` except ``total_steps``
            (the trial budget fills it), e.g. ``{"window": 50, "alpha": 3, "beta": 2}``.
            They are validated against the budget when the comparison builds its slots.

    Example::

        AdaLRSArm(lrs=(1e-4, 1e-2), adalrs={"window": 50})
    """

    name: ClassVar[str] = "adalrs"
    default_num_trials: ClassVar[int] = 3
    # no size option and no preset settings: a comparison preset builds one AdaLRS arm per
    # starting LR from its own adalrs_starts and adalrs fields (adalrs_ray.experiments.presets)

    adalrs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            isinstance(self.adalrs, Mapping),
            f"adalrs is {self.adalrs!r}, but must be a mapping of AdaLRSConfig arguments",
        )
        check(
            "total_steps" not in self.adalrs,
            "adalrs must not set total_steps: the trial budget (total_steps of the arm or of "
            "the comparison) fills it",
        )
        object.__setattr__(self, "adalrs", dict(self.adalrs))

    def adalrs_config(self, total_steps: int) -> dict[str, Any]:
        from adalrs_ray.core.controller import AdaLRSConfig

        # build it once here so a bad setting fails before any trial starts
        AdaLRSConfig.from_dict({"total_steps": total_steps, **self.adalrs})
        return dict(self.adalrs)

    def make_scheduler(self, *, metric: str, mode: str, total_steps: int, report_every: int):
        from ray.tune.schedulers import FIFOScheduler

        return FIFOScheduler()
