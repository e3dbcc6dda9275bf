"""The only module of adalrs-ray that relies on Ray Tune internals.

What it relies on, and why (tests/test_tune_adapter.py fails when Ray changes any of it):

* :class:`ArmView` -- a filtered view of the tune controller handed to one arm's sub-scheduler.
  Tune's own schedulers assume they own every trial of the controller: given the real one, PBT's
  ``choose_trial_to_run`` raised ``KeyError`` on other arms' trials, a FIFO sub-scheduler resumed
  PBT's paused trials and PBT's "pause while a trial is pending" rule counted other arms. The
  view shows only the arm's own trials through ``get_trials`` / ``get_live_trials`` and forwards
  every other attribute to the controller, including the private ones Tune's schedulers call
  (:data:`CONTROLLER_API`: PBT calls ``_schedule_trial_save``).
* :func:`experiment_dir` -- the driver-side experiment directory of a trial
  (``Trial.local_experiment_path``, a DeveloperAPI property). Files written there are synced to
  the experiment's storage path by Tune.
* :func:`exploited_trials` -- a PBT exploit replaces the trial's config object
  (``Trial.set_config``) and leaves the trial PAUSED.
* :func:`scheduler_state` / :func:`load_scheduler_state` -- the state of Tune's FIFO, HyperBand,
  ASHA and PBT schedulers as plain data with trials by ``trial_id``, put back into fresh
  schedulers with the restored Trial objects on ``Tuner.restore`` (Tune 2.60 saves no scheduler
  and HyperBand and PBT implement no save/restore, Ray issue #30838). Reads and writes their
  private attributes (``_hyperbands``, ``_trial_info``, ``_Bracket._live_trials``, PBT's
  ``_trial_state`` of ``_PBTTrialState``, ...). :func:`keep_paused` sets a re-added trial
  PAUSED again (``Trial.set_status``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

# Attributes of the tune controller that Tune's sub-schedulers (FIFO, HyperBand, ASHA, PBT)
# use, checked by tests/test_tune_adapter.py against the installed Ray.
CONTROLLER_API = (
    "get_trials",
    "get_live_trials",
    "search_alg",
    "pause_trial",
    "stop_trial",
    "_schedule_trial_save",
)

# The TrialScheduler hooks the composite scheduler forwards, with their parameter names.
SCHEDULER_HOOKS = {
    "on_trial_add": ("tune_controller", "trial"),
    "on_trial_error": ("tune_controller", "trial"),
    "on_trial_result": ("tune_controller", "trial", "result"),
    "on_trial_complete": ("tune_controller", "trial", "result"),
    "on_trial_remove": ("tune_controller", "trial"),
    "choose_trial_to_run": ("tune_controller",),
    "set_search_properties": ("metric", "mode"),
}


class ArmView:
    """The tune controller as one arm's sub-scheduler must see it: only the arm's trials.

    ``members`` is a callable returning the trial ids bound to the arm (read at each call, so
    trials bound later are seen). Every attribute other than ``get_trials`` and
    ``get_live_trials`` is the controller's own.
    """

    __slots__ = ("_controller", "_members")

    def __init__(self, controller: Any, members: Callable[[], Iterable[str]]) -> None:
        self._controller = controller
        self._members = members

    def get_trials(self) -> list:
        ids = set(self._members())
        return [t for t in self._controller.get_trials() if t.trial_id in ids]

    def get_live_trials(self) -> set:
        ids = set(self._members())
        return {t for t in self._controller.get_live_trials() if t.trial_id in ids}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._controller, name)

    def __repr__(self) -> str:
        return f"ArmView({self._controller!r}, trials={sorted(self._members())})"


def experiment_dir(trial: Any) -> str | None:
    """The driver-side experiment directory of ``trial`` (synced by Tune to the storage path),
    or ``None`` when the trial has no storage yet (stub trials in tests)."""
    try:
        path = trial.local_experiment_path
    except AttributeError:  # no StorageContext attached
        return None
    return str(path) if path else None


def config_tokens(trials: Iterable[Any]) -> dict[str, Any]:
    """The config object of each trial by id, taken before a scheduler decision (holding the
    references keeps the identity check of :func:`exploited_trials` exact)."""
    return {t.trial_id: t.config for t in trials}


def exploited_trials(trials: Iterable[Any], tokens: dict[str, Any]) -> list[Any]:
    """The trials PBT exploited during the decision: their config object was replaced
    (``Trial.set_config`` with the donor's config, perturbed) and they are PAUSED. Synchronous
    PBT exploits every bottom trial of the population when the last one reports, so this looks
    at all of the arm's trials, not only the one that reported."""
    return [
        t
        for t in trials
        if t.trial_id in tokens and t.config is not tokens[t.trial_id] and t.status == "PAUSED"
    ]


def missing_controller_api(controller_cls: type | None = None) -> list[str]:
    """Names of :data:`CONTROLLER_API` that the installed ``TuneController`` lacks (empty when
    everything the sub-schedulers call is there)."""
    if controller_cls is None:
        from ray.tune.execution.tune_controller import TuneController as controller_cls
    return [name for name in CONTROLLER_API if not hasattr(controller_cls, name)]


# ---------------------------------------------------------------------- scheduler state
# Tune 2.60's TuneController never calls TrialScheduler.save/restore, and HyperBand and PBT
# implement neither (Ray issue #30838): on Tuner.restore they would start empty. The functions
# below capture the state of Tune's own schedulers as plain data, with trials by trial_id, and
# put it back into a fresh scheduler once the restored Trial objects are known. They read and
# write private attributes of HyperBandScheduler and its _Bracket, AsyncHyperBandScheduler and
# its _Bracket, and PopulationBasedTraining and its _PBTTrialState (checked by
# tests/test_tune_adapter.py).

SCHEDULER_STATE_VERSION = 1


def _plain_number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _plain_result(result: Any, keys: Iterable[str]) -> dict[str, Any] | None:
    if result is None:
        return None
    return {key: _plain_number(result.get(key)) for key in keys if key in result}


def _plain(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def scheduler_state(sub: Any) -> dict[str, Any] | None:
    """The state of one of Tune's schedulers (FIFO, HyperBand, ASHA, PBT) as plain
    JSON-serialisable data, trials by ``trial_id``; ``None`` for any other scheduler (its state
    cannot be captured: it starts empty on a resume)."""
    from ray.tune.schedulers import (
        AsyncHyperBandScheduler,
        FIFOScheduler,
        HyperBandScheduler,
        PopulationBasedTraining,
    )

    if isinstance(sub, HyperBandScheduler):
        keys = (sub._metric, sub._time_attr)
        bands = []
        current = None
        for b, band in enumerate(sub._hyperbands):
            out = []
            for s, bracket in enumerate(band):
                if bracket is sub._state["bracket"] and bracket is not None:
                    current = [b, s]
                if bracket is None:
                    out.append(None)
                    continue
                out.append(
                    {
                        "n": bracket._n,
                        "r": bracket._r,
                        "cumul_r": bracket._cumul_r,
                        "halves": bracket._halves,
                        "completed_progress": bracket._completed_progress,
                        "all_trials": [t.trial_id for t in bracket._all_trials],
                        "live_trials": [
                            [t.trial_id, _plain_result(r, keys)]
                            for t, r in bracket._live_trials.items()
                        ],
                        "to_unpause": sorted(t.trial_id for t in bracket.trials_to_unpause),
                    }
                )
            bands.append(out)
        return {
            "kind": "hyperband",
            "version": SCHEDULER_STATE_VERSION,
            "bands": bands,
            "band_idx": sub._state["band_idx"],
            "current": current,
            "num_stopped": sub._num_stopped,
        }
    if isinstance(sub, AsyncHyperBandScheduler):
        index = {id(b): i for i, b in enumerate(sub._brackets)}
        return {
            "kind": "asha",
            "version": SCHEDULER_STATE_VERSION,
            "rungs": [
                [[float(m), {k: _plain_number(v) for k, v in rec.items()}] for m, rec in b._rungs]
                for b in sub._brackets
            ],
            "trial_bracket": {tid: index[id(b)] for tid, b in sub._trial_info.items()},
            "counter": sub._counter,
            "num_stopped": sub._num_stopped,
        }
    if isinstance(sub, PopulationBasedTraining):
        return {
            "kind": "pbt",
            "version": SCHEDULER_STATE_VERSION,
            "trials": [
                {
                    "trial_id": t.trial_id,
                    "orig_tag": st.orig_tag,
                    "last_score": _plain_number(st.last_score),
                    "has_checkpoint": st.last_checkpoint is not None,
                    "last_perturbation_time": st.last_perturbation_time,
                    "last_train_time": st.last_train_time,
                    "last_result": None if st.last_result is None else _plain(st.last_result),
                }
                for t, st in sub._trial_state.items()
            ],
            "next_perturbation_sync": sub._next_perturbation_sync,
            "num_checkpoints": sub._num_checkpoints,
            "num_perturbations": sub._num_perturbations,
        }
    if (
        isinstance(sub, FIFOScheduler)
        and type(sub).on_trial_result is FIFOScheduler.on_trial_result
    ):
        return {"kind": "fifo", "version": SCHEDULER_STATE_VERSION}
    return None


def scheduler_trial_ids(state: Mapping[str, Any] | None) -> set[str]:
    """The trial ids a :func:`scheduler_state` refers to."""
    if state is None or state["kind"] in ("fifo", "asha"):
        return set()
    if state["kind"] == "pbt":
        return {rec["trial_id"] for rec in state["trials"]}
    return {
        tid for band in state["bands"] for b in band if b is not None for tid in b["all_trials"]
    }


def load_scheduler_state(sub: Any, state: Mapping[str, Any], trials: Mapping[str, Any]) -> None:
    """Put ``state`` (from :func:`scheduler_state`) into the fresh scheduler ``sub``, with the
    restored Trial objects ``trials`` (by trial_id). ``ValueError`` if ``state`` is of another
    kind or version, lacks a key, or names a trial not in ``trials``."""
    if not isinstance(state, Mapping) or "kind" not in state or "version" not in state:
        raise ValueError(f"scheduler state is {state!r}, but must hold 'kind' and 'version'")
    if state["version"] != SCHEDULER_STATE_VERSION:
        raise ValueError(
            f"scheduler state version is {state['version']!r}, but this code reads version "
            f"{SCHEDULER_STATE_VERSION}"
        )
    have = scheduler_state(sub)
    kind = None if have is None else have["kind"]
    if kind != state["kind"]:
        raise ValueError(
            f"scheduler state of kind {state['kind']!r} cannot go into a "
            f"{type(sub).__name__} (kind {kind!r})"
        )
    missing = sorted(scheduler_trial_ids(state) - set(trials))
    if missing:
        raise ValueError(
            f"the {kind} scheduler state names trials {missing} that the restored experiment "
            "does not have"
        )
    if kind == "hyperband":
        _load_hyperband(sub, state, trials)
    elif kind == "asha":
        _load_asha(sub, state)
    elif kind == "pbt":
        _load_pbt(sub, state, trials)


def _need(state: Mapping[str, Any], keys: Iterable[str], what: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{what} state lacks the keys {missing} (have {sorted(state)})")


def _load_hyperband(sub: Any, state: Mapping[str, Any], trials: Mapping[str, Any]) -> None:
    _need(state, ("bands", "band_idx", "current", "num_stopped"), "HyperBand")
    keys = ("n", "r", "cumul_r", "halves", "completed_progress", "all_trials", "live_trials")
    hyperbands, info = [], {}
    current = None
    for b, band in enumerate(state["bands"]):
        out = []
        for s, rec in enumerate(band):
            if rec is None:
                out.append(None)
                continue
            _need(rec, (*keys, "to_unpause"), "HyperBand bracket")
            bracket = sub._create_bracket(s)
            bracket._n = rec["n"]
            bracket._r = rec["r"]
            bracket._cumul_r = rec["cumul_r"]
            bracket._halves = rec["halves"]
            bracket._completed_progress = rec["completed_progress"]
            bracket._all_trials = [trials[tid] for tid in rec["all_trials"]]
            bracket._live_trials = {trials[tid]: res for tid, res in rec["live_trials"]}
            bracket.trials_to_unpause = {trials[tid] for tid in rec["to_unpause"]}
            for t in bracket._all_trials:
                info[t] = (bracket, b)
            if state["current"] == [b, s]:
                current = bracket
            out.append(bracket)
        hyperbands.append(out)
    sub._hyperbands = hyperbands or [[]]
    sub._trial_info = info
    sub._state = {"bracket": current, "band_idx": state["band_idx"]}
    sub._num_stopped = state["num_stopped"]


def _load_asha(sub: Any, state: Mapping[str, Any]) -> None:
    _need(state, ("rungs", "trial_bracket", "counter", "num_stopped"), "ASHA")
    if len(state["rungs"]) != len(sub._brackets):
        raise ValueError(
            f"ASHA state has {len(state['rungs'])} brackets, but the scheduler has "
            f"{len(sub._brackets)}"
        )
    for bracket, rungs in zip(sub._brackets, state["rungs"]):
        bracket._rungs = [(m, dict(rec)) for m, rec in rungs]
    sub._trial_info = {tid: sub._brackets[i] for tid, i in state["trial_bracket"].items()}
    sub._counter = state["counter"]
    sub._num_stopped = state["num_stopped"]


def _load_pbt(sub: Any, state: Mapping[str, Any], trials: Mapping[str, Any]) -> None:
    from ray.tune.schedulers.pbt import _PBTTrialState

    _need(
        state, ("trials", "next_perturbation_sync", "num_checkpoints", "num_perturbations"), "PBT"
    )
    trial_state = {}
    for rec in state["trials"]:
        _need(
            rec,
            (
                "trial_id",
                "orig_tag",
                "last_score",
                "has_checkpoint",
                "last_perturbation_time",
                "last_train_time",
                "last_result",
            ),
            "PBT trial",
        )
        trial = trials[rec["trial_id"]]
        st = _PBTTrialState(trial)
        st.orig_tag = rec["orig_tag"]
        st.last_score = rec["last_score"]
        # the trial's latest persisted checkpoint, restored by Tune with the trial (the
        # comparison trainables checkpoint at every report)
        st.last_checkpoint = trial.checkpoint if rec["has_checkpoint"] else None
        st.last_perturbation_time = rec["last_perturbation_time"]
        st.last_train_time = rec["last_train_time"]
        st.last_result = rec["last_result"]
        trial_state[trial] = st
    sub._trial_state = trial_state
    sub._next_perturbation_sync = state["next_perturbation_sync"]
    sub._num_checkpoints = state["num_checkpoints"]
    sub._num_perturbations = state["num_perturbations"]


def keep_paused(trial: Any) -> None:
    """Mark a trial the resumed experiment re-adds as PENDING as PAUSED again (called from
    ``on_trial_add``, before the controller files it by status): it resumes only when its
    scheduler chooses it, as before the interruption."""
    from ray.tune.experiment import Trial

    trial.set_status(Trial.PAUSED)


def read_experiment_file(trial: Any, name: str) -> str | None:
    """The text of the file ``name`` in the experiment directory of ``trial``'s *storage* (the
    copy Tune synced from the driver's staging directory at its last experiment checkpoint;
    ``Trial.storage``, a DeveloperAPI ``StorageContext``), or ``None`` when there is none. A
    restored experiment gets a new, empty staging directory, and Tune downloads only its own
    ``.json`` / ``.pkl`` files into it."""
    storage = getattr(trial, "storage", None)
    if storage is None:
        return None
    path = f"{storage.experiment_fs_path}/{name}"
    try:
        with storage.storage_filesystem.open_input_stream(path) as f:
            return f.readall().decode()
    except (FileNotFoundError, OSError):
        return None
