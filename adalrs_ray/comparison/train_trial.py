"""A Ray Train V2 ``TorchTrainer`` per Tune trial: the plumbing that makes it a comparison trial.

``tune.Tuner(TorchTrainer(...))`` is refused with Train V2, and Ray's
``ray.tune.integration.ray_train.TuneReportCallback`` forwards metrics but no Tune checkpoint, so
PBT skips every exploit. :func:`run_train_trial`, called inside a Tune function trainable, does
the plumbing instead (docs/tune.md, "How PBT and HyperBand restarts work with Train V2 inside
Tune"; the shared RAY_NOTES):

* a new Train run name per trial start; the trial's ``tune.get_checkpoint()`` (PBT's donor's, or
  the trial's own at a HyperBand resume) goes to the workers in their config under
  ``resume_key``; a start whose checkpoint is already at the end of the run
  (:data:`PROGRESS_FILE`) launches no Train run;
* :class:`TuneForwarder`, a Train ``UserCallback`` on the Train controller, hands rank 0's
  ``(metrics, checkpoint)`` of every report to the Tune function through a
  ``ray.util.queue.Queue`` and waits until Tune has taken it (lock-step: a trial paused or
  stopped by Tune trained nothing it did not report); the function reports them with
  ``tune.report(..., checkpoint=tune.Checkpoint(path, filesystem))``;
* ``CheckpointConfig(num_to_keep=None)``; the Train copy of a checkpoint is removed once the next
  one is in Tune's storage, the run's directory at the end;
* a PAUSE or STOP kills the Train controller and removes the workers' placement group;
  :class:`TrainPlacementGroupReaper` (a ``tune.Callback``) removes any left by a trial process
  that died first (the workers report their group as :data:`PLACEMENT_GROUP_METRIC`).

:class:`~adalrs_ray.comparison.AdaLRSTrial` in the workers (``RESUME_KEY``, the progress file,
the placement group) and :mod:`train_loops.trainables.lm_torchtrainer` (the LM task) use it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ray import tune
from ray.train import UserCallback

from adalrs_ray.comparison.trial import PLACEMENT_GROUP_METRIC, PROGRESS_FILE, RESUME_KEY
from adalrs_ray.core.checks import check, is_number

logger = logging.getLogger(__name__)

__all__ = [
    "PLACEMENT_GROUP_METRIC",
    "PROGRESS_FILE",
    "RESUME_KEY",
    "TrainPlacementGroupReaper",
    "TuneForwarder",
    "checkpoint_finished",
    "run_train_trial",
]

_POLL_S = 0.5


# ---------------------------------------------------------------------- Train -> Tune
class TuneForwarder(UserCallback):
    """Train V2 callback (on the Train controller) handing each report to the Tune function.

    ``after_report`` puts ``{"metrics": rank 0's metrics, "checkpoint": the persisted Train
    checkpoint or None, "controller": this controller's actor handle}`` into ``results`` and then
    waits for one item on ``acks``: the Tune function acknowledges once ``tune.report`` returned,
    i.e. once Tune has copied the checkpoint and decided to let the trial go on. Until then the
    workers wait at their next report, so a trial paused or stopped by Tune has trained nothing
    it did not report (no uncounted compute).
    """

    def __init__(self, results: Any, acks: Any) -> None:
        self.results = results
        self.acks = acks

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any):
        import ray

        item = {
            "metrics": dict(metrics[0]),
            "checkpoint": checkpoint,
            "controller": ray.get_runtime_context().current_actor,
        }
        self.results.put(item)
        self.acks.get()


class _FitThread(threading.Thread):
    """Runs ``trainer.fit()``; keeps its result or exception."""

    def __init__(self, trainer: Any) -> None:
        super().__init__(name="adalrs-torchtrainer-fit", daemon=True)
        self.trainer = trainer
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.trainer.fit()
        except BaseException as exc:  # handed to the Tune function, which raises it
            self.error = exc


def _delete(fs: Any, path: str) -> None:
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # never fail a trial over a leftover Train checkpoint
        logger.warning("could not remove %s: %s", path, exc)


def _remove_placement_group(pg_hex: str | None) -> bool:
    """Remove the placement group with this hex id if it still exists; True if removed."""
    if not pg_hex:
        return False
    import ray
    from ray.util.placement_group import PlacementGroup, placement_group_table

    info = placement_group_table().get(pg_hex)
    if info is None or info.get("state") == "REMOVED":
        return False
    try:
        ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(pg_hex)))
    except Exception as exc:  # removed meanwhile (Train's own cleaner)
        logger.debug("placement group %s: %s", pg_hex, exc)
        return False
    return True


def checkpoint_finished(checkpoint: Any) -> bool:
    """True if the Tune checkpoint's run has no step left (its progress file says so)."""
    try:
        with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{PROGRESS_FILE}") as f:
            progress = json.loads(f.read())
    except (FileNotFoundError, OSError, ValueError):
        return False
    return int(progress["next_step"]) >= int(progress["steps"])


def _train_storage(path: str | None) -> tuple[str, Any]:
    """``(storage_path, filesystem)`` for the Train run: ``path``, or the trial's own Tune storage
    (``<trial dir>/train_runs``), which every node of the cluster can reach."""
    if path is not None:
        if "://" not in path:
            path = os.path.abspath(os.path.expanduser(path))  # trials chdir into their directory
        return path, None
    storage = tune.get_context().get_storage()  # DeveloperAPI: the trial's storage paths
    return f"{storage.trial_fs_path}/train_runs", storage.storage_filesystem


def run_train_trial(
    train_loop_per_worker: Callable[[dict[str, Any]], Any],
    train_loop_config: dict[str, Any] | None = None,
    *,
    scaling_config: Any,
    storage_path: str | None = None,
    max_failures: int = 0,
    callbacks: Sequence[Any] = (),
    resume_key: str = RESUME_KEY,
) -> None:
    """Run one start of a Tune trial as a Ray Train V2 ``TorchTrainer``; call it inside a Tune
    function trainable. Returns when the Train run ends; raises its error.

    Args:
        train_loop_per_worker: the workers' function. It resumes from
            ``ray.train.get_checkpoint()`` (a restart of this Train run) or else from
            ``config[resume_key]`` (the trial's Tune checkpoint, or ``None``), reports with
            ``ray.train.report`` (rank 0's metrics and checkpoint reach Tune) and, for
            :class:`TrainPlacementGroupReaper`, may report :data:`PLACEMENT_GROUP_METRIC`.
            :class:`~adalrs_ray.comparison.AdaLRSTrial` does all of it.
        train_loop_config: the workers' config (e.g. the trial config); ``resume_key`` is added.
        scaling_config: the ``ray.train.ScalingConfig`` (workers, resources per worker).
        storage_path: where the Train run keeps its checkpoints; ``None``: the trial's storage.
        max_failures: Train-level restarts of a failed worker group (0: Tune's
            ``FailureConfig`` retries the trial from its checkpoint, counted by the comparison).
        callbacks: further Train ``UserCallback`` objects.
        resume_key: the workers' config key of the Tune checkpoint.

    The trial's own process only waits: reserve little for it (``tune.with_resources``) and let
    the workers' placement group, asked for once the trial runs, hold the resources
    (docs/tune.md, Resources).
    """
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Empty, Queue

    check(
        callable(train_loop_per_worker),
        f"train_loop_per_worker is {train_loop_per_worker!r}, but must be a function",
    )
    check(
        isinstance(max_failures, int) and not isinstance(max_failures, bool) and max_failures >= 0,
        f"max_failures is {max_failures!r}, but must be an integer >= 0",
    )
    checkpoint = tune.get_checkpoint()
    context = tune.get_context()
    if checkpoint is not None and checkpoint_finished(checkpoint):
        # e.g. synchronous PBT pausing or exploiting at the last report: nothing left to train,
        # so no Train run (the in-process trainable also returns without a report here)
        logger.info("trial %s: its checkpoint is at the end of the run", context.get_trial_id())
        return
    run_name = f"{context.get_trial_id()}-{uuid.uuid4().hex[:8]}"  # a new Train run per start
    storage_path, storage_fs = _train_storage(storage_path)
    results = Queue(maxsize=1, actor_options={"num_cpus": 0})
    acks = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={**dict(train_loop_config or {}), resume_key: checkpoint},
        scaling_config=scaling_config,
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            # never let Train delete a checkpoint Tune has not copied yet; removed below instead
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=None),
            callbacks=[TuneForwarder(results, acks), *callbacks],
        ),
    )
    logger.info(
        "trial %s: Train run %s, %s, %s",
        context.get_trial_id(),
        run_name,
        scaling_config,
        "resumed from a Tune checkpoint" if checkpoint is not None else "fresh start",
    )
    fit = _FitThread(trainer)
    controller = placement_group = None
    previous = None  # the Train checkpoint reported last (its Tune copy exists)
    finished = False
    fit.start()
    try:
        while True:
            try:
                item = results.get(timeout=_POLL_S)
            except Empty:
                if fit.is_alive():
                    continue
                try:  # reported between the check and the thread's end
                    item = results.get_nowait()
                except Empty:
                    break
            controller = item["controller"]
            metrics = item["metrics"]
            placement_group = metrics.get(PLACEMENT_GROUP_METRIC) or placement_group
            ckpt = item["checkpoint"]
            tune_ckpt = tune.Checkpoint(ckpt.path, ckpt.filesystem) if ckpt is not None else None
            # blocks until Tune asks for the next result; a PAUSE or STOP raises SystemExit here
            tune.report(metrics, checkpoint=tune_ckpt)
            if ckpt is not None:
                if previous is not None:
                    _delete(previous.filesystem, previous.path)
                previous = ckpt
            acks.put(True)
        fit.join()
        if fit.error is not None:
            raise fit.error
        finished = True
    finally:
        if not finished and fit.is_alive():
            # Tune stopped this trial (PAUSE/STOP) or reporting failed: end the Train run now
            # (killing the controller ends its workers; its placement group outlives it)
            if controller is not None:
                ray.kill(controller, no_restart=True)
            if _remove_placement_group(placement_group):
                logger.info("trial stopped: removed placement group %s", placement_group)
        for q in (results, acks):
            q.shutdown(force=True)
        fs = storage_fs
        if fs is None:
            import pyarrow.fs

            fs, base = pyarrow.fs.FileSystem.from_uri(storage_path)
        else:
            base = storage_path
        # every checkpoint reported is in Tune's storage. Remove this start's Train run and any
        # left by earlier starts of this trial: a Train controller killed on PAUSE can still
        # write a checkpoint after its start removed its own run (seen in a CI run)
        try:
            fs.delete_dir_contents(base, missing_dir_ok=True)
        except OSError as exc:  # never fail a trial over a leftover Train checkpoint
            logger.warning("could not clean %s (run %s): %s", base, run_name, exc)


# ---------------------------------------------------------------------- placement-group reaper
class TrainPlacementGroupReaper(tune.Callback):
    """Removes placement groups of Train runs whose trial no longer runs them.

    A safety net for :func:`lm_torchtrainer_trainable`: the trial function removes its Train
    run's placement group when Tune stops it, and Ray Train's own cleaner does when the dashboard
    (state API) is on; when the trial's process dies first and the dashboard is off, the group
    stays reserved (0.4-1 CPU per restart here, until the cluster hangs; shared RAY_NOTES). This
    callback learns each trial's current group from :data:`PLACEMENT_GROUP_METRIC` in its
    results; a group becomes stale when its trial (re)starts, reports another group, or is seen
    not RUNNING; a stale group still present ``grace_s`` seconds later is removed. Every group
    still known is removed at the end of the experiment.

    Example::

        tune.RunConfig(callbacks=[TrainPlacementGroupReaper()])
    """

    def __init__(self, grace_s: float = 5.0) -> None:
        check(
            is_number(grace_s) and grace_s >= 0,
            f"grace_s is {grace_s!r}, but must be a number of seconds >= 0",
        )
        self.grace_s = float(grace_s)
        self._current: dict[str, str] = {}  # trial_id -> its current group
        self._stale: dict[str, float] = {}  # group -> monotonic time it went stale
        self.removed: list[str] = []

    def _retire(self, trial_id: str) -> None:
        pg = self._current.pop(trial_id, None)
        if pg is not None:
            self._stale.setdefault(pg, time.monotonic())

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._retire(trial.trial_id)  # a new start makes a new Train run

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        pg = result.get(PLACEMENT_GROUP_METRIC)
        if not isinstance(pg, str) or not pg:
            return
        if self._current.get(trial.trial_id) != pg:
            self._retire(trial.trial_id)
            self._current[trial.trial_id] = pg
            self._stale.pop(pg, None)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._retire(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._retire(trial.trial_id)

    def on_step_end(self, iteration, trials, **info) -> None:
        for trial in trials:
            if trial.trial_id in self._current and trial.status != "RUNNING":
                self._retire(trial.trial_id)
        self.reap()

    def on_experiment_end(self, trials, **info) -> None:
        for trial_id in list(self._current):
            self._retire(trial_id)
        self.reap(grace_s=0.0)

    def reap(self, grace_s: float | None = None) -> list[str]:
        """Remove the stale groups older than ``grace_s`` (default: the constructor's)."""
        grace = self.grace_s if grace_s is None else grace_s
        now, done = time.monotonic(), []
        for pg, since in list(self._stale.items()):
            if now - since < grace:
                continue
            del self._stale[pg]
            if _remove_placement_group(pg):
                logger.warning("removed placement group %s left by a stopped Train run", pg)
                done.append(pg)
        self.removed.extend(done)
        return done
