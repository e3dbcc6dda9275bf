"""``AdaLRSComparison``: several LR-search arms in one ``tune.Tuner``, with compute accounting.

The paper (Dong et al., "AdaLRS", NeurIPS 2025, arXiv 2506.13274) claims that one AdaLRS run
finds a good LR at a fraction of the cost of a search. This scheduler measures that claim against
Tune's own searches on equal terms: every arm runs in the same Tuner, on the same cluster, and
its compute is summed from what its trials report.

Usage::

    from ray import tune
    from adalrs_ray.comparison import AdaLRSComparison
    from train_loops.trainables import synthetic_trainable

    sched = AdaLRSComparison()                        # adalrs, grid, hyperband, pbt
    tuner = tune.Tuner(
        tune.with_resources(synthetic_trainable, {"cpu": 0.25}),
        param_space=sched.param_space({"lr_opt": 1e-3}),
        tune_config=tune.TuneConfig(scheduler=sched, reuse_actors=True),
    )
    tuner.fit()
    sched.compute_table()        # compute per arm; sched.compute_table("trial") per trial
    sched.results_table()        # the tidy per-report table (docs/design.md)

How it works:

* One sub-scheduler per arm (:mod:`search_algos`): FIFO for grid and adalrs, Tune's
  ``HyperBandScheduler`` / ``ASHAScheduler`` and ``PopulationBasedTraining`` for theirs.
* A trial is bound to its arm once, at ``on_trial_add``, from its ``arm`` config key, and then by
  ``trial_id`` only: PBT copies the donor's whole config into an exploited trial.
* Every hook is forwarded to the trial's arm's scheduler, which sees the controller through a
  filtered view showing only its own trials (:class:`adalrs_ray.comparison.tune_adapter.ArmView`).
* ``choose_trial_to_run`` returns the first PAUSED trial a sub-scheduler wants to resume, else the
  first PENDING one.
* Compute: every report carries the increments ``steps_done``, ``tokens_done`` and
  ``worker_s_done`` (work since the previous report of that process); the scheduler sums them per
  trial and per arm, so restores, backtracking and exploits never rewind the account. Restart
  overhead is measured from the wall-clock gap between the last result before a pause, exploit or
  retry and the first result after it, minus the compute of that result.
* The per-report log is appended to ``<experiment dir>/adalrs_compute_log.jsonl`` and the trial
  table to ``adalrs_comparison.json``; :func:`load_comparison` rebuilds both tables from a saved
  experiment directory. The file format is documented in docs/tune.md.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import numbers
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from adalrs_ray.comparison import tune_adapter as adapter
from adalrs_ray.report.contract import (
    COMPARISON_FILE,
    COMPUTE_LOG_FILE,
    INCREMENT_KEYS,
    LOG_VERSION,
    REQUIRED_COLUMNS,
    SLOT_KEYS,
)
from search_algos import ARMS, DEFAULT_ARMS, Arm, get_arm

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


class _SlotValue:
    """``tune.sample_from`` callable: the value of ``key`` in the trial's slot (picklable)."""

    def __init__(self, slots: Sequence[Mapping[str, Any]], key: str) -> None:
        self.slots = [dict(s) for s in slots]
        self.key = key

    def __call__(self, config: Mapping[str, Any]) -> Any:
        return copy.deepcopy(self.slots[config["slot"]][self.key])


@dataclass
class _TrialInfo:
    """What the scheduler knows of one trial; ``status`` and the identity fields are persisted."""

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


class AdaLRSComparison(TrialScheduler):
    """A Tune ``TrialScheduler`` running several LR-search arms side by side.

    Args:
        arms: the arms to compare: :class:`search_algos.base.Arm` instances and/or registered
            names (``"adalrs"``, ``"grid"``, ``"hyperband"``, ``"asha"``, ``"pbt"``, built with
            their defaults). ``None``: adalrs, grid, hyperband and pbt. Arm keys (``label`` or
            name) must be unique.
        metric: the result key every arm optimises (``val_loss``). Give metric and mode here,
            not to ``TuneConfig`` (Tune raises ``ValueError`` if both set them).
        mode: ``"min"`` or ``"max"``.
        total_steps: the budget of one trial in optimizer steps, for arms that set none.
        report_every: steps between two reports, for arms that set none.
        log_dir: where to write the compute log; ``None`` (default) uses the experiment
            directory of the first trial (synced by Tune to ``RunConfig.storage_path``).
    """

    def __init__(
        self,
        arms: Iterable[Arm | str] | None = None,
        metric: str = "val_loss",
        mode: str = "min",
        *,
        total_steps: int = 1000,
        report_every: int = 50,
        log_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if not (isinstance(metric, str) and metric.strip()):
            raise ValueError(f"metric is {metric!r}, but must be a non-empty result key")
        if mode not in ("min", "max"):
            raise ValueError(f"mode is {mode!r}, but must be 'min' or 'max'")
        for name, value in (("total_steps", total_steps), ("report_every", report_every)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"{name} is {value!r}, but must be an integer >= 1")
        if report_every > total_steps:
            raise ValueError(
                f"report_every={report_every} exceeds total_steps={total_steps}: a trial must "
                "report at least once"
            )
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise ValueError(f"log_dir is {log_dir!r}, but must be None or a path")
        self._metric = metric
        self._mode = mode
        self._total_steps = total_steps
        self._report_every = report_every
        self._arms: dict[str, Arm] = {}
        for arm in _resolve_arms(arms):
            if arm.key in self._arms:
                raise ValueError(
                    f"two arms have the key {arm.key!r}; give them different labels "
                    "(e.g. get_arm('grid', label='grid_fine'))"
                )
            self._arms[arm.key] = arm
        self._slots: list[dict[str, Any]] = []
        self._subs: dict[str, TrialScheduler] = {}
        for key, arm in self._arms.items():
            self._slots.extend(arm.slots(total_steps, report_every))
            self._subs[key] = arm.make_scheduler(
                metric=metric, mode=mode, total_steps=total_steps, report_every=report_every
            )
        self._members: dict[str, list[str]] = {key: [] for key in self._arms}
        self._trials: dict[str, _TrialInfo] = {}
        self._arm_totals = {key: [0.0, 0.0, 0.0] for key in self._arms}
        self._rows: list[dict[str, Any]] = []
        self._exploits: list[dict[str, Any]] = []
        self._t0: float | None = None
        self._log_dir = None if log_dir is None else str(log_dir)
        self._log_dir_fixed = log_dir is not None

    # ------------------------------------------------------------------ public API
    @property
    def arms(self) -> dict[str, Arm]:
        """The compared arms by key, in order."""
        return dict(self._arms)

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def log_dir(self) -> str | None:
        """Where the compute log is written (known once the first trial is added)."""
        return self._log_dir

    def sub_scheduler(self, arm: str) -> TrialScheduler:
        """The Tune scheduler that manages ``arm``'s trials."""
        if arm not in self._subs:
            raise ValueError(f"unknown arm {arm!r}; arms of this comparison: {list(self._subs)}")
        return self._subs[arm]

    def slots(self) -> list[dict[str, Any]]:
        """The concrete config of every trial slot (index = the ``slot`` config key)."""
        return copy.deepcopy(self._slots)

    def param_space(self, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The Tune ``param_space`` for this comparison: a ``tune.grid_search`` over trial slots
        plus ``tune.sample_from`` lookups that give each trial its slot's ``arm``, ``lr``,
        ``total_steps``, ``report_every`` and ``adalrs``. ``config`` holds the settings shared by
        every trial (e.g. the model preset); it must not use those keys or ``slot``. Use it with
        ``num_samples=1`` (the default): the slots already are the trials."""
        from ray import tune

        if config is None:
            config = {}
        if not isinstance(config, Mapping):
            raise ValueError(f"config is {config!r}, but must be a mapping or None")
        reserved = sorted(set(config) & {"slot", *SLOT_KEYS})
        if reserved:
            raise ValueError(
                f"config sets {reserved}, but these keys are filled per trial by the "
                "comparison; set them on the arms instead"
            )
        space = dict(config)
        space["slot"] = tune.grid_search(list(range(len(self._slots))))
        for key in SLOT_KEYS:
            space[key] = tune.sample_from(_SlotValue(self._slots, key))
        return space

    def results_table(self):
        """The tidy per-report table (docs/design.md) of what has run so far (pandas)."""
        return results_frame(self._rows, self._trial_records())

    def compute_table(self, by: str = "arm"):
        """Compute per arm (``by="arm"``) or per trial (``by="trial"``) as a DataFrame."""
        return compute_frame(
            self.results_table(), self._trial_records(), by, arms=self._arm_meta(), mode=self._mode
        )

    def exploit_log(self) -> list[dict[str, Any]]:
        """One record per PBT exploit: ``arm, trial_id`` (the exploited trial), ``wall_s, time,
        step`` (its last reported step), ``lr_before, lr_after`` (its config LR),
        ``during_result_of`` (the trial whose result triggered it)."""
        return copy.deepcopy(self._exploits)

    def report_log(self) -> list[dict[str, Any]]:
        """The raw per-report log rows (the lines of ``adalrs_compute_log.jsonl``)."""
        return copy.deepcopy(self._rows)

    # ------------------------------------------------------------------ Tune hooks
    @property
    def supports_buffered_results(self) -> bool:
        # HyperBand must see every result on its own (it pauses/stops while processing)
        return all(sub.supports_buffered_results for sub in self._subs.values())

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if metric or mode:
            # already set here: Tune then raises its "metric given twice" ValueError
            return False
        for sub in self._subs.values():
            if sub.metric is None and not sub.set_search_properties(self._metric, self._mode):
                return False
        return True

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        if self._t0 is None:
            self._t0 = time.time()
        info = self._trials.get(trial.trial_id)
        if info is None:
            info = self._bind(trial)
        else:  # Tune re-adds a failed trial it retries (max_failures)
            info.status = "pending"
            info.pending_restart = "retry"
        if self._log_dir is None:
            self._log_dir = adapter.experiment_dir(trial)
        self._subs[info.arm].on_trial_add(self._view(info.arm, tune_controller), trial)
        self._write_meta()

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        info = self._info(trial)
        if (
            result.get("done")
            and info.reports
            and result.get("training_iteration") == (info.last_iteration)
        ):
            # Tune repeats a function trainable's last result, marked done, when it returns:
            # forward it, but it is no new work
            info.done_seen = True
            return self._subs[info.arm].on_trial_result(
                self._view(info.arm, tune_controller), trial, result
            )
        now = time.time()
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
        step = _number(result.get("step"))
        rewound = 0.0
        if restart_kind in ("pause", "retry") and step is not None and info.last_step is not None:
            rewound = max(0.0, info.last_step - (step - inc[0]))
        events = result.get("adalrs_events")
        view = self._view(info.arm, tune_controller)
        tokens = adapter.config_tokens(view.get_trials())
        lr_before = {tid: _config_lr(cfg) for tid, cfg in tokens.items()}

        status_before = info.status
        decision = self._subs[info.arm].on_trial_result(view, trial, result)

        exploited = False
        victims = adapter.exploited_trials(view.get_trials(), tokens)
        for victim in victims:
            at_step = step if victim is trial else self._trials[victim.trial_id].last_step
            self._record_exploit(victim, lr_before.get(victim.trial_id), at_step, trial, now)
            exploited = exploited or victim is trial
        if exploited:
            pass  # _record_exploit set the status and the pending restart
        elif decision == TrialScheduler.PAUSE or (
            decision == TrialScheduler.NOOP and trial.status == Trial.PAUSED
        ):
            info.pending_restart = "pause"
            info.status = "paused"
        else:
            info.status = "running"
        if result.get("done"):
            info.done_seen = True
        row = {
            "arm": info.arm,
            "trial_id": info.trial_id,
            "slot": info.slot,
            "lr0": info.lr0,
            "iteration": result.get("training_iteration"),
            "step": step,
            "loss": _number(result.get("loss")),
            "val_loss": _number(result.get("val_loss")),
            "metric": _number(result.get(self._metric)),
            "lr": _number(result.get("lr")),
            "scale": _number(result.get("scale")),
            "steps_done": inc[0],
            "tokens_done": inc[1],
            "worker_s_done": inc[2],
            "cum_steps": info.steps,
            "cum_tokens": info.tokens,
            "cum_worker_s": info.worker_s,
            "arm_cum_steps": totals[0],
            "arm_cum_tokens": totals[1],
            "arm_cum_worker_s": totals[2],
            "wall_s": now - (self._t0 if self._t0 is not None else now),
            "time": now,
            "gap_s": gap,
            "restart": restart_kind is not None,
            "restart_kind": restart_kind,
            "restart_overhead_s": overhead,
            "rewound_steps": rewound,
            "backtracked_steps": backtracked_steps(events),
            "decision": "EXPLOIT" if exploited else decision,
            "lr_next": _config_lr(trial.config),
            "adalrs_events": events if isinstance(events, str) else "[]",
        }
        self._rows.append(row)
        info.last_time = now
        info.last_step = step
        info.last_iteration = result.get("training_iteration")
        self._append_row(row)
        if info.status != status_before or victims:
            self._write_meta()
        return decision

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        info = self._info(trial)
        self._subs[info.arm].on_trial_complete(self._view(info.arm, tune_controller), trial, result)
        # completed: the budget was reached, or the trainable returned by itself (Tune repeats
        # its last result marked done); anything else ending a running trial is a stop
        info.status = "completed" if info.done_seen or info.reached_budget() else "stopped"
        self._write_meta()

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        info = self._info(trial)
        self._subs[info.arm].on_trial_error(self._view(info.arm, tune_controller), trial)
        info.status = "error"
        self._write_meta()

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        info = self._info(trial)
        self._subs[info.arm].on_trial_remove(self._view(info.arm, tune_controller), trial)
        if info.status not in ("completed", "error"):
            info.status = "completed" if info.reached_budget() else "stopped"
        self._write_meta()

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        pending = None
        for key, sub in self._subs.items():
            trial = sub.choose_trial_to_run(self._view(key, tune_controller))
            if trial is None:
                continue
            if trial.status == Trial.PAUSED:
                return trial
            if pending is None and trial.status == Trial.PENDING:
                pending = trial
        if pending is None:
            return self._orphan_paused_trial(tune_controller)
        return pending

    def _orphan_paused_trial(self, tune_controller) -> Trial | None:
        """A PAUSED trial that no sub-scheduler will ever resume, when nothing else can run.

        Tune's synchronous HyperBand can leave a trial PAUSED when it was still saving while its
        bracket finished; Tune then loops forever, since a PAUSED trial resumes only when a
        scheduler returns it. Once no trial is RUNNING or PENDING, no peer can arrive, so the
        trial is resumed: it trains on and its own scheduler decides again at its next result.
        """
        trials = tune_controller.get_trials()
        if any(t.status in (Trial.RUNNING, Trial.PENDING) for t in trials):
            return None
        for trial in trials:
            if trial.status == Trial.PAUSED:
                logger.warning(
                    "resuming trial %s (arm %s): PAUSED with nothing left running and its "
                    "scheduler will not resume it; without this Tune would wait forever",
                    trial.trial_id,
                    getattr(self._trials.get(trial.trial_id), "arm", "?"),
                )
                return trial
        return None

    def debug_string(self) -> str:
        lines = ["AdaLRSComparison:"]
        for key, sub in self._subs.items():
            steps, tokens, worker_s = self._arm_totals[key]
            lines.append(
                f"  [{key}] {len(self._members[key])} trials, {steps:.0f} steps, "
                f"{worker_s:.1f} worker-s; {sub.debug_string()}"
            )
        return "\n".join(lines)

    # ------------------------------------------------------------------ internals
    def _view(self, arm: str, controller) -> adapter.ArmView:
        members = self._members[arm]
        return adapter.ArmView(controller, lambda: members)

    def _bind(self, trial: Trial) -> _TrialInfo:
        config = trial.config if isinstance(trial.config, Mapping) else {}
        arm = config.get("arm")
        if arm not in self._arms:
            raise ValueError(
                f"trial {trial.trial_id} has arm={arm!r}, but the arms of this comparison are "
                f"{list(self._arms)}; build the Tuner's param_space with "
                "AdaLRSComparison.param_space()"
            )
        slot = config.get("slot")
        budget = config.get("total_steps")
        info = _TrialInfo(
            trial_id=trial.trial_id,
            arm=arm,
            slot=slot if isinstance(slot, int) else None,
            lr0=_number(config.get("lr")),
            budget_steps=budget if isinstance(budget, int) else None,
        )
        self._trials[trial.trial_id] = info
        self._members[arm].append(trial.trial_id)
        logger.debug("trial %s bound to arm %s (lr0=%s)", trial.trial_id, arm, info.lr0)
        return info

    def _info(self, trial: Trial) -> _TrialInfo:
        info = self._trials.get(trial.trial_id)
        if info is None:  # a hook before on_trial_add: bind now
            info = self._bind(trial)
        return info

    def _increment(self, info: _TrialInfo, result: Mapping[str, Any], key: str) -> float:
        value = _number(result.get(key))
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

    def _record_exploit(self, victim: Trial, lr_before, step, reporting: Trial, now: float) -> None:
        info = self._info(victim)
        info.exploits += 1
        info.pending_restart = "exploit"
        info.status = "paused"
        event = {
            "arm": info.arm,
            "trial_id": info.trial_id,
            "wall_s": now - (self._t0 if self._t0 is not None else now),
            "time": now,
            "step": step,
            "lr_before": lr_before,
            "lr_after": _config_lr(victim.config),
            "during_result_of": reporting.trial_id,
        }
        self._exploits.append(event)
        logger.debug("PBT exploited trial %s: %s", info.trial_id, event)

    def _trial_records(self) -> list[dict[str, Any]]:
        return [info.public() for info in self._trials.values()]

    def _arm_meta(self) -> list[dict[str, Any]]:
        return [
            {
                "key": key,
                "name": arm.name,
                "scheduler": type(self._subs[key]).__name__,
                "params": _jsonable(arm.params()),
            }
            for key, arm in self._arms.items()
        ]

    def _append_row(self, row: Mapping[str, Any]) -> None:
        if self._log_dir is None:
            return
        try:
            os.makedirs(self._log_dir, exist_ok=True)
            with open(os.path.join(self._log_dir, COMPUTE_LOG_FILE), "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as exc:  # never kill the experiment over the log
            logger.warning("could not append to the compute log in %s: %s", self._log_dir, exc)

    def _write_meta(self) -> None:
        if self._log_dir is None:
            return
        meta = {
            "version": LOG_VERSION,
            "metric": self._metric,
            "mode": self._mode,
            "total_steps": self._total_steps,
            "report_every": self._report_every,
            "arms": self._arm_meta(),
            "trials": self._trial_records(),
            "exploits": self._exploits,
        }
        path = os.path.join(self._log_dir, COMPARISON_FILE)
        try:
            os.makedirs(self._log_dir, exist_ok=True)
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(meta, f, indent=1)
            os.replace(tmp, path)
        except OSError as exc:
            logger.warning("could not write %s: %s", path, exc)


# ---------------------------------------------------------------------- helpers (pure)
def _resolve_arms(arms: Iterable[Arm | str] | None) -> list[Arm]:
    if arms is None:
        return [get_arm(name) for name in DEFAULT_ARMS]
    if isinstance(arms, (str, Arm)) or not isinstance(arms, Iterable):
        raise ValueError(
            f"arms is {arms!r}, but must be None or a list of arms or arm names "
            f"(valid names: {sorted(ARMS)})"
        )
    out = []
    for arm in arms:
        if isinstance(arm, str):
            out.append(get_arm(arm))
        elif isinstance(arm, Arm):
            out.append(arm)
        else:
            raise ValueError(
                f"arms contains {arm!r}, but every arm must be an Arm or one of the names "
                f"{sorted(ARMS)}"
            )
    if not out:
        raise ValueError("arms is empty, but a comparison needs at least one arm")
    return out


def _number(value: Any) -> float | None:
    """A float for real numbers (numpy scalars included; NaN and inf kept), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _config_lr(config: Any) -> float | None:
    return _number(config.get("lr")) if isinstance(config, Mapping) else None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


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


def results_frame(rows: Sequence[Mapping[str, Any]], trials: Sequence[Mapping[str, Any]]):
    """The tidy per-report table: :data:`RESULT_COLUMNS` then :data:`EXTRA_COLUMNS`, one row per
    report, ``status`` being the trial's final status (see :data:`STATUSES`)."""
    import pandas as pd

    status = {t["trial_id"]: t.get("status") for t in trials}
    frame = pd.DataFrame(list(rows), columns=[c for c in (*RESULT_COLUMNS, *EXTRA_COLUMNS)])
    frame["status"] = frame["trial_id"].map(status)
    return frame


def compute_frame(
    results,
    trials: Sequence[Mapping[str, Any]],
    by: str = "arm",
    *,
    arms: Sequence[Mapping[str, Any]] | None = None,
    mode: str = "min",
):
    """Compute per trial or per arm from a results table and the trial records.

    ``arms`` (the ``arms`` list of the comparison file) orders the arms and names their
    schedulers; ``mode`` says whether the best metric is the min or the max.

    Per trial: ``arm, trial_id, slot, lr0, status, reports, steps, tokens, worker_s, restarts,
    restart_overhead_s, exploits, rewound_steps, backtracked_steps, final_step, final_lr,
    last_metric, best_metric``. Per arm: ``arm, scheduler, trials, completed, stopped, errors,
    reports, steps, tokens, worker_s, steps_in_stopped_trials, restarts, restart_overhead_s,
    exploits, rewound_steps, backtracked_steps, best_metric, best_trial_id, best_lr``.
    """
    import pandas as pd

    if by not in ("arm", "trial"):
        raise ValueError(f"by is {by!r}, but must be 'arm' or 'trial'")
    if mode not in ("min", "max"):
        raise ValueError(f"mode is {mode!r}, but must be 'min' or 'max'")
    per_trial = []
    groups = dict(tuple(results.groupby("trial_id", sort=False))) if len(results) else {}
    for t in trials:
        g = groups.get(t["trial_id"])
        rec = {
            "arm": t["arm"],
            "trial_id": t["trial_id"],
            "slot": t.get("slot"),
            "lr0": t.get("lr0"),
            "status": t.get("status"),
            "reports": 0,
            "steps": 0.0,
            "tokens": 0.0,
            "worker_s": 0.0,
            "restarts": 0,
            "restart_overhead_s": 0.0,
            "exploits": int(t.get("exploits") or 0),
            "rewound_steps": 0.0,
            "backtracked_steps": 0.0,
            "final_step": math.nan,
            "final_lr": math.nan,
            "last_metric": math.nan,
            "best_metric": math.nan,
        }
        if g is not None and len(g):
            metric = pd.to_numeric(g["metric"], errors="coerce")
            rec.update(
                reports=len(g),
                steps=float(g["steps_done"].sum()),
                tokens=float(g["tokens_done"].sum()),
                worker_s=float(g["worker_s_done"].sum()),
                restarts=int(g["restart"].astype(bool).sum()),
                restart_overhead_s=float(pd.to_numeric(g["restart_overhead_s"]).fillna(0).sum()),
                rewound_steps=float(g["rewound_steps"].sum()),
                backtracked_steps=float(g["backtracked_steps"].sum()),
                final_step=g["step"].iloc[-1],
                final_lr=g["lr"].iloc[-1],
                last_metric=metric.iloc[-1],
                best_metric=metric.min() if mode == "min" else metric.max(),
            )
        per_trial.append(rec)
    trial_frame = pd.DataFrame(per_trial)
    if by == "trial":
        return trial_frame
    arm_rows = []
    order = [a["key"] for a in arms] if arms else list(dict.fromkeys(t["arm"] for t in trials))
    sched_of = {a["key"]: a.get("scheduler") for a in arms} if arms else {}
    for key in order:
        g = trial_frame[trial_frame["arm"] == key] if len(trial_frame) else trial_frame
        best_id, best_lr, best = None, math.nan, math.nan
        if len(results):
            r = results[results["arm"] == key]
            metric = pd.to_numeric(r["metric"], errors="coerce")
            if metric.notna().any():
                idx = metric.idxmin() if mode == "min" else metric.idxmax()
                best, best_id, best_lr = metric[idx], r.at[idx, "trial_id"], r.at[idx, "lr"]
        n = len(g)
        arm_rows.append(
            {
                "arm": key,
                "scheduler": sched_of.get(key),
                "trials": n,
                "completed": int((g["status"] == "completed").sum()) if n else 0,
                "stopped": int((g["status"] == "stopped").sum()) if n else 0,
                "errors": int((g["status"] == "error").sum()) if n else 0,
                "reports": int(g["reports"].sum()) if n else 0,
                "steps": float(g["steps"].sum()) if n else 0.0,
                "tokens": float(g["tokens"].sum()) if n else 0.0,
                "worker_s": float(g["worker_s"].sum()) if n else 0.0,
                "steps_in_stopped_trials": float(g.loc[g["status"] == "stopped", "steps"].sum())
                if n
                else 0.0,
                "restarts": int(g["restarts"].sum()) if n else 0,
                "restart_overhead_s": float(g["restart_overhead_s"].sum()) if n else 0.0,
                "exploits": int(g["exploits"].sum()) if n else 0,
                "rewound_steps": float(g["rewound_steps"].sum()) if n else 0.0,
                "backtracked_steps": float(g["backtracked_steps"].sum()) if n else 0.0,
                "best_metric": best,
                "best_trial_id": best_id,
                "best_lr": best_lr,
            }
        )
    return pd.DataFrame(arm_rows)


class ComparisonLog(NamedTuple):
    """A saved comparison: ``meta`` (metric, mode, budgets, arms), ``trials`` (one row per
    trial: arm, slot, lr0, budget_steps, final status) and ``results`` (the tidy per-report
    table)."""

    meta: dict[str, Any]
    trials: Any
    results: Any

    def compute_table(self, by: str = "arm"):
        return compute_frame(
            self.results,
            self.trials.to_dict("records"),
            by,
            arms=self.meta.get("arms"),
            mode=self.meta.get("mode", "min"),
        )


def find_log_dir(path: str | os.PathLike) -> Path:
    """The directory holding the comparison files: ``path`` itself, or the one directory below
    it that holds them (an experiment's storage path). Raises ``FileNotFoundError``."""
    root = Path(path)
    if (root / COMPARISON_FILE).is_file():
        return root
    found = sorted(p.parent for p in root.glob(f"*/{COMPARISON_FILE}"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(
            f"no {COMPARISON_FILE} in {root} or its subdirectories: is it the experiment "
            "directory of a run scheduled by AdaLRSComparison?"
        )
    raise FileNotFoundError(
        f"{root} holds several comparisons ({[str(p) for p in found]}); pass one of them"
    )


def load_comparison(path: str | os.PathLike) -> ComparisonLog:
    """Rebuild the trial and per-report tables of a saved comparison (its experiment directory,
    or the storage path above it)."""
    import pandas as pd

    folder = find_log_dir(path)
    with open(folder / COMPARISON_FILE) as f:
        meta = json.load(f)
    if meta.get("version") != LOG_VERSION:
        raise ValueError(
            f"{folder / COMPARISON_FILE} has version {meta.get('version')!r}, but this code "
            f"reads version {LOG_VERSION}"
        )
    rows = []
    log = folder / COMPUTE_LOG_FILE
    if log.is_file():
        with open(log) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except ValueError:  # a line cut by a crash: keep what is whole
                    logger.warning("%s line %d is not JSON: skipped", log, n)
    trials = meta.get("trials", [])
    trial_frame = pd.DataFrame(
        trials, columns=["trial_id", "arm", "slot", "lr0", "budget_steps", "status", "exploits"]
    )
    return ComparisonLog(meta=meta, trials=trial_frame, results=results_frame(rows, trials))


__all__ = [
    "COMPARISON_FILE",
    "COMPUTE_LOG_FILE",
    "EXTRA_COLUMNS",
    "RESULT_COLUMNS",
    "STATUSES",
    "AdaLRSComparison",
    "ComparisonLog",
    "backtracked_steps",
    "compute_frame",
    "find_log_dir",
    "load_comparison",
    "results_frame",
]
