"""The compared arms: registry, trial slots, schedulers and argument validation."""

from __future__ import annotations

import math

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    PopulationBasedTraining,
)

from search_algos import ARMS, DEFAULT_ARMS, Arm, SizeOption, get_arm, register_arm, size_options
from search_algos.base import log_uniform
from search_algos.hyperband import band_size, bracket_sizes
from search_algos.pbt import clip_lr
from search_algos.random_search import RandomSearchArm

SCHEDULER_OF = {
    "grid": FIFOScheduler,
    "adalrs": FIFOScheduler,
    "hyperband": HyperBandScheduler,
    "asha": AsyncHyperBandScheduler,
    "pbt": PopulationBasedTraining,
    "random": FIFOScheduler,
}


def make(arm, total_steps=1000, report_every=50):
    return arm.make_scheduler(
        metric="val_loss", mode="min", total_steps=total_steps, report_every=report_every
    )


def test_registry_names():
    assert sorted(ARMS) == [
        "adalrs",
        "asha",
        "grid",
        "hyperband",
        "pbt",
        "prodigy",
        "random",
        "schedulefree",
    ]
    assert DEFAULT_ARMS == ("adalrs", "grid", "hyperband", "pbt")


@pytest.mark.parametrize("name", sorted(SCHEDULER_OF))
def test_get_arm_builds_the_arm_and_its_scheduler(name):
    arm = get_arm(name)
    assert arm.name == name == arm.key
    assert type(make(arm)) is SCHEDULER_OF[name]


@pytest.mark.parametrize("name", ["", "Grid", "bohb", None, 3])
def test_unknown_arm_name_lists_the_valid_ones(name):
    with pytest.raises(ValueError, match=r"valid arms: \['adalrs', 'asha', 'grid'"):
        get_arm(name)


def test_unknown_setting_names_the_arm_and_its_settings():
    with pytest.raises(ValueError, match="arm 'grid'.*'num_trials'"):
        get_arm("grid", population=3)


@pytest.mark.parametrize("name", sorted(SCHEDULER_OF))
def test_slots_carry_the_arm_lr_and_budget(name):
    arm = get_arm(name, num_trials=3, lr_min=1e-4, lr_max=1e-2, label=f"my_{name}")
    slots = arm.slots(total_steps=600, report_every=30)
    assert len(slots) == 3
    for slot in slots:
        assert slot["arm"] == f"my_{name}"
        assert 1e-4 <= slot["lr"] <= 1e-2
        assert (slot["total_steps"], slot["report_every"]) == (600, 30)
        assert (slot["adalrs"] is not None) == (name == "adalrs")


def test_grid_lrs_are_log_spaced_over_the_range():
    assert get_arm("grid", lr_min=1e-5, lr_max=1e-1, num_trials=5).starting_lrs(10, 1) == [
        1e-5,
        1e-4,
        1e-3,
        1e-2,
        1e-1,
    ]


@pytest.mark.parametrize("name", ["hyperband", "asha", "pbt", "random"])
def test_random_arms_sample_log_uniformly_and_reproducibly(name):
    a = get_arm(name, num_trials=200, seed=1).starting_lrs(1000, 50)
    assert a == get_arm(name, num_trials=200, seed=1).starting_lrs(1000, 50)
    assert a != get_arm(name, num_trials=200, seed=2).starting_lrs(1000, 50)
    logs = [math.log10(x) for x in a]
    assert min(logs) >= -5 and max(logs) <= -1
    below = sum(x < -3 for x in logs) / len(logs)  # log-uniform: half below the log midpoint
    assert 0.35 < below < 0.65


def test_explicit_lrs_override_the_arm_choice():
    arm = get_arm("pbt", lrs=(1e-3, 2e-3))
    assert arm.num_trials == 2 and arm.starting_lrs(1000, 50) == [1e-3, 2e-3]


def test_arm_budget_overrides_the_comparison():
    slot = get_arm("grid", num_trials=1, total_steps=300, report_every=10).slots(1000, 50)[0]
    assert (slot["total_steps"], slot["report_every"]) == (300, 10)


@pytest.mark.parametrize(
    "max_t, eta", [(1, 3), (2, 2), (4, 2), (5, 3), (10, 3), (20, 3), (27, 3), (81, 3)]
)
def test_bracket_sizes_match_tunes_hyperband(max_t, eta):
    """Add trials to Tune's own HyperBandScheduler and read back how it fills its brackets."""
    sched = HyperBandScheduler(metric="val_loss", mode="min", max_t=max_t, reduction_factor=eta)
    n = band_size(max_t, eta)
    for _ in range(n):
        sched.on_trial_add(None, Trial("__fake", config={}, stub=True))
    assert len(sched._hyperbands) == 1  # exactly one band, filled
    band = [b for b in sched._hyperbands[0] if b is not None]
    assert [(b._n0, b._r0) for b in band] == bracket_sizes(max_t, eta)
    assert all(b.filled() for b in band)


def test_hyperband_defaults_to_one_full_band_in_reports():
    arm = get_arm("hyperband")
    assert len(arm.slots(total_steps=1000, report_every=50)) == band_size(20, 3) == 22
    sched = make(arm)
    assert sched._max_t_attr == 20 and sched._time_attr == "training_iteration"


def test_asha_uses_reports_as_time():
    sched = make(get_arm("asha", grace_period=2, reduction_factor=2))
    assert (sched._max_t, sched._time_attr) == (20, "training_iteration")


def test_pbt_perturbs_the_lr_in_log_space_within_the_range():
    arm = get_arm("pbt", lr_min=1e-4, lr_max=1e-2, perturbation_factor=2.0)
    sched = make(arm)
    assert sched._perturbation_factors == (2.0, 0.5)
    assert set(sched._hyperparam_mutations) == {"lr"}
    assert sched._perturbation_interval == 4  # a fifth of the 20 reports
    assert sched._custom_explore_fn({"lr": 5e-2})["lr"] == 1e-2
    assert clip_lr({"lr": 1e-6}, lr_min=1e-4, lr_max=1e-2)["lr"] == 1e-4


def test_adalrs_settings_reach_the_slots():
    slot = get_arm("adalrs", num_trials=1, adalrs={"window": 20, "alpha": 2.0, "beta": 3.0}).slots(
        1000, 50
    )[0]
    assert slot["adalrs"] == {"window": 20, "alpha": 2.0, "beta": 3.0}


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("grid", {"lr_min": 0.0}, "lr_min is 0.0"),
        ("grid", {"lr_min": math.nan}, "lr_min is nan"),
        ("grid", {"lr_min": 1e-2, "lr_max": 1e-3}, "lr_min < lr_max"),
        ("grid", {"num_trials": 0}, "num_trials is 0"),
        ("grid", {"lrs": []}, "lrs is"),
        ("grid", {"lrs": [1e-3, -1.0]}, "every value of lrs"),
        ("grid", {"lrs": [1e-3], "num_trials": 2}, "num_trials=2 but lrs has 1"),
        ("grid", {"total_steps": 0}, "total_steps is 0"),
        ("grid", {"report_every": True}, "report_every is True"),
        ("grid", {"label": " x"}, "label is ' x'"),
        ("hyperband", {"reduction_factor": 1}, "reduction_factor is 1"),
        ("hyperband", {"max_t": 0}, "max_t is 0"),
        ("hyperband", {"time_attr": ""}, "time_attr is ''"),
        ("asha", {"grace_period": 0}, "grace_period is 0"),
        ("asha", {"grace_period": 5, "max_t": 4}, "grace_period=5 exceeds max_t=4"),
        ("asha", {"brackets": 0}, "brackets is 0"),
        ("pbt", {"num_trials": 1}, "PBT population"),
        ("pbt", {"quantile_fraction": 0.6}, "quantile_fraction is 0.6"),
        ("pbt", {"quantile_fraction": 0.0}, "quantile_fraction is 0.0"),
        ("pbt", {"resample_probability": 1.5}, "resample_probability is 1.5"),
        ("pbt", {"perturbation_factor": 1.0}, "perturbation_factor is 1.0"),
        ("pbt", {"perturbation_interval": 0}, "perturbation_interval is 0"),
        ("adalrs", {"adalrs": {"total_steps": 5}}, "must not set total_steps"),
        ("adalrs", {"adalrs": [1]}, "adalrs is \\[1\\]"),
        ("random", {"num_trials": 0}, "num_trials is 0"),
        ("random", {"seed": -1}, "seed is -1"),
        ("random", {"seed": 1.5}, "seed is 1.5"),
        ("random", {"lr_min": 1e-2, "lr_max": 1e-3}, "lr_min < lr_max"),
        ("random", {"lrs": [1e-3, 0.0]}, "every value of lrs"),
        ("random", {"perturbation_interval": 2}, "arm 'random'.*'num_trials'"),
    ],
)
def test_bad_settings_raise_value_error(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_arm(name, **kwargs)


@pytest.mark.parametrize(
    "arm, match",
    [
        (get_arm("grid", report_every=100), "report_every=100 exceeds total_steps=50"),
        (get_arm("adalrs", adalrs={"window": 400}), "window=400"),
        (get_arm("adalrs", adalrs={"alpha": 4.0, "beta": 2.0}), "gcd"),
    ],
)
def test_settings_that_clash_with_the_budget_raise_at_slot_time(arm, match):
    with pytest.raises(ValueError, match=match):
        arm.slots(total_steps=50 if "report_every=100" in match else 1000, report_every=10)


def test_asha_grace_period_beyond_the_reports_raises():
    with pytest.raises(ValueError, match="grace_period=30 exceeds max_t=20"):
        make(get_arm("asha", grace_period=30))


# ---------------------------------------------------------------------------- the registry
def test_every_arm_but_adalrs_declares_its_size_option():
    assert {arm: o.flag for arm, o in size_options().items()} == {
        "grid": "--grid-points",
        "hyperband": "--hyperband-trials",
        "asha": "--asha-trials",
        "pbt": "--pbt-trials",
        "random": "--random-trials",
    }
    for arm, option in size_options().items():
        assert ARMS[arm].settings_for_preset("any preset")[option.kwarg] >= 1


def test_register_arm_refuses_a_taken_name_or_size_option():
    with pytest.raises(ValueError, match="arm 'grid' is already registered"):

        @register_arm
        class Grid2(Arm):
            name = "grid"

    with pytest.raises(ValueError, match="'pbt_trials' is already the size of arm 'pbt'"):

        @register_arm
        class Other(Arm):
            name = "other"
            size_option = SizeOption("pbt_trials", "clash")

    with pytest.raises(ValueError, match="must be an Arm subclass"):
        register_arm(dict)
    assert "other" not in ARMS


def test_size_option_name_must_be_an_identifier():
    with pytest.raises(ValueError, match="SizeOption name is 'grid-points'"):
        SizeOption("grid-points", "LRs of the grid")


# ---------------------------------------------------------------------------- random search
def test_random_search_is_registered_but_not_a_default_arm():
    assert ARMS["random"] is RandomSearchArm
    assert "random" not in DEFAULT_ARMS


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("n", [1, 3, 10])
def test_random_search_slots_are_seeded_log_uniform_samples(seed, n):
    arm = get_arm("random", lr_min=1e-4, lr_max=1e-2, num_trials=n, seed=seed)
    slots = arm.slots(total_steps=600, report_every=30)
    lrs = [slot["lr"] for slot in slots]
    assert len(slots) == n
    assert lrs == log_uniform(1e-4, 1e-2, n, seed)  # the documented generator
    assert lrs == [s["lr"] for s in get_arm("random", lr_min=1e-4, lr_max=1e-2, num_trials=n,
                                            seed=seed).slots(600, 30)]  # fmt: skip
    assert all(1e-4 <= lr <= 1e-2 for lr in lrs)
    for slot in slots:  # full budget, no AdaLRS
        assert (slot["arm"], slot["total_steps"], slot["report_every"]) == ("random", 600, 30)
        assert slot["adalrs"] is None


def test_random_search_seeds_give_different_samples_and_default_size():
    arm = get_arm("random")
    assert arm.num_trials == RandomSearchArm.default_num_trials
    a = get_arm("random", num_trials=4, seed=0).starting_lrs(1000, 50)
    b = get_arm("random", num_trials=4, seed=1).starting_lrs(1000, 50)
    assert a != b


def test_random_search_runs_every_trial_to_the_end():
    sched = make(get_arm("random", num_trials=3))
    assert type(sched) is FIFOScheduler
