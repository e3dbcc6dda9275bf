"""A comparison continues after its driver died: ``AdaLRSComparison.state_dict`` /
``load_state_dict`` round trips driven with stub trials, and ``adalrs-ray compare --resume``
after a SIGKILL of the driver's process group."""

from __future__ import annotations

import json
import math
import random

import pytest
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from adalrs_ray.comparison import AdaLRSComparison
from adalrs_ray.comparison.scheduler import STATE_VERSION
from adalrs_ray.report.contract import COMPUTE_LOG_FILE
from search_algos import get_arm

REPORTS = 4  # total_steps 40, report_every 10


class CkptTrial(Trial):
    """A stub trial with a persisted checkpoint, as Tune restores it with a trial."""

    @property
    def checkpoint(self):
        return tune.Checkpoint("/nonexistent/fake-checkpoint")


class Ctl:
    """The parts of Tune's controller the schedulers use, over stub trials."""

    search_alg = None

    def __init__(self, sched: AdaLRSComparison) -> None:
        self.sched = sched
        self.trials: list[Trial] = []

    def get_trials(self):
        return list(self.trials)

    def get_live_trials(self):
        return {t for t in self.trials if not t.is_finished()}

    def add(self, trial: Trial) -> Trial:
        self.trials.append(trial)
        self.sched.on_trial_add(self, trial)
        return trial

    def pause_trial(self, trial, should_checkpoint=True):
        trial.set_status(Trial.PAUSED)

    def stop_trial(self, trial):
        if trial.status in (Trial.PENDING, Trial.PAUSED):
            self.sched.on_trial_remove(self, trial)
        elif trial.status == Trial.RUNNING:
            self.sched.on_trial_complete(self, trial, {})
        trial.set_status(Trial.TERMINATED)

    def _schedule_trial_save(self, trial, result=None):
        return tune.Checkpoint("/nonexistent/fake-checkpoint")


def make(log_dir=None) -> AdaLRSComparison:
    arms = [
        get_arm("grid", num_trials=2),
        get_arm("hyperband", num_trials=4, reduction_factor=2),
        get_arm("pbt", num_trials=3, perturbation_interval=1, quantile_fraction=0.34),
    ]
    return AdaLRSComparison(arms, total_steps=40, report_every=10, log_dir=log_dir)


def configs(sched: AdaLRSComparison) -> list[dict]:
    from ray.tune.search.variant_generator import generate_variants

    return [cfg for _, cfg in generate_variants(sched.param_space({}))]


def loss(trial: Trial, it: int) -> float:
    return (math.log10(trial.config["lr"]) + 2.5) ** 2 + 1.0 / it + 0.01 * trial.config["slot"]


def tick(ctl: Ctl, its: dict[str, int], log: list) -> None:
    """Start every trial the scheduler chooses, then one result of each running trial."""
    while (t := ctl.sched.choose_trial_to_run(ctl)) is not None:
        t.set_status(Trial.RUNNING)
    for t in sorted(ctl.trials, key=lambda t: t.config["slot"]):
        if t.status != Trial.RUNNING:
            continue
        its[t.trial_id] += 1
        it = its[t.trial_id]
        random.seed(1000 * it + t.config["slot"])  # PBT's donor and explore draws
        result = {
            "training_iteration": it,
            "step": 10 * it - 1,
            "val_loss": loss(t, it),
            "lr": t.config["lr"],
            "steps_done": 10.0,
            "tokens_done": 100.0,
            "worker_s_done": 0.1,
            "adalrs_events": "[]",
        }
        decision = ctl.sched.on_trial_result(ctl, t, result)
        log.append((t.trial_id, it, decision, round(t.config["lr"], 12)))
        if decision == TrialScheduler.PAUSE:
            t.set_status(Trial.PAUSED)
        elif decision == TrialScheduler.STOP or it >= REPORTS:
            ctl.sched.on_trial_complete(ctl, t, result)
            t.set_status(Trial.TERMINATED)


def start(log_dir=None):
    sched = make(log_dir)
    ctl = Ctl(sched)
    for i, cfg in enumerate(configs(sched)):
        ctl.add(CkptTrial("__fake", config=cfg, stub=True, trial_id=f"t{i:02d}"))
    return sched, ctl, {t.trial_id: 0 for t in ctl.trials}


def resumed(state: dict, ctl: Ctl, its: dict[str, int], log_dir=None):
    """A fresh comparison loaded from ``state``, with the trials re-created as Tune's restore
    does: same ids and configs, unfinished ones PENDING, in a new controller."""
    sched = make(log_dir)
    sched.load_state_dict(json.loads(json.dumps(state)))  # plain data
    new = Ctl(sched)
    for t in ctl.trials:
        trial = CkptTrial("__fake", config=dict(t.config), stub=True, trial_id=t.trial_id)
        trial.set_status(Trial.TERMINATED if t.status == Trial.TERMINATED else Trial.PENDING)
        new.add(trial)
    return sched, new, dict(its)


def run_to_end(ctl: Ctl, its: dict[str, int], log: list) -> None:
    for _ in range(40):
        if all(t.status == Trial.TERMINATED for t in ctl.trials):
            return
        tick(ctl, its, log)
    raise AssertionError("the comparison did not finish")


@pytest.mark.parametrize("ticks", [1, 2, 3])
def test_a_resumed_comparison_decides_as_the_uninterrupted_one(ticks, tmp_path):
    ref, ref_ctl, ref_its = start(tmp_path / "ref")
    ref_log: list = []
    run_to_end(ref_ctl, ref_its, ref_log)

    sched, ctl, its = start(tmp_path / "run")
    log: list = []
    for _ in range(ticks):
        tick(ctl, its, log)
    state = sched.state_dict()
    sched2, ctl2, its2 = resumed(state, ctl, its, tmp_path / "run")
    paused = {t.trial_id for t in ctl.trials if t.status == Trial.PAUSED}
    assert {t.trial_id for t in ctl2.trials if t.status == Trial.PAUSED} == paused
    run_to_end(ctl2, its2, log)

    assert log == ref_log  # every HyperBand and PBT decision and explored LR alike
    decisions = {d for _, _, d, _ in ref_log}
    assert {"STOP", "PAUSE"} <= decisions  # HyperBand halved and waited
    assert ref.exploit_log() and len(sched2.exploit_log()) == len(ref.exploit_log())
    a = ref.compute_table("trial").set_index("trial_id")
    b = sched2.compute_table("trial").set_index("trial_id")
    for col in ("arm", "status", "steps", "reports", "exploits"):
        assert a[col].to_dict() == b[col].to_dict(), col
    for arm in ref.arms:
        assert sched2._account.arm_totals(arm) == ref._account.arm_totals(arm)


def test_the_state_holds_each_sub_scheduler_by_kind_with_trial_ids():
    sched, ctl, its = start()
    tick(ctl, its, [])
    state = sched.state_dict()
    hb = state["subs"]["hyperband"]
    assert hb["kind"] == "hyperband" and hb["bands"][0]
    assert state["subs"]["pbt"]["kind"] == "pbt"
    assert state["subs"]["grid"]["kind"] == "fifo"
    ids = {tid for b in hb["bands"][0] if b for tid in b["all_trials"]}
    assert ids == set(sched._account.trial_ids("hyperband"))


def test_results_logged_after_the_state_are_counted_once_and_rerun_as_a_resume(tmp_path):
    sched, ctl, its = start(log_dir=tmp_path)
    tick(ctl, its, [])
    state = sched.state_dict()
    saved_its = dict(its)
    tick(ctl, its, [])  # these results are in the log but not in the state: the driver dies
    lines = (tmp_path / COMPUTE_LOG_FILE).read_text().splitlines()
    lost = [json.loads(x) for x in lines[state["rows"] :]]
    assert lost
    sched2, ctl2, its2 = resumed(state, ctl, saved_its, log_dir=tmp_path)
    tick(ctl2, its2, [])  # the lost steps run again
    rows = sched2.report_log()
    assert len(rows) > len(lines)
    for arm in sched2.arms:
        logged = sum(r["steps_done"] for r in rows if r["arm"] == arm)
        assert sched2._account.arm_totals(arm)[0] == logged  # every result counted once
    first_after = {}
    for r in rows[len(lines) :]:
        first_after.setdefault(r["trial_id"], r)
    for r in lost:
        again = first_after.get(r["trial_id"])
        if again is not None:
            assert again["restart_kind"] == "resume"
            assert again["rewound_steps"] == r["step"] - (again["step"] - 10)


def test_save_and_restore_write_the_same_state(tmp_path):
    sched, ctl, its = start()
    tick(ctl, its, [])
    sched.save(str(tmp_path / "state.json"))
    other = make()
    other.restore(str(tmp_path / "state.json"))
    assert other.state_dict() == json.loads(json.dumps(sched.state_dict()))


@pytest.mark.parametrize("key", ["version", "settings", "account", "subs", "rows"])
def test_a_state_without_a_key_is_refused(key):
    sched, ctl, its = start()
    state = sched.state_dict()
    del state[key]
    with pytest.raises(ValueError, match=key):
        make().load_state_dict(state)


def test_a_state_of_other_settings_or_version_is_refused():
    sched, _, _ = start()
    state = sched.state_dict()
    with pytest.raises(ValueError, match="version"):
        make().load_state_dict({**state, "version": STATE_VERSION + 1})
    with pytest.raises(ValueError, match="same arms and settings"):
        AdaLRSComparison(["grid"], total_steps=40, report_every=10).load_state_dict(state)
    broken = json.loads(json.dumps(state))
    del broken["account"]["trials"][0]["steps"]
    with pytest.raises(ValueError, match="steps"):
        make().load_state_dict(broken)


def test_a_sub_state_naming_an_unknown_trial_fails_loudly():
    sched, ctl, its = start()
    tick(ctl, its, [])
    state = sched.state_dict()
    sched2 = make()
    sched2.load_state_dict(state)
    ctl2 = Ctl(sched2)  # Tune re-added no trial
    with pytest.raises(ValueError, match="does not have"):
        sched2.choose_trial_to_run(ctl2)


# ---------------------------------------------------------------------- end to end
# The first run: 1 grid + 1 AdaLRS + 6 HyperBand + 2 PBT trials of 10 reports (200 steps at
# 0.05 s), all at once. HyperBand (max_t 10, eta 3) puts trials 4-6 into its second bracket,
# halved at report 3 (one stopped) and 9 (one more); PBT perturbs every 2 reports, so it
# exploits at reports 4-10. The driver is killed once the comparison's state was saved and three
# results came, well before any HyperBand trial reaches report 9 or a PBT trial report 5.
DRIVER = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from adalrs_ray.experiments.compare import resolve_preset, run_compare
preset = resolve_preset(
    "sim", total_steps=200, report_every=20, adalrs_starts=(0.1,), max_concurrent=10,
    grid_points=1, hyperband_trials=6, pbt_trials=2, adalrs={"window": 10},
    trial_config={"lr_opt": 1e-3, "sim": {"noise": 0.02}, "seconds_per_step": 0.05},
)
run_compare(preset, sys.argv[1], cpus=2, progress=False)
"""


def _env() -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["TUNE_GLOBAL_CHECKPOINT_S"] = "2"  # an experiment checkpoint every 2 s
    env["RAY_AIR_NEW_OUTPUT"] = "0"
    return env


def _session_pids(sid: int) -> list[int]:
    import subprocess

    out = subprocess.run(["ps", "-e", "-o", "pid=,sid="], capture_output=True, text=True)
    pids = []
    for line in out.stdout.splitlines():
        pid, s = line.split()
        if int(s) == sid:
            pids.append(int(pid))
    return pids


def _kill_session(sid: int, timeout: float = 60.0) -> list[int]:
    """SIGKILL every process of session ``sid`` (the driver and the Ray it started), again
    until none is left (a dying raylet may still start a worker); returns what is left."""
    import os
    import signal
    import time

    deadline = time.monotonic() + timeout
    while (pids := _session_pids(sid)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    return _session_pids(sid)


def _rows(log) -> list[dict]:
    if not log.is_file():
        return []
    out = []
    for line in log.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line being written
            pass
    return out


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_compare_resume_after_the_driver_was_killed(tmp_path):
    import os
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    tune_dir = out / "tune"
    log = tune_dir / COMPUTE_LOG_FILE
    env = _env()
    first = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(out)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "first.log", "w"),
    )
    sid = first.pid
    try:
        deadline = time.monotonic() + 600
        while True:
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no results within 600 s"
            rows = _rows(log)
            hb = [r["iteration"] for r in rows if r["arm"] == "hyperband"]
            saved = [f.stat() for f in tune_dir.glob("callback-states-*.pkl")]
            pbt = [r["iteration"] for r in rows if r["arm"] == "pbt"]
            # between two uploads of the experiment checkpoint (every 2 s): a kill during
            # Tune's upload can leave a cut file in the storage copy
            quiet = saved and saved[0].st_size and 0.3 < time.time() - saved[0].st_mtime < 1.2
            if quiet and len(rows) >= 3:
                # HyperBand's second halving (report 9) and PBT's later perturbations are
                # still to come
                assert max(hb, default=0) < 9 and max(pbt, default=0) <= 4, rows
                break
            time.sleep(0.1)
        os.killpg(sid, 9)  # the driver's process group: the driver and the Ray it started
        first.wait(timeout=60)
        killed_at = time.time()
    finally:
        left = _kill_session(sid)
    assert left == []  # nothing of the killed run left
    before = _rows(log)

    second = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "adalrs-ray"), "compare", "--resume"]
        + [str(out), "--cpus", "2"],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        text, _ = second.communicate(timeout=800)
    finally:
        _kill_session(second.pid)
    assert second.returncode == 0, text[-3000:]
    assert "has no saved state" not in text  # no arm started its scheduler over
    assert (out / "report.md").is_file()

    from adalrs_ray.comparison import load_comparison

    saved = load_comparison(tune_dir)
    statuses = saved.trials.set_index("trial_id")["status"].to_dict()
    assert len(statuses) == 10 and set(statuses.values()) <= {"completed", "stopped"}, statuses
    rows = saved.results
    after = rows[rows["time"] > killed_at]
    assert len(after) and len(rows) >= len(before)
    # the account: every result counted once, before and after the resume
    for arm, g in rows.groupby("arm"):
        assert g["arm_cum_steps"].iloc[-1] == pytest.approx(g["steps_done"].sum()), arm
    for tid, g in rows.groupby("trial_id"):
        assert g["cum_steps"].iloc[-1] == pytest.approx(g["steps_done"].sum()), tid
    # no loss: a trial without pauses or exploits did its 200 steps, plus what it ran again
    for arm in ("grid", "adalrs_x0.1"):
        g = rows[rows["arm"] == arm]
        assert g["steps_done"].sum() - g["rewound_steps"].sum() == 200, arm
        assert g["step"].iloc[-1] == 199
    resumed = after[after["restart_kind"] == "resume"]
    assert set(resumed["trial_id"]) >= set(rows[rows["arm"] == "grid"]["trial_id"])
    # HyperBand and PBT decided on after the resume
    hb = after[after["arm"] == "hyperband"]
    assert ((hb["decision"] == "STOP") & (hb["iteration"] < 10)).any()
    exploits = [e for e in saved.meta["exploits"] if e["time"] > killed_at]
    assert exploits and (after[after["arm"] == "pbt"]["decision"] == "EXPLOIT").any()


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--steps", "100"], "--steps"),
        (["--no-loggers"], "--no-loggers"),
        (["--hyperband-trials", "3", "--task", "sim"], "--hyperband-trials, --task"),
        (["--out", "elsewhere"], "--out"),
    ],
)
def test_resume_refuses_flags_that_change_the_run(flags, named, tmp_path, capsys):
    from adalrs_ray import cli

    assert cli.main(["compare", "--resume", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert f"but {named} would change them" in err


def test_resume_of_a_directory_without_a_run_is_refused(tmp_path, capsys):
    from adalrs_ray import cli

    assert cli.main(["compare", "--resume", str(tmp_path), "--quiet", "--cpus", "1"]) == 2
    assert "not the --out directory of a compare run" in capsys.readouterr().err
