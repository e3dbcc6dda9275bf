"""What adalrs_ray.comparison.tune_adapter relies on in Ray Tune: these tests fail when Ray changes it."""

from __future__ import annotations

import ast
import inspect
import json
import re

import pytest
from ray.tune.execution.tune_controller import TuneController
from ray.tune.experiment import Trial
from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    PopulationBasedTraining,
    TrialScheduler,
    async_hyperband,
    hyperband,
    pbt,
)

from adalrs_ray.comparison import tune_adapter as adapter

SUB_SCHEDULER_MODULES = [
    inspect.getmodule(FIFOScheduler),
    hyperband,
    async_hyperband,
    pbt,
]


def test_tune_controller_has_every_attribute_the_sub_schedulers_use():
    assert adapter.missing_controller_api(TuneController) == []


@pytest.mark.parametrize("module", SUB_SCHEDULER_MODULES, ids=lambda m: m.__name__)
def test_tune_schedulers_call_only_the_controller_api_the_view_was_checked_for(module):
    """The filtered view forwards everything, but only CONTROLLER_API is known to exist: a
    scheduler that starts calling something new must be looked at (does it need filtering?)."""
    source = inspect.getsource(module)
    assert "tune_controller" in source, "the hooks' controller parameter was renamed"
    called = set(re.findall(r"tune_controller\.(\w+)", source))
    assert called <= set(adapter.CONTROLLER_API), called - set(adapter.CONTROLLER_API)


@pytest.mark.parametrize("hook, params", sorted(adapter.SCHEDULER_HOOKS.items()))
def test_scheduler_hooks_keep_the_signatures_we_forward(hook, params):
    sig = inspect.signature(getattr(TrialScheduler, hook))
    names = [p for p in sig.parameters if p != "self"]
    assert tuple(names[: len(params)]) == params


@pytest.mark.parametrize(
    "cls", [FIFOScheduler, HyperBandScheduler, AsyncHyperBandScheduler, PopulationBasedTraining]
)
def test_sub_schedulers_implement_the_forwarded_hooks(cls):
    for hook in adapter.SCHEDULER_HOOKS:
        assert callable(getattr(cls, hook))


def test_pbt_exploit_replaces_the_config_object_and_pauses():
    """exploited_trials() detects an exploit by a new config object on a PAUSED trial."""
    source = inspect.getsource(PopulationBasedTraining._exploit)
    assert "trial.set_config(" in source
    assert "pause_trial(" in source
    trial = Trial("__fake", config={"lr": 1.0}, stub=True)
    tokens = adapter.config_tokens([trial])
    trial.set_config({"lr": 2.0})
    assert adapter.exploited_trials([trial], tokens) == []  # not paused: not an exploit
    trial.set_status(Trial.PAUSED)
    assert adapter.exploited_trials([trial], tokens) == [trial]


def test_trial_status_names_and_experiment_path_property():
    assert (Trial.PENDING, Trial.RUNNING, Trial.PAUSED) == ("PENDING", "RUNNING", "PAUSED")
    assert isinstance(inspect.getattr_static(Trial, "local_experiment_path"), property)
    assert adapter.experiment_dir(Trial("__fake", config={}, stub=True)) is None


def test_tune_controller_passes_a_controller_with_get_trials_to_schedulers():
    """TuneController hands schedulers either itself or its wrapper; both must list trials."""
    source = inspect.getsource(TuneController._wrapped)
    for name in ("get_trials", "get_live_trials", "_schedule_trial_save", "pause_trial"):
        assert f'"{name}"' in source


class _Ctl:
    search_alg = "the search alg"

    def __init__(self, trials):
        self.trials = trials

    def get_trials(self):
        return list(self.trials)

    def get_live_trials(self):
        return set(self.trials)


def test_arm_view_filters_trials_and_forwards_the_rest():
    trials = [Trial("__fake", config={}, stub=True) for _ in range(3)]
    members = [trials[0].trial_id, trials[2].trial_id]
    view = adapter.ArmView(_Ctl(trials), lambda: members)
    assert view.get_trials() == [trials[0], trials[2]]
    assert view.get_live_trials() == {trials[0], trials[2]}
    assert view.search_alg == "the search alg"
    members.append(trials[1].trial_id)  # bound later: seen at the next call
    assert view.get_trials() == trials


COMPARISON_DIR = inspect.getsourcefile(adapter).rsplit("/", 1)[0]


@pytest.mark.parametrize("name", ["scheduler", "accounting", "logs", "reporter", "__init__"])
def test_only_the_adapter_touches_private_attributes(name):
    """Private attributes of Tune's objects (``trial._x``, ``controller._y``) are used in
    tune_adapter.py only; elsewhere only ``self._x`` (and ``cls._x``)."""
    with open(f"{COMPARISON_DIR}/{name}.py") as f:
        tree = ast.parse(f.read())
    private = [
        f"{ast.unparse(node.value)}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]
    assert private == []


# ---------------------------------------------------------------------- scheduler state
def _drive(sub, trials, results):
    """Add ``trials`` to ``sub`` and feed it ``results`` ((index, iteration, val_loss))."""
    ctl = _StateCtl(trials)
    for t in trials:
        sub.on_trial_add(ctl, t)
    for i, it, loss in results:
        trials[i].set_status(Trial.RUNNING)
        d = sub.on_trial_result(
            ctl, trials[i], {"training_iteration": it, "val_loss": loss, "done": False}
        )
        if d == "PAUSE":
            trials[i].set_status(Trial.PAUSED)
        elif d == "STOP":
            sub.on_trial_complete(ctl, trials[i], {})
            trials[i].set_status(Trial.TERMINATED)
    return ctl


class _StateCtl:
    search_alg = None

    def __init__(self, trials):
        self.trials = trials

    def get_trials(self):
        return list(self.trials)

    def get_live_trials(self):
        return {t for t in self.trials if not t.is_finished()}

    def pause_trial(self, trial, should_checkpoint=True):
        trial.set_status(Trial.PAUSED)

    def stop_trial(self, trial):
        trial.set_status(Trial.TERMINATED)

    def _schedule_trial_save(self, trial, result=None):
        from ray import tune

        return tune.Checkpoint("/nonexistent/ckpt")


class _CkptTrial(Trial):
    """A re-created trial with its persisted checkpoint, as Tune restores it."""

    @property
    def checkpoint(self):
        from ray import tune

        return tune.Checkpoint("/nonexistent/ckpt")


def _schedulers():
    from ray import tune
    from ray.tune.schedulers import (
        ASHAScheduler,
        FIFOScheduler,
        HyperBandScheduler,
        PopulationBasedTraining,
    )

    kw = {"metric": "val_loss", "mode": "min"}
    return {
        "fifo": FIFOScheduler,
        "hyperband": lambda: HyperBandScheduler(max_t=4, reduction_factor=2, **kw),
        "asha": lambda: ASHAScheduler(max_t=4, grace_period=1, reduction_factor=2, **kw),
        "pbt": lambda: PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=1,
            hyperparam_mutations={"lr": tune.loguniform(1e-4, 1e-1)},
            quantile_fraction=0.5,
            log_config=False,
            **kw,
        ),
    }


@pytest.mark.parametrize("kind", ["fifo", "hyperband", "asha", "pbt"])
def test_scheduler_state_survives_new_trial_objects(kind):
    """The private attributes the state capture reads and writes exist in the installed Ray,
    and a state put into a fresh scheduler with new Trial objects (same ids) reads back the
    same: the test fails when Ray renames or restructures them."""
    make = _schedulers()[kind]
    trials = [Trial("__fake", config={"lr": 1e-3 * (i + 1)}, stub=True) for i in range(4)]
    results = [(0, 1, 3.0), (1, 1, 2.0), (2, 1, 4.0), (3, 1, 1.0), (1, 2, 1.5), (3, 2, 0.9)]
    old = make()
    _drive(old, trials, results)
    state = adapter.scheduler_state(old)
    assert state["kind"] == kind
    assert state == json.loads(json.dumps(state))  # plain data
    fresh = [
        _CkptTrial("__fake", config=dict(t.config), stub=True, trial_id=t.trial_id) for t in trials
    ]
    new = make()
    adapter.load_scheduler_state(new, state, {t.trial_id: t for t in fresh})
    assert adapter.scheduler_state(new) == state
    if kind == "hyperband":
        assert set(new._trial_info) == set(fresh)
    if kind == "pbt":
        assert set(new._trial_state) == set(fresh)


def test_scheduler_state_of_an_unknown_scheduler_is_none():
    from ray.tune.schedulers import FIFOScheduler

    class Own(FIFOScheduler):
        def on_trial_result(self, tune_controller, trial, result):
            return "CONTINUE"

    assert adapter.scheduler_state(Own()) is None


def test_scheduler_state_of_another_kind_is_refused():
    scheds = _schedulers()
    state = adapter.scheduler_state(scheds["hyperband"]())
    with pytest.raises(ValueError, match="kind 'hyperband'"):
        adapter.load_scheduler_state(scheds["pbt"](), state, {})
    with pytest.raises(ValueError, match="version"):
        adapter.load_scheduler_state(scheds["hyperband"](), {**state, "version": 99}, {})


def test_keep_paused_marks_a_pending_trial_paused():
    trial = Trial("__fake", config={}, stub=True)
    adapter.keep_paused(trial)
    assert trial.status == Trial.PAUSED
