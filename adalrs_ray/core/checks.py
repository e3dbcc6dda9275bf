"""Argument checks in one style: a ``ValueError`` that names the value and the rule.

Every layer validates user input with these (never ``assert``), so every message reads
``"<name> is <value!r>, but must be <rule>"`` (Optuna's style; see shared/STYLE.md).

Example::

    check_int("total_steps", total_steps, 1)         # total_steps is 0, but must be an integer >= 1
    check_number("lam", lam, low=0, high=1)          # lam is 1.5, but must be a finite number in (0, 1)
    check_choice("ramp", ramp, ("geometric", "linear"))
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = [
    "check",
    "check_choice",
    "check_int",
    "check_number",
    "is_integer",
    "is_number",
]


def is_integer(value: Any) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok``."""
    if not ok:
        raise ValueError(message)


def check_int(name: str, value: Any, minimum: int, *, optional: bool = False) -> None:
    """An integer >= ``minimum`` (or ``None`` when ``optional``)."""
    if optional and value is None:
        return
    check(
        is_integer(value) and value >= minimum,
        f"{name} is {value!r}, but must be {'None or ' if optional else ''}an integer >= {minimum}",
    )


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    strict: bool = True,
    optional: bool = False,
) -> None:
    """A finite number in (low, high) (``strict``) or [low, high]; ``None`` bounds are open."""
    if optional and value is None:
        return
    ok = is_number(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if ok and high is not None:
        ok = value < high if strict else value <= high
    lo = "-inf" if low is None else low
    hi = "inf" if high is None else high
    interval = f"({lo}, {hi})" if strict else f"[{lo}, {hi}]"
    prefix = "None or " if optional else ""
    check(ok, f"{name} is {value!r}, but must be {prefix}a finite number in {interval}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """One of ``choices``."""
    choices = tuple(choices)
    check(value in choices, f"{name} is {value!r}, but must be one of {list(choices)}")
