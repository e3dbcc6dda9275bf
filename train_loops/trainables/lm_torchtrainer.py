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
HyperBand pauses), see the shared RAY_NOTES and docs/tune.md; it lives in
:func:`adalrs_ray.comparison.train_trial.run_train_trial`, which any model's trial can use
(:class:`~adalrs_ray.comparison.AdaLRSTrial` in the workers), and is re-exported here:

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
from collections.abc import Mapping
from typing import Any

from adalrs_ray.comparison.train_trial import (
    PLACEMENT_GROUP_METRIC,
    PROGRESS_FILE,
    TrainPlacementGroupReaper,
    TuneForwarder,
    run_train_trial,
)
from adalrs_ray.comparison.train_trial import (  # noqa: F401  (its old private name)
    checkpoint_finished as _finished,
)
from adalrs_ray.core.checks import check, check_choice, check_int, check_number, is_number
from adalrs_ray.ray_train import SNAPSHOT_STORES, LostSnapshotPolicy
from train_loops.lm_ray_train import run_lm_worker, worker_scaling_config
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
# config keys of this trainable (all others: the comparison keys and LMConfig fields)
TRAIN_KEYS = (
    "workers",
    "cpus_per_worker",
    "use_gpu",
    "gpus_per_worker",
    "resources_per_worker",
    "snapshot_store",
    "max_failures",
    "train_storage_path",
    "health_check_interval_s",
    "on_lost_snapshot",
)


def check_train_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """Split and validate a trial config: ``(train settings, LMConfig)``.

    Train settings (defaults): ``workers`` (2), ``cpus_per_worker`` (1.0; fractions allowed),
    ``use_gpu`` (``None``: GPUs when the cluster has any GPU), ``gpus_per_worker`` (``None``:
    1 when GPUs are used; ``0``: none, > 0 turns ``use_gpu`` on; fractions allowed),
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
        "gpus_per_worker": config.get("gpus_per_worker"),
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
    gpus = s["gpus_per_worker"]
    check_number("gpus_per_worker", gpus, low=0, strict=False, optional=True)
    if gpus is not None:
        check(
            s["use_gpu"] is None or s["use_gpu"] == (gpus > 0),
            f"use_gpu is {s['use_gpu']!r} and gpus_per_worker is {gpus!r}, but GPUs are used "
            "exactly when gpus_per_worker > 0: give one of the two, or agreeing values",
        )
        s["use_gpu"] = gpus > 0
    res = s["resources_per_worker"]
    check(
        isinstance(res, Mapping)
        and all(isinstance(k, str) and is_number(v) and v >= 0 for k, v in res.items())
        and not {"CPU", "GPU"} & set(res),
        f"resources_per_worker is {res!r}, but must map resource names other than CPU and GPU "
        "(set by cpus_per_worker, use_gpu and gpus_per_worker) to numbers >= 0",
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

    settings, lm = check_train_config(config)
    workers = settings["workers"]
    if settings["health_check_interval_s"] is not None:
        # read by the Train controller this process starts (Train propagates it to it)
        os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = str(settings["health_check_interval_s"])
    use_gpu = settings["use_gpu"]
    if use_gpu is None:
        use_gpu = float(ray.cluster_resources().get("GPU", 0)) > 0
    scaling = worker_scaling_config(
        workers,
        use_gpu,
        settings["cpus_per_worker"],
        settings["gpus_per_worker"],
        extra=settings["resources_per_worker"],
    )
    # a new Train run per trial start, resumed from the trial's Tune checkpoint, its reports
    # forwarded to Tune in lock-step (adalrs_ray.comparison.train_trial)
    run_train_trial(
        lm_torchtrainer_worker_loop,
        {"lm": lm.to_dict(), "snapshot_store": settings["snapshot_store"]},
        scaling_config=scaling,
        storage_path=settings["train_storage_path"],
        max_failures=settings["max_failures"],
        callbacks=[LostSnapshotPolicy(settings["on_lost_snapshot"])],
        resume_key="resume_from",
    )
