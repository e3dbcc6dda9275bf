"""The decision math of AdaLRS (adalrs_ray.core.decisions), one pure function at a time."""

from __future__ import annotations

import math

import pytest

from adalrs_ray.core.controller import Trial
from adalrs_ray.core.decisions import (
    TrialVerdict,
    Verdict,
    WindowStat,
    clamp_scale,
    corner_case_verdict,
    decay_exponent,
    eager_theta,
    judge_trial,
    loss_rose_twice,
    nearest_window,
    needs_corner_case,
    ramp_scale,
    rectified_alpha,
    rectified_beta_divisor,
    reference_windows,
    regress_guard_trips,
    relaxed_theta,
    slope_error_bound,
    slope_verdict,
    velocity_decayed,
    window_stats,
)

NAN = float("nan")


def line(start: float, slope: float, n: int) -> list[float]:
    return [start - slope * i for i in range(n)]


def w(mean: float, velocity: float = 0.1, se: float = 0.01, start: int = 0) -> WindowStat:
    return WindowStat(mean, velocity, se, start)


# ---------------------------------------------------------------- t, alpha', beta'
@pytest.mark.parametrize(
    "step, basis, adjustments, expected",
    [
        (100, "windows", 7, 0),  # the search start
        (99, "windows", 7, 0),  # before it: never negative
        (349, "windows", 7, 4),  # (349 - 100) // 50
        (350, "windows", 7, 5),
        (349, "adjustments", 7, 7),  # the step does not matter
    ],
)
def test_decay_exponent_counts_windows_or_adjustments(step, basis, adjustments, expected):
    got = decay_exponent(step, basis=basis, search_start=100, window=50, adjustments=adjustments)
    assert got == expected


@pytest.mark.parametrize(
    "t, expected", [(0, 3.0), (1, 0.99 * 3.0), (10, 0.99**10 * 3.0), (110, 1.0), (10_000, 1.0)]
)
def test_rectified_alpha_decays_to_one_and_stays_there(t, expected):
    assert rectified_alpha(3.0, 0.99, t) == expected


@pytest.mark.parametrize("t, expected", [(0, 2.0), (5, 0.9**5 * 2.0), (7, 1.0), (500, 1.0)])
def test_rectified_beta_divisor_decays_to_one_and_stays_there(t, expected):
    assert rectified_beta_divisor(2.0, 0.9, t) == expected


@pytest.mark.parametrize(
    "scale, lo, hi, expected",
    [(5.0, None, None, 5.0), (5.0, None, 2.0, 2.0), (0.1, 0.5, None, 0.5), (1.0, 0.5, 2.0, 1.0)],
)
def test_clamp_scale_bounds_only_where_a_bound_is_given(scale, lo, hi, expected):
    assert clamp_scale(scale, lo, hi) == expected


# ---------------------------------------------------------------- trigger, boundary, theta
@pytest.mark.parametrize(
    "v, v_prev, theta, expected",
    [
        (0.05, 0.1, 0.9, True),  # halved: decayed
        (0.095, 0.1, 0.9, False),  # within theta
        (0.1, 0.2, 0.5, False),  # exactly theta * v_prev: strict
        (-0.5, -0.1, 0.9, False),  # the previous window did not descend: not a decay
        (-0.01, 0.1, 0.9, True),  # descent stopped
        (NAN, 0.1, 0.9, False),  # NaN compares false
        (0.05, NAN, 0.9, False),
    ],
)
def test_velocity_decayed_needs_a_descending_previous_window(v, v_prev, theta, expected):
    assert velocity_decayed(v, v_prev, theta) is expected


@pytest.mark.parametrize(
    "v, v_prev, expected",
    [(-0.1, -0.2, True), (-0.1, 0.2, False), (0.1, -0.2, False), (0.0, -0.2, False)],
)
def test_loss_rose_twice_needs_two_rising_windows(v, v_prev, expected):
    assert loss_rose_twice(v, v_prev) is expected


@pytest.mark.parametrize(
    "theta, relax, expected", [(0.9, 0.5, 0.95), (0.9, 0.0, 0.9), (0.5, 0.5, 0.75)]
)
def test_relaxed_theta_moves_toward_one(theta, relax, expected):
    assert relaxed_theta(theta, relax) == pytest.approx(expected)


@pytest.mark.parametrize("theta, expected", [(0.9, 0.95), (0.5, 0.75), (0.0, 0.5)])
def test_eager_theta_halves_the_distance_to_one(theta, expected):
    assert eager_theta(theta) == expected


# ---------------------------------------------------------------- ramp
@pytest.mark.parametrize(
    "shape, i, expected",
    [
        ("geometric", 0, 1.0),
        ("geometric", 2, 2.0),  # sqrt(4): halfway in log space
        ("geometric", 4, 4.0),
        ("geometric", 9, 4.0),  # past the end: held at the target
        ("linear", 2, 2.5),
        ("linear", 4, 4.0),
        ("linear", 9, 4.0),
    ],
)
def test_ramp_scale_goes_from_s_to_s_alpha(shape, i, expected):
    assert ramp_scale(1.0, 4.0, i, 4, shape) == pytest.approx(expected)


# ---------------------------------------------------------------- windows of H
def test_window_stats_match_a_direct_fit_of_each_window():
    xs = list(range(100, 130))
    ys = line(8.0, 0.2, 10) + line(6.0, 0.05, 10) + [5.5, 5.7] * 5
    got = window_stats(xs, ys, 10, 3)
    assert [s.start for s in got] == [0, 3, 6, 9, 12, 15, 18, 20]  # and the last window
    for s in got:
        seg = ys[s.start : s.start + 10]
        mx, my = 4.5, sum(seg) / 10
        slope = sum((i - mx) * (y - my) for i, y in enumerate(seg)) / 82.5
        assert s.mean == pytest.approx(my)
        assert s.velocity == pytest.approx(-slope)


@pytest.mark.parametrize("n", [0, 3, 9])
def test_window_stats_of_fewer_than_k_losses_is_empty(n):
    assert window_stats(list(range(n)), [1.0] * n, 10, 2) == []


def test_window_stats_of_an_exact_line_has_zero_standard_error():
    (s,) = window_stats(list(range(10)), line(5.0, 0.1, 10), 10, 10)
    assert s.velocity == pytest.approx(0.1) and s.se < 1e-8


@pytest.mark.parametrize(
    "n, exclude, starts",
    [
        (30, False, [0, 10, 20]),
        (30, True, [0, 10]),  # the last (trigger) window left out
        (10, True, [0]),  # H holds only the trigger window: kept
        (19, True, [0, 9]),  # leaving it out would leave fewer than k: kept
    ],
)
def test_reference_windows_can_leave_out_the_trigger_window(n, exclude, starts):
    got = reference_windows(list(range(n)), [1.0] * n, 10, 10, exclude_trigger=exclude)
    assert [s.start for s in got] == starts


@pytest.mark.parametrize(
    "l_new, expected_start",
    [(5.0, 1), (7.9, 0), (6.2, 2), (5.5, 1), (NAN, 0)],  # 5.5: a tie, the first wins
)
def test_nearest_window_is_the_closest_mean_loss(l_new, expected_start):
    windows = [w(8.0, start=0), w(5.0, start=1), w(6.0, start=2)]
    assert nearest_window(windows, l_new).start == expected_start


def test_nearest_window_of_no_window_raises():
    with pytest.raises(ValueError, match="windows is empty"):
        nearest_window([], 5.0)


# ---------------------------------------------------------------- corner case
@pytest.mark.parametrize(
    "l_ref, l_new, rtol, expected",
    [
        (5.0, 5.0, 0.05, False),
        (5.2, 5.0, 0.05, False),  # 4% away
        (5.3, 5.0, 0.05, True),  # 6% away: no comparable window
        (5.0, 5.0, 0.0, False),
        (5.01, 5.0, 0.0, True),
        (NAN, 5.0, 0.05, False),  # NaN compares false: treated as comparable
    ],
)
def test_needs_corner_case_when_no_window_is_close_enough(l_ref, l_new, rtol, expected):
    assert needs_corner_case(l_ref, l_new, rtol) is expected


@pytest.mark.parametrize(
    "l_new, expected",
    [
        (4.0, Verdict.KEEP),  # below every window of H
        (9.0, Verdict.BACKTRACK),  # above every one
        (6.5, Verdict.INCONCLUSIVE),  # in between
        (5.0, Verdict.INCONCLUSIVE),  # equal to the lowest is not below it
        (NAN, Verdict.INCONCLUSIVE),
    ],
)
def test_corner_case_verdict_compares_with_every_window_mean(l_new, expected):
    assert corner_case_verdict(l_new, [8.0, 5.0, 6.0]) is expected


# ---------------------------------------------------------------- e and the slope test
@pytest.mark.parametrize(
    "kw, expected",
    [
        (dict(), 0.03),  # max(se_new, se_ref)
        (dict(factor=2.0), 0.06),
        (dict(floor=0.1), 0.1),  # the floor wins
        (dict(fixed=0.2, factor=5.0, floor=1.0), 0.2),  # a fixed e ignores the estimate
        (dict(fixed=0.0), 0.0),
    ],
)
def test_slope_error_bound_is_fixed_or_the_larger_standard_error(kw, expected):
    assert slope_error_bound(0.01, 0.03, **kw) == pytest.approx(expected)


def test_slope_error_bound_of_an_infinite_standard_error_is_infinite():
    assert slope_error_bound(math.inf, 0.01) == math.inf


@pytest.mark.parametrize(
    "v_new, expected",
    [
        (1.5, Verdict.KEEP),  # > v_ref + 2e = 1.0
        (1.0, Verdict.INCONCLUSIVE),  # at the edge: not beyond 2e
        (0.5, Verdict.INCONCLUSIVE),
        (0.0, Verdict.INCONCLUSIVE),  # at the lower edge
        (-0.5, Verdict.BACKTRACK),  # < v_ref - 2e = 0.0
        (NAN, Verdict.INCONCLUSIVE),  # no evidence either way
    ],
)
def test_slope_verdict_needs_a_difference_beyond_two_e(v_new, expected):
    assert slope_verdict(v_new, 0.5, 0.25) is expected


@pytest.mark.parametrize(
    "verdict, l_new, expected",
    [
        (Verdict.KEEP, 5.0, True),  # no lower than before: regressed
        (Verdict.KEEP, 5.1, True),
        (Verdict.KEEP, 4.9, False),
        (Verdict.INCONCLUSIVE, 5.1, True),
        (Verdict.BACKTRACK, 5.1, False),  # already a backtrack
        (Verdict.KEEP, NAN, False),
    ],
)
def test_regress_guard_trips_when_the_trial_ends_no_lower(verdict, l_new, expected):
    assert regress_guard_trips(verdict, l_new, 5.0) is expected


# ---------------------------------------------------------------- the whole verdict
H = [w(7.75, velocity=0.5, se=0.01, start=0), w(4.95, velocity=0.1, se=0.01, start=10)]
JUDGE = dict(comparable_rtol=0.05, error_factor=1.0, error_floor=0.0)


@pytest.mark.parametrize(
    "v_new, l_new, expected",
    [
        (0.2, 4.8, Verdict.KEEP),  # faster than W2's 0.1 at a comparable level
        (0.05, 4.9, Verdict.BACKTRACK),  # slower
        (0.11, 4.9, Verdict.INCONCLUSIVE),  # within 2e = 0.02
    ],
)
def test_judge_trial_compares_with_the_nearest_window(v_new, l_new, expected):
    j = judge_trial(v_new, 0.005, l_new, H, 5.2, **JUDGE)
    assert j == TrialVerdict(expected, v_new, 0.1, l_new, 4.95, 0.01, False, False)


@pytest.mark.parametrize(
    "l_new, expected",
    [(3.0, Verdict.KEEP), (9.0, Verdict.BACKTRACK), (6.3, Verdict.INCONCLUSIVE)],
)
def test_judge_trial_without_a_comparable_window_uses_the_corner_case(l_new, expected):
    j = judge_trial(-5.0, 0.005, l_new, H, 10.0, **JUDGE)  # the slope would say backtrack
    assert (j.verdict, j.corner_case, j.e) == (expected, True, None)


def test_judge_trial_with_a_fixed_error_bound_is_inconclusive_within_it():
    j = judge_trial(0.2, 0.005, 4.8, H, 5.2, error_bound=0.2, comparable_rtol=0.05)
    assert (j.verdict, j.e) == (Verdict.INCONCLUSIVE, 0.2)


@pytest.mark.parametrize("guard, expected", [(True, Verdict.BACKTRACK), (False, Verdict.KEEP)])
def test_judge_trial_regress_guard_backtracks_a_keep_that_ends_higher(guard, expected):
    j = judge_trial(0.2, 0.005, 4.8, H, 4.7, regress_guard=guard, **JUDGE)
    assert (j.verdict, j.regressed) == (expected, guard)
    assert j.backtrack_reason == ("regressed" if guard else "slower")


def test_judge_trial_with_nan_velocity_is_inconclusive():
    j = judge_trial(NAN, 0.005, 4.8, H, 5.2, **JUDGE)
    assert (j.verdict, j.corner_case, j.regressed) == (Verdict.INCONCLUSIVE, False, False)


def test_verdict_values_are_the_event_kinds():
    assert [v.value for v in Verdict] == ["keep", "backtrack", "inconclusive"]


# ---------------------------------------------------------------- the trial at the state_dict boundary
V1_TRIAL = {
    "start_step": 19,
    "s0": 1.0,
    "alpha_eff": 3.0,
    "target": 3.0,
    "i": 4,
    "n": 10,
    "hist_max": 10.0,
    "l_before": 4.95,
    "early_stop": False,
}


@pytest.mark.parametrize("extra", [{}, {"validated_scale": 2.5}])
def test_trial_reads_the_version_1_dict_and_writes_version_2(extra):
    state = {**V1_TRIAL, **extra}
    trial = Trial.from_state(state)
    assert (trial.base_scale, trial.ramp_step, trial.ramp_len) == (1.0, 4, 10)
    # version 1: upscales on the paper's trigger, no settle
    assert (trial.direction, trial.settle_left, trial.cause) == ("up", 0, "decay")
    assert trial.tried_scale == extra.get("validated_scale", 3.0)
    v2 = {**V1_TRIAL, "direction": "up", "settle": 0, "cause": "decay", **extra}
    assert trial.to_state() == v2
    assert list(trial.to_state()) == list(v2)  # the key order too
    assert Trial.from_state(v2) == trial


def test_trial_rejects_an_unknown_direction():
    with pytest.raises(ValueError, match="direction"):
        Trial.from_state({**V1_TRIAL, "direction": "sideways"})


def test_trial_rejects_an_unknown_cause():
    with pytest.raises(ValueError, match="trial cause is 'boredom', not 'decay' or 'boundary'"):
        Trial.from_state({**V1_TRIAL, "cause": "boredom"})


@pytest.mark.parametrize(
    "change", [{"gamma": 1}, {"early_stop": "no"}, {"s0": "lots"}, {"i": None}]
)
def test_trial_rejects_unknown_keys_and_bad_values(change):
    with pytest.raises((ValueError, TypeError)):
        Trial.from_state({**V1_TRIAL, **change})


def test_trial_rejects_a_missing_key():
    with pytest.raises(KeyError):
        Trial.from_state({k: v for k, v in V1_TRIAL.items() if k != "hist_max"})
