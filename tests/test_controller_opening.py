"""The opening range test (``AdaLRSConfig.opening_factors``, issue 13: beyond the paper): at the
search start each multiplier trains ``opening_steps`` steps from one snapshot, and the one with
the lowest mean of its last ``opening_tail`` losses is kept. Each test drives
``AdaLRS.observe`` with losses that depend on the scale being tried."""

from __future__ import annotations

import json
import math

import pytest

from adalrs_ray.core.controller import Action, AdaLRS, AdaLRSConfig
from adalrs_ray.core.decisions import opening_choice, opening_order, opening_score
from adalrs_ray.core.simulator import LossSimulator, simulate

M = 5  # opening steps per multiplier


def config(**kw) -> AdaLRSConfig:
    base = dict(
        total_steps=200,
        window=10,
        start_ratio=0.0,
        end_ratio=1.0,
        opening_factors=(0.1, 10.0),
        opening_steps=M,
        opening_tail=2,
        backtrack_mode="continue",  # as AdaLRS(config) runs "auto"; rewind where a test says
    )
    base.update(kw)
    return AdaLRSConfig(**base)


def loss_at(scale: float, i: int, best: float) -> float:
    """A loss that is lowest at ``best`` and falls a little with every step."""
    return 3.0 + abs(math.log10(scale / best)) - 0.01 * i


def run_opening(ctl: AdaLRS, best: float, start: int = 0) -> list:
    """Step 0 (the search start), then every multiplier's steps; the decisions in order."""
    out = [ctl.observe(start, 5.0)]
    step = start + 1
    while ctl.phase == "opening":
        i = 0
        while ctl.phase == "opening":
            d = ctl.observe(step, loss_at(ctl.scale, i, best))
            out.append(d)
            step += 1
            i += 1
            if d.action is Action.RESTORE or ctl.phase != "opening":
                break
    return out


# ---------------------------------------------------------------- pure functions
def test_order_puts_the_start_scale_last_and_once():
    assert opening_order((0.1, 1.0, 10.0)) == (0.1, 10.0, 1.0)
    assert opening_order((3.0,)) == (3.0, 1.0)


def test_score_is_the_mean_of_the_tail_and_inf_when_a_tail_loss_is_not_finite():
    assert opening_score([4.0, 3.0, 2.0, 1.0], 2) == pytest.approx(1.5)
    assert opening_score([4.0, 3.0], 5) == pytest.approx(3.5)
    assert opening_score([1.0, math.nan], 2) == math.inf
    assert opening_score([], 2) == math.inf


def test_choice_is_the_lowest_score_and_ties_go_to_the_multiplier_nearest_one():
    order = (0.1, 0.3, 3.0, 1.0)
    assert opening_choice(order, [2.0, 1.0, 1.5, 1.2]) == 1
    assert opening_choice(order, [1.0, 1.0, 1.0, 1.0]) == 3
    assert opening_choice(order, [math.inf] * 4) == 3
    assert opening_choice((0.1, 3.0, 1.0), [1.0, 1.0, 2.0]) == 1  # |ln 3| < |ln 0.1|


# ---------------------------------------------------------------- config
def test_defaults_take_the_window_and_a_quarter_of_it():
    c = AdaLRSConfig(total_steps=2000, window=64, start_ratio=0.05, opening_factors=(0.1, 10))
    assert c.opening_steps == 128 and c.opening_tail == 32  # two windows, a quarter of them
    assert c.opening_factors == (0.1, 10.0)
    assert c.opening_order == (0.1, 10.0, 1.0)
    assert AdaLRSConfig(total_steps=2000).opening_order == ()


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"opening_factors": (0.1, -2.0)}, "-2.0"),
        ({"opening_factors": (0.1, "x")}, "'x'"),
        ({"opening_factors": (0.5, 0.5)}, "only once"),
        ({"opening_factors": (1.0,)}, "other than 1"),
        ({"opening_factors": 0.5}, "tuple"),
        ({"opening_steps": 1}, "opening_steps"),
        ({"opening_tail": 6}, "opening_tail is 6"),
        ({"opening_steps": 60}, "opening"),
    ],
)
def test_bad_fields_are_refused_with_the_value_and_the_rule(fields, words):
    with pytest.raises(ValueError, match="opening") as err:
        config(**fields)
    assert words in str(err.value)


def test_the_paper_has_no_opening_and_refuses_one():
    assert AdaLRSConfig.paper(total_steps=2000).opening_factors == ()
    assert not config().is_paper
    with pytest.raises(ValueError, match="opening_factors"):
        AdaLRSConfig.paper(total_steps=2000, opening_factors=(0.5,))


def test_a_config_with_an_opening_round_trips_through_json():
    c = config()
    again = AdaLRSConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c


# ---------------------------------------------------------------- the state machine
def test_each_multiplier_starts_from_the_snapshot_and_the_lowest_is_kept():
    ctl = AdaLRS(config())
    ds = run_opening(ctl, best=0.1)
    assert ds[0].action is Action.SNAPSHOT and ctl.snapshot_step == 0
    restores = [d for d in ds if d.action is Action.RESTORE]
    # after 0.1, after 10, and after 1 because 0.1 won
    assert [d.restore_step for d in restores] == [0, 0, 0]
    assert ctl.phase == "before" and ctl.scale == pytest.approx(0.1)
    ev = [e for e in ctl.events if e["kind"] == "opening"][0]
    assert ev["factors"] == [0.1, 10.0, 1.0] and ev["factor"] == 0.1 and ev["restored"]
    assert ev["scores"][0] < ev["scores"][2] < ev["scores"][1]
    # 3 x 5 steps were trained, 10 of them thrown away by the restores after 0.1 and 1, and
    # 5 after 10: all but none of 0.1's (its model is the snapshot again)
    assert ctl.state_dict()["discarded_steps"] == 15


def test_when_the_start_scale_wins_its_steps_are_kept():
    ctl = AdaLRS(config())
    ds = run_opening(ctl, best=1.0)
    assert ds[-1].action is Action.CONTINUE
    assert ctl.scale == 1.0 and ctl.phase == "before"
    assert ctl.state_dict()["discarded_steps"] == 10
    assert [e["kind"] for e in ctl.events].count("opening_candidate") == 2


def test_scales_during_the_opening_are_the_multipliers_of_the_start_scale():
    ctl = AdaLRS(config(initial_scale=2.0))
    seen = []
    ctl.observe(0, 5.0)
    step = 1
    while ctl.phase == "opening":
        seen.append(ctl.scale)
        ctl.observe(step, loss_at(ctl.scale, 0, 2.0))
        step += 1
    assert seen == [0.2] * M + [20.0] * M + [2.0] * M
    assert ctl.scale == 2.0


def test_the_choice_sets_the_next_trial_direction():
    down = AdaLRS(config())
    run_opening(down, best=0.1)
    up = AdaLRS(config())
    run_opening(up, best=10.0)
    assert down.state_dict()["direction"] == "down"
    assert up.state_dict()["direction"] == "up" and up.scale == 10.0


def test_a_non_finite_loss_ends_the_multiplier_at_once_with_an_infinite_score():
    ctl = AdaLRS(config())
    ctl.observe(0, 5.0)
    ctl.observe(1, 3.0)  # scale 0.1
    d = ctl.observe(2, math.nan)
    assert d.action is Action.RESTORE and ctl.scale == 10.0
    ev = [e for e in ctl.events if e["kind"] == "opening_candidate"][0]
    assert ev["score"] == "inf" and ev["loss"] == "nan"
    assert ev["restore_step"] == 0  # back to the snapshot after step 0 (no begin() here)
    json.dumps(ctl.state_dict(), allow_nan=False)  # strict JSON
    step = 3
    while ctl.phase == "opening":
        ctl.observe(step, loss_at(ctl.scale, 0, 10.0))
        step += 1
    assert ctl.scale == 10.0


def test_the_search_goes_on_after_the_opening_with_an_empty_history():
    ctl = AdaLRS(config())
    ds = run_opening(ctl, best=0.1)
    step = len(ds)
    # two falling windows, the second slower: the first trial starts, the way the opening set
    for x in [4.0 - 0.1 * i for i in range(10)] + [3.0 - 0.01 * i for i in range(10)]:
        ctl.observe(step, x)
        step += 1
    start = [e for e in ctl.events if e["kind"] == "trial_start"]
    assert start and start[0]["direction"] == "down"
    assert start[0]["step"] == step - 1


def test_resume_mid_opening_makes_the_same_decisions():
    a = AdaLRS(config())
    a.observe(0, 5.0)
    for s in range(1, 8):  # the whole of 0.1 and two steps of 10
        a.observe(s, loss_at(a.scale, s, 0.1))
    b = AdaLRS(config())
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for s in range(8, 40):
        da, db = a.observe(s, loss_at(a.scale, s, 0.1)), b.observe(s, loss_at(b.scale, s, 0.1))
        assert (da.action, da.scale, da.restore_step) == (db.action, db.scale, db.restore_step)
    assert a.state_dict() == b.state_dict()


def test_a_version_2_state_without_an_opening_loads():
    ctl = AdaLRS(AdaLRSConfig(total_steps=200, window=10, start_ratio=0.0))
    state = ctl.state_dict()
    state["version"] = 2
    del state["opening"]
    for key in ("opening_factors", "opening_steps", "opening_tail"):
        del state["config"][key]
    again = AdaLRS(AdaLRSConfig(total_steps=200, window=10, start_ratio=0.0))
    again.load_state_dict(state)
    assert again.phase == ctl.phase


def test_rewind_mode_goes_back_to_the_snapshot_step_for_every_multiplier():
    ctl = AdaLRS(config(backtrack_mode="rewind", decay_basis="adjustments"))
    ctl.observe(0, 5.0)
    starts = []
    step = 1
    while ctl.phase == "opening":
        d = ctl.observe(step, loss_at(ctl.scale, step, 1.0))
        step = d.restore_step + 1 if d.action is Action.RESTORE else step + 1
        starts.append(step)
    assert starts.count(1) == 2  # after 0.1 and after 10: back to step 1
    assert ctl.scale == 1.0


def test_the_opening_runs_from_the_first_step_and_the_search_starts_at_its_own_step():
    ctl = AdaLRS(config(start_ratio=0.2, opening_steps=4, opening_tail=1))
    assert ctl.observe(0, 5.0).action is Action.SNAPSHOT
    assert ctl.phase == "opening" and ctl.scale == pytest.approx(0.1)
    step = 1
    while ctl.phase == "opening":
        ctl.observe(step, loss_at(ctl.scale, step, 1.0))
        step += 1
    assert step == 13 and ctl.phase == "before"  # 3 x 4 steps after step 0
    for s in range(step, 40):
        ctl.observe(s, 4.0 - 0.01 * s)
    assert ctl.phase == "before"
    assert ctl.observe(40, 3.5).action is Action.SNAPSHOT  # search_start = 0.2 x 200
    assert [e["kind"] for e in ctl.events][-1] == "search_start" and ctl.phase == "search"


def test_an_opening_past_the_search_start_starts_the_search_right_after_it():
    ctl = AdaLRS(config(start_ratio=0.02))  # search_start 4, the opening ends at step 15
    run_opening(ctl, best=1.0)
    ctl.observe(16, 3.0)
    assert ctl.phase == "search"
    assert [e for e in ctl.events if e["kind"] == "search_start"][0]["step"] == 16


def test_a_non_finite_first_loss_postpones_the_opening():
    ctl = AdaLRS(config())
    assert ctl.observe(0, math.inf).action is Action.CONTINUE  # search_start: divergence path
    ctl2 = AdaLRS(config(start_ratio=0.1))
    assert ctl2.observe(0, math.nan).action is Action.CONTINUE and ctl2.phase == "before"
    assert ctl2.observe(1, 5.0).action is Action.SNAPSHOT and ctl2.phase == "opening"


def test_the_opening_must_leave_room_for_the_search():
    with pytest.raises(ValueError, match="leaves 50 steps") as err:
        config(total_steps=400, end_ratio=0.5, opening_steps=50, opening_tail=5, window=30)
    assert "needs 120" in str(err.value)


@pytest.mark.parametrize("start, side", [(10.0, "down"), (0.1, "up")])
def test_on_the_simulator_the_opening_moves_a_bad_start_toward_the_optimum(start, side):
    cfg = AdaLRSConfig(total_steps=8000, window=100, opening_factors=(0.1, 0.316, 3.16, 10.0))
    res = simulate(LossSimulator(lr_opt=1e-3, seed=0), 1e-3 * start, cfg)
    ev = [e for e in res.events if e["kind"] == "opening"][0]
    assert (ev["factor"] < 1) if side == "down" else (ev["factor"] > 1)
    after = start * ev["factor"]
    assert abs(math.log(after)) < abs(math.log(start))


# ---------------------------------------------------------------- before the first step
def test_begin_snapshots_the_initial_model_and_the_first_multiplier_trains_from_step_0():
    ctl = AdaLRS(config())
    d = ctl.begin()
    assert d.action is Action.SNAPSHOT and ctl.snapshot_step == -1
    assert ctl.phase == "opening" and ctl.scale == pytest.approx(0.1)
    assert ctl.begin().action is Action.CONTINUE  # once only
    decisions = []
    for s in range(M):
        decisions.append(ctl.observe(s, loss_at(ctl.scale, s, 1.0)))
    assert decisions[-1].action is Action.RESTORE and decisions[-1].restore_step == -1
    assert ctl.state_dict()["discarded_steps"] == M  # steps 0..4


def test_begin_does_nothing_without_an_opening_or_after_a_step():
    plain = AdaLRS(AdaLRSConfig(total_steps=200, window=10))
    assert plain.begin().action is Action.CONTINUE and plain.phase == "before"
    late = AdaLRS(config())
    late.observe(0, 5.0)
    assert late.begin().action is Action.CONTINUE


def test_a_resumed_controller_does_not_begin_again():
    a = AdaLRS(config())
    a.begin()
    a.observe(0, 4.0)
    b = AdaLRS(config())
    b.load_state_dict(a.state_dict())
    assert b.begin().action is Action.CONTINUE and b.phase == "opening"


def test_the_torch_binding_restores_the_initial_model_and_an_empty_optimizer():
    torch = pytest.importorskip("torch")
    from adalrs_ray.torch_binding import AdaLRSScheduler

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    init = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = AdaLRSScheduler(opt, AdaLRS(config()), model=model)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)  # 0.1 x 1e-2 from step 0
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    for _ in range(M):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        d = sched.step(loss.item())
    assert d.action is Action.RESTORE and d.restore_step == -1
    for p, p0 in zip(model.parameters(), init):
        assert torch.equal(p, p0)
    assert not opt.state  # as before the first step
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-1)  # the next multiplier, 10


@pytest.mark.parametrize("kind", ["scheduler", "callable"])
def test_after_the_openings_rewinds_the_base_schedule_stands_at_the_runs_step(kind):
    """Rewind mode: every multiplier trains from step 0 of the base schedule, and the run
    that follows (1 kept, its steps too) gets the LR of each of its steps, not one step on."""
    torch = pytest.importorskip("torch")
    from adalrs_ray.torch_binding import AdaLRSScheduler

    def factor(t: int) -> float:
        return 1.0 - t / 400

    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    base = torch.optim.lr_scheduler.LambdaLR(opt, factor) if kind == "scheduler" else factor
    ctl = AdaLRS(config(backtrack_mode="rewind", decay_basis="adjustments"))
    sched = AdaLRSScheduler(opt, ctl, base, model=model)
    x, y = torch.randn(8, 4), torch.zeros(8, 1)
    step, seen = 0, []
    while step < 3 * M + 4:
        seen.append((step, ctl.scale, opt.param_groups[0]["lr"]))
        opt.zero_grad()
        loss = (model(x) - y).pow(2).mean() * 0 + 3.0 + abs(math.log10(ctl.scale))
        loss.backward()
        opt.step()
        d = sched.step(loss.item())
        step = d.restore_step + 1 if d.action is Action.RESTORE else step + 1
    for t, scale, lr in seen:
        assert lr == pytest.approx(factor(t) * scale), (t, scale)
    assert [t for t, _, _ in seen][: 3 * M] == [*range(M)] * 3  # 0.1, 10, then 1 from step 0


def test_on_the_simulator_the_opening_starts_before_the_first_step():
    cfg = AdaLRSConfig(total_steps=8000, window=100, opening_factors=(0.1, 10.0))
    res = simulate(LossSimulator(lr_opt=1e-3, seed=0), 1e-2, cfg)
    assert res.scales[0] == pytest.approx(0.1)  # step 0 already at the first multiplier
    first = [e for e in res.events if e["kind"] == "opening_candidate"][0]
    assert first["step"] == 199  # two windows of 100 steps


def test_the_opening_rule_is_the_default_plus_the_opening():
    c = AdaLRSConfig.from_dict({"rule": "opening", "total_steps": 2000, "window": 50})
    default = AdaLRSConfig(total_steps=2000, window=50)
    assert c.opening_factors == (0.1, 0.316, 3.16, 10.0)
    assert c.opening_steps == 100 and c.opening_tail == 25 and c.opening_narrows
    assert c.opening_trials == "edge" and c.boundary_tested and c.bracket_stops
    same = {k for k, v in default.to_dict().items() if c.to_dict()[k] == v}
    assert set(default.to_dict()) - same == {
        "opening_factors",
        "opening_steps",
        "opening_tail",
        "opening_narrows",
        "opening_trials",
        "boundary_tested",
        "bracket_stops",
    }


def test_bracket_is_the_factor_to_the_nearest_tried_neighbour():
    from adalrs_ray.core.decisions import opening_bracket

    order = (0.1, 0.316, 3.16, 10.0, 1.0)
    assert opening_bracket(order, 4) == pytest.approx(3.16)  # 1: 0.316 and 3.16 either side
    assert opening_bracket(order, 0) == pytest.approx(3.16)  # 0.1: 0.316
    assert opening_bracket((2.0, 1.0), 1) == pytest.approx(2.0)
    assert opening_bracket((1.0,), 0) == math.inf


def test_opening_narrows_caps_both_trial_factors_at_the_half_bracket():
    # trials after any choice (bracket_stops would stop them after a bracketed one)
    every = dict(opening_factors=(0.316, 3.16), opening_trials="all", bracket_stops=False)
    ctl = AdaLRS(config(**every, opening_narrows=True))
    run_opening(ctl, best=1.0)
    state = ctl.state_dict()
    assert state["factor_up"] == pytest.approx(math.sqrt(3.16))
    assert state["factor_down"] == pytest.approx(min(2.0, math.sqrt(3.16)))
    wide = AdaLRS(config(**every, opening_narrows=False))
    run_opening(wide, best=1.0)
    assert wide.state_dict()["factor_up"] == 3.0  # without it: the configured alpha


def test_the_opening_rule_recovers_from_10x_on_the_lm_like_simulator():
    """docs/controller.md, "The opening": from 10x the regression rule never comes within 2x
    of the optimum on the LM-like simulator (0% of 40 seeds), the opening rule always does;
    the default, run by simulate() as a loop that rewinds, is the opening rule."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from sim_modes import CONFIGS, MODES, make_config

    mode = MODES["lm"]
    rule = AdaLRSConfig.from_dict(
        {
            "rule": "opening",
            **{
                k: v
                for k, v in make_config(mode, CONFIGS["rule_regression"]).to_dict().items()
                if k in ("total_steps", "window", "start_ratio", "end_ratio")
            },
        }
    )
    assert rule == make_config(mode, CONFIGS["rule_opening_2w"])
    for seed in range(4):
        found = {}
        configs = {
            "regression": make_config(mode, CONFIGS["rule_regression"]),
            "opening": rule,
            "default": make_config(mode, "default"),
        }
        for name, cfg in configs.items():
            sim = mode.make(seed)
            res = simulate(sim, mode.schedule(sim.lr_opt * 10.0, mode.total), cfg)
            found[name] = res.final_scale * 10.0
        assert 0.5 <= found["opening"] <= 2.0, found
        assert found["default"] == found["opening"], found
        assert found["regression"] > 2.0, found


def test_refinement_tries_the_half_bracket_around_the_choice_and_keeps_the_best():
    from adalrs_ray.core.decisions import opening_refinement

    order = [0.316, 3.16, 1.0]
    assert opening_refinement(order, 2) == pytest.approx([3.16**0.5, 3.16**-0.5])
    assert opening_refinement([2.0, 1.0], 1) == pytest.approx([2**0.5, 2**-0.5])
    assert opening_refinement([1.0], 0) == []

    ctl = AdaLRS(config(opening_factors=(0.316, 3.16), opening_refine=1))
    ctl.begin()
    step, seen = 0, []
    while ctl.phase == "opening":
        seen.append(round(ctl.scale, 3))
        d = ctl.observe(step, loss_at(ctl.scale, 0, 1.6))  # the best lies at 1.6
        step += 1
    assert sorted(set(seen)) == pytest.approx(sorted({0.316, 3.16, 1.0, 1.778, 0.562}), abs=1e-3)
    assert ctl.scale == pytest.approx(3.16**0.5)
    assert d.action is Action.RESTORE and d.restore_step == -1  # 0.562 was trained last
    ev = [e for e in ctl.events if e["kind"] == "opening"][0]
    assert len(ev["factors"]) == 5 and ev["factor"] == pytest.approx(3.16**0.5)


def test_refinement_rounds_count_in_the_room_the_opening_needs():
    with pytest.raises(ValueError, match="7 multipliers"):
        config(total_steps=100, opening_steps=10, opening_refine=2)


def run_to(cfg: AdaLRSConfig, stop: int, best: float) -> AdaLRS:
    """A controller after steps 0 .. stop - 1 of ``loss_at`` (the opening begun first)."""
    ctl = AdaLRS(cfg)
    ctl.begin()
    for s in range(stop):
        ctl.observe(s, loss_at(ctl.scale, s, best))
    return ctl


def assert_resumes_alike(a: AdaLRS, stop: int, total: int, best: float) -> None:
    """A copy loaded from ``a``'s state (through JSON) decides as ``a`` from step ``stop``
    to ``total`` and ends in the same state."""
    b = AdaLRS(a.config)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for s in range(stop, total):
        da, db = a.observe(s, loss_at(a.scale, s, best)), b.observe(s, loss_at(b.scale, s, best))
        assert (da.action, da.scale, da.restore_step) == (db.action, db.scale, db.restore_step)
    assert a.state_dict() == b.state_dict()


def test_resume_mid_refinement_makes_the_same_decisions():
    cfg = config(opening_factors=(0.316, 3.16), opening_refine=1)
    a = run_to(cfg, 3 * M + 2, 1.6)  # into the first refinement multiplier
    assert_resumes_alike(a, 3 * M + 2, 60, 1.6)


# ---------------------------------------------------------------- opening_trials
def test_bracketed_means_a_tried_multiplier_on_each_side_of_the_choice():
    from adalrs_ray.core.decisions import opening_bracketed

    order = (0.1, 0.316, 3.16, 10.0, 1.0)
    assert opening_bracketed(order, 4)  # 1, between 0.316 and 3.16
    assert opening_bracketed(order, 1)  # 0.316, between 0.1 and 1
    assert not opening_bracketed(order, 0)  # 0.1: nothing tried below it
    assert not opening_bracketed(order, 3)  # 10: nothing tried above it
    assert not opening_bracketed((1.0,), 0)


def _trigger_after_opening(ctl: AdaLRS, start: int) -> None:
    """Two windows whose velocity halves: the search's trigger, if a trial may start."""
    for i in range(20):
        ctl.observe(start + i, 4.0 - (0.05 if i < 10 else 0.025) * i)


@pytest.mark.parametrize(
    "best, factor, trials",
    [(1.0, 1.0, False), (0.3, 0.316, False), (0.05, 0.1, True), (30.0, 3.16, True)],
)
def test_opening_trials_edge_runs_trials_only_after_a_choice_at_the_edge(best, factor, trials):
    factors = (0.1, 0.316, 3.16)
    ctl = AdaLRS(config(opening_factors=factors, opening_trials="edge", opening_narrows=False))
    d = run_opening(ctl, best=best)
    (ev,) = [e for e in ctl.events if e["kind"] == "opening"]
    assert ev["factor"] == factor
    state = ctl.state_dict()
    if trials:  # the smallest or largest multiplier tried: the optimum may lie beyond it
        assert (state["factor_up"], state["factor_down"]) == (3.0, 2.0)
    else:  # bracketed: no factor left, so no trial starts
        assert (state["factor_up"], state["factor_down"]) == (1.0, 1.0)
    _trigger_after_opening(ctl, len(d))
    assert ("trial_start" in [e["kind"] for e in ctl.events]) is trials
    # "all" starts the trial after a bracketed choice too (unless bracket_stops stops it)
    every = AdaLRS(
        config(
            opening_factors=factors,
            opening_trials="all",
            opening_narrows=False,
            bracket_stops=False,
        )
    )
    run_opening(every, best=best)
    _trigger_after_opening(every, len(d))
    assert "trial_start" in [e["kind"] for e in every.events]


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"opening_trials": "some"}, "opening_trials is 'some', but must be one of"),
        ({"opening_trials": "edge", "two_sided": False}, "needs two_sided=True"),
    ],
)
def test_opening_trials_is_validated(fields, words):
    with pytest.raises(ValueError, match=words):
        config(**fields)
