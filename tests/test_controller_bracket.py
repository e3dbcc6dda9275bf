"""``bracket_stops``: the two-sided search stops once both sides of the current scale measured
worse than it (a failed or inconclusive trial measures its own side, a kept trial the side it
came from, the opening each side it tried). Hand-made streams (tests/controller_streams.py)
and the LM-like simulator, where an endless search drifts over long runs."""

from __future__ import annotations

import json

import pytest
from controller_streams import K, cfg, feed, kinds, line

from adalrs_ray.core.controller import RULES, AdaLRS, AdaLRSConfig
from adalrs_ray.core.decisions import Verdict, opening_bracketed, opening_sides, sides_after
from adalrs_ray.core.lm_simulator import LMLossSimulator, wsd_schedule
from adalrs_ray.core.simulator import simulate

# as in tests/test_controller_beyond.py: a trial starts at step 19 (v 0.1 < 0.9 x 0.5)
TRIGGER = line(10.0, 0.5) + line(5.4, 0.1)
RAMP = [4.4] * K
FASTER = line(5.7, 0.2)  # twice the reference's velocity: keep
SLOWER = line(5.3, 0.05)  # mean above L_before: backtrack (regressed)
AGAIN = line(5.0, 0.5) + line(5.0, 0.1)  # a new H whose velocity decays: the next trial
BRACKET = dict(two_sided=True, factor_shrink=0.5, bracket_stops=True, total_steps=200)


def events(ctl: AdaLRS, kind: str) -> list[dict]:
    return [e for e in ctl.events if e["kind"] == kind]


# ---------------------------------------------------------------- pure functions
def test_the_opening_measures_each_side_it_tried():
    order = (0.1, 0.316, 3.16, 10.0, 1.0)
    assert opening_sides(order, 4) == {"down", "up"} and opening_bracketed(order, 4)
    assert opening_sides(order, 0) == {"up"}  # 0.1: only larger multipliers tried
    assert opening_sides(order, 3) == {"down"}  # 10: only smaller ones
    assert opening_sides((1.0,), 0) == frozenset() and not opening_bracketed((1.0,), 0)


def test_a_kept_trial_leaves_its_origin_behind_and_a_failed_one_adds_its_side():
    both = frozenset({"up", "down"})
    assert sides_after(both, "up", Verdict.KEEP) == {"down"}
    assert sides_after(frozenset(), "down", Verdict.KEEP) == {"up"}
    assert sides_after(frozenset(), "up", Verdict.BACKTRACK) == {"up"}
    assert sides_after(frozenset({"up"}), "down", Verdict.INCONCLUSIVE) == both


# ---------------------------------------------------------------- the search stops
def _up_then_down(**kw) -> AdaLRS:
    """A failed upscale (steps 0-39), then a failed downscale (steps 40-79)."""
    ctl = AdaLRS(cfg(**kw))
    feed(ctl, TRIGGER + RAMP + SLOWER, 0)
    assert events(ctl, "backtrack")[-1]["direction"] == "up"
    assert "search_stops" not in events(ctl, "backtrack")[-1]
    feed(ctl, AGAIN + [20.0] * K + line(7.0, -0.1), 40)  # the down trial's ramp, then a rise
    bt = events(ctl, "backtrack")
    assert [e["direction"] for e in bt] == ["up", "down"]
    return ctl


def test_a_failure_each_way_stops_the_search_and_says_so():
    ctl = _up_then_down(**BRACKET)
    assert events(ctl, "backtrack")[-1]["search_stops"] is True
    sd = ctl.state_dict()
    assert (sd["factor_up"], sd["factor_down"], sd["sides"]) == (1.0, 1.0, ["down", "up"])
    feed(ctl, AGAIN, 80)  # the velocity decays again: no trial may start
    assert kinds(ctl).count("trial_start") == 2 and ctl.scale == 1.0
    # without it the search goes on: the third trial starts on the same stream
    free = _up_then_down(**{**BRACKET, "bracket_stops": False})
    feed(free, AGAIN, 80)
    assert kinds(free).count("trial_start") == 3
    assert "search_stops" not in events(free, "backtrack")[-1]


def test_an_inconclusive_trial_measures_its_side_too():
    ctl = AdaLRS(cfg(**BRACKET, error_floor=1.0))  # e = 1: no slope test decides
    feed(ctl, TRIGGER + RAMP + line(5.3, 0.1), 0)  # mean below L_before: inconclusive
    assert kinds(ctl)[-1] == "inconclusive" and ctl.state_dict()["sides"] == ["up"]
    feed(ctl, AGAIN + [4.4] * K + line(4.9, 0.1), 40)  # the down trial: inconclusive too
    last = ctl.events[-1]
    assert (last["kind"], last["direction"], last["search_stops"]) == ("inconclusive", "down", True)
    feed(ctl, AGAIN, 80)
    assert kinds(ctl).count("trial_start") == 2


def test_after_a_kept_trial_one_failure_in_its_direction_stops_the_search():
    ctl = AdaLRS(cfg(**BRACKET))
    feed(ctl, TRIGGER + RAMP + FASTER, 0)
    assert kinds(ctl)[-1] == "keep" and ctl.state_dict()["sides"] == ["down"]
    kept = ctl.scale
    feed(ctl, AGAIN, 40)
    assert events(ctl, "trial_start")[-1]["direction"] == "up"  # a kept trial goes on its way
    feed(ctl, RAMP + SLOWER, 60)
    assert events(ctl, "backtrack")[-1]["search_stops"] is True
    assert ctl.scale == kept
    feed(ctl, AGAIN, 80)
    assert kinds(ctl).count("trial_start") == 2


def test_the_boundary_rule_still_acts_after_the_search_stopped():
    ctl = _up_then_down(**BRACKET, boundary_rule="downscale")
    rising = line(5.0, -0.1) + line(6.0, -0.1)
    feed(ctl, rising, 80)
    assert kinds(ctl)[-1] == "boundary_downscale" and ctl.scale < 1.0


def test_resume_keeps_the_measured_sides():
    whole = _up_then_down(**BRACKET)
    feed(whole, AGAIN, 80)
    first = AdaLRS(cfg(**BRACKET))
    feed(first, TRIGGER + RAMP + SLOWER, 0)
    state = json.loads(json.dumps(first.state_dict()))
    assert state["sides"] == ["up"]
    resumed = AdaLRS(cfg(**BRACKET))
    resumed.load_state_dict(state)
    feed(resumed, AGAIN + [20.0] * K + line(7.0, -0.1) + AGAIN, 40)
    assert resumed.events == whole.events and resumed.state_dict() == whole.state_dict()


@pytest.mark.parametrize("sides", ["up", ["left"], [1]])
def test_a_bad_sides_entry_in_the_state_is_refused(sides):
    ctl = AdaLRS(cfg(**BRACKET))
    state = ctl.state_dict()
    state["sides"] = sides
    with pytest.raises(ValueError, match="sides is .* but must list 'up' and/or 'down'"):
        AdaLRS(cfg(**BRACKET)).load_state_dict(state)


def test_a_state_without_sides_loads_as_nothing_measured():
    ctl = AdaLRS(cfg(**BRACKET))
    feed(ctl, TRIGGER + RAMP + SLOWER, 0)
    state = ctl.state_dict()
    del state["sides"]
    resumed = AdaLRS(cfg(**BRACKET))
    resumed.load_state_dict(state)
    assert resumed.state_dict()["sides"] == []


# ---------------------------------------------------------------- the opening
def test_a_bracketed_opening_stops_the_search_even_when_trials_follow_every_choice():
    from test_controller_opening import config, run_opening

    for stops, factors in ((True, (1.0, 1.0)), (False, (3.0, 2.0))):
        ctl = AdaLRS(
            config(
                opening_factors=(0.1, 10.0),
                opening_trials="all",
                opening_narrows=False,
                two_sided=True,
                factor_shrink=0.5,
                bracket_stops=stops,
            )
        )
        run_opening(ctl, best=1.0)
        sd = ctl.state_dict()
        assert sd["sides"] == ["down", "up"]
        assert (sd["factor_up"], sd["factor_down"]) == factors


# ---------------------------------------------------------------- config
def test_bracket_stops_follows_the_opening_and_the_named_rules_leave_it_off():
    default = AdaLRSConfig(total_steps=2000, window=50)
    assert default.bracket_stops is None  # left to the loop, like the opening
    assert default.resolved(rewinds=True).bracket_stops is True
    assert AdaLRSConfig(total_steps=20_000, window=50).resolved(rewinds=False).bracket_stops
    # no room for the opening: the regression rule, without it
    assert AdaLRSConfig(total_steps=2000, window=50).resolved(rewinds=False).bracket_stops is False
    assert AdaLRSConfig.paper(2000, window=50).bracket_stops is False
    for rule in ("regression", "trajectory"):
        assert AdaLRSConfig.from_dict({"rule": rule, "total_steps": 2000}).bracket_stops is False
    assert RULES["opening"]["bracket_stops"] is True
    one_sided = AdaLRSConfig(total_steps=2000, window=50, two_sided=False, backtrack_mode="rewind")
    assert one_sided.bracket_stops is False


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"bracket_stops": "yes"}, "bracket_stops is 'yes', but must be True or False"),
        ({"bracket_stops": True, "two_sided": False}, "a bracket needs trials both ways"),
    ],
)
def test_bracket_stops_is_validated(fields, words):
    with pytest.raises(ValueError, match=words):
        AdaLRSConfig(total_steps=2000, window=50, backtrack_mode="rewind", **fields)


# ---------------------------------------------------------------- on the simulator
@pytest.mark.parametrize("seed", [7, 8])
def test_on_a_long_lm_like_run_from_a_tenth_the_search_stops_at_the_optimum(seed):
    """At 8x the LM-like simulator's length, these seeds' endless searches kept false
    downscales to a third of the optimum or less; stopped at the bracket they stay at it."""
    total = 16_000
    base = dict(total_steps=total, window=64, start_ratio=0.05, end_ratio=0.4)

    def final(stops: bool) -> float:
        sim = LMLossSimulator(seed=seed)
        res = simulate(
            sim, wsd_schedule(sim.lr_opt * 0.1, total), AdaLRSConfig(**base, bracket_stops=stops)
        )
        return res.final_scale * 0.1

    assert final(True) == pytest.approx(1.0)
    assert final(False) < 0.4
