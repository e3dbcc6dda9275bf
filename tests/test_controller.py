"""The pure AdaLRS controller: every branch of Algorithm 1, validation, NaN, persistence."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from controller_streams import K, cfg, feed, kinds, line

from adalrs_ray.core.controller import EVENT_KINDS, Action, AdaLRS, AdaLRSConfig, replay

# history: window 1 falls at 0.5/step, window 2 at 0.1/step (velocity decayed: a trial starts)
W1 = line(10.0, 0.5)  # 10 .. 5.5, mean 7.75
W2 = line(5.4, 0.1)  # 5.4 .. 4.5, mean 4.95


def start_trial(**kw) -> AdaLRS:
    ctl = AdaLRS(cfg(**kw))
    d = feed(ctl, W1 + W2, 0)
    assert d[0].action is Action.SNAPSHOT  # search start
    assert d[-1].action is Action.SNAPSHOT  # trial start
    assert ctl.phase == "ramp"
    return ctl


def run_trial(ctl: AdaLRS, validation: list[float], ramp_loss: float = 4.4):
    feed(ctl, [ramp_loss] * K, 20)
    assert ctl.phase == "validate"
    return feed(ctl, validation, 30)


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "kw, fragment",
    [
        (dict(total_steps=0), "total_steps is 0"),
        (dict(total_steps=1.5), "total_steps is 1.5"),
        (dict(alpha=1.0), "alpha is 1.0, but must be alpha > 1"),
        (dict(beta=0.5), "beta is 0.5, but must be beta > 1"),
        (dict(alpha=4, beta=2), "gcd 2"),
        (dict(lam=1.0), "lam is 1.0"),
        (dict(lam=0.0), "lam is 0.0"),
        (dict(start_ratio=0.5, end_ratio=0.4), "0 <= start_ratio < end_ratio <= 1"),
        (dict(end_ratio=1.5), "0 <= start_ratio < end_ratio <= 1"),
        (dict(window=1), "window is 1"),
        (dict(window=40), "window=40 is too long"),
        (dict(theta0=1.0), "theta0 is 1.0"),
        (dict(theta_relax=1.0), "theta_relax is 1.0"),
        (dict(decay_basis="steps"), "decay_basis is 'steps'"),
        (dict(ramp="cubic"), "ramp is 'cubic'"),
        (dict(snapshot_policy="never"), "snapshot_policy is 'never'"),
        (dict(backtrack_mode="undo"), "backtrack_mode is 'undo'"),
        (dict(backtrack_mode="rewind"), "decay_basis='adjustments'"),
        (dict(error_bound=-1.0), "error_bound is -1.0"),
        (dict(error_factor=float("nan")), "error_factor is nan"),
        (dict(comparable_rtol=-0.1), "comparable_rtol is -0.1"),
        (dict(max_history_windows=1), "max_history_windows is 1"),
        (dict(initial_scale=0.0), "initial_scale is 0.0"),
        (dict(min_scale=2.0, max_scale=1.0), "min_scale=2.0 > max_scale=1.0"),
        (dict(ramp_steps=0), "ramp_steps is 0"),
        (dict(reference_stride=11), "reference_stride is 11"),
        (dict(alpha=float("inf")), "alpha is inf"),
    ],
)
def test_config_rejects_bad_values_naming_value_and_rule(kw, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        cfg(**kw)


def test_config_rejects_a_search_window_too_short_for_any_search():
    with pytest.raises(ValueError, match="needs at least 8"):
        AdaLRSConfig(total_steps=20)


def test_non_integer_factors_skip_the_gcd_rule():
    assert cfg(alpha=3.0, beta=1.5).beta == 1.5


def test_window_defaults_to_a_sixth_of_the_search_window():
    c = AdaLRSConfig(total_steps=1000)
    assert (c.search_start, c.search_end, c.window) == (100, 400, 50)


def test_config_round_trips_through_a_dict():
    c = cfg(alpha=5, beta=3)
    assert AdaLRSConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown AdaLRSConfig fields"):
        AdaLRSConfig.from_dict({**c.to_dict(), "gamma": 1})


def test_controller_rejects_config_and_keywords_together():
    with pytest.raises(ValueError, match="not both"):
        AdaLRS(cfg(), alpha=3)
    assert AdaLRS(total_steps=100, window=K, start_ratio=0.0).config.window == K


# ---------------------------------------------------------------- search window
def test_scale_is_frozen_before_and_after_the_search_window():
    # the regression rule: the default's opening would run before the search window
    ctl = AdaLRS(
        AdaLRSConfig.from_dict(
            {
                "rule": "regression",
                "total_steps": 1000,
                "window": 10,
                "start_ratio": 0.5,
                "end_ratio": 0.6,
            }
        )
    )
    for t in range(500):
        d = ctl.observe(t, 10.0 - 0.001 * t)
        assert d.action is Action.CONTINUE and d.scale == 1.0
    assert ctl.observe(500, 9.0).action is Action.SNAPSHOT
    assert kinds(ctl) == ["search_start"]
    for t in range(501, 600):
        ctl.observe(t, 100.0 + t)  # rising: boundary downscales happen inside the window
    assert ctl.phase == "frozen" and "search_end" in kinds(ctl)
    frozen = ctl.scale
    assert frozen < 1.0
    for t in range(600, 700):
        assert ctl.observe(t, 1e6 + t).scale == frozen


def test_nonfinite_loss_outside_the_search_is_logged_not_acted_on():
    ctl = AdaLRS(AdaLRSConfig(total_steps=1000, window=10))
    d = ctl.observe(0, float("nan"))
    assert d.action is Action.CONTINUE and d.scale == 1.0
    assert d.events[0]["kind"] == "nonfinite_loss"
    assert d.events[0]["outcome"] == "ignored_outside_search"


def test_no_trial_starts_when_it_cannot_finish_inside_the_search_window():
    # search [0, 40): two windows end at step 19; ramp + validation would end at step 39 < 40
    ctl = AdaLRS(cfg(total_steps=40))
    feed(ctl, W1 + W2, 0)
    assert ctl.phase == "ramp"
    # a window later the same kind of decay cannot start a trial any more: window 2 keeps the
    # velocity (0.48 > 0.9 * 0.5, no trigger), window 3 decays clearly (0.01 < 0.95 * 0.48)
    stream = W1 + line(5.4, 0.48) + line(1.0, 0.01)
    ctl = AdaLRS(cfg(total_steps=40))
    feed(ctl, stream, 0)
    assert kinds(ctl) == ["search_start"] and ctl.phase == "search" and ctl.scale == 1.0
    # only the window rule stopped it: with room for ramp + validation (29 + 20 < 50) it starts
    roomy = AdaLRS(cfg(total_steps=50))
    feed(roomy, stream, 0)
    assert kinds(roomy)[-1] == "trial_start" and roomy.events[-1]["step"] == 29


# ---------------------------------------------------------------- trigger and ramp
def test_velocity_decay_starts_a_trial_with_a_snapshot():
    ctl = start_trial()
    ev = ctl.events[-1]
    assert ev["kind"] == "trial_start" and ev["step"] == 19
    assert ev["v"] == pytest.approx(0.1) and ev["v_prev"] == pytest.approx(0.5)
    assert ctl.snapshot_step == 19


def test_ramp_is_gradual_and_geometric_up_to_rectified_alpha():
    ctl = start_trial()
    alpha_eff = 3 * 0.99**2  # two windows elapsed since the search started
    seen = [ctl.scale]
    for i in range(K - 1):
        ctl.observe(20 + i, 4.4)
        seen.append(ctl.scale)
    expected = [alpha_eff ** ((i + 1) / K) for i in range(K)]
    assert seen == pytest.approx(expected)


def test_linear_ramp():
    ctl = start_trial(ramp="linear")
    alpha_eff = 3 * 0.99**2
    assert ctl.scale == pytest.approx(1 + (alpha_eff - 1) / K)


def test_ramp_stops_early_when_a_loss_exceeds_the_history_maximum():
    ctl = start_trial()
    feed(ctl, [4.4, 4.4, 11.0], 20)  # 11 > max(H) = 10
    assert ctl.phase == "validate"
    ev = ctl.events[-1]
    assert ev["kind"] == "ramp_early_stop" and ev["ramp_step"] == 3
    reached = (3 * 0.99**2) ** (3 / K)
    assert ctl.scale == pytest.approx(reached)


def test_theta_relaxes_toward_one_after_windows_without_a_trial():
    ctl = AdaLRS(cfg(theta0=0.5, theta_relax=0.5))
    feed(ctl, line(10, 0.1) + line(9, 0.1) + line(8, 0.1), 0)  # constant velocity
    assert ctl.phase == "search"
    assert ctl.theta == pytest.approx(1 - 0.5 * 0.5 * 0.5)


def test_theta_relaxation_eventually_triggers_a_slow_decay():
    ctl = AdaLRS(cfg(total_steps=400, theta0=0.5, theta_relax=0.5))
    v, start, t = 0.1, 10.0, 0
    while ctl.phase != "ramp" and t < 300:
        feed(ctl, line(start, v), t)
        start -= v * K
        v *= 0.97  # 3% slower per window: below theta0 = 0.5 never, below a relaxed theta soon
        t += K
    assert ctl.phase == "ramp"


def test_without_relaxation_a_slow_decay_never_triggers():
    ctl = AdaLRS(cfg(total_steps=400, theta0=0.5, theta_relax=0.0))
    v, start = 0.1, 10.0
    for t in range(0, 300, K):
        feed(ctl, line(start, v), t)
        start -= v * K
        v *= 0.97
    assert "trial_start" not in kinds(ctl)


# ---------------------------------------------------------------- validation
def test_faster_validation_at_a_comparable_loss_keeps_the_upscale():
    ctl = start_trial()
    d = run_trial(ctl, line(5.7, 0.2))  # mean 4.8, 3% from W2's 4.95; v_new 0.2 > 0.1
    assert d[-1].action is Action.CONTINUE
    ev = ctl.events[-1]
    assert ev["kind"] == "keep" and not ev["corner_case"]
    assert ev["v_new"] == pytest.approx(0.2) and ev["v_ref"] == pytest.approx(0.1)
    assert ctl.scale == pytest.approx(3 * 0.99**2)
    assert ctl.theta == ctl.config.theta0


def test_slower_validation_backtracks_and_downscales():
    ctl = start_trial()
    d = run_trial(ctl, line(5.175, 0.05))  # mean 4.95, v_new 0.05 < 0.1
    assert d[-1].action is Action.RESTORE and d[-1].restore_step == 19
    ev = ctl.events[-1]
    assert ev["kind"] == "backtrack" and ev["restore_step"] == 19
    beta_div = 2 * 0.99**3  # decided at step 39: three windows elapsed
    assert ctl.scale == pytest.approx(1 / beta_div)


def test_inconclusive_validation_returns_to_the_old_scale_and_relaxes_theta():
    ctl = start_trial(error_bound=0.2)
    theta = ctl.theta
    d = run_trial(ctl, line(5.7, 0.2))  # |0.2 - 0.1| <= 2e = 0.4
    assert d[-1].action is Action.CONTINUE
    assert ctl.events[-1]["kind"] == "inconclusive"
    assert ctl.scale == 1.0
    assert ctl.theta == pytest.approx((theta + 1) / 2)


@pytest.mark.parametrize(
    "validation, kind, action",
    [
        (line(2.0, 0.01), "keep", Action.CONTINUE),  # far below every history window
        (line(20.0, 0.5), "backtrack", Action.RESTORE),  # far above every history window
    ],
)
def test_corner_case_without_a_comparable_window(validation, kind, action):
    ctl = start_trial()
    d = run_trial(ctl, validation)
    assert d[-1].action is action
    assert ctl.events[-1]["kind"] == kind and ctl.events[-1]["corner_case"]


@pytest.mark.parametrize("guard, kind", [(True, "backtrack"), (False, "keep")])
def test_regress_guard_backtracks_a_fast_recovery_from_a_spike(guard, kind):
    ctl = start_trial(regress_guard=guard)
    # falls twice as fast as the reference, but from a spike: mean 5.05 > 4.95 before the trial
    d = run_trial(ctl, line(5.95, 0.2))
    ev = ctl.events[-1]
    assert ev["kind"] == kind and ev["regressed"] is guard
    assert ev.get("reason") == ("regressed" if guard else None)
    assert ev["l_before"] == pytest.approx(4.95)
    assert (d[-1].action is Action.RESTORE) is guard


@pytest.mark.parametrize("exclude", [True, False])
def test_reference_can_exclude_the_window_that_triggered_the_trial(exclude):
    ctl = AdaLRS(cfg(reference_excludes_trigger=exclude))
    w2, w3 = line(15.0, 0.48), line(10.5, 0.1)  # 0.48 > 0.9 * 0.5: only w3 triggers
    feed(ctl, line(20.0, 0.5) + w2 + w3, 0)
    assert ctl.phase == "ramp" and ctl.events[-1]["step"] == 29
    feed(ctl, [9.5] * K, 30)
    feed(ctl, line(10.5, 0.1), 40)  # the level of w3, the trigger window
    expected = sum(w2 if exclude else w3) / K
    assert ctl.events[-1]["l_ref"] == pytest.approx(expected)


def _ls_se(ys: list[float]) -> float:
    """Standard error of the least-squares slope of ys against 0..n-1, by numpy's lstsq
    (independent of the controller's running sums)."""
    n = len(ys)
    x = np.arange(n, dtype=float)
    design = np.column_stack([x, np.ones(n)])
    coef, *_ = np.linalg.lstsq(design, np.asarray(ys), rcond=None)
    resid = np.asarray(ys) - design @ coef
    return math.sqrt(float(resid @ resid) / (n - 2) / float(((x - x.mean()) ** 2).sum()))


def _alternate(ys: list[float], amp: float) -> list[float]:
    return [y + (amp if i % 2 else -amp) for i, y in enumerate(ys)]


@pytest.mark.parametrize(
    "ref_noise, new_noise, factor, floor",
    [
        (0.01, 0.05, 1.0, 0.0),  # se_new is the larger
        (0.05, 0.01, 1.0, 0.0),  # se_ref is the larger
        (0.01, 0.05, 2.5, 0.0),  # times error_factor
        (0.01, 0.05, 1.0, 0.5),  # floored at error_floor
    ],
)
def test_error_bound_is_estimated_from_the_slope_standard_error(
    ref_noise, new_noise, factor, floor
):
    # noise that alternates in sign keeps every window mean, so the reference stays W2
    w2 = _alternate(W2, ref_noise)
    ctl = AdaLRS(cfg(error_factor=factor, error_floor=floor))
    feed(ctl, W1 + w2, 0)
    assert ctl.phase == "ramp"
    validation = _alternate(line(5.7, 0.2), new_noise)
    run_trial(ctl, validation)
    ev = ctl.events[-1]
    assert ev["l_ref"] == pytest.approx(sum(W2) / K) and not ev["corner_case"]
    se_ref, se_new = _ls_se(w2), _ls_se(validation)
    assert min(se_ref, se_new) > 0.001 and max(se_ref, se_new) > 4 * min(se_ref, se_new)
    assert ev["e"] == pytest.approx(max(floor, factor * max(se_ref, se_new)), rel=1e-9)


def test_min_and_max_scale_clamp_the_multiplier():
    ctl = start_trial(max_scale=2.0)
    run_trial(ctl, line(5.7, 0.2))
    assert ctl.scale == 2.0


# ---------------------------------------------------------------- rising loss and NaN
def test_two_rising_windows_restore_and_downscale():
    ctl = AdaLRS(cfg())
    d = feed(ctl, line(5.0, -0.1) + line(6.0, -0.1), 0)
    assert d[-1].action is Action.RESTORE and d[-1].restore_step == 0
    ev = ctl.events[-1]
    assert ev["kind"] == "boundary_downscale" and ev["restored"]
    assert ctl.scale == pytest.approx(1 / (2 * 0.99 ** (19 // K)))


def test_two_rising_windows_without_window_snapshots_only_downscale():
    ctl = AdaLRS(cfg(snapshot_policy="trials"))
    d = feed(ctl, line(5.0, -0.1) + line(6.0, -0.1), 0)
    assert d[0].action is Action.CONTINUE  # no snapshot at the search start
    assert d[-1].action is Action.CONTINUE
    assert ctl.events[-1]["kind"] == "boundary_downscale" and not ctl.events[-1]["restored"]
    assert ctl.scale < 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", ["ramp", "validate"])
def test_nonfinite_loss_in_a_trial_is_a_failed_trial(bad, where):
    ctl = start_trial()
    if where == "validate":
        feed(ctl, [4.4] * K, 20)
    d = ctl.observe(40 if where == "validate" else 20, bad)
    assert d.action is Action.RESTORE and d.restore_step == 19
    assert ctl.events[-1]["kind"] == "nonfinite_loss"
    assert ctl.phase == "search" and ctl.scale < 1


def test_nonfinite_loss_during_the_search_restores_the_last_good_window():
    ctl = AdaLRS(cfg())
    feed(ctl, line(10.0, 0.5), 0)  # descending window: snapshot at step 9
    d = ctl.observe(10, float("nan"))
    assert d.action is Action.RESTORE and d.restore_step == 9
    assert ctl.scale == pytest.approx(1 / (2 * 0.99))  # one window elapsed


def test_nonfinite_loss_before_any_snapshot_only_downscales():
    ctl = AdaLRS(cfg(snapshot_policy="trials"))
    d = ctl.observe(0, float("nan"))
    assert d.action is Action.CONTINUE and ctl.scale == pytest.approx(0.5)


def test_nonfinite_losses_never_enter_a_slope_fit():
    ctl = AdaLRS(cfg(snapshot_policy="trials"))
    feed(ctl, [float("nan")] * 3 + line(10.0, 0.5), 0)
    assert ctl.state_dict()["hist_y"] == line(10.0, 0.5)


# ---------------------------------------------------------------- factors
@pytest.mark.parametrize("basis", ["windows", "adjustments"])
def test_rectified_factors_decay_with_lambda(basis):
    ctl = AdaLRS(cfg(decay_basis=basis, lam=0.5))
    t = 10 if basis == "windows" else 0
    if basis == "adjustments":
        ctl._adjustments = 2  # noqa: SLF001 - white-box check of the formula
    else:
        t = 2 * K
    assert ctl._alpha_eff(t) == pytest.approx(max(0.25 * 3, 1))  # noqa: SLF001
    assert ctl._beta_eff(t) == pytest.approx(max(0.25 * 2, 1))  # noqa: SLF001


def test_no_trial_once_alpha_has_decayed_to_one():
    ctl = AdaLRS(cfg(lam=0.1))  # 0.1^1 * 3 < 1 after one window
    feed(ctl, W1 + W2, 0)
    assert "trial_start" not in kinds(ctl)


# ---------------------------------------------------------------- steps
def test_steps_must_increase():
    ctl = AdaLRS(cfg())
    ctl.observe(5, 1.0)
    with pytest.raises(ValueError, match="steps must increase"):
        ctl.observe(5, 1.0)
    with pytest.raises(ValueError, match="step is 'a'"):
        ctl.observe("a", 1.0)
    with pytest.raises(ValueError, match="loss is 'x'"):
        ctl.observe(6, "x")


def test_rewind_mode_accepts_the_step_after_the_snapshot():
    ctl = AdaLRS(cfg(backtrack_mode="rewind", decay_basis="adjustments"))
    feed(ctl, W1 + W2, 0)
    feed(ctl, [4.4] * K, 20)
    d = feed(ctl, line(5.175, 0.05), 30)
    assert d[-1].action is Action.RESTORE
    ctl.observe(20, 5.0)  # back to restore_step + 1
    with pytest.raises(ValueError):
        ctl.observe(19, 5.0)


def test_all_event_kinds_are_documented():
    ctl = start_trial()
    run_trial(ctl, line(5.175, 0.05))
    assert set(kinds(ctl)) <= set(EVENT_KINDS)
    for ev in ctl.events:
        assert {"step", "kind", "scale_before", "scale_after"} <= set(ev)


# ---------------------------------------------------------------- persistence
def test_state_dict_is_json_serialisable_and_versioned():
    ctl = start_trial()
    sd = json.loads(json.dumps(ctl.state_dict()))
    assert sd["version"] == 3 and sd["phase"] == "ramp"


def test_resume_in_the_middle_of_a_trial_makes_the_same_decisions():
    stream = W1 + W2 + [4.4] * K + line(5.175, 0.05) + line(4.4, 0.05) * 3
    full = AdaLRS(cfg())
    full_d = feed(full, stream, 0)
    for cut in (5, 19, 23, 33, 39, 45):
        first = AdaLRS(cfg())
        feed(first, stream[:cut], 0)
        resumed = AdaLRS(cfg())
        resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
        rest = feed(resumed, stream[cut:], cut)
        assert [(d.action, d.scale) for d in rest] == [(d.action, d.scale) for d in full_d[cut:]]
        assert resumed.state_dict() == full.state_dict()


@pytest.mark.parametrize("key", ["phase", "scale", "trial", "events", "version"])
def test_load_state_dict_rejects_a_missing_key(key):
    sd = start_trial().state_dict()
    del sd[key]
    with pytest.raises(ValueError, match=f"missing keys \\['{key}'\\]"):
        AdaLRS(cfg()).load_state_dict(sd)


def test_load_state_dict_rejects_another_version_config_or_corruption():
    sd = start_trial().state_dict()
    with pytest.raises(ValueError, match="version is 99"):
        AdaLRS(cfg()).load_state_dict({**sd, "version": 99})
    with pytest.raises(ValueError, match="alpha: checkpoint=3.0 vs config=5"):
        AdaLRS(cfg(alpha=5)).load_state_dict(sd)
    with pytest.raises(ValueError, match="corrupt"):
        AdaLRS(cfg()).load_state_dict({**sd, "scale": "lots"})
    with pytest.raises(ValueError, match="phase"):
        AdaLRS(cfg()).load_state_dict({**sd, "phase": "dancing"})
    with pytest.raises(ValueError, match="corrupt"):
        AdaLRS(cfg()).load_state_dict({**sd, "trial": None})
    with pytest.raises(ValueError, match="must be a mapping"):
        AdaLRS(cfg()).load_state_dict([1, 2])


def test_replay_matches_observing_step_by_step():
    stream = W1 + W2 + [4.4] * K + line(5.7, 0.2)
    a = replay(cfg(), stream)
    b = AdaLRS(cfg())
    feed(b, stream, 0)
    assert a.events == b.events and a.scale == b.scale
