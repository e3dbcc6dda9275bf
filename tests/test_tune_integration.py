"""The comparison on the real local Ray cluster: all arms in one Tuner, with the synthetic trainable
(milliseconds per report) and, marked slow, the LM trainable."""

from __future__ import annotations

import json

import pytest
from ray import tune

from adalrs_ray.comparison import AdaLRSComparison, load_comparison
from search_algos import get_arm
from train_loops.trainables import get_trainable, lm_config_from_trial

pytestmark = pytest.mark.ray

TOTAL, EVERY = 200, 20  # 10 reports per full-budget trial


def fit(sched, trainable, tmp_path, name, config=None):
    tuner = tune.Tuner(
        trainable,
        param_space=sched.param_space(config),
        tune_config=tune.TuneConfig(scheduler=sched, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name=name, verbose=0),
    )
    return tuner.fit()


@pytest.fixture(scope="module")
def comparison(ray_cluster, tmp_path_factory):
    """One Tuner running all five arms (15 trials, 0.125 CPU each)."""
    arms = [
        get_arm("adalrs", lrs=(1e-4,), adalrs={"window": 10}),
        get_arm("grid", num_trials=2),
        # brackets (n0, r0) = (3, 10), (5, 3): three trials run the full budget, three are
        # halved after 3 reports (one stopped, the others paused until the last arrives)
        get_arm("hyperband", num_trials=6, reduction_factor=3),
        get_arm("asha", num_trials=3, grace_period=1, reduction_factor=3),
        # synchronous PBT: at each sync point (reports 4 and 8) the bottom trial exploits the top
        get_arm("pbt", num_trials=3, perturbation_interval=4, synch=True),
    ]
    sched = AdaLRSComparison(arms, total_steps=TOTAL, report_every=EVERY)
    tmp = tmp_path_factory.mktemp("cmp")
    shared = {"lr_opt": 1e-3, "seed": 0, "sim": {"noise": 0.005}}  # AdaLRS upscales seed 0
    results = fit(sched, get_trainable("synthetic", cpu=0.125), tmp, "all_arms", shared)
    return sched, results, tmp / "all_arms"


def test_all_arms_finish_in_one_tuner(comparison):
    sched, results, _ = comparison
    assert not results.errors
    table = sched.compute_table()
    assert table["arm"].tolist() == ["adalrs", "grid", "hyperband", "asha", "pbt"]
    assert table["trials"].tolist() == [1, 2, 6, 3, 3]
    assert (table["errors"] == 0).all()
    trials = sched.compute_table("trial")
    # Tune's HyperBand can leave a trial PAUSED at the end: one still saving when its bracket
    # finished is skipped by its cleanup (Tune's own race, kept visible as "paused")
    hb = trials["arm"] == "hyperband"
    assert set(trials.loc[~hb, "status"]) <= {"completed", "stopped"}
    assert set(trials.loc[hb, "status"]) <= {"completed", "stopped", "paused"}
    assert (trials["reports"] > 0).all()


def test_pbt_exploits_happen_inside_the_comparison(comparison):
    sched, _, _ = comparison
    pbt = sched.compute_table().set_index("arm").loc["pbt"]
    assert pbt["exploits"] == 2  # one per sync point
    log = sched.exploit_log()
    assert len(log) == 2 and {e["arm"] for e in log} == {"pbt"}
    # an exploited trial comes back from the donor's checkpoint with the explored LR
    rows = sched.results_table()
    for event in log:
        mine = rows[rows["trial_id"] == event["trial_id"]]
        after = mine[(mine["restart_kind"] == "exploit") & (mine["step"] > event["step"])]
        assert len(after) >= 1
        assert after["lr"].iloc[0] == pytest.approx(event["lr_after"])


def test_hyperband_pauses_and_stops_its_trials(comparison):
    sched, _, _ = comparison
    rows = sched.results_table()
    hb = rows[rows["arm"] == "hyperband"]
    assert (hb["decision"] == "PAUSE").sum() >= 2
    trials = sched.compute_table("trial")
    hb_trials = trials[trials["arm"] == "hyperband"]
    early = hb_trials[hb_trials["status"] == "stopped"]
    assert len(early) >= 1 and (early["steps"] < TOTAL).all()
    assert (hb_trials["steps"] == TOTAL).sum() == 3  # bracket s=0 runs the full budget


def test_compute_matches_positions_where_no_exploit_jumps(comparison):
    """Outside PBT a trial restarts from its own checkpoints, so the steps it reported sum to its
    position (final 0-based step + 1) plus any steps it redid after a rewind."""
    sched, _, _ = comparison
    trials = sched.compute_table("trial")
    own = trials[trials["arm"] != "pbt"]
    assert (own["steps"] == own["final_step"] + 1 + own["rewound_steps"]).all()
    assert (own.loc[own["arm"].isin(["adalrs", "grid"]), "steps"] == TOTAL).all()


def test_adalrs_changes_the_lr_inside_its_trial(comparison):
    sched, _, _ = comparison
    rows = sched.results_table()
    ada = rows[rows["arm"] == "adalrs"]
    assert ada["scale"].iloc[-1] > 1.0  # started 10x below the optimum: upscaled
    kinds = {e["kind"] for s in ada["adalrs_events"] for e in json.loads(s)}
    assert "keep" in kinds


def test_saved_directory_rebuilds_the_tables(comparison):
    sched, _, folder = comparison
    saved = load_comparison(folder)
    assert saved.compute_table().equals(sched.compute_table())
    assert len(saved.results) == len(sched.results_table())


def test_a_failing_trial_is_recorded_as_failed(ray_cluster, tmp_path):
    from train_loops.trainables import synthetic_trainable

    def flaky(config):  # the trial of slot 1 dies after its first report
        if config["slot"] == 1:
            config = dict(config, total_steps=config["report_every"])
            synthetic_trainable(config)
            raise RuntimeError("injected failure")
        synthetic_trainable(config)

    sched = AdaLRSComparison([get_arm("grid", num_trials=2)], total_steps=40, report_every=20)
    results = fit(sched, tune.with_resources(flaky, {"cpu": 0.5}), tmp_path, "flaky")
    assert len(results.errors) == 1
    trials = sched.compute_table("trial").set_index("slot")
    assert trials.loc[0, "status"] == "completed"
    assert trials.loc[1, "status"] == "error"
    assert trials.loc[1, "steps"] == 20  # its one report still counts
    assert sched.compute_table()["errors"].tolist() == [1]
    assert load_comparison(tmp_path / "flaky").trials.set_index("slot").loc[1, "status"] == "error"


# ---------------------------------------------------------------------- LM trainable
LM_SHARED = {
    "preset": "tiny",
    "seq_len": 32,
    "batch_size": 4,
    "eval_batches": 2,
    "num_threads": 1,
    "device": "cpu",
    "schedule": "constant",
}


@pytest.mark.slow
def test_lm_trials_restore_and_exploit_through_tune(ray_cluster, tmp_path):
    # one sync point, after report 2 of 3: the worse trial exploits the better one
    pbt = get_arm(
        "pbt", num_trials=2, perturbation_interval=2, synch=True, lr_min=1e-4, lr_max=3e-2
    )
    sched = AdaLRSComparison([pbt], total_steps=30, report_every=10)
    results = fit(sched, get_trainable("lm", cpu=0.5), tmp_path, "lm", LM_SHARED)
    assert not results.errors
    rows = sched.results_table()
    assert {"val_loss", "tokens_done"} <= set(rows.columns)
    assert (rows["tokens_done"] == 10 * 4 * 32).all()
    (event,) = sched.exploit_log()
    # the exploited trial restarted from the donor's checkpoint with the explored LR
    mine = rows[rows["trial_id"] == event["trial_id"]]
    after = mine[mine["restart_kind"] == "exploit"].iloc[0]
    assert after["lr"] == pytest.approx(event["lr_after"]) != event["lr_before"]
    assert after["step"] == 29 and after["steps_done"] == 10  # donor's step 19, then 10 more


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"presett": "tiny"}, "presett"),
        ({"out_dir": "/tmp/x"}, "out_dir"),
        ({"steps": 5}, "steps"),
        ({"adalrs": 3}, "adalrs is 3"),
    ],
)
def test_lm_config_from_trial_rejects_bad_keys(bad, match):
    config = {"lr": 1e-3, "total_steps": 20, "report_every": 10, "adalrs": None, **bad}
    with pytest.raises(ValueError, match=match):
        lm_config_from_trial(config, out_dir="/tmp/unused")


def test_lm_config_from_trial_maps_the_comparison_keys():
    config = {"slot": 3, "arm": "adalrs", "lr": 2e-3, "total_steps": 200, "report_every": 20}
    cfg = lm_config_from_trial(
        {**config, "adalrs": {"window": 10, "lam": 0.95}, **LM_SHARED}, out_dir="/tmp/o"
    )
    assert (cfg.lr, cfg.steps, cfg.report_every, cfg.adalrs, cfg.window) == (
        2e-3,
        200,
        20,
        True,
        10,
    )
    assert cfg.adalrs_options == {"lam": 0.95} and cfg.out_dir == "/tmp/o"


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"lr_optt": 1e-3}, "unknown config keys \\['lr_optt'\\]"),
        ({"lr": 0.0}, "lr is 0.0"),
        ({"report_every": 30}, "report_every=30 exceeds total_steps=20"),
        ({"schedule": "wsd"}, "schedule is 'wsd'"),
        ({"adalrs": {"window": 2}}, "AdaLRS needs at least 8"),
        ({"checkpoint_every": -1}, "checkpoint_every is -1"),
    ],
)
def test_synthetic_trainable_rejects_bad_config(bad, match):
    from train_loops.trainables import synthetic_trainable

    config = {"lr": 1e-3, "total_steps": 20, "report_every": 10, "adalrs": None, **bad}
    with pytest.raises(ValueError, match=match):
        synthetic_trainable(config)
