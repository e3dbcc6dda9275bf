"""A Tune trainable that trains each trial on several Ray Train V2 workers (a ``TorchTrainer``).

:func:`lm_torchtrainer_trainable` is the multi-worker twin of
:func:`train_loops.trainables.lm_trainable`: the same LM task (:mod:`train_loops.lm`), the same
comparison contract (docs/tune.md: ``lr``, ``total_steps``, ``report_every``, ``adalrs`` in, the
metric keys of docs/design.md out at every report, with a checkpoint), the same checkpoint format,
but each trial launches a ``TorchTrainer`` with ``workers`` data-parallel workers. AdaLRS (Dong et
al., NeurIPS 2025, arXiv 2506.13274) runs inside the workers exactly as in
:func:`train_loops.lm_ray_train.lm_train_loop_per_worker`: every rank feeds the controller the mean loss
(:func:`adalrs_ray.ray_train.reduce_mean`) and snapshots/restores its own state.

Train V2 inside Tune needs its own plumbing for the arms that restart trials (PBT exploits,
HyperBand pauses), see the shared RAY_NOTES and docs/tune.md:

* :class:`TuneForwarder`, a Train ``UserCallback`` on the Train controller, hands rank 0's
  ``(metrics, checkpoint)`` of every report to the Tune function through a
  ``ray.util.queue.Queue`` and waits until Tune has taken the result (lock-step: a trial that Tune
  pauses or stops has trained nothing past its last report, as with the in-process trainable);
  the Tune function reports them with ``tune.report(..., checkpoint=tune.Checkpoint(path, fs))``,
  so PBT and HyperBand see real Tune checkpoints.
* On (re)start the Tune function passes ``tune.get_checkpoint()`` to the workers, which load it
  and then set the trial's LR again (the optimizer state brings back the old one); each start is a
  new Train run name; ``CheckpointConfig(num_to_keep=None)`` and the Train copy of a checkpoint is
  removed only after Tune copied the next one into the trial's storage.
* When Tune stops the trial function (PAUSE, STOP), it kills its Train controller and removes the
  workers' placement group; :class:`TrainPlacementGroupReaper` (a ``tune.Callback``) removes any
  such placement group left behind by a trial process that died first.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from ray import tune
from ray.train import UserCallback

from adalrs_ray.core.checks import check, check_choice, check_int, check_number, is_number
from adalrs_ray.ray_train import SNAPSHOT_STORES, LostSnapshotPolicy
from train_loops.lm_ray_train import run_lm_worker
from train_loops.trainables.lm import lm_config_from_trial

logger = logging.getLogger(__name__)

__all__ = [
    "NAME",
    "PLACEMENT_GROUP_METRIC",
    "TRAIN_KEYS",
    "TrainPlacementGroupReaper",
    "TuneForwarder",
    "check_train_config",
    "lm_torchtrainer_trainable",
    "lm_torchtrainer_worker_loop",
]

NAME = "lm_torchtrainer"  # the name in train_loops.trainables.TRAINABLES
# the hex id of the placement group of the trial's current Train run, in every report
PLACEMENT_GROUP_METRIC = "train_placement_group"
# config keys of this trainable (all others: the comparison keys and LMConfig fields)
TRAIN_KEYS = (
    "workers",
    "cpus_per_worker",
    "use_gpu",
    "resources_per_worker",
    "snapshot_store",
    "max_failures",
    "train_storage_path",
    "health_check_interval_s",
    "on_lost_snapshot",
)
_POLL_S = 0.5
# written by rank 0 into each checkpoint: where the run stands (read without loading the state)
PROGRESS_FILE = "adalrs_tune_progress.json"


def check_train_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """Split and validate a trial config: ``(train settings, LMConfig)``.

    Train settings (defaults): ``workers`` (2), ``cpus_per_worker`` (1.0; fractions allowed),
    ``use_gpu`` (``None``: one GPU per worker when the cluster has any GPU),
    ``resources_per_worker`` (``{}``: further resources per worker, e.g. ``{"NPU": 1}``),
    ``snapshot_store`` (``"memory"`` or ``"object_store"``), ``max_failures`` (0: a worker error
    fails the trial and Tune's own ``FailureConfig`` decides, so the comparison counts the
    retry), ``on_lost_snapshot`` (``"checkpoint"`` or ``"fail"``), ``train_storage_path``
    (``None``: inside the trial's Tune storage), ``health_check_interval_s`` (``None``: Ray's
    default; Train V2 forwards at most one report per interval). Every other key goes to
    :func:`train_loops.trainables.lm_config_from_trial`. Raises ``ValueError`` naming the key,
    the value and the rule; call it before Ray starts to fail early.
    """
    s = {
        "workers": config.get("workers", 2),
        "cpus_per_worker": config.get("cpus_per_worker", 1.0),
        "use_gpu": config.get("use_gpu"),
        "resources_per_worker": config.get("resources_per_worker") or {},
        "snapshot_store": config.get("snapshot_store", "memory"),
        "max_failures": config.get("max_failures", 0),
        "on_lost_snapshot": config.get("on_lost_snapshot", "checkpoint"),
        "train_storage_path": config.get("train_storage_path"),
        "health_check_interval_s": config.get("health_check_interval_s"),
    }

    check_int("workers", s["workers"], 1)
    check_number("cpus_per_worker", s["cpus_per_worker"], low=0)
    check(
        s["use_gpu"] is None or isinstance(s["use_gpu"], bool),
        f"use_gpu is {s['use_gpu']!r}, but must be None (auto), True or False",
    )
    res = s["resources_per_worker"]
    check(
        isinstance(res, Mapping)
        and all(isinstance(k, str) and is_number(v) and v >= 0 for k, v in res.items())
        and not {"CPU", "GPU"} & set(res),
        f"resources_per_worker is {res!r}, but must map resource names other than CPU and GPU "
        "(set by cpus_per_worker and use_gpu) to numbers >= 0",
    )
    check_choice("snapshot_store", s["snapshot_store"], SNAPSHOT_STORES)
    check_int("max_failures", s["max_failures"], 0)
    LostSnapshotPolicy(s["on_lost_snapshot"])  # validates
    check(
        s["train_storage_path"] is None
        or (isinstance(s["train_storage_path"], str) and s["train_storage_path"]),
        f"train_storage_path is {s['train_storage_path']!r}, but must be None or a path/URI",
    )
    check_number("health_check_interval_s", s["health_check_interval_s"], low=0, optional=True)
    rest = {k: v for k, v in config.items() if k not in TRAIN_KEYS}
    try:
        lm = lm_config_from_trial(rest, out_dir=None)
    except ValueError as exc:
        raise ValueError(f"{NAME}: {exc} (or this trainable's keys {list(TRAIN_KEYS)})") from exc
    return s, lm


# ---------------------------------------------------------------------- Train workers
def lm_torchtrainer_worker_loop(config: dict[str, Any]) -> dict[str, Any]:
    """``train_loop_per_worker`` of one trial start: :class:`train_loops.lm.LMTrainer` on a worker.

    ``config``: ``{"lm": LMConfig.to_dict(), "snapshot_store": str, "resume_from": the Tune
    checkpoint or None}``. Resumes from ``ray.train.get_checkpoint()`` (a restart of this Train
    run) or else from ``resume_from`` (the Tune trial's checkpoint: a PBT exploit, a HyperBand
    resume), then makes the config's ``lr`` the base LR again (PBT's explore changes it). Each
    report carries the LM window metrics (increments over all workers), ``world_size`` and
    :data:`PLACEMENT_GROUP_METRIC`; rank 0 attaches its checkpoint with :data:`PROGRESS_FILE`.
    (:func:`train_loops.lm_ray_train.run_lm_worker` with these additions.)
    """
    import ray.util

    pg = ray.util.get_current_placement_group()

    def add_progress(trainer: Any, checkpoint_dir: str) -> None:
        progress = {"next_step": int(trainer.step), "steps": int(trainer.cfg.steps)}
        with open(os.path.join(checkpoint_dir, PROGRESS_FILE), "w") as f:
            json.dump(progress, f)

    return run_lm_worker(
        config,
        fallback_checkpoint=config.get("resume_from"),
        extra_metrics={PLACEMENT_GROUP_METRIC: pg.id.hex() if pg else None},
        on_checkpoint=add_progress,
    )


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


def _train_storage(settings: dict[str, Any], run_name: str) -> tuple[str, Any]:
    """``(storage_path, filesystem)`` for the Train run: ``train_storage_path``, or the trial's
    own Tune storage (``<trial dir>/train_runs``), which every node of the cluster can reach."""
    if settings["train_storage_path"] is not None:
        path = settings["train_storage_path"]
        if "://" not in path:
            path = os.path.abspath(os.path.expanduser(path))  # trials chdir into their directory
        return path, None
    storage = tune.get_context().get_storage()  # DeveloperAPI: the trial's storage paths
    return f"{storage.trial_fs_path}/train_runs", storage.storage_filesystem


def _finished(checkpoint: Any) -> bool:
    """True if the Tune checkpoint's run has no step left (its progress file says so)."""
    try:
        with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{PROGRESS_FILE}") as f:
            progress = json.loads(f.read())
    except (FileNotFoundError, OSError, ValueError):
        return False
    return int(progress["next_step"]) >= int(progress["steps"])


def lm_torchtrainer_trainable(config: dict[str, Any]) -> None:
    """The LM task trained by a Ray Train V2 ``TorchTrainer`` per trial (``workers`` workers).

    A Tune function trainable following the comparison contract (docs/tune.md), registered as
    ``"lm_torchtrainer"``. ``get_trainable("lm_torchtrainer", cpu=c)``: the trial's own process
    only waits, but Tune admits trials by ``c`` alone while the workers reserve
    ``cpus_per_worker`` each in their own placement group once the trial runs; choose ``c`` so
    that no more trials are admitted than worker groups fit (docs/tune.md, Resources).
    Config keys: see :func:`check_train_config`. Each report is rank 0's window metrics (keys of
    docs/design.md; ``worker_s_done`` = wall seconds x workers) plus ``world_size`` and
    :data:`PLACEMENT_GROUP_METRIC`, with the LM checkpoint of that step as the trial's Tune
    checkpoint (the same format as ``lm_trainable``'s).
    """
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Empty, Queue

    settings, lm = check_train_config(config)
    workers = settings["workers"]
    if settings["health_check_interval_s"] is not None:
        # read by the Train controller this process starts (Train propagates it to it)
        os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = str(settings["health_check_interval_s"])
    use_gpu = settings["use_gpu"]
    if use_gpu is None:
        use_gpu = float(ray.cluster_resources().get("GPU", 0)) > 0
    resources = {"CPU": float(settings["cpus_per_worker"]), **settings["resources_per_worker"]}
    if use_gpu:
        resources["GPU"] = 1

    checkpoint = tune.get_checkpoint()
    context = tune.get_context()
    if checkpoint is not None and _finished(checkpoint):
        # e.g. synchronous PBT pausing or exploiting at the last report: nothing left to train,
        # so no Train run (the in-process trainable also returns without a report here)
        logger.info("trial %s: its checkpoint is at the end of the run", context.get_trial_id())
        return
    run_name = f"{context.get_trial_id()}-{uuid.uuid4().hex[:8]}"  # a new Train run per start
    storage_path, storage_fs = _train_storage(settings, run_name)
    results = Queue(maxsize=1, actor_options={"num_cpus": 0})
    acks = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        lm_torchtrainer_worker_loop,
        train_loop_config={
            "lm": lm.to_dict(),
            "snapshot_store": settings["snapshot_store"],
            "resume_from": checkpoint,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=ray.train.FailureConfig(max_failures=settings["max_failures"]),
            # never let Train delete a checkpoint Tune has not copied yet; removed below instead
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=None),
            callbacks=[
                TuneForwarder(results, acks),
                LostSnapshotPolicy(settings["on_lost_snapshot"]),
            ],
        ),
    )
    logger.info(
        "trial %s: Train run %s, %d workers (%s each), %s",
        context.get_trial_id(),
        run_name,
        workers,
        resources,
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
