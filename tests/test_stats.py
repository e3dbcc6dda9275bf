"""The shared numeric helpers of adalrs_ray.core.stats and the argument checks of
adalrs_ray.core.checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adalrs_ray.core.checks import check_choice, check_int, check_number
from adalrs_ray.core.stats import fit_velocity, log_spaced, nanmean, slope


@pytest.mark.parametrize("a, b", [(2.0, -0.5), (0.0, 1e-3), (1e4, 0.25)])
def test_slope_recovers_a_line(a, b):
    y = [a + b * i for i in range(50)]
    assert slope(y) == pytest.approx(b, rel=1e-9, abs=1e-12)


def test_slope_skips_nonfinite_points_and_needs_two():
    assert slope([1.0, math.nan, 3.0]) == pytest.approx(1.0)
    assert math.isnan(slope([1.0, math.inf]))
    assert math.isnan(slope([]))


def test_slope_matches_numpy_least_squares():
    y = 3 + np.cumsum(np.random.default_rng(0).normal(-0.01, 0.05, 200))
    assert slope(y) == pytest.approx(np.polyfit(np.arange(200), y, 1)[0], rel=1e-9)


def test_fit_velocity_is_minus_the_slope_with_its_standard_error():
    xs, ys = list(range(10)), [5.0 - 0.5 * x + (0.1 if x % 2 else -0.1) for x in range(10)]
    sums = (len(xs), sum(xs), sum(ys), sum(x * x for x in xs))
    v, se = fit_velocity(*sums, sum(x * y for x, y in zip(xs, ys)), sum(y * y for y in ys))
    assert v == pytest.approx(0.5, abs=0.02)
    assert 0 < se < 0.05
    assert fit_velocity(1, 0.0, 1.0, 0.0, 0.0, 1.0) == (0.0, math.inf)


def test_nanmean_ignores_nonfinite_values():
    assert nanmean([1.0, math.nan, 3.0, math.inf]) == 2.0
    assert math.isnan(nanmean([math.nan]))


@pytest.mark.parametrize("n", [2, 3, 7, 12])
def test_log_spaced_has_exact_ends_and_a_constant_ratio(n):
    values = log_spaced(1e-4, 1e-1, n)
    assert values[0] == 1e-4 and values[-1] == 1e-1 and len(values) == n
    ratios = [b / a for a, b in zip(values, values[1:])]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-12)


def test_log_spaced_of_one_point_is_the_geometric_mean():
    assert log_spaced(1e-4, 1e-2, 1) == [pytest.approx(1e-3)]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: check_int("steps", 0, 1), "steps is 0, but must be an integer >= 1"),
        (lambda: check_int("steps", True, 1), "steps is True"),
        (lambda: check_number("lam", 1.5, low=0, high=1), r"lam is 1.5, but must be .* \(0, 1\)"),
        (lambda: check_number("x", math.nan), "x is nan"),
        (lambda: check_choice("ramp", "cubic", ("geometric", "linear")), "ramp is 'cubic'"),
    ],
)
def test_checks_name_the_value_and_the_rule(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_checks_accept_valid_values():
    check_int("steps", None, 1, optional=True)
    check_number("lam", 1.0, low=0, high=1, strict=False)
    check_choice("ramp", "linear", ("geometric", "linear"))
