"""Random-search arm: log-uniform LR samples, each trained for the full budget (FIFO).

Random search (Bergstra and Bengio, "Random Search for Hyper-Parameter Optimization", JMLR 13,
2012) is the standard baseline of hyperparameter optimisation: ``num_trials`` LRs drawn
log-uniformly from [lr_min, lr_max], one full-budget run each, no early stopping. Against the
grid it shows what the choice of the points is worth; against HyperBand, ASHA and PBT, what
their early stopping and exploitation are worth. Its compute is ``num_trials * total_steps``
steps. The samples come from a generator seeded by the arm's ``seed``
(:func:`search_algos.base.log_uniform`), so they are reproducible and known before the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from search_algos.base import Arm, SizeOption
from search_algos.registry import register_arm


@register_arm
@dataclass(frozen=True)
class RandomSearchArm(Arm):
    """Random search over the LR: ``num_trials`` log-uniform samples in [lr_min, lr_max] (or
    the explicit ``lrs``), each run for the full budget under a FIFO scheduler.

    Args:
        num_trials: the number of sampled LRs (default 5).
        seed: seed of the samples: the same seed gives the same LRs.

    Example::

        RandomSearchArm(lr_min=1e-4, lr_max=1e-2, num_trials=4, seed=1)
    """

    name: ClassVar[str] = "random"
    sampling: ClassVar[str] = "log_uniform"
    default_num_trials: ClassVar[int] = 5
    size_option: ClassVar[SizeOption] = SizeOption("random_trials", "LRs of the random search")
    # as many full-budget trials as the grid: equal compute, sampled instead of spaced points
    preset_settings: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "default": {"num_trials": 7},
        "smoke": {"num_trials": 2},
    }

    def make_scheduler(self, *, metric: str, mode: str, total_steps: int, report_every: int):
        from ray.tune.schedulers import FIFOScheduler

        return FIFOScheduler()
