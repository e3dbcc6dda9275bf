"""Grid arm: a fixed set of log-spaced LRs, each trained for the full budget (FIFO).

This is the baseline the paper compares against: one run per candidate LR, no early stopping,
no adaptation. Its compute is ``num_trials * total_steps`` steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from search_algos.base import Arm, SizeOption
from search_algos.registry import register_arm


@register_arm
@dataclass(frozen=True)
class GridArm(Arm):
    """Grid search over the LR: ``num_trials`` log-spaced LRs in [lr_min, lr_max] (or the
    explicit ``lrs``), each run for the full budget under a FIFO scheduler.

    Example::

        GridArm(lr_min=1e-4, lr_max=1e-2, num_trials=3)   # LRs 1e-4, 1e-3, 1e-2
    """

    name: ClassVar[str] = "grid"
    default_num_trials: ClassVar[int] = 5
    size_option: ClassVar[SizeOption] = SizeOption("grid_points", "LRs of the grid")
    preset_settings: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "default": {"num_trials": 7},
        "smoke": {"num_trials": 2},
    }

    def make_scheduler(self, *, metric: str, mode: str, total_steps: int, report_every: int):
        from ray.tune.schedulers import FIFOScheduler

        return FIFOScheduler()
