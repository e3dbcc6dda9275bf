"""The registry of arms: every arm module registers its class here with :func:`register_arm`.

Everything that lists the arms reads this registry: :func:`get_arm`, the names
``adalrs-ray compare --arms`` accepts, the presets' per-arm settings and the ``compare`` options
for arm sizes (``--grid-points``, ``--hyperband-trials``, ...). An arm class declares what they
need (:attr:`~search_algos.base.Arm.size_option`, :attr:`~search_algos.base.Arm.preset_settings`),
so adding an arm is one new module (imported by :mod:`search_algos`), its tests and a docs line.

Example::

    @register_arm
    @dataclass(frozen=True)
    class MyArm(Arm):
        name: ClassVar[str] = "mine"
        size_option: ClassVar[SizeOption] = SizeOption("mine_trials", "trials of my arm")
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from adalrs_ray.core.checks import check
from search_algos.base import Arm, SizeOption

__all__ = ["ARMS", "get_arm", "register_arm", "size_options"]

#: name -> arm class, in registration order (the import order of the arm modules)
ARMS: dict[str, type[Arm]] = {}

A = TypeVar("A", bound=type[Arm])


def register_arm(cls: A) -> A:
    """Class decorator: add the arm ``cls`` to :data:`ARMS` under ``cls.name``.

    Raises ``ValueError`` for a name or a size option already taken, or a class that is not an
    :class:`~search_algos.base.Arm`."""
    check(
        isinstance(cls, type) and issubclass(cls, Arm) and cls.name != Arm.name,
        f"register_arm: {cls!r} must be an Arm subclass with its own name",
    )
    check(
        cls.name not in ARMS,
        f"register_arm: arm {cls.name!r} is already registered by {ARMS.get(cls.name)!r}",
    )
    if cls.size_option is not None:
        taken = {o.name: arm for arm, o in size_options().items()}
        check(
            cls.size_option.name not in taken,
            f"register_arm: arm {cls.name!r}: size option {cls.size_option.name!r} is already "
            f"the size of arm {taken.get(cls.size_option.name)!r}",
        )
    ARMS[cls.name] = cls
    return cls


def size_options() -> dict[str, SizeOption]:
    """Arm name -> its :class:`~search_algos.base.SizeOption`, for the arms that have one."""
    return {name: cls.size_option for name, cls in ARMS.items() if cls.size_option is not None}


def get_arm(name: str, **kwargs: Any) -> Arm:
    """Build the arm registered as ``name`` (adalrs, grid, hyperband, asha, pbt, random) with
    ``kwargs``. Raises ``ValueError`` for an unknown name, listing the valid ones."""
    cls = ARMS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown arm {name!r}; valid arms: {sorted(ARMS)}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # an unknown keyword: say which arm and what it accepts
        fields = sorted(f.name for f in dataclasses.fields(cls))
        raise ValueError(f"arm {name!r}: {exc}; its settings are {fields}") from exc
