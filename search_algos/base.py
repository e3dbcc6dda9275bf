"""The common shape of a compared arm: a frozen dataclass that yields trial slots and a scheduler.

An arm is one way of searching the learning rate under a compute budget. Every arm answers two
questions for :class:`adalrs_ray.comparison.AdaLRSComparison`:

* :meth:`Arm.slots` -- its part of the param space: one concrete config per trial, each with the
  ``arm`` key (the arm's :attr:`Arm.key`), the starting ``lr`` and the budget (``total_steps``,
  ``report_every``) plus ``adalrs`` (AdaLRS settings, or ``None`` when AdaLRS is off). Random arms
  draw their LRs log-uniformly from a generator seeded by :attr:`Arm.seed`, so the samples are
  reproducible and visible before the run.
* :meth:`Arm.make_scheduler` -- the Tune scheduler that manages that arm's trials (FIFO, Tune's
  HyperBand/ASHA or PBT).

Each concrete arm lives in its own module of :mod:`search_algos` (``grid``, ``hyperband``, ...)
and registers itself (:mod:`search_algos.registry`); :func:`search_algos.get_arm` builds one by
name. Arguments are validated with :mod:`adalrs_ray.core.checks`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from adalrs_ray.core import stats
from adalrs_ray.core.checks import check, check_int, check_number


def log_spaced(lr_min: float, lr_max: float, n: int) -> list[float]:
    """``n`` LRs evenly spaced in log space over [lr_min, lr_max] (the geometric mean if n=1),
    rounded to 6 significant digits."""
    return [_round(lr) for lr in stats.log_spaced(lr_min, lr_max, n)]


def log_uniform(lr_min: float, lr_max: float, n: int, seed: int) -> list[float]:
    """``n`` LRs drawn log-uniformly from [lr_min, lr_max] by a generator seeded with ``seed``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    draws = np.exp(rng.uniform(math.log(lr_min), math.log(lr_max), size=n))
    return [min(max(_round(float(x)), lr_min), lr_max) for x in draws]


def _round(lr: float) -> float:
    """6 significant digits: readable configs, far below any LR resolution that matters."""
    return float(f"{lr:.6g}")


@dataclass(frozen=True)
class SizeOption:
    """How big an arm is, as a preset setting and an ``adalrs-ray compare`` option.

    Args:
        name: the preset setting and the option's destination, e.g. ``"grid_points"``
            (``ComparePreset.grid_points``, ``--grid-points``).
        help: the option's help text.
        kwarg: the arm's constructor argument it sets (default ``num_trials``).

    Example::

        SizeOption("pbt_trials", "population of the PBT arm")   # --pbt-trials N
    """

    name: str
    help: str
    kwarg: str = "num_trials"

    def __post_init__(self) -> None:
        check(
            isinstance(self.name, str) and self.name.isidentifier(),
            f"SizeOption name is {self.name!r}, but must be a Python identifier",
        )

    @property
    def flag(self) -> str:
        """The command-line option, ``--`` and the name with dashes: ``--grid-points``."""
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Arm:
    """Base of every arm. Subclasses set :attr:`name`, :attr:`sampling` and implement
    :meth:`make_scheduler`; :func:`search_algos.registry.register_arm` makes them known by name.
    A subclass may set :attr:`size_option` (its ``compare`` size option) and
    :attr:`preset_settings` (its settings per comparison preset).

    Args:
        lr_min, lr_max: the LR search range (log scale), ``0 < lr_min < lr_max``.
        num_trials: how many trials the arm runs (>= 1); ``None`` takes the arm's default, or
            the length of ``lrs``.
        lrs: explicit starting LRs, one per trial, instead of the arm's own choice
            (log-spaced for grid and adalrs, seeded log-uniform samples for the others).
        total_steps: the budget of one trial in optimizer steps; ``None`` takes the comparison's.
        report_every: steps between two reports of a trial; ``None`` takes the comparison's.
        seed: seed of the arm's LR samples (random arms).
        label: the value of the ``arm`` config key and of the ``arm`` column of the results;
            ``None`` uses :attr:`name`. Give two arms of the same kind different labels to
            compare them in one run.
    """

    name: ClassVar[str] = "arm"
    # how starting LRs are chosen: "log_spaced" over [lr_min, lr_max] or "log_uniform" samples
    sampling: ClassVar[str] = "log_spaced"
    default_num_trials: ClassVar[int | None] = 4
    # what the comparison presets and ``adalrs-ray compare`` need (search_algos.registry):
    # the arm's size option (None: no size setting) and its settings in each preset, keyed by
    # preset name, "default" for the others; keyword arguments besides the range and budget
    size_option: ClassVar[SizeOption | None] = None
    preset_settings: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    lr_min: float = 1e-5
    lr_max: float = 1e-1
    num_trials: int | None = None
    lrs: Sequence[float] | None = None
    total_steps: int | None = None
    report_every: int | None = None
    seed: int = 0
    label: str | None = None

    def __post_init__(self) -> None:
        check_number("lr_min", self.lr_min, low=0.0)
        check_number("lr_max", self.lr_max, low=0.0)
        check(
            self.lr_min < self.lr_max,
            f"lr_min={self.lr_min} and lr_max={self.lr_max}, but must satisfy lr_min < lr_max",
        )
        check_int("num_trials", self.num_trials, 1, optional=True)
        lrs = check_lrs("lrs", self.lrs)
        if lrs is not None:
            object.__setattr__(self, "lrs", lrs)
            check(
                self.num_trials is None or self.num_trials == len(lrs),
                f"num_trials={self.num_trials} but lrs has {len(lrs)} values: give one of them, "
                "or make them agree",
            )
            object.__setattr__(self, "num_trials", len(lrs))
        elif self.num_trials is None and self.default_num_trials is not None:
            object.__setattr__(self, "num_trials", self.default_num_trials)
        check_int("total_steps", self.total_steps, 1, optional=True)
        check_int("report_every", self.report_every, 1, optional=True)
        check_int("seed", self.seed, 0)
        if self.label is not None:
            check(
                isinstance(self.label, str) and self.label.strip() == self.label and self.label,
                f"label is {self.label!r}, but must be None or a non-empty string without "
                "surrounding spaces",
            )

    @classmethod
    def settings_for_preset(cls, preset: str) -> dict[str, Any]:
        """The arm's keyword arguments in the comparison preset ``preset`` (besides the LR range
        and the budget): ``preset_settings[preset]``, else ``preset_settings["default"]``."""
        settings = cls.preset_settings.get(preset, cls.preset_settings.get("default", {}))
        return dict(settings)

    # ------------------------------------------------------------------ identity
    @property
    def key(self) -> str:
        """The arm's value of the ``arm`` config key (``label`` or ``name``)."""
        return self.label or self.name

    def params(self) -> dict[str, Any]:
        """The arm's settings as plain data (for logs and reports)."""
        out = dataclasses.asdict(self)
        out["name"] = self.name
        if out.get("lrs") is not None:
            out["lrs"] = list(out["lrs"])
        return out

    # ------------------------------------------------------------------ budget
    def budget(self, total_steps: int, report_every: int) -> tuple[int, int]:
        """``(total_steps, report_every)`` of one trial, the arm's own or the comparison's."""
        steps = self.total_steps if self.total_steps is not None else total_steps
        every = self.report_every if self.report_every is not None else report_every
        check(
            every <= steps,
            f"arm {self.key!r}: report_every={every} exceeds total_steps={steps}; a trial must "
            "report at least once",
        )
        return steps, every

    def num_reports(self, total_steps: int, report_every: int) -> int:
        """Reports one full-budget trial makes (the unit of HyperBand/ASHA/PBT time)."""
        steps, every = self.budget(total_steps, report_every)
        return steps // every

    def trial_count(self, total_steps: int, report_every: int) -> int:
        """How many trials the arm runs under this budget."""
        return int(self.num_trials)

    def starting_lrs(self, total_steps: int, report_every: int) -> list[float]:
        """The starting LR of each trial."""
        if self.lrs is not None:
            return list(self.lrs)
        n = self.trial_count(total_steps, report_every)
        if self.sampling == "log_uniform":
            return log_uniform(self.lr_min, self.lr_max, n, self.seed)
        return log_spaced(self.lr_min, self.lr_max, n)

    # ------------------------------------------------------------------ to override
    def adalrs_config(self, total_steps: int) -> dict[str, Any] | None:
        """AdaLRS settings for the trial (``None``: AdaLRS off)."""
        return None

    def make_scheduler(self, *, metric: str, mode: str, total_steps: int, report_every: int):
        """The Tune ``TrialScheduler`` that manages this arm's trials."""
        raise NotImplementedError

    # ------------------------------------------------------------------ slots
    def slots(self, total_steps: int, report_every: int) -> list[dict[str, Any]]:
        """One concrete trial config per trial: ``arm``, ``lr``, ``total_steps``,
        ``report_every``, ``adalrs``."""
        steps, every = self.budget(total_steps, report_every)
        adalrs = self.adalrs_config(steps)
        return [
            {
                "arm": self.key,
                "lr": float(lr),
                "total_steps": steps,
                "report_every": every,
                "adalrs": dict(adalrs) if adalrs is not None else None,
            }
            for lr in self.starting_lrs(total_steps, report_every)
        ]


def check_lrs(name: str, lrs: Sequence[float] | None) -> tuple[float, ...] | None:
    """Validate an explicit LR list: non-empty, every value a finite number > 0."""
    if lrs is None:
        return None
    check(
        isinstance(lrs, Sequence) and not isinstance(lrs, str) and len(lrs) > 0,
        f"{name} is {lrs!r}, but must be None or a non-empty sequence of LRs",
    )
    for value in lrs:
        check_number(f"every value of {name}", value, low=0.0)
    return tuple(float(v) for v in lrs)
