"""The common shape of the single-run LR-free arms (:mod:`search_algos.prodigy`,
:mod:`search_algos.schedulefree`): one full-budget trial with the optimizer named in its config.

Such an arm replaces the LR search by an optimizer that sets its own step size, so it runs one
trial under a FIFO scheduler, AdaLRS off, and its slot carries the ``optimizer`` key (an optional
slot key of the comparison contract, :data:`adalrs_ray.report.contract.OPTIONAL_SLOT_KEYS`) that
the LM task reads as ``LMConfig.optimizer``. The simulator task has no optimizer:
:func:`adalrs_ray.experiments.presets.build_arms` refuses these arms there (:attr:`LRFreeArm.tasks`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, ClassVar

from adalrs_ray.core.checks import check
from search_algos.base import Arm

#: the extra of the package that installs the LR-free optimizers
EXTRA = "lrfree"


@dataclass(frozen=True)
class LRFreeArm(Arm):
    """One full-budget trial with the LR-free optimizer :attr:`optimizer` (FIFO, AdaLRS off).

    ``num_trials`` must be 1 (the method's point is a single run); ``lrs`` may give its one LR.
    Building the arm checks that the optimizer's package (:attr:`package`) is importable, so a
    missing extra fails before any trial starts."""

    default_num_trials: ClassVar[int] = 1
    #: the value of ``LMConfig.optimizer`` and the trial config key ``optimizer``
    optimizer: ClassVar[str] = ""
    #: the Python package the optimizer comes from
    package: ClassVar[str] = ""
    #: the tasks that have an optimizer to choose
    tasks: ClassVar[tuple[str, ...]] = ("lm",)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.num_trials == 1,
            f"arm {self.name!r}: num_trials is {self.num_trials}, but must be 1 (a single-run "
            "LR-free method runs one full-budget trial)",
        )
        try:
            found = importlib.util.find_spec(self.package) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules
            found = False
        check(
            found,
            f"arm {self.name!r} needs the package {self.package!r}: install it with "
            f"pip install 'adalrs-ray[{EXTRA}]'",
        )

    def slots(self, total_steps: int, report_every: int) -> list[dict[str, Any]]:
        """The arm's one slot, with ``optimizer`` besides the contract's keys."""
        return [
            {**slot, "optimizer": self.optimizer}
            for slot in super().slots(total_steps, report_every)
        ]

    def make_scheduler(self, *, metric: str, mode: str, total_steps: int, report_every: int):
        from ray.tune.schedulers import FIFOScheduler

        return FIFOScheduler()
