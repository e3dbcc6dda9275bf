"""Small numeric helpers shared by every layer (stdlib; numpy only inside :func:`log_spaced`): least-squares slopes, the mean of
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
    """Least-squares slope of ``y`` against 0..n-1 over its finite points (NaN if fewer than two):
    the fit of :func:`fit_velocity`, the one the controller uses."""
    pts = [(float(i), float(v)) for i, v in enumerate(y) if math.isfinite(v)]
    if len(pts) < 2:
        return float("nan")
    x0, y0 = pts[0]
    sx = sy = sxx = sxy = syy = 0.0
    for x, v in pts:
        dx, dy = x - x0, v - y0
        sx += dx
        sy += dy
        sxx += dx * dx
        sxy += dx * dy
        syy += dy * dy
    return -fit_velocity(len(pts), sx, sy, sxx, sxy, syy)[0]


def nanmean(values: Iterable[float]) -> float:
    """Mean of the finite values (NaN when there is none)."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def log_spaced(lo: float, hi: float, n: int) -> list[float]:
    """``n`` values evenly spaced in log space from ``lo`` to ``hi``, both ends exact (the
    geometric mean when ``n == 1``): ``numpy.geomspace``, imported on first use so that the
    controller's import stays numpy-free."""
    if n == 1:
        return [math.sqrt(lo * hi)]
    import numpy as np

    return [float(v) for v in np.geomspace(lo, hi, n)]
