"""Restores that a loop can rewind: ``inconclusive_restores``, the boundary rule in
``backtrack_mode="rewind"``, and :func:`simulate` rewinding its step counter and noise."""

from __future__ import annotations

import json

import pytest
from controller_streams import K, cfg, feed, kinds, line

from adalrs_ray.core.controller import Action, AdaLRS, AdaLRSConfig
from adalrs_ray.core.lm_simulator import LMLossSimulator, wsd_schedule
from adalrs_ray.core.simulator import LossReplayer, LossSimulator, simulate

# as in tests/test_controller_beyond.py: a trial starts at step 19 (v 0.1 < 0.9 x 0.5)
TRIGGER = line(10.0, 0.5) + line(5.4, 0.1)
RAMP = [4.4] * K
UNDECIDED = line(5.3, 0.1)  # with error_floor=1 no slope test decides; mean 4.85 < L_before
TWO_SIDED = dict(two_sided=True, factor_shrink=0.5, error_floor=1.0)
REWIND = dict(backtrack_mode="rewind", decay_basis="adjustments")


def _inconclusive(**kw) -> tuple[AdaLRS, list]:
    ctl = AdaLRS(cfg(**TWO_SIDED, **kw))
    decisions = feed(ctl, TRIGGER + RAMP + UNDECIDED, 0)
    assert kinds(ctl)[-1] == "inconclusive"
    return ctl, decisions


def test_an_inconclusive_trial_keeps_its_steps_by_default():
    ctl, d = _inconclusive()
    assert d[-1].action is Action.CONTINUE and ctl.events[-1]["restore_step"] is None


@pytest.mark.parametrize("mode", [{}, REWIND])
def test_inconclusive_restores_goes_back_to_the_trials_snapshot(mode):
    ctl, d = _inconclusive(inconclusive_restores=True, **mode)
    assert d[-1].action is Action.RESTORE and d[-1].restore_step == 19  # the trial's snapshot
    ev = ctl.events[-1]
    assert ev["restore_step"] == 19 and ev["scale_after"] == 1.0 == ctl.scale
    sd = ctl.state_dict()
    assert sd["direction"] == "down" and sd["factor_up"] == 3.0  # turned, not shrunk
    assert sd["hist_y"] == TRIGGER  # H kept: the model is back where H ended
    if mode:  # rewind: H stays where it was, and the loop goes back to step 20
        assert sd["hist_x"] == list(range(20)) and sd["min_next_step"] == 20
    else:  # continue: H moved on by the 20 discarded steps, ending right before the next step
        assert sd["hist_x"] == list(range(20, 40)) and sd["min_next_step"] == 40


def test_after_an_inconclusive_restore_in_rewind_mode_the_next_trial_goes_the_other_way():
    ctl, _ = _inconclusive(inconclusive_restores=True, **REWIND)
    # the loop replays steps 20.. from the snapshot: one slower window triggers a trial
    feed(ctl, line(4.4, 0.02), 20)
    start = ctl.events[-1]
    assert start["kind"] == "trial_start" and start["direction"] == "down"
    assert start["step"] == 29


def test_inconclusive_restores_is_validated_and_defaults_off():
    assert AdaLRSConfig(total_steps=100).inconclusive_restores is False
    with pytest.raises(ValueError, match="inconclusive_restores is 'yes'"):
        cfg(inconclusive_restores="yes")


def test_a_state_saved_before_inconclusive_restores_existed_loads_as_off():
    config = cfg(**TWO_SIDED)
    ctl = AdaLRS(config)
    feed(ctl, TRIGGER + RAMP[:4], 0)
    state = json.loads(json.dumps(ctl.state_dict()))
    del state["config"]["inconclusive_restores"]
    resumed = AdaLRS(config)
    resumed.load_state_dict(state)
    feed(ctl, RAMP[4:] + UNDECIDED, 24)
    feed(resumed, RAMP[4:] + UNDECIDED, 24)
    assert resumed.events == ctl.events
    # ... and a config that restores inconclusive trials refuses it, naming the field
    with pytest.raises(ValueError, match="inconclusive_restores"):
        AdaLRS(cfg(**TWO_SIDED, inconclusive_restores=True)).load_state_dict(state)


@pytest.mark.parametrize("mode, restored", [({}, True), (REWIND, False)])
def test_the_boundary_rule_restores_only_in_continue_mode(mode, restored):
    ctl = AdaLRS(cfg(**mode))
    d = feed(ctl, line(5.0, -0.1) + line(6.0, -0.1), 0)  # two rising windows
    ev = ctl.events[-1]
    assert ev["kind"] == "boundary_downscale" and ev["restored"] is restored
    assert d[-1].action is (Action.RESTORE if restored else Action.CONTINUE)
    assert ctl.scale < 1.0


# ---------------------------------------------------------------- simulate() in rewind mode
def _lm_rewind(**kw) -> AdaLRSConfig:
    return AdaLRSConfig(
        total_steps=2000,
        window=64,
        start_ratio=0.05,
        end_ratio=0.4,
        opening_factors=(0.1, 0.316, 3.16, 10.0),
        opening_narrows=True,
        **REWIND,
        **kw,
    )


def test_simulate_rewinds_the_step_counter_and_counts_the_compute():
    sim = LMLossSimulator(seed=0)
    res = simulate(sim, wsd_schedule(sim.lr_opt * 10, 2000), _lm_rewind())
    assert len(res.losses) == len(res.lrs) == len(res.scales) == 2000 == sim.steps
    restores = [e for e in res.events if e["kind"] == "opening_candidate"]
    # each discarded multiplier of the opening, and its extension below 0.1 (the choice is at
    # that edge): 64 steps again
    assert len(restores) == 5
    assert restores[-1]["scale_after"] == pytest.approx(0.1 / 3.16, rel=0.01)
    assert res.compute_steps >= 2000 + 5 * 64
    # the run as it finally went starts at the multiplier the opening kept
    (opening,) = [e for e in res.events if e["kind"] == "opening"]
    assert opening["scale_after"] == pytest.approx(0.1)
    assert res.scales[0] == pytest.approx(0.1)


def test_a_rewound_simulation_replays_the_noise_of_the_steps_it_repeats():
    config = _lm_rewind(inconclusive_restores=True)
    fixed = LMLossSimulator(seed=3)
    base = simulate(fixed, wsd_schedule(fixed.lr_opt, 2000), None, 2000)
    sim = LMLossSimulator(seed=3)
    res = simulate(sim, wsd_schedule(sim.lr_opt, 2000), config)
    assert res.compute_steps > 2000
    # until the first scale other than 1 in the run as it went, the losses are the fixed run's
    first = next((i for i, s in enumerate(res.scales) if s != 1.0), 2000)
    assert first > 64  # the opening kept 1: its steps are the run's
    assert res.losses[:first] == base.losses[:first]


def test_a_replayer_refuses_rewind_mode():
    log = LossReplayer([5.0 - 0.001 * t for t in range(2000)])
    with pytest.raises(ValueError, match="LossReplayer cannot rewind"):
        simulate(log, 1e-3, _lm_rewind())
    # without backtracking nothing is rewound, so it runs
    assert len(simulate(log, 1e-3, _lm_rewind(), backtracking=False).losses) == 2000


def test_continue_mode_simulates_exactly_the_run_length():
    sim = LossSimulator(seed=0)
    cfg = AdaLRSConfig(total_steps=3000, window=60, backtrack_mode="continue")
    res = simulate(sim, sim.lr_opt, cfg)
    assert res.compute_steps == len(res.losses) == 3000


# ---------------------------------------------------------------- boundary_tested
def test_loss_rose_twice_with_bounds_needs_each_rise_beyond_twice_its_bound():
    from adalrs_ray.core.decisions import loss_rose_twice

    assert loss_rose_twice(-0.01, -0.01)  # the paper: any two negative velocities
    assert not loss_rose_twice(-0.01, -0.5, e=0.01, e_prev=0.1)  # -0.01 > -2 x 0.01
    assert not loss_rose_twice(-0.5, -0.1, e=0.01, e_prev=0.1)  # -0.1 > -2 x 0.1
    assert loss_rose_twice(-0.5, -0.3, e=0.01, e_prev=0.1)


@pytest.mark.parametrize("floor, fires", [(0.0, True), (0.01, True), (0.06, False)])
def test_boundary_tested_fires_only_on_rises_beyond_the_error_bound(floor, fires):
    rising = line(5.0, -0.1) + line(6.0, -0.1)  # two windows rising by 0.1 a step
    ctl = AdaLRS(cfg(boundary_tested=True, error_floor=floor))
    feed(ctl, rising, 0)
    assert ("boundary_downscale" in kinds(ctl)) is fires
    paper = AdaLRS(cfg(error_floor=floor))  # untested: any two rises
    feed(paper, rising, 0)
    assert "boundary_downscale" in kinds(paper)


def test_boundary_tested_uses_each_windows_own_standard_error():
    quiet = line(5.0, -0.02)  # exact: se 0
    noisy = [x + (0.3 if i % 2 else -0.3) for i, x in enumerate(line(5.2, -0.02))]
    for first, second, fires in ((quiet, quiet, True), (noisy, quiet, False)):
        ctl = AdaLRS(cfg(boundary_tested=True))
        feed(ctl, first + second, 0)
        assert ("boundary_downscale" in kinds(ctl)) is fires


def test_a_state_without_prev_se_loads_and_resumes():
    config = cfg(boundary_tested=True)
    stream = line(5.0, 0.1) + line(4.0, 0.05) + line(3.5, -0.02) + line(3.7, -0.05)
    whole = AdaLRS(config)
    feed(whole, stream, 0)
    part = AdaLRS(config)
    feed(part, stream[:15], 0)
    state = json.loads(json.dumps(part.state_dict()))
    assert "prev_se" in state
    resumed = AdaLRS(config)
    resumed.load_state_dict(state)
    feed(resumed, stream[15:], 15)
    assert resumed.events == whole.events
