"""Small numeric helpers shared by every layer (stdlib only): least-squares slopes, the mean of
the finite values, log-spaced grids."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["fit_velocity", "log_spaced", "nanmean", "slope"]


def fit_velocity(
    n: int, sx: float, sy: float, sxx: float, sxy: float, syy: float
) -> tuple[float, float]:
    """``(v, se)`` of a least-squares line through n points given their sums (x and y may be
    centred on any offset): v = -slope (positive when y falls), se its standard error
    (``inf`` below three points); ``(0.0, inf)`` when the x values do not vary."""
    cxx = sxx - sx * sx / n
    if n < 2 or cxx <= 0:
        return 0.0, math.inf
    cxy = sxy - sx * sy / n
    cyy = syy - sy * sy / n
    s = cxy / cxx
    if n > 2:
        rss = max(cyy - s * cxy, 0.0)
        se = math.sqrt(rss / (n - 2) / cxx)
    else:
        se = math.inf
    return -s, se


def slope(y: Sequence[float]) -> float:
    """Least-squares slope of ``y`` against 0..n-1 over its finite points (NaN if fewer than two)."""
    pts = [(float(i), float(v)) for i, v in enumerate(y) if math.isfinite(v)]
    if len(pts) < 2:
        return float("nan")
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(v for _, v in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (v - my) for x, v in pts) / sxx


def nanmean(values: Iterable[float]) -> float:
    """Mean of the finite values (NaN when there is none)."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def log_spaced(lo: float, hi: float, n: int) -> list[float]:
    """``n`` values evenly spaced in log space from ``lo`` to ``hi``, both ends exact (the
    geometric mean when ``n == 1``)."""
    if n == 1:
        return [math.sqrt(lo * hi)]
    ratio = hi / lo
    return [lo if i == 0 else hi if i == n - 1 else lo * ratio ** (i / (n - 1)) for i in range(n)]
