"""``error_ar1``: the error bound e corrected for autocorrelated noise (beyond the paper).

A window's least-squares standard error assumes independent noise. A fixed probe batch's loss
follows the weights, so its noise is autocorrelated and the bare standard error understates a
slope's error: in a flat stretch two windows then "rise significantly" by chance and the
boundary rule downscales on noise. These tests drive the pure functions and ``AdaLRS.observe``
with seeded AR(1) and independent noise.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from controller_streams import K, cfg, feed, kinds, line

from adalrs_ray.core.controller import RULES, Action, AdaLRS, AdaLRSConfig
from adalrs_ray.core.decisions import ar1_inflation, residual_lag1_sums

TWO_SIDED = dict(two_sided=True, factor_shrink=0.5)


def ar1_noise(n: int, rho: float, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty(n)
    x = 0.0
    for i in range(n):
        x = rho * x + sigma * math.sqrt(1 - rho * rho) * rng.standard_normal()
        out[i] = x
    return out


def flat_stream(n: int, rho: float, seed: int) -> list[float]:
    """A loss that has stopped falling: 2.0 plus AR(1) noise (rho 0: independent)."""
    return [2.0 + float(x) for x in ar1_noise(n, rho, 0.02, seed)]


def run(config: AdaLRSConfig, losses: list[float]) -> AdaLRS:
    ctl = AdaLRS(config)
    for t, loss in enumerate(losses):
        ctl.observe(t, loss)
    return ctl


def flat_config(**kw) -> AdaLRSConfig:
    fields = dict(total_steps=2000, window=20, start_ratio=0.0, end_ratio=1.0)
    return AdaLRSConfig.from_dict({"rule": "regression", "boundary_tested": True, **fields, **kw})


# ---------------------------------------------------------------- the pure functions
def test_a_straight_line_has_no_residuals_and_no_inflation():
    xs = list(range(10))
    assert residual_lag1_sums(xs, [3.0 - 0.1 * x for x in xs]) == pytest.approx((0.0, 0.0))
    assert ar1_inflation(0.0, 0.0) == 1.0
    assert residual_lag1_sums([1, 2], [1.0, 2.0]) == (0.0, 0.0)  # below three points


def test_the_inflation_is_the_ar1_effective_sample_size_correction():
    assert ar1_inflation(0.5, 1.0) == pytest.approx(math.sqrt(3.0))
    assert ar1_inflation(-0.3, 1.0) == 1.0  # negative rho is never corrected downward
    assert ar1_inflation(0.99, 1.0) == pytest.approx(math.sqrt(1.95 / 0.05))  # clipped at 0.95


def test_residual_sums_match_numpy():
    rng = np.random.default_rng(0)
    xs = np.arange(20.0)
    ys = 1.0 - 0.02 * xs + rng.standard_normal(20) * 0.1
    b, a = np.polyfit(xs, ys, 1)
    r = ys - (a + b * xs)
    lag1, squares = residual_lag1_sums(list(xs), list(ys))
    assert lag1 == pytest.approx(float((r[1:] * r[:-1]).sum()))
    assert squares == pytest.approx(float((r * r).sum()))


@pytest.mark.parametrize("rho, low, high", [(0.0, 1.0, 1.1), (0.8, 1.5, 3.0)])
def test_pooled_windows_recover_the_noise_autocorrelation(rho, low, high):
    y = ar1_noise(4000, rho, 1.0, seed=1)
    lag1 = squares = 0.0
    for i in range(0, 4000, 20):
        a, b = residual_lag1_sums(list(range(20)), list(y[i : i + 20]))
        lag1, squares = lag1 + a, squares + b
    # the true rho 0.8 gives sqrt(1.8 / 0.2) = 3; the residuals of a line through 20 points
    # understate rho (the line takes up part of the slow noise): a conservative correction
    assert low <= ar1_inflation(lag1, squares) <= high


# ---------------------------------------------------------------- the controller
def test_autocorrelated_noise_fires_the_tested_boundary_rule_only_without_the_correction():
    bare, corrected = [], []
    for seed in (4, 5, 6, 7):
        losses = flat_stream(2000, rho=0.9, seed=seed)
        for config, out in (
            (flat_config(error_ar1=False), bare),
            (flat_config(error_ar1=True), corrected),
        ):
            ctl = run(config, losses)
            out.append((sum(e["kind"] == "boundary_downscale" for e in ctl.events), ctl.scale))
    # a flat loss: every boundary downscale is one on noise
    assert sum(n for n, _ in bare) >= 10, bare
    assert sum(n for n, _ in corrected) <= sum(n for n, _ in bare) / 3, (bare, corrected)
    assert all(c >= b for (_, b), (_, c) in zip(bare, corrected)), (bare, corrected)


def test_with_independent_noise_the_correction_changes_no_decision():
    losses = flat_stream(2000, rho=0.0, seed=4)
    bare = run(flat_config(error_ar1=False), losses)
    corrected = run(flat_config(error_ar1=True), losses)
    assert [e["kind"] for e in corrected.events] == [e["kind"] for e in bare.events]
    assert corrected.scale == bare.scale


def test_a_verdicts_e_is_the_bare_e_times_the_pooled_inflation():
    # a falling loss with AR(1) noise: trials start; the first verdict's e with the
    # correction is the bare one times the inflation of every window fitted before it
    rng_noise = ar1_noise(2000, 0.8, 0.01, seed=5)
    losses = [3.0 * math.exp(-t / 400) + 1.0 + float(x) for t, x in enumerate(rng_noise)]
    kw = dict(total_steps=2000, window=20, start_ratio=0.0, end_ratio=1.0, rule="regression")
    bare = run(AdaLRSConfig.from_dict({**kw, "error_ar1": False}), losses)
    corrected = run(AdaLRSConfig.from_dict({**kw, "error_ar1": True}), losses)
    verdicts = ("keep", "backtrack", "inconclusive")
    first_bare = next(e for e in bare.events if e["kind"] in verdicts)
    first = next(e for e in corrected.events if e["kind"] in verdicts)
    assert first["step"] == first_bare["step"]
    # the windows fitted so far: the search windows up to the trial and its validation window
    ctl = AdaLRS(AdaLRSConfig.from_dict({**kw, "error_ar1": True}))
    for t in range(first["step"] + 1):
        ctl.observe(t, losses[t])
    factor = ar1_inflation(*ctl.state_dict()["ar1"])
    assert factor > 1.5
    assert first["e"] == pytest.approx(first_bare["e"] * factor)


def test_resume_with_the_correction_makes_the_same_decisions():
    losses = flat_stream(2000, rho=0.9, seed=3)
    whole = run(flat_config(error_ar1=True), losses)
    first = run(flat_config(error_ar1=True), losses[:1000])
    state = first.state_dict()
    assert state["ar1"][1] > 0
    resumed = AdaLRS(flat_config(error_ar1=True))
    resumed.load_state_dict(state)
    for t in range(1000, 2000):
        resumed.observe(t, losses[t])
    assert resumed.events == whole.events and resumed.scale == whole.scale


def test_a_state_without_the_pooled_sums_loads_as_none_pooled():
    ctl = run(flat_config(error_ar1=True), flat_stream(200, rho=0.9, seed=3))
    state = ctl.state_dict()
    del state["ar1"]
    again = AdaLRS(flat_config(error_ar1=True))
    again.load_state_dict(state)
    assert again.state_dict()["ar1"] == [0.0, 0.0]
    state["ar1"] = [1.0]
    with pytest.raises(ValueError, match="ar1 holds 1 numbers"):
        again.load_state_dict(state)


def test_error_ar1_must_be_a_bool_and_the_papers_rule_has_it_off():
    with pytest.raises(ValueError, match="error_ar1 is 'yes', but must be True or False"):
        AdaLRSConfig(total_steps=100, window=5, error_ar1="yes")
    assert AdaLRSConfig.paper(100, window=5).error_ar1 is False
    assert RULES["paper"]["error_ar1"] is False


# ---------------------------------------------------------------- boundary_rule
def _first_boundary(ctl: AdaLRS) -> dict:
    return next(e for e in ctl.events if e["kind"] == "boundary_downscale")


def _boundary_trial() -> AdaLRS:
    """Two rising windows (steps 0-19) under boundary_rule="trial": a downscale trial to the
    scale the paper's rule sets blind."""
    rising = line(5.0, -0.1) + line(6.0, -0.1)  # two rising windows, steps 0-19
    blind = AdaLRS(cfg(**TWO_SIDED))
    feed(blind, rising, 0)
    assert blind.events[-1]["kind"] == "boundary_downscale" and blind.scale < 1.0
    tried = AdaLRS(cfg(**TWO_SIDED, boundary_rule="trial"))
    d = feed(tried, rising, 0)
    assert d[-1].action is Action.SNAPSHOT and 0.5 < tried.scale < 1.0  # the ramp down
    start = tried.events[-1]
    assert start["kind"] == "trial_start" and start["step"] == 19
    assert (start["direction"], start["cause"]) == ("down", "boundary")
    # beta' as for any trial starting at step 20 (t = 2 windows); the blind downscale at step
    # 19 took t = 1
    assert start["target_scale"] == pytest.approx(1 / (2 * 0.99**2))
    return tried


def test_boundary_rule_trial_starts_a_validated_downscale_where_the_paper_downscales_blind():
    _boundary_trial()


@pytest.mark.parametrize(
    "validation, verdict, scale",
    [(line(6.0, 0.1), "keep", 1 / (2 * 0.99**2)), (line(7.0, -0.1), "backtrack", 1.0)],
)
def test_a_boundary_trial_is_kept_only_if_the_lower_lr_descends(validation, verdict, scale):
    tried = _boundary_trial()
    feed(tried, [6.9] * K + validation, 20)  # the ramp, then the validation window
    event = tried.events[-1]
    assert (event["kind"], event["direction"]) == (verdict, "down")
    assert tried.scale == pytest.approx(scale)
    assert "boundary_downscale" not in kinds(tried)


def test_an_inconclusive_boundary_trial_keeps_the_lower_scale():
    """The loss rose at the base scale: where the lower one measures no different, the tie goes
    down (a velocity test on a saturated, diverging loss cannot tell two scales apart); the
    regress guard does not act, since the validation lies above the last window at any scale."""
    ctl = AdaLRS(
        cfg(**TWO_SIDED, boundary_rule="trial", error_floor=1.0, reference="regression")
    )  # e = 1: no test decides
    rising = line(5.0, -0.1) + line(6.0, -0.1)
    feed(ctl, rising + [6.9] * K + line(7.0, -0.1), 0)  # still rising, above L_before
    keep = ctl.events[-1]
    assert (keep["kind"], keep["direction"], keep["tie"]) == ("keep", "down", True)
    assert keep["l_new"] > keep["l_before"] and not keep["regressed"]
    assert ctl.scale == pytest.approx(1 / (2 * 0.99**2))
    # a trial on the paper's trigger with the same verdict is dropped, as before
    decay = AdaLRS(cfg(**TWO_SIDED, boundary_rule="trial", error_floor=1.0, reference="regression"))
    feed(decay, line(10.0, 0.5) + line(5.4, 0.1) + [4.4] * K + line(5.3, 0.1), 0)
    assert kinds(decay)[-1] == "inconclusive" and decay.scale == 1.0


def test_a_boundary_trial_that_resumes_mid_validation_keeps_its_cause():
    ctl = AdaLRS(cfg(**TWO_SIDED, boundary_rule="trial", error_floor=1.0, reference="regression"))
    feed(ctl, line(5.0, -0.1) + line(6.0, -0.1) + [6.9] * K + line(7.0, -0.1)[:5], 0)
    state = json.loads(json.dumps(ctl.state_dict()))
    assert state["trial"]["cause"] == "boundary"
    resumed = AdaLRS(
        cfg(**TWO_SIDED, boundary_rule="trial", error_floor=1.0, reference="regression")
    )
    resumed.load_state_dict(state)
    feed(resumed, line(7.0, -0.1)[5:], 35)
    assert resumed.events[-1]["tie"] is True


def test_boundary_rule_trial_does_nothing_once_no_downscale_trial_may_start():
    losses = flat_stream(2000, rho=0.9, seed=5)
    blind = run(flat_config(error_ar1=False), losses)
    assert sum(e["kind"] == "boundary_downscale" for e in blind.events) >= 3
    tried = run(flat_config(error_ar1=False, boundary_rule="trial"), losses)
    # the early trials shrank and decayed both factors to 1: no trial, so no downscale
    assert not any(e["kind"] == "boundary_downscale" for e in tried.events)
    assert tried.scale == 1.0


def test_boundary_rule_off_never_downscales_on_a_rise():
    losses = flat_stream(2000, rho=0.9, seed=5)
    off = run(flat_config(error_ar1=False, boundary_rule="off"), losses)
    assert not any(e["kind"] == "boundary_downscale" for e in off.events)
    assert not any(e.get("cause") == "boundary" for e in off.events)


def test_boundary_rule_is_checked_and_the_paper_downscales():
    with pytest.raises(ValueError, match="boundary_rule is 'sometimes', but must be one of"):
        AdaLRSConfig(total_steps=100, window=5, boundary_rule="sometimes")
    with pytest.raises(ValueError, match="needs two_sided=True"):
        AdaLRSConfig(total_steps=100, window=5, two_sided=False, boundary_rule="trial")
    assert AdaLRSConfig(total_steps=100, window=5, two_sided=False).boundary_rule == "downscale"
    assert AdaLRSConfig(total_steps=100, window=5).boundary_rule == "trial"
    assert AdaLRSConfig(total_steps=100, window=5).error_ar1 is True
    assert AdaLRSConfig.paper(100, window=5).boundary_rule == "downscale"
