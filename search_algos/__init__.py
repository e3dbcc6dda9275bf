"""The compared LR-search arms: adalrs, grid, random, hyperband, asha and pbt.

Each arm is a small frozen dataclass (:class:`search_algos.base.Arm`) with a configurable budget
that yields its trial configs (:meth:`~search_algos.base.Arm.slots`) and its Tune scheduler
(:meth:`~search_algos.base.Arm.make_scheduler`). :class:`adalrs_ray.comparison.AdaLRSComparison`
runs several arms in one ``tune.Tuner``.

Every module of this package except ``base`` and ``registry`` is an arm module: it is imported
here, in alphabetical order, and registers its arm(s) with
:func:`~search_algos.registry.register_arm`. Adding an arm is adding its module (plus its tests
and a docs line); :data:`ARMS`, :func:`get_arm`, the presets and the ``compare`` options follow.

Example::

    from search_algos import get_arm
    arm = get_arm("pbt", num_trials=4, perturbation_interval=2)

May import: :mod:`adalrs_ray.core` (AdaLRS settings, argument checks), the comparison contract
(:mod:`adalrs_ray.report.contract`) and ``ray.tune``'s schedulers. Never the comparison
scheduler, a task or the CLI.
"""

from __future__ import annotations

import importlib
import pkgutil

from search_algos.base import Arm, SizeOption
from search_algos.registry import ARMS, get_arm, register_arm, size_options

#: modules of this package that hold no arm
NOT_ARM_MODULES = frozenset({"base", "registry"})

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in NOT_ARM_MODULES and not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")

from search_algos.adalrs import AdaLRSArm  # noqa: E402  (imported above; the public names)
from search_algos.grid import GridArm  # noqa: E402
from search_algos.hyperband import ASHAArm, HyperBandArm  # noqa: E402
from search_algos.pbt import PBTArm  # noqa: E402

# what AdaLRSComparison() compares when no arms are given
DEFAULT_ARMS = ("adalrs", "grid", "hyperband", "pbt")

__all__ = ["ARMS", "DEFAULT_ARMS", "ASHAArm", "AdaLRSArm", "Arm", "GridArm", "HyperBandArm"]
__all__ += ["PBTArm", "SizeOption", "get_arm", "register_arm", "size_options"]
