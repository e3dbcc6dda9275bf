"""Branches of the AdaLRS controller that tests/test_controller.py does not reach (issue 13,
item 6): each test drives ``AdaLRS.observe`` with a hand-made loss stream so that one branch is
taken deterministically, and pins what the controller does there today (the paper's rule as
implemented, plus our regress guard)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from controller_streams import K, cfg, feed, kinds, line

from adalrs_ray.core.controller import Action, AdaLRS

# The trigger used throughout: window 1 falls at 0.5/step, window 2 at 0.1/step, so at step 19
# v_t = 0.1 < 0.9 * 0.5 and a trial starts. Window means of H at stride 2 (steps 0..19):
# 7.75, 6.87, 6.15, 5.59, 5.19, 4.95; max(H) = 10; the last window's mean (L_before) is 4.95.
W1 = line(10.0, 0.5)
W2 = line(5.4, 0.1)
TRIGGER = W1 + W2
RAMP = [4.4] * K  # below max(H): the ramp runs to its end
FASTER = line(5.7, 0.2)  # mean 4.80, comparable to 4.95, twice as fast: keep
SLOWER = line(5.175, 0.05)  # mean 4.95, half as fast: backtrack (slower)


def alpha_at(t: int, lam: float = 0.99) -> float:
    return max(3.0 * lam**t, 1.0)


def beta_at(t: int, lam: float = 0.99) -> float:
    return max(2.0 * lam**t, 1.0)


def ls_velocity_and_se(xs, ys) -> tuple[float, float]:
    """Independent least squares (numpy): (-slope, standard error of the slope)."""
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    design = np.column_stack([x, np.ones_like(x)])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    se = math.sqrt(float(resid @ resid) / (len(x) - 2) / float(((x - x.mean()) ** 2).sum()))
    return -float(coef[0]), se


def alternate(values: list[float], amp: float) -> list[float]:
    """Add -amp, +amp, -amp, ... (an even count leaves the mean unchanged)."""
    return [v + (amp if i % 2 else -amp) for i, v in enumerate(values)]


# ---------------------------------------------------------------- ramp early stop
@pytest.mark.parametrize(
    "validation, kind, action",
    [(FASTER, "keep", Action.CONTINUE), (SLOWER, "backtrack", Action.RESTORE)],
)
def test_the_scale_reached_at_an_early_stop_is_the_one_validated(validation, kind, action):
    ctl = AdaLRS(cfg())
    feed(ctl, TRIGGER, 0)
    feed(ctl, [4.4, 4.4, 11.0], 20)  # 11 > max(H) = 10 at ramp step 3 of 10
    reached = alpha_at(2) ** (3 / K)
    held = [d.scale for d in feed(ctl, validation[:-1], 23)]
    assert held == [pytest.approx(reached)] * (K - 1)  # validation runs at the reached scale
    d = ctl.observe(23 + K - 1, validation[-1])
    ev = ctl.events[-1]
    assert ev["kind"] == kind and ev["early_stop"] is True and d.action is action
    if kind == "keep":
        assert ctl.scale == pytest.approx(reached) and ev["scale_after"] == ctl.scale
        assert reached < alpha_at(2) * 0.5  # not the ramp's target
    else:
        assert ev["tried_scale"] == pytest.approx(reached)
        assert ctl.scale == pytest.approx(1 / beta_at(3))


# ---------------------------------------------------------------- corner case
# A trigger window that rises after a jump: the window means of H at stride 2 are
# 7.75, 8.21, 8.91, 9.85, 11.03 and 12.45 (the last window, L_before); 11.80 lies more than 5%
# from each (nearest: 12.45), below L_before and above the lowest mean.
JUMP = W1 + line(12.0, -0.1)
BETWEEN = line(12.25, 0.1)  # mean 11.80


def test_corner_case_between_the_history_means_is_inconclusive():
    ctl = AdaLRS(cfg())
    feed(ctl, JUMP, 0)
    assert ctl.phase == "ramp"  # v_t < 0 < theta * v_{t-k}: the rising window triggers
    theta = ctl.theta
    feed(ctl, RAMP, 20)
    d = feed(ctl, BETWEEN, 30)
    ev = ctl.events[-1]
    assert ev["kind"] == "inconclusive" and ev["corner_case"] is True and ev["e"] is None
    assert ev["regressed"] is False and ev["l_new"] == pytest.approx(11.80)
    assert ev["l_ref"] == pytest.approx(12.45)  # the nearest mean, 5.5% away: not comparable
    assert d[-1].action is Action.CONTINUE and ctl.scale == 1.0
    assert ctl.theta == pytest.approx((theta + 1) / 2)


# ---------------------------------------------------------------- regress guard
@pytest.mark.parametrize(
    "stream, validation, extra",
    [
        # slopes inconclusive (|0.2 - 0.1| <= 2e = 0.4) at mean 5.00 >= L_before 4.95
        (TRIGGER, line(5.9, 0.2), dict(error_bound=0.2)),
        # corner case inconclusive: mean 7.31, between 6.87 and 7.75, above L_before 4.95
        (TRIGGER, line(7.76, 0.1), {}),
    ],
    ids=["slopes", "corner_case"],
)
@pytest.mark.parametrize("guard", [False, True])
def test_regress_guard_turns_an_inconclusive_verdict_into_a_backtrack(
    stream, validation, extra, guard
):
    ctl = AdaLRS(cfg(regress_guard=guard, **extra))
    feed(ctl, stream, 0)
    feed(ctl, RAMP, 20)
    d = feed(ctl, validation, 30)
    ev = ctl.events[-1]
    assert ev["l_new"] >= ev["l_before"] == pytest.approx(4.95)
    if guard:
        assert ev["kind"] == "backtrack" and ev["regressed"] is True
        assert ev["reason"] == "regressed" and d[-1].action is Action.RESTORE
        assert ctl.scale == pytest.approx(1 / beta_at(3))
    else:
        assert ev["kind"] == "inconclusive" and ev["regressed"] is False
        assert d[-1].action is Action.CONTINUE and ctl.scale == 1.0


# ---------------------------------------------------------------- after an inconclusive trial
def inconclusive_then(after: list[float]) -> AdaLRS:
    """Trigger at 19, ramp 20..29, an inconclusive validation 30..39 (e = 0.2), then ``after``
    from step 40: H holds steps 0..19 and then 40.., a gap of 20 steps."""
    ctl = AdaLRS(cfg(error_bound=0.2))
    feed(ctl, TRIGGER, 0)
    feed(ctl, RAMP, 20)
    feed(ctl, FASTER, 30)
    assert ctl.events[-1]["kind"] == "inconclusive"
    feed(ctl, after, 40)
    return ctl


@pytest.mark.parametrize("v, trial", [(0.092, True), (0.097, False)])
def test_after_an_inconclusive_trial_the_next_window_is_compared_with_the_trigger_window(v, trial):
    # theta is (0.9 + 1) / 2 = 0.95 and v_{t-k} is the trigger window's 0.1, across the gap:
    # 0.092 < 0.095 triggers (it would not at theta0 = 0.9), 0.097 does not
    ctl = inconclusive_then(line(4.3, v))
    assert ctl.state_dict()["hist_x"] == list(range(20)) + list(range(40, 50))
    later = [e for e in ctl.events if e["kind"] == "trial_start" and e["step"] > 19]
    assert bool(later) is trial
    if trial:
        ev = later[0]
        assert ev["step"] == 49 and ev["theta"] == pytest.approx(0.95)
        assert ev["v"] == pytest.approx(v) and ev["v_prev"] == pytest.approx(0.1)
    else:
        assert ctl.phase == "search" and ctl.theta == pytest.approx(0.975)  # relaxed


def test_reference_windows_straddling_the_gap_are_fitted_on_real_steps():
    w3 = line(4.3, 0.05)  # steps 40..49, triggers (0.05 < 0.95 * 0.1)
    ctl = inconclusive_then(w3)
    assert ctl.phase == "ramp"
    hist_x = list(range(20)) + list(range(40, 50))
    hist_y = TRIGGER + w3
    # the window starting at H index 16 holds steps 16..19 and 40..45: mean 4.365
    xs, ys = hist_x[16:26], hist_y[16:26]
    l_ref = sum(ys) / K
    feed(ctl, [4.0] * K, 50)  # ramp, below max(H)
    feed(ctl, line(l_ref + 0.225, 0.05), 60)  # mean == l_ref: that window is the reference
    ev = ctl.events[-1]
    assert ev["trial_start"] == 49 and ev["corner_case"] is False
    assert ev["l_ref"] == pytest.approx(l_ref, rel=1e-12)
    v_steps, _ = ls_velocity_and_se(xs, ys)
    v_index, _ = ls_velocity_and_se(range(K), ys)
    assert ev["v_ref"] == pytest.approx(v_steps, rel=1e-9)
    assert v_steps == pytest.approx(0.0196, abs=1e-4) and v_index > 0.08  # not the index fit
    # slopes: |0.05 - 0.0196| <= 2e = 0.4, inconclusive; L_new 4.365 >= L_before 4.075: regressed
    assert ev["kind"] == "backtrack" and ev["regressed"] is True


# ---------------------------------------------------------------- boundary rule
def test_two_rising_windows_after_a_keep_restore_the_pre_trial_snapshot():
    ctl = AdaLRS(cfg())
    feed(ctl, TRIGGER, 0)
    feed(ctl, RAMP, 20)
    feed(ctl, FASTER, 30)
    kept = ctl.scale
    assert ctl.events[-1]["kind"] == "keep" and kept == pytest.approx(alpha_at(2))
    assert ctl.snapshot_step == 19  # the keep takes no snapshot
    d = feed(ctl, line(4.0, -0.1) + line(5.0, -0.1), 40)
    assert [x.action for x in d[:-1]] == [Action.CONTINUE] * (2 * K - 1)
    assert d[-1].action is Action.RESTORE and d[-1].restore_step == 19
    ev = ctl.events[-1]
    assert ev["kind"] == "boundary_downscale" and ev["restored"] is True and ev["step"] == 59
    assert ctl.scale == pytest.approx(kept / beta_at(5))  # the kept scale, downscaled


def test_one_rising_window_after_a_descent_starts_a_trial_not_a_downscale():
    ctl = AdaLRS(cfg())
    feed(ctl, W1 + line(5.5, -0.1), 0)
    assert "boundary_downscale" not in kinds(ctl)
    assert ctl.events[-1]["kind"] == "trial_start" and ctl.events[-1]["v"] < 0


def test_one_rising_window_does_nothing_when_no_trial_fits_and_a_second_one_downscales():
    # search [0, 45): after the window ending at 29 a trial would end at 49 > 44
    ctl = AdaLRS(cfg(total_steps=45))
    feed(ctl, W1 + line(5.4, 0.5), 0)
    assert ctl.snapshot_step == 19 and ctl.theta == pytest.approx(0.95)
    d = feed(ctl, line(1.0, -0.1), 20)
    assert kinds(ctl) == ["search_start"]
    assert all(x.action is Action.CONTINUE and x.scale == 1.0 for x in d)
    assert ctl.theta == pytest.approx(0.95)  # decayed: no relaxation either
    d = feed(ctl, line(2.0, -0.1), 30)
    assert d[-1].action is Action.RESTORE and d[-1].restore_step == 19
    assert ctl.events[-1]["kind"] == "boundary_downscale"
    assert ctl.scale == pytest.approx(1 / beta_at(3))


# ---------------------------------------------------------------- decay basis
def test_adjustments_basis_decays_the_factors_per_adjustment_not_per_window():
    ctl = AdaLRS(cfg(total_steps=200, lam=0.5, decay_basis="adjustments"))
    feed(ctl, TRIGGER, 0)  # 0 adjustments: alpha' = 3 (windows basis: max(0.25 * 3, 1) = 1)
    feed(ctl, RAMP, 20)
    d = feed(ctl, SLOWER, 30)
    assert d[-1].action is Action.RESTORE and ctl.scale == pytest.approx(1 / 2)  # beta' at t=0
    feed(ctl, TRIGGER, 40)  # 1 adjustment: alpha' = 1.5
    feed(ctl, RAMP, 60)
    feed(ctl, FASTER, 70)
    assert ctl.events[-1]["kind"] == "keep" and ctl.scale == pytest.approx(0.5 * 1.5)
    feed(ctl, TRIGGER, 80)  # 2 adjustments: alpha' = max(0.75, 1) = 1: no trial
    trials = [e for e in ctl.events if e["kind"] == "trial_start"]
    assert [e["alpha_eff"] for e in trials] == [pytest.approx(3.0), pytest.approx(1.5)]
    assert [e["step"] for e in trials] == [19, 59]
    d = feed(ctl, line(5.0, -0.1) + line(6.0, -0.1), 100)  # 2 adjustments: beta' = 1 / 1
    assert ctl.events[-1]["kind"] == "boundary_downscale"
    assert ctl.scale == pytest.approx(0.75)
    # the same stream with lambda^t counting windows never starts a trial
    other = AdaLRS(cfg(total_steps=200, lam=0.5))
    feed(other, TRIGGER, 0)
    assert "trial_start" not in kinds(other)


# ---------------------------------------------------------------- clamps and initial scale
@pytest.mark.parametrize(
    "path, stream, kind",
    [
        ("backtrack", TRIGGER + RAMP + SLOWER, "backtrack"),
        ("boundary", line(5.0, -0.1) + line(6.0, -0.1), "boundary_downscale"),
        ("divergence", [float("nan")], "nonfinite_loss"),
    ],
)
def test_min_scale_clamps_every_downscale(path, stream, kind):
    free = AdaLRS(cfg())
    feed(free, stream, 0)
    assert free.events[-1]["kind"] == kind and free.scale < 0.6
    ctl = AdaLRS(cfg(min_scale=0.8))
    feed(ctl, stream, 0)
    assert ctl.events[-1]["kind"] == kind and ctl.scale == 0.8


@pytest.mark.parametrize("validation, kind", [(FASTER, "keep"), (SLOWER, "backtrack")])
def test_initial_scale_is_the_base_of_the_search(validation, kind):
    ctl = AdaLRS(cfg(initial_scale=0.25, start_ratio=0.1))  # search [10, 100)
    d = feed(ctl, [12.0] * 10, 0)
    assert all(x.scale == 0.25 for x in d)
    feed(ctl, TRIGGER, 10)
    assert ctl.events[-1]["target_scale"] == pytest.approx(0.25 * alpha_at(2))
    feed(ctl, RAMP, 30)
    feed(ctl, validation, 40)
    assert ctl.events[-1]["kind"] == kind and ctl.events[-1]["scale_before"] == 0.25
    expected = 0.25 * alpha_at(2) if kind == "keep" else 0.25 / beta_at(3)
    assert ctl.scale == pytest.approx(expected)


def test_ramp_steps_sets_the_ramp_length():
    ctl = AdaLRS(cfg(ramp_steps=4))
    feed(ctl, TRIGGER, 0)
    scales = [ctl.scale] + [d.scale for d in feed(ctl, [4.4] * 4, 20)]
    assert scales == pytest.approx([alpha_at(2) ** (i / 4) for i in range(1, 5)] + [alpha_at(2)])
    assert ctl.phase == "validate"  # after 4 ramp steps, not K
    d = feed(ctl, FASTER, 24)
    assert d[-1].events[-1]["kind"] == "keep" and d[-1].events[-1]["step"] == 33


# ---------------------------------------------------------------- error bound
@pytest.mark.parametrize("floor, kind", [(0.04, "keep"), (0.06, "inconclusive")])
def test_error_floor_bounds_e_from_below(floor, kind):
    # noise-free lines: both standard errors are ~0, so e = floor; keep needs 0.2 > 0.1 + 2e
    ctl = AdaLRS(cfg(error_floor=floor))
    feed(ctl, TRIGGER + RAMP + FASTER, 0)
    ev = ctl.events[-1]
    assert ev["e"] == floor and ev["kind"] == kind


@pytest.mark.parametrize("factor, kind", [(1.0, "keep"), (10.0, "inconclusive")])
def test_error_factor_scales_the_standard_error(factor, kind):
    # se_new = 0.0061 (se_ref ~0): v_new - v_ref = 0.097 is above 2e at factor 1, not at 10
    noisy = alternate(FASTER, 0.05)
    ctl = AdaLRS(cfg(error_factor=factor))
    feed(ctl, TRIGGER + RAMP + noisy, 0)
    ev = ctl.events[-1]
    _, se_new = ls_velocity_and_se(range(30, 40), noisy)
    assert ev["e"] == pytest.approx(factor * se_new, rel=1e-6) and ev["kind"] == kind


# ---------------------------------------------------------------- history length
@pytest.mark.parametrize("windows, stops", [(2, True), (16, False)])
def test_max_history_windows_trims_h_and_so_the_early_stop_level(windows, stops):
    ctl = AdaLRS(cfg(max_history_windows=windows))
    stream = line(20.0, 0.5) + line(15.0, 0.5) + line(10.0, 0.5) + line(5.4, 0.1)
    feed(ctl, stream, 0)
    assert ctl.events[-1]["kind"] == "trial_start" and ctl.events[-1]["step"] == 39
    kept = min(len(stream), windows * K)
    assert ctl.state_dict()["hist_y"] == stream[-kept:]
    ctl.observe(40, 12.0)  # above max(H) = 10 only when the first two windows were trimmed
    assert ("ramp_early_stop" in kinds(ctl)) is stops


# ---------------------------------------------------------------- divergence
@pytest.mark.parametrize(
    "policy, action, outcome",
    [
        ("trials", Action.CONTINUE, "downscale"),
        ("windows", Action.RESTORE, "restore_and_downscale"),
    ],
)
def test_divergence_in_the_search_with_a_trial_snapshot(policy, action, outcome):
    ctl = AdaLRS(cfg(snapshot_policy=policy))
    feed(ctl, TRIGGER + RAMP + FASTER, 0)
    kept = ctl.scale
    assert ctl.events[-1]["kind"] == "keep" and ctl.snapshot_step == 19  # a snapshot exists
    d = ctl.observe(40, float("nan"))
    ev = ctl.events[-1]
    assert ev["kind"] == "nonfinite_loss" and ev["outcome"] == outcome
    assert d.action is action and ctl.scale == pytest.approx(kept / beta_at(4))
    if policy == "trials":  # the policy restores only inside a trial
        assert d.restore_step is None and ev["restore_step"] is None
    else:
        assert d.restore_step == 19 and ev["restore_step"] == 19
    assert ctl.phase == "search" and ctl.state_dict()["hist_y"] == []
