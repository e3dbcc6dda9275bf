"""PBT arm: Tune's Population Based Training perturbing the LR in log space.

Jaderberg et al., 2017. A population of ``num_trials`` trials starts from log-uniform LR samples.
Every ``perturbation_interval`` reports a trial in the bottom ``quantile_fraction`` of the
population copies the checkpoint and config of one in the top quantile (exploit), then its LR is
multiplied by ``perturbation_factor`` or its inverse, or, with ``resample_probability``, drawn
again log-uniformly from [lr_min, lr_max] (explore); the result is clipped to that range.
Exploits restore a real checkpoint: the trainable must report a ``tune.Checkpoint`` (the
comparison trainables do at every report). Use ``TuneConfig(reuse_actors=True)``: restarts are
much cheaper.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from adalrs_ray.core.checks import check, check_int, check_number, is_number
from search_algos.base import Arm, SizeOption
from search_algos.registry import register_arm


def clip_lr(config: dict[str, Any], *, lr_min: float, lr_max: float) -> dict[str, Any]:
    """PBT ``custom_explore_fn``: keep the perturbed ``lr`` inside [lr_min, lr_max]."""
    config["lr"] = float(min(max(config["lr"], lr_min), lr_max))
    return config


@register_arm
@dataclass(frozen=True)
class PBTArm(Arm):
    """Population Based Training over the LR.

    Args:
        num_trials: the population size (>= 2: exploits need a top and a bottom trial).
        perturbation_interval: reports between two perturbations of a trial (default: a fifth
            of the trial's reports, at least 1).
        burn_in_period: reports before the first perturbation (>= 0).
        quantile_fraction: the bottom/top fraction of the population, in (0, 0.5].
        resample_probability: chance that the LR is drawn again instead of perturbed, [0, 1].
        perturbation_factor: the LR is multiplied by this factor or by its inverse (> 1): a
            symmetric move in log space.
        time_attr: the result key that measures time (default ``training_iteration``).
        synch: synchronous PBT (Tune's ``synch=True``).
    """

    name: ClassVar[str] = "pbt"
    sampling: ClassVar[str] = "log_uniform"
    default_num_trials: ClassVar[int] = 4
    size_option: ClassVar[SizeOption] = SizeOption("pbt_trials", "population of the PBT arm")
    preset_settings: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "default": {"num_trials": 4},
        "smoke": {"num_trials": 2},
    }

    perturbation_interval: int | None = None
    burn_in_period: int = 0
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25
    perturbation_factor: float = 1.5
    time_attr: str = "training_iteration"
    synch: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("num_trials (the PBT population)", self.num_trials, 2)
        check_int("perturbation_interval", self.perturbation_interval, 1, optional=True)
        check_int("burn_in_period", self.burn_in_period, 0)
        q = self.quantile_fraction
        check(
            is_number(q) and 0.0 < q <= 0.5,
            f"quantile_fraction is {q!r}, but must be a number in (0, 0.5]",
        )
        check_number(
            "resample_probability", self.resample_probability, low=0.0, high=1.0, strict=False
        )
        check_number("perturbation_factor", self.perturbation_factor, low=1.0)
        check(
            isinstance(self.time_attr, str) and bool(self.time_attr),
            f"time_attr is {self.time_attr!r}, but must be a non-empty result key",
        )

    def resolved_interval(self, total_steps: int, report_every: int) -> int:
        if self.perturbation_interval is not None:
            return self.perturbation_interval
        return max(1, self.num_reports(total_steps, report_every) // 5)

    def make_scheduler(self, *, metric: str, mode: str, total_steps: int, report_every: int):
        from ray import tune
        from ray.tune.schedulers import PopulationBasedTraining

        f = float(self.perturbation_factor)
        return PopulationBasedTraining(
            time_attr=self.time_attr,
            metric=metric,
            mode=mode,
            perturbation_interval=self.resolved_interval(total_steps, report_every),
            burn_in_period=self.burn_in_period,
            hyperparam_mutations={"lr": tune.loguniform(self.lr_min, self.lr_max)},
            quantile_fraction=self.quantile_fraction,
            resample_probability=self.resample_probability,
            perturbation_factors=(f, 1.0 / f),
            custom_explore_fn=functools.partial(clip_lr, lr_min=self.lr_min, lr_max=self.lr_max),
            log_config=False,
            synch=bool(self.synch),
        )
