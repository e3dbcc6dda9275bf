"""HyperBand and ASHA arms: log-uniform LR samples, early stopping by Tune's own schedulers.

Both measure time in reports (``time_attr="training_iteration"``) by default, so ``max_t`` is the
number of reports of one full-budget trial (``total_steps // report_every``) unless given.

* :class:`HyperBandArm` uses Tune's synchronous :class:`~ray.tune.schedulers.HyperBandScheduler`
  (Li et al., 2018): trials are PAUSED at each milestone and resumed from their last checkpoint,
  so the trainable must checkpoint at every report (the comparison trainables do). Synchronous
  HyperBand counts only live trials in a bracket: all of the arm's trials must be added at the
  start (the default with the comparison's grid of slots; do not cap ``max_concurrent_trials``
  below the arm's size), and with fewer trials than a bracket holds they all land in its first
  bracket. Tune fills the brackets in order of *increasing* s: the first bracket (s=0) runs its
  trials for the full ``max_t`` without halving, so early stopping starts only with the trials
  that reach the later brackets. The default ``num_trials`` is therefore one full HyperBand
  band (every bracket filled; :func:`band_size`).
* :class:`ASHAArm` uses :class:`~ray.tune.schedulers.ASHAScheduler` (Li et al., 2020): a trial
  below the cutoff of a rung is STOPPED; nothing is paused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from adalrs_ray.core.checks import check, check_int, check_number
from search_algos.base import Arm, SizeOption
from search_algos.registry import register_arm


@dataclass(frozen=True)
class _EarlyStoppingArm(Arm):
    max_t: int | None = None
    reduction_factor: float = 3.0
    time_attr: str = "training_iteration"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("max_t", self.max_t, 1, optional=True)
        check_number("reduction_factor", self.reduction_factor, low=1.0)
        check(
            isinstance(self.time_attr, str) and bool(self.time_attr),
            f"time_attr is {self.time_attr!r}, but must be a non-empty result key",
        )

    sampling: ClassVar[str] = "log_uniform"

    def resolved_max_t(self, total_steps: int, report_every: int) -> int:
        """``max_t`` or, by default, the number of reports of a full-budget trial."""
        if self.max_t is not None:
            return self.max_t
        return self.num_reports(total_steps, report_every)


def bracket_sizes(max_t: int, eta: float) -> list[tuple[int, int]]:
    """``(n0, r0)`` of each bracket of one band of Tune's ``HyperBandScheduler``, in the order
    Tune fills them (same formulas; brackets with ``r0 == 0`` are skipped, as Tune does)."""
    s_max_1 = int(round(math.log(max_t) / math.log(eta))) + 1
    out = []
    for s in range(s_max_1):
        n0 = int(math.ceil(s_max_1 / (s + 1) * eta**s))
        r0 = int(max_t * eta ** (-s))
        if r0 > 0:
            out.append((n0, r0))
    return out


def band_size(max_t: int, eta: float) -> int:
    """Trials in one full HyperBand band (all brackets filled)."""
    return sum(n0 for n0, _ in bracket_sizes(max_t, eta))


@register_arm
@dataclass(frozen=True)
class HyperBandArm(_EarlyStoppingArm):
    """Synchronous HyperBand over log-uniform LR samples.

    Args:
        num_trials: ``None`` (default): one full band, :func:`band_size` of ``max_t`` and
            ``reduction_factor`` (e.g. 5 trials for max_t=5 reports, eta=3; 22 for 20 reports).
        max_t: the longest a trial runs, in ``time_attr`` units (default: all its reports).
        reduction_factor: eta, the fraction 1/eta of a bracket's trials survives a milestone.
        time_attr: the result key that measures time (default ``training_iteration``).
        stop_last_trials: stop the survivors at ``max_t`` (Tune's default).
    """

    name: ClassVar[str] = "hyperband"
    default_num_trials: ClassVar[int | None] = None  # one full band
    size_option: ClassVar[SizeOption] = SizeOption(
        "hyperband_trials", "trials of the HyperBand arm"
    )
    preset_settings: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "default": {"num_trials": 8, "reduction_factor": 3},
        "smoke": {"num_trials": 2, "reduction_factor": 3},
    }

    stop_last_trials: bool = True

    def trial_count(self, total_steps: int, report_every: int) -> int:
        if self.num_trials is not None:
            return int(self.num_trials)
        return band_size(self.resolved_max_t(total_steps, report_every), self.reduction_factor)

    def make_scheduler(self, *, metric: str, mode: str, total_steps: int, report_every: int):
        from ray.tune.schedulers import HyperBandScheduler

        return HyperBandScheduler(
            time_attr=self.time_attr,
            metric=metric,
            mode=mode,
            max_t=self.resolved_max_t(total_steps, report_every),
            reduction_factor=self.reduction_factor,
            stop_last_trials=bool(self.stop_last_trials),
        )


@register_arm
@dataclass(frozen=True)
class ASHAArm(_EarlyStoppingArm):
    """Asynchronous successive halving (ASHA) over log-uniform LR samples.

    Args:
        max_t: the longest a trial runs, in ``time_attr`` units (default: all its reports).
        grace_period: a trial runs at least this long before it can be stopped (>= 1,
            <= max_t).
        reduction_factor: eta; a trial continues past a rung if it is in the top 1/eta.
        brackets: number of ASHA brackets (>= 1).
    """

    name: ClassVar[str] = "asha"
    default_num_trials: ClassVar[int] = 9
    size_option: ClassVar[SizeOption] = SizeOption("asha_trials", "trials of the ASHA arm")
    preset_settings: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "default": {"num_trials": 8, "reduction_factor": 3, "grace_period": 2},
        "smoke": {"num_trials": 2, "reduction_factor": 3},
    }

    grace_period: int = 1
    brackets: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("grace_period", self.grace_period, 1)
        check_int("brackets", self.brackets, 1)
        if self.max_t is not None:
            check(
                self.grace_period <= self.max_t,
                f"grace_period={self.grace_period} exceeds max_t={self.max_t}",
            )

    def make_scheduler(self, *, metric: str, mode: str, total_steps: int, report_every: int):
        from ray.tune.schedulers import ASHAScheduler

        max_t = self.resolved_max_t(total_steps, report_every)
        check(
            self.grace_period <= max_t,
            f"arm {self.key!r}: grace_period={self.grace_period} exceeds max_t={max_t} (the "
            "number of reports of a trial by default)",
        )
        return ASHAScheduler(
            time_attr=self.time_attr,
            metric=metric,
            mode=mode,
            max_t=max_t,
            grace_period=self.grace_period,
            reduction_factor=self.reduction_factor,
            brackets=self.brackets,
        )
