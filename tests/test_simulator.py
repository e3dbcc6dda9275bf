"""The loss simulator, the replayer, and AdaLRS converging on the simulator (paper's claims)."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adalrs_ray.core.controller import AdaLRSConfig
from adalrs_ray.core.simulator import LossReplayer, LossSimulator, simulate

# a run whose search window holds ~30 windows: enough for a few adjustments
CFG = AdaLRSConfig(total_steps=20_000, window=200)
SIM = dict(rate=2e-4, noise=0.02)


def test_velocity_peaks_at_the_optimum_and_turns_negative_past_divergence():
    sim = LossSimulator(lr_opt=1e-3, diverge_ratio=2.0)
    assert sim.gain(1e-3) == pytest.approx(1.0)
    for r in (0.03, 0.3, 0.7, 1.5, 1.9):
        assert sim.gain(1e-3 * r) < 1.0
    assert sim.gain(3e-3) < 0 and sim.gain(float("nan")) < 0


def test_simulator_is_seeded_and_restorable():
    a, b = LossSimulator(seed=3), LossSimulator(seed=3)
    assert [a.step(1e-3) for _ in range(5)] == [b.step(1e-3) for _ in range(5)]
    state = a.state_dict()
    first = [a.step(1e-3) for _ in range(5)]
    a.load_state_dict(state)
    assert [a.step(1e-3) for _ in range(5)] == first


@pytest.mark.parametrize(
    "kw, fragment",
    [
        (dict(lr_opt=0), "lr_opt is 0"),
        (dict(rate=1.5), "rate is 1.5"),
        (dict(floor=7.0), "floor < loss0"),
        (dict(noise=-1.0), "noise is -1.0"),
        (dict(diverge_ratio=1.0), "diverge_ratio is 1.0"),
    ],
)
def test_simulator_rejects_bad_values(kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        LossSimulator(**kw)


def test_replayer_replays_a_log_and_feeds_the_controller(tmp_path):
    import pandas as pd

    losses = [LossSimulator(seed=1).step(1e-3) for _ in range(2000)]
    path = tmp_path / "metrics.parquet"
    pd.DataFrame({"loss": losses}).to_parquet(path)
    rep = LossReplayer.from_file(str(path))
    assert len(rep) == 2000
    res = simulate(rep, 1e-3, AdaLRSConfig(total_steps=2000, window=50))
    assert res.losses == losses
    with pytest.raises(ValueError, match="no column 'val'"):
        LossReplayer.from_file(str(path), column="val")
    with pytest.raises(ValueError, match="empty"):
        LossReplayer([])


def _final_ratio(start_ratio: float, seed: int) -> float:
    sim = LossSimulator(seed=seed, **SIM)
    res = simulate(sim, sim.lr_opt * start_ratio, CFG)
    return res.lrs[-1] / sim.lr_opt


@settings(
    max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(seed=st.integers(0, 10_000), start=st.sampled_from([1 / 30, 10.0]))
def test_adalrs_ends_within_a_factor_3_of_the_optimum(seed, start):
    ratio = _final_ratio(start, seed)
    assert 1 / 3 <= ratio <= 3, f"from {start} x optimum, seed {seed}: ended at {ratio} x"


def test_backtracking_matters_from_a_too_large_lr():
    """Paper Fig. 4a: without backtracking the damage of failed upscales stays."""
    gaps = []
    for seed in range(8):
        on = simulate(LossSimulator(seed=seed, **SIM), 1e-2, CFG)
        off = simulate(LossSimulator(seed=seed, **SIM), 1e-2, CFG, backtracking=False)
        gaps.append(off.final_loss() - on.final_loss())
    assert statistics.mean(gaps) > 0


def test_adalrs_beats_the_fixed_small_lr():
    on = simulate(LossSimulator(seed=0, **SIM), 1e-3 / 30, CFG)
    off = simulate(LossSimulator(seed=0, **SIM), 1e-3 / 30, None, steps=CFG.total_steps)
    assert on.final_loss() < off.final_loss() - 0.5
