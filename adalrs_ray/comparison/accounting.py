"""The compute account of a comparison: what every trial and arm spent, one log row per result.

:class:`ComputeAccount` is the decision-free bookkeeping behind
:class:`~adalrs_ray.comparison.AdaLRSComparison`, kept apart from the Tune glue the way Tune's
ASHA keeps its rungs in ``_Bracket``. It imports nothing from Ray: it is given plain values (a
trial id, an arm key, a result mapping, a config mapping, the wall-clock time) and can be driven
by plain dicts in tests.

What it accounts (docs/tune.md):

* Compute: every report carries the increments ``steps_done``, ``tokens_done`` and
  ``worker_s_done`` (:data:`~adalrs_ray.report.contract.INCREMENT_KEYS`, work since the previous
  report of that process). They are summed per trial and per arm, so restores, backtracking and
  exploits never rewind the account. A missing, negative, NaN or non-numeric increment counts as 0
  (with one warning per trial and key).
* Restarts: a pause, a PBT exploit or a retry leaves a pending restart; the first result after it
  is marked ``restart`` with its ``restart_kind``, and ``restart_overhead_s`` is the wall-clock gap
  to the previous result minus the ``worker_s_done`` of this one. After a pause, a retry or a
  resume (:meth:`ComputeAccount.on_resume`), the
  steps the trial's position went back (``rewound_steps``) are recorded, never subtracted.
* Backtracking: ``backtracked_steps`` sums ``step - restore_step`` of the AdaLRS events that
  restored a snapshot (:func:`backtracked_steps`).
* Exploits: one record per PBT exploit (:meth:`ComputeAccount.exploit_log`).
* Each trial's final status (:data:`STATUSES`).

Per result, the scheduler calls, in this order::

    row = account.on_result(trial_id, result, now)  # increments, sums, restart fields
    decision = ...                                   # the arm's sub-scheduler decides
    account.on_decision(trial_id, decision, paused=..., exploits=..., lr_next=...)

``on_decision`` records the exploits and the trial's new status and fills the row's ``decision``
and ``lr_next``: the row is complete once it returns.
"""

from __future__ import annotations

import json
import logging
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from adalrs_ray.report.contract import INCREMENT_KEYS, REQUIRED_COLUMNS

logger = logging.getLogger(__name__)


# The tidy results table (docs/design.md) is the report's contract; the scheduler's own
# columns follow it.
RESULT_COLUMNS = REQUIRED_COLUMNS
EXTRA_COLUMNS = (
    "slot",
    "metric",
    "decision",
    "lr_next",
    "time",
    "gap_s",
    "restart",
    "restart_kind",
    "restart_overhead_s",
    "rewound_steps",
    "backtracked_steps",
)

# final status of a trial in the comparison
STATUSES = ("pending", "running", "paused", "completed", "stopped", "error")

# the row's decision when the sub-scheduler exploited the reporting trial (PBT)
EXPLOIT = "EXPLOIT"


@dataclass
class TrialAccount:
    """What the account knows of one trial; ``status`` and the identity fields are persisted."""

    trial_id: str
    arm: str
    slot: int | None
    lr0: float | None
    budget_steps: int | None
    status: str = "pending"
    exploits: int = 0
    # live bookkeeping (not persisted: derived again from the report rows)
    reports: int = 0
    steps: float = 0.0
    tokens: float = 0.0
    worker_s: float = 0.0
    last_time: float | None = None
    last_step: float | None = None
    last_iteration: Any = None
    pending_restart: str | None = None
    done_seen: bool = False
    warned: set = field(default_factory=set)

    def reached_budget(self) -> bool:
        # ``step`` is the 0-based index of the last finished step (docs/design.md)
        return (
            self.budget_steps is not None
            and self.last_step is not None
            and self.last_step >= self.budget_steps - 1
        )

    def public(self) -> dict[str, Any]:
        return {
            "trial_id": self.trial_id,
            "arm": self.arm,
            "slot": self.slot,
            "lr0": self.lr0,
            "budget_steps": self.budget_steps,
            "status": self.status,
            "exploits": self.exploits,
        }


class Exploit(NamedTuple):
    """One trial a sub-scheduler exploited while deciding on a result: its id and its config LR
    before and after."""

    trial_id: str
    lr_before: float | None
    lr_after: float | None


class _OpenResult(NamedTuple):
    """A result between :meth:`ComputeAccount.on_result` and :meth:`ComputeAccount.on_decision`."""

    trial_id: str
    row: dict[str, Any]
    status_before: str
    step: float | None
    iteration: Any
    now: float
    done: bool


class ComputeAccount:
    """Per-trial and per-arm compute of a comparison, and the rows of its compute log.

    Args:
        arms: the arm keys, in order (every trial is bound to one of them).
        metric: the result key copied into each row's ``metric`` column.
    """

    def __init__(self, arms: Iterable[str], metric: str) -> None:
        self._metric = metric
        self._members: dict[str, list[str]] = {key: [] for key in arms}
        self._trials: dict[str, TrialAccount] = {}
        self._arm_totals = {key: [0.0, 0.0, 0.0] for key in self._members}
        self._exploits: list[dict[str, Any]] = []
        self._t0: float | None = None
        self._open: _OpenResult | None = None

    # ------------------------------------------------------------------ queries
    @property
    def t0(self) -> float | None:
        """Wall-clock time of the first trial (``wall_s`` counts from it)."""
        return self._t0

    def trial(self, trial_id: str) -> TrialAccount | None:
        """The account of ``trial_id``, or ``None`` if it was never bound."""
        return self._trials.get(trial_id)

    def trial_ids(self, arm: str) -> list[str]:
        """The ids of the trials bound to ``arm``, in binding order (the live list)."""
        return self._members[arm]

    def arm_totals(self, arm: str) -> tuple[float, float, float]:
        """``(steps, tokens, worker_s)`` summed over every result of ``arm``."""
        steps, tokens, worker_s = self._arm_totals[arm]
        return steps, tokens, worker_s

    def trial_records(self) -> list[dict[str, Any]]:
        """The persisted record of every trial (``trials`` of the comparison file)."""
        return [info.public() for info in self._trials.values()]

    def exploit_log(self) -> list[dict[str, Any]]:
        """The exploit records (the live list: copy it before handing it out)."""
        return self._exploits

    # ------------------------------------------------------------------ trial lifecycle
    def start(self, now: float) -> None:
        """Start the clock of ``wall_s`` (only the first call counts)."""
        if self._t0 is None:
            self._t0 = now

    def bind(self, trial_id: str, arm: str, config: Mapping[str, Any]) -> TrialAccount:
        """Bind ``trial_id`` to ``arm`` once, with its slot, starting LR and budget from
        ``config``; later config changes (a PBT exploit copies the donor's) never rebind it."""
        if arm not in self._members:
            raise ValueError(f"arm is {arm!r}, but must be one of {list(self._members)}")
        slot = config.get("slot")
        budget = config.get("total_steps")
        info = TrialAccount(
            trial_id=trial_id,
            arm=arm,
            slot=slot if isinstance(slot, int) else None,
            lr0=as_number(config.get("lr")),
            budget_steps=budget if isinstance(budget, int) else None,
        )
        self._trials[trial_id] = info
        self._members[arm].append(trial_id)
        logger.debug("trial %s bound to arm %s (lr0=%s)", trial_id, arm, info.lr0)
        return info

    def on_retry(self, trial_id: str) -> None:
        """The trial failed and is added again (Tune's ``max_failures``): a ``retry`` restart."""
        info = self._trials[trial_id]
        info.status = "pending"
        info.pending_restart = "retry"

    def on_complete(self, trial_id: str) -> None:
        """The trial ended while running: ``completed`` if it reached its budget or returned by
        itself (Tune repeats its last result marked done), else ``stopped``."""
        info = self._trials[trial_id]
        info.status = "completed" if info.done_seen or info.reached_budget() else "stopped"

    def on_error(self, trial_id: str) -> None:
        self._trials[trial_id].status = "error"

    def on_remove(self, trial_id: str) -> None:
        """The trial was removed while not running (pending or paused)."""
        info = self._trials[trial_id]
        if info.status not in ("completed", "error"):
            info.status = "completed" if info.reached_budget() else "stopped"

    # ------------------------------------------------------------------ results
    def is_repeated_final(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        """Whether ``result`` is Tune's repeat of a function trainable's last result, marked
        done, when it returns. If so it is no new work: the trial is marked as having finished by
        itself and nothing else is recorded (do not call :meth:`on_result` for it)."""
        info = self._trials[trial_id]
        if (
            result.get("done")
            and info.reports
            and result.get("training_iteration") == (info.last_iteration)
        ):
            info.done_seen = True
            return True
        return False

    def on_result(self, trial_id: str, result: Mapping[str, Any], now: float) -> dict[str, Any]:
        """Account one result of ``trial_id`` received at wall-clock time ``now`` and return its
        compute-log row, whose ``decision`` and ``lr_next`` :meth:`on_decision` fills."""
        info = self._trials[trial_id]
        inc = [self._increment(info, result, key) for key in INCREMENT_KEYS]
        info.reports += 1
        info.steps += inc[0]
        info.tokens += inc[1]
        info.worker_s += inc[2]
        totals = self._arm_totals[info.arm]
        for i in range(3):
            totals[i] += inc[i]
        gap = None if info.last_time is None else now - info.last_time
        restart_kind, info.pending_restart = info.pending_restart, None
        overhead = None
        if restart_kind is not None and gap is not None:
            overhead = max(0.0, gap - inc[2])
        step = as_number(result.get("step"))
        rewound = 0.0
        if (
            restart_kind in ("pause", "retry", "resume")
            and step is not None
            and info.last_step is not None
        ):
            rewound = max(0.0, info.last_step - (step - inc[0]))
        events = result.get("adalrs_events")
        row = {
            "arm": info.arm,
            "trial_id": info.trial_id,
            "slot": info.slot,
            "lr0": info.lr0,
            "iteration": result.get("training_iteration"),
            "step": step,
            "loss": as_number(result.get("loss")),
            "val_loss": as_number(result.get("val_loss")),
            "metric": as_number(result.get(self._metric)),
            "lr": as_number(result.get("lr")),
            "scale": as_number(result.get("scale")),
            "steps_done": inc[0],
            "tokens_done": inc[1],
            "worker_s_done": inc[2],
            "cum_steps": info.steps,
            "cum_tokens": info.tokens,
            "cum_worker_s": info.worker_s,
            "arm_cum_steps": totals[0],
            "arm_cum_tokens": totals[1],
            "arm_cum_worker_s": totals[2],
            "wall_s": self._wall_s(now),
            "time": now,
            "gap_s": gap,
            "restart": restart_kind is not None,
            "restart_kind": restart_kind,
            "restart_overhead_s": overhead,
            "rewound_steps": rewound,
            "backtracked_steps": backtracked_steps(events),
            "decision": None,  # filled by on_decision
            "lr_next": None,  # filled by on_decision
            "adalrs_events": events if isinstance(events, str) else "[]",
        }
        self._open = _OpenResult(
            trial_id=trial_id,
            row=row,
            status_before=info.status,
            step=step,
            iteration=result.get("training_iteration"),
            now=now,
            done=bool(result.get("done")),
        )
        return row

    def on_decision(
        self,
        trial_id: str,
        decision: str,
        *,
        paused: bool,
        exploits: Sequence[Exploit] = (),
        lr_next: float | None = None,
    ) -> bool:
        """Close the result :meth:`on_result` opened for ``trial_id``: record the ``exploits``
        the sub-scheduler made while deciding (the reporting trial or others of its arm), set
        the trial's status (``paused`` if the decision left it paused, else ``running``) and
        fill the row's ``decision`` (``"EXPLOIT"`` when the trial itself was exploited) and
        ``lr_next`` (its config LR now). Returns whether the persisted trial records changed."""
        opened = self._open
        if opened is None or opened.trial_id != trial_id:
            raise ValueError(
                f"on_decision for trial {trial_id!r}, but the open result is "
                f"{None if opened is None else opened.trial_id!r}: call on_result first"
            )
        self._open = None
        info = self._trials[trial_id]
        exploited = False
        for exploit in exploits:
            victim = self._trials[exploit.trial_id]
            at_step = opened.step if victim is info else victim.last_step
            self._record_exploit(victim, exploit, at_step, trial_id, opened.now)
            exploited = exploited or victim is info
        if exploited:
            pass  # _record_exploit set the status and the pending restart
        elif paused:
            info.pending_restart = "pause"
            info.status = "paused"
        else:
            info.status = "running"
        if opened.done:
            info.done_seen = True
        opened.row["decision"] = EXPLOIT if exploited else decision
        opened.row["lr_next"] = lr_next
        info.last_time = opened.now
        info.last_step = opened.step
        info.last_iteration = opened.iteration
        return info.status != opened.status_before or bool(exploits)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Everything the account knows, as plain JSON-serialisable data with a ``version``
        (for :meth:`load_state_dict` after the driver was restarted)."""
        if self._open is not None:
            raise ValueError(
                f"state_dict between on_result and on_decision of trial {self._open.trial_id!r}"
            )
        return {
            "version": ACCOUNT_STATE_VERSION,
            "metric": self._metric,
            "members": {arm: list(ids) for arm, ids in self._members.items()},
            "trials": [_trial_state(info) for info in self._trials.values()],
            "arm_totals": {arm: list(t) for arm, t in self._arm_totals.items()},
            "exploits": [dict(e) for e in self._exploits],
            "t0": self._t0,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the account with ``state`` (from :meth:`state_dict`); ``ValueError`` on a
        missing key, another version or other arms."""
        need(state, ("version", "metric", "members", "trials", "arm_totals", "exploits", "t0"))
        if state["version"] != ACCOUNT_STATE_VERSION:
            raise ValueError(
                f"account state version is {state['version']!r}, but this code reads version "
                f"{ACCOUNT_STATE_VERSION}"
            )
        if list(state["members"]) != list(self._members):
            raise ValueError(
                f"account state has the arms {list(state['members'])}, but this account has "
                f"{list(self._members)}"
            )
        trials = {}
        for rec in state["trials"]:
            need(rec, _TRIAL_FIELDS)
            values = {name: rec[name] for name in _TRIAL_FIELDS}
            values["warned"] = set(values["warned"])
            trials[rec["trial_id"]] = TrialAccount(**values)
        self._metric = state["metric"]
        self._members = {arm: list(ids) for arm, ids in state["members"].items()}
        self._trials = trials
        self._arm_totals = {arm: [float(v) for v in t] for arm, t in state["arm_totals"].items()}
        self._exploits = [dict(e) for e in state["exploits"]]
        self._t0 = state["t0"]
        self._open = None

    def on_resume(self, trial_id: str) -> str:
        """The trial is added again by a resumed experiment (``Tuner.restore``). An unfinished
        trial gets a pending ``resume`` restart: its next result measures the downtime as
        restart overhead and the steps it runs again as ``rewound_steps``. Returns its status."""
        info = self._trials[trial_id]
        if info.status not in ("completed", "stopped", "error"):
            info.pending_restart = "resume"
            if info.status == "running":
                info.status = "pending"
        return info.status

    def add_lost_row(self, row: Mapping[str, Any]) -> None:
        """Count a compute-log row written after the state this account was loaded from (the
        driver died before its next experiment checkpoint). The work was done and is counted;
        the trial restarts from an older checkpoint, so its next result records the steps run
        again as ``rewound_steps``. Only the sums, ``reports``, ``last_step`` and ``last_time``
        change: the decision of that row never took effect."""
        info = self._trials[row["trial_id"]]
        inc = [as_number(row.get(key)) or 0.0 for key in INCREMENT_KEYS]
        info.reports += 1
        info.steps += inc[0]
        info.tokens += inc[1]
        info.worker_s += inc[2]
        totals = self._arm_totals[info.arm]
        for i in range(3):
            totals[i] += inc[i]
        step = as_number(row.get("step"))
        if step is not None:
            info.last_step = step
        if isinstance(row.get("time"), (int, float)):
            info.last_time = float(row["time"])

    # ------------------------------------------------------------------ internals
    def _wall_s(self, now: float) -> float:
        return now - (self._t0 if self._t0 is not None else now)

    def _increment(self, info: TrialAccount, result: Mapping[str, Any], key: str) -> float:
        value = as_number(result.get(key))
        if value is not None and value >= 0:
            return value
        if key not in info.warned:
            info.warned.add(key)
            logger.warning(
                "trial %s (arm %s) reported %s=%r: counted as 0 (each report must carry the "
                "compute done since the previous report, a finite number >= 0)",
                info.trial_id,
                info.arm,
                key,
                result.get(key),
            )
        return 0.0

    def _record_exploit(
        self, info: TrialAccount, exploit: Exploit, step, reporting: str, now: float
    ) -> None:
        info.exploits += 1
        info.pending_restart = "exploit"
        info.status = "paused"
        event = {
            "arm": info.arm,
            "trial_id": info.trial_id,
            "wall_s": self._wall_s(now),
            "time": now,
            "step": step,
            "lr_before": exploit.lr_before,
            "lr_after": exploit.lr_after,
            "during_result_of": reporting,
        }
        self._exploits.append(event)
        logger.debug("PBT exploited trial %s: %s", info.trial_id, event)


# ---------------------------------------------------------------------- helpers (pure)
# version of ComputeAccount.state_dict()
ACCOUNT_STATE_VERSION = 1
_TRIAL_FIELDS = (
    "trial_id",
    "arm",
    "slot",
    "lr0",
    "budget_steps",
    "status",
    "exploits",
    "reports",
    "steps",
    "tokens",
    "worker_s",
    "last_time",
    "last_step",
    "last_iteration",
    "pending_restart",
    "done_seen",
    "warned",
)


def _trial_state(info: TrialAccount) -> dict[str, Any]:
    state = {name: getattr(info, name) for name in _TRIAL_FIELDS}
    state["warned"] = sorted(info.warned)
    return state


def need(state: Any, keys: Sequence[str]) -> None:
    """``ValueError`` naming the keys of ``keys`` that the mapping ``state`` lacks."""
    if not isinstance(state, Mapping):
        raise ValueError(f"state is {type(state).__name__}, but must be a mapping")
    missing = [key for key in keys if key not in state]
    if missing:
        raise ValueError(f"state lacks the keys {missing} (have {sorted(state)})")


def as_number(value: Any) -> float | None:
    """A float for real numbers (numpy scalars included; NaN and inf kept), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def config_lr(config: Any) -> float | None:
    """The ``lr`` of a trial config, or ``None``."""
    return as_number(config.get("lr")) if isinstance(config, Mapping) else None


def backtracked_steps(events: Any) -> float:
    """Steps whose model state AdaLRS discarded, from a report's ``adalrs_events`` JSON: for
    every event that restored a snapshot, ``step - restore_step``."""
    if not isinstance(events, str) or not events:
        return 0.0
    try:
        parsed = json.loads(events)
    except ValueError:
        return 0.0
    lost = 0.0
    for event in parsed if isinstance(parsed, list) else []:
        if not isinstance(event, dict):
            continue
        step, restore = event.get("step"), event.get("restore_step")
        if isinstance(step, (int, float)) and isinstance(restore, (int, float)):
            lost += max(0.0, float(step) - float(restore))
    return lost


__all__ = [
    "ACCOUNT_STATE_VERSION",
    "EXPLOIT",
    "EXTRA_COLUMNS",
    "RESULT_COLUMNS",
    "STATUSES",
    "ComputeAccount",
    "Exploit",
    "TrialAccount",
    "as_number",
    "backtracked_steps",
    "config_lr",
    "need",
]
