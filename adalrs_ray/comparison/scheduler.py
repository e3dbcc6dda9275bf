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
* Compute (:class:`adalrs_ray.comparison.accounting.ComputeAccount`): every report carries the
  increments ``steps_done``, ``tokens_done`` and ``worker_s_done`` (work since the previous report
  of that process); the account sums them per trial and per arm, so restores, backtracking and
  exploits never rewind it. Restart overhead is measured from the wall-clock gap between the last
  result before a pause, exploit or retry and the first result after it, minus the compute of that
  result. The hooks here only bind trials, ask the arm's sub-scheduler and hand plain values to
  the account.
* The per-report log is appended to ``<experiment dir>/adalrs_compute_log.jsonl`` and the trial
  table to ``adalrs_comparison.json`` (:mod:`adalrs_ray.comparison.logs`);
  :func:`~adalrs_ray.comparison.logs.load_comparison` rebuilds both tables from a saved experiment
  directory. The file format is documented in docs/tune.md.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from adalrs_ray.comparison import tune_adapter as adapter
from adalrs_ray.comparison.accounting import (
    EXTRA_COLUMNS,
    RESULT_COLUMNS,
    STATUSES,
    ComputeAccount,
    Exploit,
    TrialAccount,
    backtracked_steps,
    config_lr,
    need,
)
from adalrs_ray.comparison.logs import (
    ComparisonFiles,
    ComparisonLog,
    compute_frame,
    find_log_dir,
    load_comparison,
    results_frame,
)
from adalrs_ray.report.contract import (
    COMPARISON_FILE,
    COMPUTE_LOG_FILE,
    LOG_VERSION,
    OPTIONAL_SLOT_KEYS,
    SLOT_KEYS,
)
from search_algos import ARMS, DEFAULT_ARMS, Arm, get_arm

logger = logging.getLogger(__name__)


class _SlotValue:
    """``tune.sample_from`` callable: the value of ``key`` in the trial's slot (picklable)."""

    def __init__(self, slots: Sequence[Mapping[str, Any]], key: str) -> None:
        self.slots = [dict(s) for s in slots]
        self.key = key

    def __call__(self, config: Mapping[str, Any]) -> Any:
        # an optional slot key (OPTIONAL_SLOT_KEYS) is None in the slots that do not set it
        return copy.deepcopy(self.slots[config["slot"]].get(self.key))

    def __deepcopy__(self, memo: dict) -> _SlotValue:
        # immutable (every call returns a copy): Tune deep-copies the param space once per
        # variant, and copying all slots in each made resolving n trials O(n^2)
        return self


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
        self._account = ComputeAccount(self._arms, metric)
        self._rows: list[dict[str, Any]] = []
        self._files = ComparisonFiles(log_dir)
        # set by load_state_dict until the resumed experiment has re-added its trials
        self._resume: _Resume | None = None

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
        return self._files.log_dir

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
        reserved = sorted(set(config) & {"slot", *SLOT_KEYS, *OPTIONAL_SLOT_KEYS})
        if reserved:
            raise ValueError(
                f"config sets {reserved}, but these keys are filled per trial by the "
                "comparison; set them on the arms instead"
            )
        space = dict(config)
        space["slot"] = tune.grid_search(list(range(len(self._slots))))
        optional = [k for k in OPTIONAL_SLOT_KEYS if any(k in slot for slot in self._slots)]
        for key in (*SLOT_KEYS, *optional):
            space[key] = tune.sample_from(_SlotValue(self._slots, key))
        return space

    def results_table(self):
        """The tidy per-report table (docs/design.md) of what has run so far (pandas)."""
        return results_frame(self._rows, self._account.trial_records())

    def compute_table(self, by: str = "arm"):
        """Compute per arm (``by="arm"``) or per trial (``by="trial"``) as a DataFrame."""
        return compute_frame(
            self.results_table(),
            self._account.trial_records(),
            by,
            arms=self._arm_meta(),
            mode=self._mode,
        )

    def exploit_log(self) -> list[dict[str, Any]]:
        """One record per PBT exploit: ``arm, trial_id`` (the exploited trial), ``wall_s, time,
        step`` (its last reported step), ``lr_before, lr_after`` (its config LR),
        ``during_result_of`` (the trial whose result triggered it)."""
        return copy.deepcopy(self._account.exploit_log())

    def report_log(self) -> list[dict[str, Any]]:
        """The raw per-report log rows (the lines of ``adalrs_compute_log.jsonl``)."""
        return copy.deepcopy(self._rows)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """The comparison's whole state as plain JSON-serialisable data with a ``version``: its
        settings, the compute account (arm membership, every trial's sums, status and pending
        restart, the exploit log), each arm's sub-scheduler (HyperBand's bands and brackets,
        ASHA's rungs, PBT's population with its last perturbation times; trials by
        ``trial_id``) and the number of compute-log rows it covers."""
        resume = self._resume
        return {
            "version": STATE_VERSION,
            "settings": self._settings(),
            "account": self._account.state_dict(),
            "subs": (
                dict(resume.subs)
                if resume is not None and resume.subs is not None
                else {key: adapter.scheduler_state(sub) for key, sub in self._subs.items()}
            ),
            "rows": resume.rows if resume is not None and resume.loading_log else len(self._rows),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load :meth:`state_dict` output into this (fresh) comparison before the experiment
        re-adds its trials (``Tuner.restore``). ``ValueError`` on a missing key, another
        version or other settings (arms, metric, mode, budgets). The sub-schedulers get their
        state back once the restored Trial objects are known (at the first hook after the
        trials were re-added); the compute-log rows written after ``state`` was taken are read
        back and counted once (see :meth:`ComputeAccount.add_lost_row`)."""
        need(state, ("version", "settings", "account", "subs", "rows"))
        if state["version"] != STATE_VERSION:
            raise ValueError(
                f"comparison state version is {state['version']!r}, but this code reads "
                f"version {STATE_VERSION}"
            )
        if state["settings"] != self._settings():
            raise ValueError(
                f"the saved comparison was run with {state['settings']}, but this scheduler has "
                f"{self._settings()}: build it with the same arms and settings to resume"
            )
        if set(state["subs"]) != set(self._subs):
            raise ValueError(
                f"comparison state has sub-scheduler states for {sorted(state['subs'])}, but "
                f"the arms are {list(self._subs)}"
            )
        rows = state["rows"]
        if not (isinstance(rows, int) and rows >= 0):
            raise ValueError(f"comparison state has rows={rows!r}, but must be an integer >= 0")
        self._account.load_state_dict(state["account"])
        self._rows = []
        self._resume = _Resume(
            subs=dict(state["subs"]),
            rows=rows,
            awaiting={r["trial_id"] for r in self._account.trial_records()},
        )
        if self._files.log_dir is not None:
            self._load_log()

    def save(self, checkpoint_path: str) -> None:
        """Write :meth:`state_dict` to ``checkpoint_path`` (JSON; Tune's scheduler API)."""
        tmp = f"{checkpoint_path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.state_dict(), f)
        os.replace(tmp, checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        """Load the state :meth:`save` wrote to ``checkpoint_path``."""
        with open(checkpoint_path) as f:
            self.load_state_dict(json.load(f))

    def checkpoint_callback(self):
        """A ``tune.Callback`` to pass in ``RunConfig(callbacks=...)``: it saves this
        comparison's state with every experiment checkpoint and loads it on
        ``Tuner.restore`` (Tune 2.60 itself never saves a scheduler). Without it a restored run
        starts the comparison afresh."""
        return _StateCallback(self)

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
        self._account.start(time.time())
        if self._files.log_dir is None:
            self._files.log_dir = adapter.experiment_dir(trial)
        resume = self._resume
        if resume is not None and resume.loading_log and self._files.log_dir is not None:
            self._load_log(trial)
        if resume is not None and trial.trial_id in resume.awaiting:
            self._readd(tune_controller, trial)
            return
        if self._account.trial(trial.trial_id) is None:
            self._bind(trial)
        else:  # Tune re-adds a failed trial it retries (max_failures)
            self._account.on_retry(trial.trial_id)
        arm = self._arm_of(trial)
        self._subs[arm].on_trial_add(self._view(arm, tune_controller), trial)
        self._write_meta()

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        self._finish_resume(tune_controller)
        arm = self._arm_of(trial)
        view, sub = self._view(arm, tune_controller), self._subs[arm]
        if self._account.is_repeated_final(trial.trial_id, result):
            # Tune repeats a function trainable's last result, marked done, when it returns:
            # forward it, but it is no new work
            return sub.on_trial_result(view, trial, result)
        row = self._account.on_result(trial.trial_id, result, time.time())
        # the config objects before the decision: an exploit replaces them, so the old LR is
        # read from the old object only for the trials exploited (not for all, per result)
        tokens = adapter.config_tokens(view.get_trials())
        decision = sub.on_trial_result(view, trial, result)
        exploits = [
            Exploit(t.trial_id, config_lr(tokens[t.trial_id]), config_lr(t.config))
            for t in adapter.exploited_trials(view.get_trials(), tokens)
        ]
        paused = decision == TrialScheduler.PAUSE or (
            decision == TrialScheduler.NOOP and trial.status == Trial.PAUSED
        )
        changed = self._account.on_decision(
            trial.trial_id,
            decision,
            paused=paused,
            exploits=exploits,
            lr_next=config_lr(trial.config),
        )
        self._rows.append(row)
        self._files.append_row(row)
        if changed:
            self._write_meta()
        return decision

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self._finish_resume(tune_controller)
        arm = self._arm_of(trial)
        self._subs[arm].on_trial_complete(self._view(arm, tune_controller), trial, result)
        self._account.on_complete(trial.trial_id)
        self._write_meta()

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self._finish_resume(tune_controller)
        arm = self._arm_of(trial)
        self._subs[arm].on_trial_error(self._view(arm, tune_controller), trial)
        self._account.on_error(trial.trial_id)
        self._write_meta()

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self._finish_resume(tune_controller)
        arm = self._arm_of(trial)
        self._subs[arm].on_trial_remove(self._view(arm, tune_controller), trial)
        self._account.on_remove(trial.trial_id)
        self._write_meta()

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        self._finish_resume(tune_controller)
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
                    getattr(self._account.trial(trial.trial_id), "arm", "?"),
                )
                return trial
        return None

    def debug_string(self) -> str:
        lines = ["AdaLRSComparison:"]
        for key, sub in self._subs.items():
            steps, tokens, worker_s = self._account.arm_totals(key)
            lines.append(
                f"  [{key}] {len(self._account.trial_ids(key))} trials, {steps:.0f} steps, "
                f"{worker_s:.1f} worker-s; {sub.debug_string()}"
            )
        return "\n".join(lines)

    # ------------------------------------------------------------------ internals
    def _settings(self) -> dict[str, Any]:
        return {
            "arms": list(self._arms),
            "metric": self._metric,
            "mode": self._mode,
            "total_steps": self._total_steps,
            "report_every": self._report_every,
        }

    def _load_log(self, trial: Trial | None = None) -> None:
        """Read the compute log back after :meth:`load_state_dict`: its first ``rows`` lines
        are the rows the state covers; later ones were written after the state was taken
        (results between the state's experiment checkpoint and the sync of the log) and are
        counted once here. A restored experiment has a new staging directory: the log is
        read from the experiment's storage (``trial``'s) and written into it again."""
        resume = self._resume
        path = os.path.join(self._files.log_dir, COMPUTE_LOG_FILE)
        text = None
        if os.path.exists(path):
            with open(path) as f:
                text = f.read()
        if (text is None or text.count("\n") < resume.rows) and trial is not None:
            stored = adapter.read_experiment_file(trial, COMPUTE_LOG_FILE)
            if stored is not None:
                text = stored
        lines = []
        for line in (text or "").splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:  # a line cut by the crash (or empty): the result is re-run
                logger.warning("resume: a cut line of the compute log skipped: %.80s", line)
        if text is not None:  # the whole lines, in the new staging directory too
            os.makedirs(self._files.log_dir, exist_ok=True)
            with open(path, "w") as f:
                f.writelines(json.dumps(row) + "\n" for row in lines)
        if len(lines) < resume.rows:
            raise ValueError(
                f"{path} has {len(lines)} rows, but the saved comparison state covers "
                f"{resume.rows}: the log does not belong to this state"
            )
        self._rows = lines[: resume.rows]
        lost = lines[resume.rows :]
        for row in lost:
            if self._account.trial(row["trial_id"]) is None:
                # bound after the state was taken: Tune's restored experiment does not have it
                self._account.bind(
                    row["trial_id"], row["arm"], {"slot": row.get("slot"), "lr": row.get("lr0")}
                )
                self._account.on_remove(row["trial_id"])
            self._account.add_lost_row(row)
            self._rows.append(row)
        if lost:
            logger.info(
                "resume: %d result(s) logged after the last experiment checkpoint (%.0f steps) "
                "are counted once; their trials run those steps again from an older checkpoint",
                len(lost),
                sum(float(r.get("steps_done") or 0.0) for r in lost),
            )
        resume.loading_log = False

    def _readd(self, tune_controller, trial: Trial) -> None:
        """A trial of the saved state, re-added by the resumed experiment."""
        resume = self._resume
        resume.awaiting.discard(trial.trial_id)
        status = self._account.on_resume(trial.trial_id)
        arm = self._arm_of(trial)
        if resume.subs is None or resume.subs.get(arm) is None:
            # the sub-scheduler's state was not captured (not one of Tune's): it starts over
            if status not in ("completed", "stopped", "error"):
                logger.warning(
                    "resume: arm %s's scheduler %s has no saved state; trial %s is added to it "
                    "as a new trial",
                    arm,
                    type(self._subs[arm]).__name__,
                    trial.trial_id,
                )
                self._subs[arm].on_trial_add(self._view(arm, tune_controller), trial)
        if status == "paused" and trial.status == Trial.PENDING:
            adapter.keep_paused(trial)
        self._write_meta()

    def _finish_resume(self, tune_controller) -> None:
        """Give the sub-schedulers their saved state, with the restored Trial objects, once
        the resumed experiment has re-added its trials (before any other hook)."""
        resume = self._resume
        if resume is None:
            return
        if resume.subs is not None:
            trials = {t.trial_id: t for t in tune_controller.get_trials()}
            for arm, state in resume.subs.items():
                if state is not None:
                    adapter.load_scheduler_state(self._subs[arm], state, trials)
            resume.subs = None
        if resume.awaiting:
            logger.warning(
                "resume: trials %s of the saved comparison were not re-added by Tune",
                sorted(resume.awaiting),
            )
            resume.awaiting = set()
        if not resume.loading_log:
            self._resume = None

    def _view(self, arm: str, controller) -> adapter.ArmView:
        members = self._account.trial_ids(arm)
        return adapter.ArmView(controller, lambda: members)

    def _bind(self, trial: Trial) -> TrialAccount:
        config = trial.config if isinstance(trial.config, Mapping) else {}
        arm = config.get("arm")
        if arm not in self._arms:
            raise ValueError(
                f"trial {trial.trial_id} has arm={arm!r}, but the arms of this comparison are "
                f"{list(self._arms)}; build the Tuner's param_space with "
                "AdaLRSComparison.param_space()"
            )
        return self._account.bind(trial.trial_id, arm, config)

    def _arm_of(self, trial: Trial) -> str:
        info = self._account.trial(trial.trial_id)
        if info is None:  # a hook before on_trial_add: bind now
            info = self._bind(trial)
        return info.arm

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

    def _write_meta(self) -> None:
        if self._files.log_dir is None:
            return
        self._files.write_meta(
            {
                "version": LOG_VERSION,
                "metric": self._metric,
                "mode": self._mode,
                "total_steps": self._total_steps,
                "report_every": self._report_every,
                "arms": self._arm_meta(),
                "trials": self._account.trial_records(),
                "exploits": self._account.exploit_log(),
            }
        )


# version of AdaLRSComparison.state_dict()
STATE_VERSION = 1


class _Resume:
    """What :meth:`AdaLRSComparison.load_state_dict` leaves to do once the trials are back."""

    def __init__(self, subs: dict[str, Any], rows: int, awaiting: set[str]) -> None:
        self.subs: dict[str, Any] | None = subs  # sub-scheduler states not yet loaded
        self.rows = rows  # compute-log rows the state covers
        self.loading_log = True  # the compute log not yet read back
        self.awaiting = awaiting  # trial ids not yet re-added


class _StateCallback(Callback):
    """Saves the comparison's state with Tune's experiment checkpoint and loads it on
    ``Tuner.restore`` (Tune restores callbacks before it re-adds the trials)."""

    def __init__(self, scheduler: AdaLRSComparison) -> None:
        self.scheduler = scheduler

    def get_state(self) -> dict[str, Any]:
        return {"adalrs_comparison": self.scheduler.state_dict()}

    def set_state(self, state: dict[str, Any]) -> None:
        need(state, ("adalrs_comparison",))
        self.scheduler.load_state_dict(state["adalrs_comparison"])


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


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


__all__ = [
    "COMPARISON_FILE",
    "COMPUTE_LOG_FILE",
    "EXTRA_COLUMNS",
    "RESULT_COLUMNS",
    "STATUSES",
    "STATE_VERSION",
    "AdaLRSComparison",
    "ComparisonLog",
    "backtracked_steps",
    "compute_frame",
    "find_log_dir",
    "load_comparison",
    "results_frame",
]
