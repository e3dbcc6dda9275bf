"""AdaLRSComparison driven hook by hook with stub trials and a fake tune controller (no cluster)."""

from __future__ import annotations

import json
import math
import types
from dataclasses import dataclass
from typing import ClassVar

import pytest
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search.variant_generator import generate_variants

from adalrs_ray.comparison import AdaLRSComparison, load_comparison
from adalrs_ray.comparison import scheduler as tune_scheduler
from search_algos import get_arm
from search_algos.grid import GridArm


class FakeController:
    """The parts of Tune's controller the schedulers use, over a plain list of stub trials."""

    search_alg = None

    def __init__(self, scheduler: TrialScheduler) -> None:
        self.scheduler = scheduler
        self.trials: list[Trial] = []

    def get_trials(self):
        return list(self.trials)

    def get_live_trials(self):
        return {t for t in self.trials if not t.is_finished()}

    def add(self, config: dict) -> Trial:
        trial = Trial("__fake", config=dict(config), stub=True)
        self.trials.append(trial)
        self.scheduler.on_trial_add(self, trial)
        return trial

    def add_slots(self) -> list[Trial]:
        return [self.add(c) for c in resolved_configs(self.scheduler)]

    def result(self, trial: Trial, **metrics) -> str:
        trial.set_status(Trial.RUNNING)
        decision = self.scheduler.on_trial_result(self, trial, metrics)
        if decision == TrialScheduler.PAUSE:
            trial.set_status(Trial.PAUSED)
        elif decision == TrialScheduler.STOP:
            self.scheduler.on_trial_complete(self, trial, metrics)
            trial.set_status(Trial.TERMINATED)
        return decision

    # called by the sub-schedulers
    def pause_trial(self, trial, should_checkpoint=True):
        trial.set_status(Trial.PAUSED)

    def stop_trial(self, trial):
        if trial.status in (Trial.PENDING, Trial.PAUSED):
            self.scheduler.on_trial_remove(self, trial)
        elif trial.status == Trial.RUNNING:
            self.scheduler.on_trial_complete(self, trial, {})
        trial.set_status(Trial.TERMINATED)

    def _set_trial_status(self, trial, status):
        trial.set_status(status)

    def _schedule_trial_save(self, trial, result=None):
        return tune.Checkpoint("/nonexistent/fake-checkpoint")


def resolved_configs(sched: AdaLRSComparison, config: dict | None = None) -> list[dict]:
    """The trial configs Tune's variant generator makes from ``sched.param_space()``."""
    return [cfg for _, cfg in generate_variants(sched.param_space(config))]


def report(step: int, val_loss: float, iteration: int, steps: float = 10, **extra) -> dict:
    out = {
        "training_iteration": iteration,
        "step": step,
        "loss": val_loss,
        "val_loss": val_loss,
        "lr": 1e-3,
        "scale": 1.0,
        "steps_done": steps,
        "tokens_done": steps * 100,
        "worker_s_done": steps * 0.01,
        "adalrs_events": "[]",
    }
    out.update(extra)
    return out


class SpyScheduler(FIFOScheduler):
    """FIFO that records which trials the controller showed it in each hook."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[set[str]] = []

    def _see(self, controller):
        self.seen.append({t.trial_id for t in controller.get_trials()})

    def on_trial_add(self, tune_controller, trial):
        self._see(tune_controller)

    def on_trial_result(self, tune_controller, trial, result):
        self._see(tune_controller)
        return TrialScheduler.CONTINUE

    def choose_trial_to_run(self, tune_controller):
        self._see(tune_controller)
        return super().choose_trial_to_run(tune_controller)


@dataclass(frozen=True)
class SpyArm(GridArm):
    name: ClassVar[str] = "spy"

    def make_scheduler(self, **kwargs):
        return SpyScheduler()


def small(**kw) -> AdaLRSComparison:
    kw.setdefault("total_steps", 40)
    kw.setdefault("report_every", 10)
    return AdaLRSComparison(**kw)


# ---------------------------------------------------------------------- param space, binding
def test_param_space_resolves_to_one_config_per_slot():
    sched = small(arms=["grid", "pbt"])
    configs = resolved_configs(sched, {"lr_opt": 1e-3})
    expected = sched.slots()
    assert len(configs) == len(expected) == 5 + 4
    for cfg, slot in zip(configs, expected):
        assert cfg["lr_opt"] == 1e-3
        assert {k: cfg[k] for k in slot} == slot
    assert [c["slot"] for c in configs] == list(range(9))


def test_each_sub_scheduler_sees_only_its_own_trials():
    sched = small(arms=[SpyArm(num_trials=2, label="a"), SpyArm(num_trials=3, label="b")])
    ctl = FakeController(sched)
    trials = ctl.add_slots()
    ids_a = {t.trial_id for t in trials if t.config["arm"] == "a"}
    ids_b = {t.trial_id for t in trials if t.config["arm"] == "b"}
    for t in trials:
        ctl.result(t, **report(10, 5.0, 1))
    sched.choose_trial_to_run(ctl)
    for key, ids in (("a", ids_a), ("b", ids_b)):
        seen = sched.sub_scheduler(key).seen
        assert seen and all(s <= ids for s in seen)
        assert seen[-1] == ids


def test_binding_survives_a_config_copied_from_another_arm():
    sched = small(arms=[SpyArm(num_trials=1, label="a"), SpyArm(num_trials=1, label="b")])
    ctl = FakeController(sched)
    ta, tb = ctl.add_slots()
    ta.set_config(dict(tb.config))  # what a PBT exploit does: the donor's whole config
    calls = len(sched.sub_scheduler("a").seen)
    ctl.result(ta, **report(10, 5.0, 1))
    assert len(sched.sub_scheduler("a").seen) == calls + 1
    assert sched.results_table()["arm"].tolist() == ["a"]


def test_trial_without_a_known_arm_is_rejected():
    sched = small(arms=["grid"])
    ctl = FakeController(sched)
    with pytest.raises(ValueError, match="arm='nope'"):
        ctl.add({"arm": "nope", "lr": 1e-3})


# ---------------------------------------------------------------------- PBT inside the comparison
def pbt_and_grid(**pbt_kw):
    pbt = get_arm("pbt", num_trials=2, perturbation_interval=1, quantile_fraction=0.5, **pbt_kw)
    return small(arms=[get_arm("grid", num_trials=1), pbt])


def test_pbt_pause_rule_ignores_other_arms_pending_trials():
    sched = pbt_and_grid()
    ctl = FakeController(sched)
    grid_trial, p1, p2 = ctl.add_slots()
    p2.set_status(Trial.RUNNING)
    assert grid_trial.status == Trial.PENDING
    # no PBT trial is pending or paused: PBT must not pause p1 for the grid's pending trial
    assert ctl.result(p1, **report(10, 4.0, 1)) == TrialScheduler.CONTINUE
    # given the whole controller, PBT's rule would count the grid trial and pause
    assert sched.sub_scheduler("pbt").on_trial_result(ctl, p1, report(20, 4.0, 2)) == "PAUSE"


def test_pbt_exploit_inside_the_comparison_keeps_the_binding():
    sched = pbt_and_grid()
    ctl = FakeController(sched)
    _, p1, p2 = ctl.add_slots()
    for t in (p1, p2):
        t.set_status(Trial.RUNNING)  # nothing pending in the PBT arm: no pause-to-share
    ctl.result(p1, **report(10, 3.0, 1))  # p1 best so far
    ctl.result(p2, **report(10, 5.0, 1))  # p2 in the lower half: not exploited (p1 has no ckpt)
    ctl.result(p1, **report(20, 2.9, 2))  # p1 top quantile: checkpoint taken
    decision = ctl.result(p2, **report(20, 5.5, 2))  # p2 bottom: exploits p1
    assert decision == TrialScheduler.NOOP and p2.status == Trial.PAUSED
    rows = sched.results_table()
    last = rows.iloc[-1]
    assert (last["trial_id"], last["decision"]) == (p2.trial_id, "EXPLOIT")
    assert p2.config is not None and p2.config["slot"] == p1.config["slot"]  # donor's config
    ctl.result(p2, **report(30, 2.8, 3))
    after = sched.results_table().iloc[-1]
    assert (after["arm"], after["restart_kind"]) == ("pbt", "exploit")
    table = sched.compute_table("trial").set_index("trial_id")
    assert table.loc[p2.trial_id, "exploits"] == 1
    assert table.loc[p2.trial_id, "restarts"] == 1


def test_synchronous_pbt_exploits_of_paused_trials_are_counted():
    """Synchronous PBT exploits the bottom trial when the *last* trial reaches the sync point,
    so the exploited trial is not the one whose result is being processed."""
    sched = small(arms=[get_arm("pbt", num_trials=2, perturbation_interval=1, synch=True)])
    ctl = FakeController(sched)
    p1, p2 = ctl.add_slots()
    for t in (p1, p2):
        t.set_status(Trial.RUNNING)
    assert ctl.result(p1, **report(10, 9.0, 1)) == TrialScheduler.PAUSE  # waits for p2
    lr_before = p1.config["lr"]
    ctl.result(p2, **report(10, 3.0, 1))  # sync point: p1 (paused, worse) exploits p2
    assert p1.config["slot"] == p2.config["slot"]
    per_trial = sched.compute_table("trial").set_index("trial_id")
    assert per_trial.loc[p1.trial_id, "exploits"] == 1
    assert per_trial.loc[p2.trial_id, "exploits"] == 0
    (event,) = sched.exploit_log()
    assert (event["trial_id"], event["during_result_of"], event["lr_before"]) == (
        p1.trial_id,
        p2.trial_id,
        lr_before,
    )


# ---------------------------------------------------------------------- choose_trial_to_run
def test_fifo_sub_never_resumes_a_trial_hyperband_keeps_paused():
    hb = get_arm("hyperband", num_trials=4, max_t=2, reduction_factor=2)  # brackets (2,2),(2,1)
    sched = small(arms=[get_arm("grid", num_trials=1), hb])
    ctl = FakeController(sched)
    g, h1, h2, h3, h4 = ctl.add_slots()
    ctl.result(g, **report(10, 5.0, 1))
    # h3 reaches its bracket's first milestone before h4: HyperBand pauses it
    assert ctl.result(h3, **report(10, 4.0, 1)) == TrialScheduler.PAUSE
    for t in (h1, h2, h4):
        t.set_status(Trial.RUNNING)
    # a FIFO given the whole controller would pick the PAUSED h3 here
    assert FIFOScheduler().choose_trial_to_run(ctl) is h3
    assert sched.choose_trial_to_run(ctl) is None


def test_choose_trial_to_run_prefers_a_paused_trial_a_sub_wants_resumed():
    sched = pbt_and_grid()
    ctl = FakeController(sched)
    g, p1, p2 = ctl.add_slots()
    p1.set_status(Trial.RUNNING)
    p2.set_status(Trial.PAUSED)
    assert g.status == Trial.PENDING  # the grid arm comes first, yet the paused trial wins
    assert sched.choose_trial_to_run(ctl) is p2
    p2.set_status(Trial.RUNNING)
    assert sched.choose_trial_to_run(ctl) is g


def test_a_paused_trial_no_scheduler_resumes_is_resumed_once_nothing_else_can_run():
    """Tune's HyperBand can leave a trial PAUSED after its bracket finished: without this the
    run waits forever."""
    sched = small(arms=[get_arm("grid", num_trials=2)])
    ctl = FakeController(sched)
    a, b = ctl.add_slots()
    sched.sub_scheduler("grid").choose_trial_to_run = lambda view: None  # like HyperBand's
    a.set_status(Trial.TERMINATED)
    b.set_status(Trial.PAUSED)
    assert sched.choose_trial_to_run(ctl) is b
    a.set_status(Trial.RUNNING)  # while another trial runs, waiting is legitimate
    assert sched.choose_trial_to_run(ctl) is None


def test_asha_stops_a_worse_trial_at_a_rung():
    asha = get_arm("asha", num_trials=3, grace_period=1, reduction_factor=2, max_t=4)
    sched = small(arms=[asha])
    ctl = FakeController(sched)
    a, b, c = ctl.add_slots()
    assert ctl.result(a, **report(10, 3.0, 1)) == TrialScheduler.CONTINUE
    assert ctl.result(b, **report(10, 9.0, 1)) == TrialScheduler.STOP
    assert sched.compute_table("trial").set_index("trial_id").loc[b.trial_id, "status"] == (
        "stopped"
    )


# ---------------------------------------------------------------------- accounting
def test_compute_equals_the_sum_of_what_trials_reported():
    sched = small(arms=["grid", get_arm("pbt", num_trials=2)])
    ctl = FakeController(sched)
    trials = ctl.add_slots()
    sent: dict[str, list[float]] = {t.trial_id: [0.0, 0.0, 0.0] for t in trials}
    for it in range(1, 4):
        for i, t in enumerate(trials):
            steps = 7 + i + it
            # the position rewinds on the 3rd report (a restore): the account must not
            ctl.result(t, **report(10 * it if it < 3 else 5, 5.0 - it, it, steps=steps))
            for k, v in enumerate((steps, steps * 100, steps * 0.01)):
                sent[t.trial_id][k] += v
    per_trial = sched.compute_table("trial").set_index("trial_id")
    for tid, (steps, tokens, worker_s) in sent.items():
        assert per_trial.loc[tid, "steps"] == steps
        assert per_trial.loc[tid, "tokens"] == pytest.approx(tokens)
        assert per_trial.loc[tid, "worker_s"] == pytest.approx(worker_s)
    per_arm = sched.compute_table().set_index("arm")
    for arm in ("grid", "pbt"):
        ids = [t.trial_id for t in trials if t.config["arm"] == arm]
        assert per_arm.loc[arm, "steps"] == sum(sent[i][0] for i in ids)
    rows = sched.results_table()
    last_per_arm = rows.groupby("arm")["arm_cum_steps"].last()
    assert last_per_arm.to_dict() == per_arm["steps"].to_dict()


@pytest.mark.parametrize("bad", [math.nan, -3.0, None, "ten"])
def test_a_bad_increment_counts_as_zero(bad):
    sched = small(arms=[get_arm("grid", num_trials=1)])
    ctl = FakeController(sched)
    (t,) = ctl.add_slots()
    ctl.result(t, **report(10, 5.0, 1, steps=10))
    ctl.result(t, **report(20, 4.0, 2, steps_done=bad))
    assert sched.compute_table("trial")["steps"].tolist() == [10.0]


def test_restart_overhead_is_the_gap_minus_the_reported_work(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(tune_scheduler, "time", types.SimpleNamespace(time=lambda: now[0]))
    hb = get_arm("hyperband", num_trials=4, max_t=2, reduction_factor=2)  # brackets (2,2),(2,1)
    sched = small(arms=[hb])
    ctl = FakeController(sched)
    h1, h2, h3, h4 = ctl.add_slots()
    h1.set_status(Trial.RUNNING)  # bracket s=0: runs on, not part of this
    h2.set_status(Trial.RUNNING)
    now[0] = 101.0
    assert ctl.result(h3, **report(10, 4.0, 1, steps=10)) == TrialScheduler.PAUSE
    now[0] = 105.0
    ctl.result(h4, **report(10, 6.0, 1, steps=10))  # halving: h4 stopped, h3 to resume
    assert sched.choose_trial_to_run(ctl) is h3
    now[0] = 111.0
    ctl.result(h3, **report(20, 3.0, 2, steps=10))  # 10 s after its last result
    row = sched.results_table().iloc[-1]
    assert (row["restart"], row["restart_kind"]) == (True, "pause")
    assert row["gap_s"] == pytest.approx(10.0)
    assert row["restart_overhead_s"] == pytest.approx(10.0 - 0.1)  # minus worker_s_done
    assert row["wall_s"] == pytest.approx(11.0)


def test_duplicate_done_result_is_not_counted_again():
    sched = small(arms=[get_arm("grid", num_trials=1)])
    ctl = FakeController(sched)
    (t,) = ctl.add_slots()
    ctl.result(t, **report(40, 5.0, 1, steps=40))
    ctl.result(t, **report(40, 5.0, 1, steps=40, done=True))
    assert sched.compute_table("trial")["steps"].tolist() == [40.0]


def test_backtracked_steps_come_from_adalrs_events():
    events = [
        {"step": 120, "kind": "backtrack", "restore_step": 99},
        {"step": 130, "kind": "boundary_downscale", "restore_step": None},
        {"step": 140, "kind": "keep"},
    ]
    assert tune_scheduler.backtracked_steps(json.dumps(events)) == 21.0
    assert tune_scheduler.backtracked_steps("not json") == 0.0


@pytest.mark.parametrize(
    "finish, status",
    [("budget", "completed"), ("early_stop", "stopped"), ("error", "error"), ("never", "pending")],
)
def test_final_status_of_a_trial(finish, status):
    sched = small(arms=[get_arm("grid", num_trials=1)])
    ctl = FakeController(sched)
    (t,) = ctl.add_slots()
    if finish == "budget":
        ctl.result(t, **report(40, 5.0, 4))
        sched.on_trial_complete(ctl, t, report(40, 5.0, 4, done=True))
    elif finish == "early_stop":
        ctl.result(t, **report(10, 5.0, 1))
        sched.on_trial_complete(ctl, t, report(10, 5.0, 1, done=True))
    elif finish == "error":
        t.set_status(Trial.RUNNING)
        sched.on_trial_error(ctl, t)
    assert sched.compute_table("trial")["status"].tolist() == [status]


def test_a_retried_trial_keeps_its_binding_and_counts_a_retry_restart():
    sched = small(arms=[get_arm("grid", num_trials=1), get_arm("pbt", num_trials=2)])
    ctl = FakeController(sched)
    g, _, _ = ctl.add_slots()
    ctl.result(g, **report(10, 5.0, 1))
    sched.on_trial_error(ctl, g)  # Tune's retry (max_failures): error, then added again
    g.set_config({"arm": "pbt", "lr": 1.0})
    sched.on_trial_add(ctl, g)
    assert sched.compute_table("trial")["status"].iloc[0] == "pending"
    ctl.result(g, **report(10, 4.0, 1))
    row = sched.results_table().iloc[-1]
    assert (row["arm"], row["restart_kind"], row["rewound_steps"]) == ("grid", "retry", 10.0)


# ---------------------------------------------------------------------- persistence
def test_saved_log_rebuilds_the_same_tables(tmp_path):
    sched = small(arms=["grid", get_arm("pbt", num_trials=2)], log_dir=tmp_path)
    ctl = FakeController(sched)
    trials = ctl.add_slots()
    for it in (1, 2):
        for t in trials:
            ctl.result(t, **report(10 * it, 5.0 / it, it))
    saved = load_comparison(tmp_path)
    assert saved.meta["metric"] == "val_loss"
    assert [a["key"] for a in saved.meta["arms"]] == ["grid", "pbt"]
    mem = sched.results_table()
    assert saved.results[list(tune_scheduler.RESULT_COLUMNS)].equals(
        mem[list(tune_scheduler.RESULT_COLUMNS)]
    )
    assert saved.compute_table().equals(sched.compute_table())
    assert saved.compute_table("trial").equals(sched.compute_table("trial"))


def test_load_comparison_of_a_directory_without_a_log_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="adalrs_comparison.json"):
        load_comparison(tmp_path)


# ---------------------------------------------------------------------- Tune properties
@pytest.mark.parametrize(
    "arms, buffered", [(["grid", "asha", "pbt"], True), (["grid", "hyperband"], False)]
)
def test_buffered_results_only_without_hyperband(arms, buffered):
    assert small(arms=arms).supports_buffered_results is buffered


def test_metric_given_twice_is_refused_so_tune_raises():
    sched = small(arms=["grid"])
    assert sched.set_search_properties(None, None) is True
    assert sched.set_search_properties("loss", "min") is False
    assert sched.metric == "val_loss"


def test_default_comparison_has_the_four_arms():
    sched = AdaLRSComparison()
    assert list(sched.arms) == ["adalrs", "grid", "hyperband", "pbt"]
    kinds = {k: type(sched.sub_scheduler(k)).__name__ for k in sched.arms}
    assert kinds == {
        "adalrs": "FIFOScheduler",
        "grid": "FIFOScheduler",
        "hyperband": "HyperBandScheduler",
        "pbt": "PopulationBasedTraining",
    }


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"arms": ["grid", "bogus"]}, "unknown arm 'bogus'"),
        ({"arms": []}, "arms is empty"),
        ({"arms": "grid"}, "arms is 'grid'"),
        ({"arms": [3]}, "arms contains 3"),
        ({"arms": ["grid", "grid"]}, "two arms have the key 'grid'"),
        ({"metric": ""}, "metric is ''"),
        ({"metric": None}, "metric is None"),
        ({"mode": "maximize"}, "mode is 'maximize'"),
        ({"total_steps": 0}, "total_steps is 0"),
        ({"report_every": 2.5}, "report_every is 2.5"),
        ({"total_steps": 10, "report_every": 20}, "report_every=20 exceeds total_steps=10"),
        ({"log_dir": 5}, "log_dir is 5"),
        ({"arms": [get_arm("adalrs", adalrs={"window": 10_000})]}, "window=10000"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdaLRSComparison(**kwargs)


@pytest.mark.parametrize("key", ["arm", "lr", "slot", "adalrs", "total_steps"])
def test_param_space_refuses_keys_the_comparison_fills(key):
    with pytest.raises(ValueError, match=key):
        small(arms=["grid"]).param_space({key: 1})


def test_compute_table_by_must_be_arm_or_trial():
    with pytest.raises(ValueError, match="by is 'slot'"):
        small(arms=["grid"]).compute_table("slot")
