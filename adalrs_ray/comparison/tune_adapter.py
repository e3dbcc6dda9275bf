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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
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
