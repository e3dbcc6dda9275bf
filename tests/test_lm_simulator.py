"""LMLossSimulator: the effects it was built to show (a lagged LR noise term, stable-but-slow
large LRs, weight growth), its schedules and state, and issue 13's acceptance: on it the
paper's rule reproduces the tiny LM's pattern (from 10x it ends worse than the fixed run; from
1x it moves away and ends worse), while from 1/10 it gains as on the LM."""

from __future__ import annotations

import math

import pytest

from adalrs_ray.core.controller import AdaLRSConfig
from adalrs_ray.core.lm_simulator import (
    LMLossSimulator,
    constant_schedule,
    cosine_schedule,
    wsd_schedule,
)
from adalrs_ray.core.simulator import simulate

T = 2000


def run_fixed(ratio: float, steps: int = T, seed: int = 0) -> LMLossSimulator:
    sim = LMLossSimulator(seed=seed, noise=0.0)
    lr = wsd_schedule(sim.lr_opt * ratio, steps)
    for t in range(steps):
        sim.step(lr(t))
    return sim


def test_the_best_fixed_lr_is_lr_opt_and_large_lrs_are_stable_but_slow():
    finals = {r: run_fixed(r).expected_loss for r in (0.1, 0.316, 1.0, 3.16, 10.0, 31.6)}
    assert min(finals, key=finals.get) == 1.0
    assert all(math.isfinite(v) and v < 5.5 for v in finals.values())  # no divergence
    assert finals[1.0] < finals[3.16] < finals[10.0] < finals[31.6]
    assert finals[10.0] - finals[1.0] == pytest.approx(0.246, abs=0.06)  # LM grid F: +0.246


@pytest.mark.parametrize("factor, sign", [(3.0, 1), (0.5, -1)])
def test_an_lr_change_first_moves_the_loss_the_way_the_lm_does(factor, sign):
    sim = run_fixed(1.0, steps=500)
    before = sim.expected_loss
    sim.step(sim.lr_opt * factor)
    first = sim.expected_loss - before
    assert sign * first > 0  # an upscale first raises the loss, a downscale lowers it


def test_a_large_lr_grows_the_weights_and_moves_the_best_lr_up():
    sim = run_fixed(10.0, steps=600)
    assert 3.4 <= sim.weight_factor <= 8.2  # the LM's range after 600 steps at 10x
    assert run_fixed(1.0, steps=600).weight_factor == 1.0
    assert sim.effective_ratio(sim.lr_opt * sim.weight_factor) == pytest.approx(1.0)


def test_state_dict_round_trip_and_bad_arguments():
    sim = run_fixed(2.0, steps=50)
    state = sim.state_dict()
    twin = LMLossSimulator(noise=0.0)
    twin.load_state_dict(state)
    assert [twin.step(0.01) for _ in range(5)] == [sim.step(0.01) for _ in range(5)]
    with pytest.raises(ValueError, match="progress"):
        twin.load_state_dict({"steps": 3})
    for kw in ({"lr_opt": 0}, {"floor": 6.0}, {"noise_lag": 0.5}, {"diverge_ratio": 1.0}):
        with pytest.raises(ValueError):
            LMLossSimulator(**kw)
    assert sim.gain(math.nan) == -1.0 and sim.gain(1.0) == 1.0


def test_schedules():
    assert constant_schedule(0.1)(7) == 0.1
    wsd = wsd_schedule(1.0, 100, decay_ratio=0.1, warmup_steps=10)
    assert [wsd(0), wsd(9), wsd(50), wsd(90), wsd(95), wsd(99)] == pytest.approx(
        [0.1, 1.0, 1.0, 1.0, 0.5, 0.1]
    )
    cos = cosine_schedule(1.0, 100)
    assert (cos(0), cos(50)) == pytest.approx((1.0, 0.5))
    with pytest.raises(ValueError, match="decay_ratio"):
        wsd_schedule(1.0, 100, decay_ratio=0.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        cosine_schedule(1.0, 100, warmup_steps=100)


def _paper_vs_fixed(start: float, seeds=range(4)) -> list[tuple[float, float]]:
    cfg = AdaLRSConfig.paper(T, window=64, start_ratio=0.05, end_ratio=0.4)
    out = []
    for seed in seeds:
        sim = LMLossSimulator(seed=seed)
        lr = wsd_schedule(sim.lr_opt * start, T)
        res = simulate(sim, lr, cfg)
        fixed = LMLossSimulator(seed=seed)
        simulate(fixed, lr, None, steps=T)
        out.append((res.final_scale * start, sim.expected_loss - fixed.expected_loss))
    return out


def test_the_papers_rule_reproduces_the_lms_pattern():
    # from 1/10: two kept upscales to 0.83x and a lower loss (LM, F and G: 0.83x, 0.19-0.31)
    for lr, gain in _paper_vs_fixed(0.1):
        assert lr == pytest.approx(0.83, abs=0.02) and gain < -0.15
    # from 10x: worse than the fixed run (LM: every batch-64 run)
    assert all(diff > 0 for _, diff in _paper_vs_fixed(10.0))
    # from 1x: moved away from the optimum, and worse than staying
    for lr, diff in _paper_vs_fixed(1.0):
        assert lr > 1.5 and diff > 0
