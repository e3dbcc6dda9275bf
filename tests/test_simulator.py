"""The loss simulator, the replayer, and AdaLRS converging on the simulator (paper's claims)."""

from __future__ import annotations

import pytest

from adalrs_ray.core.controller import AdaLRSConfig
from adalrs_ray.core.simulator import LossReplayer, LossSimulator, final_scales, simulate

# a run whose search window holds ~30 windows: enough for a few adjustments
CFG = AdaLRSConfig.paper(total_steps=20_000, window=200)
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
    res = simulate(rep, 1e-3, AdaLRSConfig.paper(total_steps=2000, window=50))
    assert res.losses == losses
    with pytest.raises(ValueError, match="no column 'val'"):
        LossReplayer.from_file(str(path), column="val")
    with pytest.raises(ValueError, match="empty"):
        LossReplayer([])


@pytest.mark.slow
def test_adalrs_ends_where_docs_controller_md_says_over_40_seeds():
    """docs/controller.md: from lr_opt / 30 and from 10 x lr_opt, seeds 0-39, the controller ends
    within [0.42, 1.10] x lr_opt (the interval at its two-digit precision). About 8 s."""
    ratios = final_scales([1 / 30, 10.0], range(40), CFG, **SIM)
    low, high = min(ratios.values()), max(ratios.values())
    assert 0.415 <= low and high < 1.105, f"ended in [{low:.3f}, {high:.3f}] x lr_opt"


def test_backtracking_matters_where_no_run_diverges():
    """Paper Fig. 4a: without backtracking the damage of failed upscales stays.

    From 1.5 x lr_opt a fixed run converges (it does not diverge, unlike a fixed 10 x run), and
    so do both AdaLRS runs; the upscale trials to ~4.4 x lr_opt diverge inside the trial, and
    restoring the snapshot is what the backtracking run gains. Measured: 0.029-0.115 lower
    final loss on every one of 8 seeds."""
    start = 1.5e-3
    for seed in range(8):
        fixed = simulate(LossSimulator(seed=seed, **SIM), start, None, steps=CFG.total_steps)
        on = simulate(LossSimulator(seed=seed, **SIM), start, CFG)
        off = simulate(LossSimulator(seed=seed, **SIM), start, CFG, backtracking=False)
        assert max(fixed.final_loss(), on.final_loss(), off.final_loss()) < 2.5
        assert any(e["kind"] == "backtrack" for e in on.events)
        assert on.final_loss() < off.final_loss() - 0.01, f"seed {seed}"


def test_backtracking_undoes_a_divergence_from_10x():
    """From 10 x lr_opt a fixed run diverges; what this shows is only that restoring the last
    good snapshot undoes that divergence (the comparison where no run diverges is above)."""
    gaps = []
    for seed in range(8):
        on = simulate(LossSimulator(seed=seed, **SIM), 1e-2, CFG)
        off = simulate(LossSimulator(seed=seed, **SIM), 1e-2, CFG, backtracking=False)
        gaps.append(off.final_loss() - on.final_loss())
    assert min(gaps) > 0


def test_adalrs_beats_the_fixed_small_lr():
    on = simulate(LossSimulator(seed=0, **SIM), 1e-3 / 30, CFG)
    off = simulate(LossSimulator(seed=0, **SIM), 1e-3 / 30, None, steps=CFG.total_steps)
    assert on.final_loss() < off.final_loss() - 0.5
