"""ComputeAccount driven with plain dicts: no Tune, no trials, no controller."""

from __future__ import annotations

import ast
import inspect
import logging
import math

import numpy as np
import pytest

from adalrs_ray.comparison import accounting
from adalrs_ray.comparison.accounting import (
    EXTRA_COLUMNS,
    RESULT_COLUMNS,
    ComputeAccount,
    Exploit,
)


def res(step, iteration, steps=10.0, **extra) -> dict:
    out = {
        "training_iteration": iteration,
        "step": step,
        "loss": 5.0,
        "val_loss": 4.0,
        "lr": 1e-3,
        "scale": 1.0,
        "steps_done": steps,
        "tokens_done": steps * 100,
        "worker_s_done": steps * 0.01,
        "adalrs_events": "[]",
    }
    out.update(extra)
    return out


def account(*trials: tuple[str, str], arms=("grid", "pbt")) -> ComputeAccount:
    acc = ComputeAccount(arms, "val_loss")
    acc.start(100.0)
    for trial_id, arm in trials:
        acc.bind(trial_id, arm, {"arm": arm, "slot": 0, "lr": 1e-3, "total_steps": 40})
    return acc


def step_once(acc, trial_id, result, now, decision="CONTINUE", **kw) -> dict:
    """One result the way the scheduler feeds it: on_result, then on_decision."""
    row = acc.on_result(trial_id, result, now)
    acc.on_decision(trial_id, decision, paused=kw.pop("paused", False), **kw)
    return row


# ---------------------------------------------------------------------- the module
def test_accounting_imports_nothing_from_ray():
    tree = ast.parse(inspect.getsource(accounting))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    assert not [n for n in names if n == "ray" or n.startswith("ray.")]


def test_a_row_has_every_column_of_the_results_table_but_the_final_status():
    acc = account(("a", "grid"))
    row = step_once(acc, "a", res(9, 1), 101.0)
    assert set(row) == (set(RESULT_COLUMNS) - {"status"}) | set(EXTRA_COLUMNS)


# ---------------------------------------------------------------------- increments
def test_increments_are_summed_per_trial_and_per_arm():
    acc = account(("a", "grid"), ("b", "grid"), ("p", "pbt"))
    now = 100.0
    sent = {"a": 0.0, "b": 0.0, "p": 0.0}
    rows = []
    for it in range(1, 4):
        for i, tid in enumerate(("a", "b", "p")):
            now += 1.0
            steps = 5.0 + i + it
            sent[tid] += steps
            rows.append(step_once(acc, tid, res(10 * it, it, steps), now))
    grid = sent["a"] + sent["b"]
    assert acc.arm_totals("grid") == pytest.approx((grid, 100 * grid, 0.01 * grid))
    assert acc.arm_totals("pbt")[0] == sent["p"]
    last = {r["trial_id"]: r for r in rows}
    for tid, steps in sent.items():
        assert last[tid]["cum_steps"] == steps
        assert acc.trial(tid).reports == 3
    assert last["b"]["arm_cum_steps"] == sent["a"] + sent["b"]  # b reported after a
    assert last["p"]["arm_cum_steps"] == sent["p"]


def test_a_rewound_step_after_a_restore_is_not_counted_twice():
    acc = account(("a", "grid"))
    step_once(acc, "a", res(19, 1, 20), 101.0)
    step_once(acc, "a", res(39, 2, 20), 102.0, decision="PAUSE", paused=True)
    # restored from the checkpoint at step 19: 20 steps redone, reported as new work
    row = step_once(acc, "a", res(29, 3, 10), 110.0)
    assert (row["restart_kind"], row["steps_done"], row["cum_steps"]) == ("pause", 10.0, 50.0)
    assert row["rewound_steps"] == 20.0  # 39 - (29 - 10): recorded, never subtracted
    assert acc.arm_totals("grid")[0] == 50.0


@pytest.mark.parametrize("bad", [math.nan, -3.0, None, "ten", True, "missing"])
def test_a_bad_or_missing_increment_counts_as_zero_with_one_warning(bad, caplog):
    acc = account(("a", "grid"))
    result = res(9, 1, 10)
    if bad == "missing":
        del result["steps_done"]
    else:
        result["steps_done"] = bad
    with caplog.at_level(logging.WARNING, logger=accounting.__name__):
        row = step_once(acc, "a", result, 101.0)
        step_once(acc, "a", dict(result, training_iteration=2), 102.0)
    assert (row["steps_done"], row["tokens_done"]) == (0.0, 1000.0)
    assert acc.trial("a").steps == 0.0
    assert len([r for r in caplog.records if "steps_done" in r.getMessage()]) == 1


def test_a_numpy_increment_is_a_number():
    acc = account(("a", "grid"))
    row = step_once(acc, "a", res(9, 1, np.float32(4.5)), 101.0)
    assert row["steps_done"] == 4.5 and type(row["steps_done"]) is float


# ---------------------------------------------------------------------- restarts
def test_restart_overhead_is_the_gap_minus_the_reported_work():
    acc = account(("a", "grid"))
    first = step_once(acc, "a", res(9, 1, 10), 101.0, decision="PAUSE", paused=True)
    assert (first["gap_s"], first["restart"], first["restart_overhead_s"]) == (None, False, None)
    assert first["wall_s"] == 1.0
    row = step_once(acc, "a", res(19, 2, 10), 111.0)
    assert (row["restart"], row["restart_kind"], row["gap_s"]) == (True, "pause", 10.0)
    assert row["restart_overhead_s"] == pytest.approx(10.0 - 0.1)
    after = step_once(acc, "a", res(29, 3, 10), 112.0)
    assert (after["restart"], after["restart_overhead_s"], after["gap_s"]) == (False, None, 1.0)


def test_restart_overhead_is_never_negative():
    acc = account(("a", "grid"))
    step_once(acc, "a", res(9, 1, 10), 101.0, decision="PAUSE", paused=True)
    row = step_once(acc, "a", res(19, 2, 10, worker_s_done=5.0), 102.0)
    assert row["restart_overhead_s"] == 0.0


def test_a_retry_is_a_restart_that_rewinds():
    acc = account(("a", "grid"))
    step_once(acc, "a", res(19, 2, 20), 101.0)
    acc.on_error("a")
    acc.on_retry("a")
    assert acc.trial("a").status == "pending"
    row = step_once(acc, "a", res(9, 1, 10), 105.0)
    assert (row["restart_kind"], row["rewound_steps"], row["cum_steps"]) == ("retry", 20.0, 30.0)
    assert acc.trial("a").status == "running"


# ---------------------------------------------------------------------- exploits
def test_an_exploit_of_the_reporting_trial():
    acc = account(("p", "pbt"), ("q", "pbt"))
    step_once(acc, "q", res(9, 1), 101.0)
    row = acc.on_result("p", res(9, 1), 102.0)
    changed = acc.on_decision(
        "p", "NOOP", paused=True, exploits=[Exploit("p", 1e-3, 2e-3)], lr_next=2e-3
    )
    assert changed
    assert (row["decision"], row["lr_next"]) == ("EXPLOIT", 2e-3)
    info = acc.trial("p")
    assert (info.status, info.exploits, info.pending_restart) == ("paused", 1, "exploit")
    (event,) = acc.exploit_log()
    assert event == {
        "arm": "pbt",
        "trial_id": "p",
        "wall_s": 2.0,
        "time": 102.0,
        "step": 9.0,
        "lr_before": 1e-3,
        "lr_after": 2e-3,
        "during_result_of": "p",
    }
    # restored from the donor at another step: an exploit restart, no rewind counted
    after = step_once(acc, "p", res(4, 2, 10), 108.0)
    assert (after["restart_kind"], after["rewound_steps"]) == ("exploit", 0.0)
    assert after["restart_overhead_s"] == pytest.approx(6.0 - 0.1)
    assert after["cum_steps"] == 20.0


def test_an_exploit_of_another_trial_during_a_result():
    """Synchronous PBT exploits the paused bottom trial when the last trial reports."""
    acc = account(("p", "pbt"), ("q", "pbt"))
    step_once(acc, "p", res(9, 1), 101.0, decision="PAUSE", paused=True)
    row = acc.on_result("q", res(11, 1), 103.0)
    assert acc.on_decision("q", "CONTINUE", paused=False, exploits=[Exploit("p", 1.0, 3.0)])
    assert row["decision"] == "CONTINUE"
    assert (acc.trial("p").exploits, acc.trial("q").exploits) == (1, 0)
    (event,) = acc.exploit_log()
    assert (event["trial_id"], event["step"], event["during_result_of"]) == ("p", 9.0, "q")
    # the exploit replaced the pending pause
    assert step_once(acc, "p", res(11, 2), 110.0)["restart_kind"] == "exploit"


def test_binding_ignores_later_config_changes():
    acc = account(("p", "pbt"))
    info = acc.trial("p")
    assert (info.arm, info.slot, info.lr0, info.budget_steps) == ("pbt", 0, 1e-3, 40)
    assert acc.trial_ids("pbt") == ["p"] and acc.trial_ids("grid") == []
    with pytest.raises(ValueError, match="arm is 'nope'"):
        acc.bind("x", "nope", {})


# ---------------------------------------------------------------------- statuses
def test_a_repeated_final_result_is_no_new_work_and_completes_the_trial():
    acc = account(("a", "grid"))
    assert not acc.is_repeated_final("a", res(9, 1, done=True))  # nothing reported yet
    step_once(acc, "a", res(9, 1), 101.0)
    assert not acc.is_repeated_final("a", res(19, 2, done=True))  # a new iteration
    assert acc.is_repeated_final("a", res(9, 1, done=True))
    assert acc.trial("a").steps == 10.0
    acc.on_complete("a")
    assert acc.trial("a").status == "completed"


@pytest.mark.parametrize(
    "step, hook, status",
    [
        (39, "on_complete", "completed"),  # budget reached (0-based step 39 of 40)
        (9, "on_complete", "stopped"),
        (39, "on_remove", "completed"),
        (9, "on_remove", "stopped"),
        (9, "on_error", "error"),
    ],
)
def test_final_status(step, hook, status):
    acc = account(("a", "grid"))
    step_once(acc, "a", res(step, 1), 101.0)
    getattr(acc, hook)("a")
    assert acc.trial_records()[0]["status"] == status


def test_on_remove_keeps_an_error():
    acc = account(("a", "grid"))
    acc.on_error("a")
    acc.on_remove("a")
    assert acc.trial("a").status == "error"


def test_on_decision_reports_whether_the_persisted_records_changed():
    acc = account(("a", "grid"))
    acc.on_result("a", res(9, 1), 101.0)
    assert acc.on_decision("a", "CONTINUE", paused=False)  # pending -> running
    acc.on_result("a", res(19, 2), 102.0)
    assert not acc.on_decision("a", "CONTINUE", paused=False)


def test_on_decision_without_an_open_result_raises():
    acc = account(("a", "grid"), ("b", "grid"))
    with pytest.raises(ValueError, match="call on_result first"):
        acc.on_decision("a", "CONTINUE", paused=False)
    acc.on_result("a", res(9, 1), 101.0)
    with pytest.raises(ValueError, match="open result is 'a'"):
        acc.on_decision("b", "CONTINUE", paused=False)


# ---------------------------------------------------------------------- row fields
def test_metric_column_follows_the_metric_and_keeps_nan():
    acc = ComputeAccount(["grid"], "loss")
    acc.bind("a", "grid", {})
    row = step_once(acc, "a", res(9, 1, loss=math.nan, val_loss=2.0), 5.0)
    assert math.isnan(row["metric"]) and row["val_loss"] == 2.0
    assert row["wall_s"] == 0.0  # never started: wall_s counts from the result itself


def test_the_clock_starts_once():
    acc = ComputeAccount(["grid"], "val_loss")
    acc.start(10.0)
    acc.start(20.0)
    assert acc.t0 == 10.0


def test_backtracked_steps_and_events_in_the_row():
    acc = account(("a", "adalrs"), arms=("adalrs",))
    events = '[{"step": 120, "restore_step": 99}, {"step": 130, "restore_step": null}]'
    row = step_once(acc, "a", res(139, 1, adalrs_events=events), 101.0)
    assert (row["backtracked_steps"], row["adalrs_events"]) == (21.0, events)
    assert step_once(acc, "a", res(149, 2, adalrs_events=None), 102.0)["adalrs_events"] == "[]"
