"""The compared LR-search arms: grid, hyperband, asha, pbt and adalrs.

Each arm is a small frozen dataclass (:class:`search_algos.base.Arm`) with a configurable budget
that yields its trial configs (:meth:`~search_algos.base.Arm.slots`) and its Tune scheduler
(:meth:`~search_algos.base.Arm.make_scheduler`). :class:`adalrs_ray.comparison.AdaLRSComparison`
runs several arms in one ``tune.Tuner``.

Example::

    from search_algos import get_arm
    arm = get_arm("pbt", num_trials=4, perturbation_interval=2)

May import: :mod:`adalrs_ray.core` (AdaLRS settings), the comparison contract
(:mod:`adalrs_ray.report.contract`) and ``ray.tune``'s schedulers. Never the comparison
scheduler, a task or the CLI.
"""

from __future__ import annotations

from typing import Any

from search_algos.adalrs import AdaLRSArm
from search_algos.base import Arm
from search_algos.grid import GridArm
from search_algos.hyperband import ASHAArm, HyperBandArm
from search_algos.pbt import PBTArm

ARMS: dict[str, type[Arm]] = {
    cls.name: cls for cls in (AdaLRSArm, GridArm, HyperBandArm, ASHAArm, PBTArm)
}

# what AdaLRSComparison() compares when no arms are given
DEFAULT_ARMS = ("adalrs", "grid", "hyperband", "pbt")

__all__ = ["ARMS", "DEFAULT_ARMS", "ASHAArm", "AdaLRSArm", "Arm", "GridArm", "HyperBandArm"]
__all__ += ["PBTArm", "get_arm"]


def get_arm(name: str, **kwargs: Any) -> Arm:
    """Build the arm registered as ``name`` (adalrs, grid, hyperband, asha, pbt) with
    ``kwargs``. Raises ``ValueError`` for an unknown name, listing the valid ones."""
    cls = ARMS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown arm {name!r}; valid arms: {sorted(ARMS)}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # an unknown keyword: say which arm and what it accepts
        import dataclasses

        fields = sorted(f.name for f in dataclasses.fields(cls))
        raise ValueError(f"arm {name!r}: {exc}; its settings are {fields}") from exc
