"""The Tune trainable that launches a Ray Train V2 TorchTrainer per trial
(train_loops/trainables/lm_torchtrainer.py): comparison arms (PBT with a real exploit, AdaLRS) on
two Train workers per trial, its config checks and its placement-group reaper."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
from ray import tune

from adalrs_ray.comparison import AdaLRSComparison
from search_algos import get_arm
from train_loops.trainables import TRAINABLES, get_trainable
from train_loops.trainables import lm_torchtrainer as ttt

pytestmark = pytest.mark.ray

# 2 CPUs: four trials at once, each 0.1 CPU (the Tune function) + 2 workers x 0.2 CPU
SHARED = {
    "preset": "tiny",
    "seq_len": 32,
    "batch_size": 4,
    "eval_batches": 2,
    "num_threads": 1,
    "device": "cpu",
    "schedule": "constant",
    "workers": 2,
    "cpus_per_worker": 0.2,
    "health_check_interval_s": 0.1,
}
STEPS, EVERY = 24, 8  # 3 reports per trial


def _live_placement_groups():
    from ray.util.placement_group import placement_group_table

    return {k for k, v in placement_group_table().items() if v["state"] != "REMOVED"}


@pytest.fixture(scope="module")
def comparison(ray_cluster, tmp_path_factory):
    """One Tuner, two arms, three trials of two Train workers each: synchronous PBT (2 trials, one
    sync point after report 2 of 3: the worse trial exploits the better) and AdaLRS (1 trial, a
    FIFO arm like the grid; a grid trial here cost a minute of the suite and tested nothing
    more)."""
    before = _live_placement_groups()
    arms = [
        get_arm("pbt", num_trials=2, perturbation_interval=2, synch=True, lrs=(1e-4, 3e-3)),
        get_arm(
            "adalrs",
            lrs=(1e-3,),
            # continue mode: no opening, so every trial reports exactly STEPS steps (the
            # default's rewinds on two workers: test_ray_train.py, test_cli_compare.py)
            adalrs={
                "window": 4,
                "start_ratio": 0.1,
                "end_ratio": 0.9,
                "ramp_steps": 2,
                "backtrack_mode": "continue",
            },
        ),
    ]
    sched = AdaLRSComparison(arms, total_steps=STEPS, report_every=EVERY)
    tmp = tmp_path_factory.mktemp("ttt")
    tuner = tune.Tuner(
        get_trainable(ttt.NAME, cpu=0.1),
        param_space=sched.param_space(SHARED),
        tune_config=tune.TuneConfig(scheduler=sched, reuse_actors=True),
        run_config=tune.RunConfig(
            storage_path=str(tmp),
            name="cmp",
            verbose=0,
            callbacks=[ttt.TrainPlacementGroupReaper()],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        ),
    )
    results = tuner.fit()
    return sched, results, tmp / "cmp", before


@pytest.mark.slow
def test_every_trial_reports_the_compute_of_two_workers(comparison):
    sched, results, _, _ = comparison
    assert not results.errors
    rows = sched.results_table()
    assert len(rows) == 3 * STEPS // EVERY
    assert (rows["tokens_done"] == EVERY * 4 * 32 * 2).all()  # global batch of 2 workers
    assert (rows["steps_done"] == EVERY).all() and (rows["worker_s_done"] > 0).all()
    assert rows["val_loss"].notna().all()


@pytest.mark.slow
def test_pbt_exploit_restarts_from_the_donors_checkpoint_with_the_explored_lr(comparison):
    sched = comparison[0]
    rows = sched.results_table()
    (event,) = sched.exploit_log()
    mine = rows[rows["trial_id"] == event["trial_id"]]
    after = mine[mine["restart_kind"] == "exploit"].iloc[0]
    # the donor's checkpoint of step 15, then one more window, with the explored LR as base LR
    assert after["step"] == STEPS - 1 and after["steps_done"] == EVERY
    assert after["lr"] == pytest.approx(event["lr_after"]) != event["lr_before"]


@pytest.mark.slow
def test_compute_is_summed_per_arm_across_the_exploit(comparison):
    table = comparison[0].compute_table().set_index("arm")
    assert table.loc["adalrs", "steps"] == STEPS
    assert table.loc["pbt", "steps"] == 2 * STEPS and table.loc["pbt", "exploits"] == 1


@pytest.mark.slow
def test_adalrs_events_flow_from_the_workers_to_the_comparison(comparison):
    rows = comparison[0].results_table()
    mine = rows[rows["arm"] == "adalrs"]
    kinds = {e["kind"] for cell in mine["adalrs_events"] for e in json.loads(cell)}
    assert {"search_start", "trial_start"} <= kinds
    others = rows[rows["arm"] != "adalrs"]
    assert all(json.loads(cell) == [] for cell in others["adalrs_events"])


@pytest.mark.slow
def test_no_placement_group_or_train_checkpoint_is_left_behind(comparison):
    _, _, exp_dir, before = comparison
    assert _live_placement_groups() <= before
    assert list(exp_dir.glob("*/train_runs")) and not list(exp_dir.glob("*/train_runs/*"))


def test_registered_without_importing_ray_train():
    # get_trainable("lm_torchtrainer") works from a plain import of the registry, which stays
    # light: ray.train is imported only when a trial runs
    code = (
        "import sys; from train_loops.trainables import TRAINABLES; "
        f"assert {ttt.NAME!r} in TRAINABLES; assert 'ray.train' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert TRAINABLES[ttt.NAME] is ttt.lm_torchtrainer_trainable  # registered on import too


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("workers", 0, "workers is 0"),
        ("cpus_per_worker", -1, "cpus_per_worker is -1"),
        ("use_gpu", "yes", "use_gpu is 'yes'"),
        ("resources_per_worker", {"CPU": 1}, "resources_per_worker"),
        ("snapshot_store", "disk", "snapshot_store is 'disk'"),
        ("max_failures", -1, "max_failures is -1"),
        ("health_check_interval_s", float("nan"), "health_check_interval_s is nan"),
        ("on_lost_snapshot", "ignore", "policy"),
        ("presett", "tiny", "presett"),
    ],
)
def test_check_train_config_rejects_bad_values(key, value, match):
    config = {"lr": 1e-3, "total_steps": 8, "report_every": 4, "adalrs": None, **SHARED}
    config[key] = value
    with pytest.raises(ValueError, match=match):
        ttt.check_train_config(config)


def test_check_train_config_splits_train_settings_from_the_lm_config():
    config = {"lr": 2e-3, "total_steps": 8, "report_every": 4, "adalrs": None, **SHARED}
    settings, lm = ttt.check_train_config(config)
    assert settings["workers"] == 2 and settings["cpus_per_worker"] == 0.2
    assert lm.lr == 2e-3 and lm.steps == 8 and lm.report_every == 4 and not lm.adalrs


def _trial(trial_id, status="RUNNING"):
    return types.SimpleNamespace(trial_id=trial_id, status=status)


def test_reaper_removes_the_group_of_a_trial_that_stopped_and_keeps_a_running_ones(ray_cluster):
    from ray.util.placement_group import placement_group

    kept, leaked = placement_group([{"CPU": 0.01}]), placement_group([{"CPU": 0.01}])
    try:
        reaper = ttt.TrainPlacementGroupReaper(grace_s=0)
        a, b = _trial("a"), _trial("b")
        reaper.on_trial_result(0, [a, b], a, {ttt.PLACEMENT_GROUP_METRIC: kept.id.hex()})
        reaper.on_trial_result(0, [a, b], b, {ttt.PLACEMENT_GROUP_METRIC: leaked.id.hex()})
        b.status = "PAUSED"
        reaper.on_step_end(1, [a, b])
        assert reaper.removed == [leaked.id.hex()]
        assert _live_placement_groups() >= {kept.id.hex()}
        assert leaked.id.hex() not in _live_placement_groups()
    finally:
        import ray

        for pg in (kept, leaked):
            if pg.id.hex() in _live_placement_groups():
                ray.util.remove_placement_group(pg)


def test_reaper_retires_a_trials_group_when_the_trial_restarts(ray_cluster):
    from ray.util.placement_group import placement_group

    old = placement_group([{"CPU": 0.01}])
    reaper = ttt.TrainPlacementGroupReaper(grace_s=0)
    a = _trial("a")
    reaper.on_trial_result(0, [a], a, {ttt.PLACEMENT_GROUP_METRIC: old.id.hex()})
    reaper.on_trial_start(1, [a], a)  # restarted while still RUNNING: a new Train run
    reaper.on_step_end(1, [a])
    assert reaper.removed == [old.id.hex()]


def test_reaper_rejects_a_negative_grace():
    with pytest.raises(ValueError, match="grace_s is -1"):
        ttt.TrainPlacementGroupReaper(grace_s=-1)


@pytest.mark.parametrize(
    ("progress", "finished"),
    [
        ({"next_step": 24, "steps": 24}, True),
        ({"next_step": 16, "steps": 24}, False),
        (None, False),
    ],
)
def test_a_checkpoint_at_the_end_of_the_run_starts_no_train_run(tmp_path, progress, finished):
    # synchronous PBT pauses or exploits at the last report too: restarting then must not cost
    # a Train start (tens of seconds) for zero steps
    if progress is not None:
        (tmp_path / ttt.PROGRESS_FILE).write_text(json.dumps(progress))
    assert ttt._finished(tune.Checkpoint.from_directory(str(tmp_path))) is finished
