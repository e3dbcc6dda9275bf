"""The LM task of :mod:`train_loops.lm` on Ray Train V2 workers, with AdaLRS through
:class:`adalrs_ray.ray_train.AdaLRSTrainContext`'s primitives.

:func:`lm_train_loop_per_worker` is a ``train_loop_per_worker``; :func:`run_lm_worker` its body
for loops that add to it (the Tune trial that launches a TorchTrainer); :func:`run_lm_trainer`
builds and runs the ``TorchTrainer`` (``adalrs-ray train --workers N``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from adalrs_ray.core.checks import check, check_choice, check_int, check_number, is_integer
from adalrs_ray.ray_train import (
    SNAPSHOT_STORES,
    LostSnapshotPolicy,
    default_store_key,
    make_snapshot_store,
    reduce_mean,
)

logger = logging.getLogger(__name__)

__all__ = [
    "lm_train_loop_per_worker",
    "run_lm_trainer",
    "run_lm_worker",
    "worker_scaling_config",
]


def lm_train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """``train_loop_per_worker`` running :class:`train_loops.lm.LMTrainer` on a Ray Train worker.

    ``config``: ``{"lm": LMConfig.to_dict(), "snapshot_store": "memory" | "object_store"}``.
    The LM loop averages each step's loss with :func:`reduce_mean` (its only per-step
    collective besides DDP's gradient all-reduce), reports its window metrics and a checkpoint
    (written by rank 0: the LM task is data parallel, so rank 0's model, optimizer and AdaLRS
    snapshot are every rank's) at every report, and resumes from ``ray.train.get_checkpoint()``.
    Returns the LM summary (rank 0's becomes ``Result.return_value``).
    """
    return run_lm_worker(config)


def run_lm_worker(
    config: dict[str, Any],
    *,
    fallback_checkpoint: Any = None,
    extra_metrics: dict[str, Any] | None = None,
    on_checkpoint: Callable[[Any, str], None] | None = None,
) -> dict[str, Any]:
    """The body of an LM ``train_loop_per_worker``, for loops that add to it (the Tune trial
    that launches a TorchTrainer uses it; :func:`lm_train_loop_per_worker` is it bare).

    Args:
        config: as for :func:`lm_train_loop_per_worker`.
        fallback_checkpoint: a ``ray.train.Checkpoint`` to resume from when this Train run has
            none of its own (``ray.train.get_checkpoint()`` is None), e.g. a Tune trial's.
        extra_metrics: added to every report.
        on_checkpoint: ``f(trainer, checkpoint_dir)``, called on rank 0 before a checkpoint
            directory is reported (to add files to it).

    After a resume, ``config["lm"]["lr"]`` becomes the base LR again
    (:meth:`~train_loops.lm.LMTrainer.set_base_lr`: PBT's explore changes it between
    restarts). The snapshot store is cleared on a fresh start (no Train checkpoint) and at the end.
    """
    import ray.train
    import ray.train.torch

    from train_loops.lm import LMConfig, LMTrainer, LoopHooks

    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    cfg = LMConfig.from_dict(dict(config["lm"]))
    lr = float(cfg.lr)
    extra = dict(extra_metrics or {}, world_size=world_size)
    store = make_snapshot_store(config.get("snapshot_store", "memory"), key=default_store_key())
    trainer = None

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        checkpoint = None
        if checkpoint_dir:
            if on_checkpoint is not None:
                on_checkpoint(trainer, checkpoint_dir)
            checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir)
        ray.train.report(dict(metrics, **extra), checkpoint=checkpoint)

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        if world_size == 1:
            return model
        return ray.train.torch.prepare_model(model, move_to_device=False)

    hooks = LoopHooks(
        rank=rank,
        world_size=world_size,
        reduce_mean=reduce_mean,
        report=report,
        snapshot_store=store,
        wrap_model=wrap,
        device=ray.train.torch.get_device(),
        checkpoint_on_report=True,
    )
    source = ray.train.get_checkpoint()
    if source is None:
        store.clear()  # a fresh start: drop what an earlier attempt left under this rank's key
        source = fallback_checkpoint
    tmp_out = None
    if cfg.out_dir is None:  # rank 0 writes its reported checkpoints somewhere first
        tmp_out = tempfile.TemporaryDirectory(prefix="adalrs_lm_")
        cfg = dataclasses.replace(cfg, out_dir=tmp_out.name)
    try:
        with source.as_directory() if source else contextlib.nullcontext() as ckpt_dir:
            if ckpt_dir is not None:
                cfg = dataclasses.replace(cfg, resume=ckpt_dir, init_from=None)
                logger.info("rank %d resumes the LM run from %s", rank, ckpt_dir)
            trainer = LMTrainer(cfg, hooks)
            trainer.setup()  # model, optimizer, schedule, AdaLRS, data position, RNG
        try:
            if ckpt_dir is not None:
                trainer.set_base_lr(lr)
            summary = trainer.train()
        finally:
            trainer.cleanup()
            store.clear()
    finally:
        if tmp_out is not None:
            tmp_out.cleanup()
    summary["world_size"] = world_size
    return summary


def _auto_resources(workers: int, use_gpu: bool | None, cpus_per_worker: float | None):
    import ray

    total = ray.cluster_resources()
    gpus = float(total.get("GPU", 0))
    if use_gpu is None:
        use_gpu = gpus >= workers
    if cpus_per_worker is None:
        cpus = float(total.get("CPU", 1))
        # leave room for nothing else: Train's controller takes 0 CPU; never ask for more than
        # the cluster has, so small machines get fractional workers instead of a hang
        cpus_per_worker = min(1.0, cpus / workers)
        cpus_per_worker = math.floor(cpus_per_worker * 100) / 100
    check(
        cpus_per_worker > 0,
        f"cpus_per_worker is {cpus_per_worker!r}, but must be > 0 "
        f"(cluster CPUs {total.get('CPU', 0)} for {workers} workers)",
    )
    return use_gpu, cpus_per_worker


def worker_scaling_config(
    workers: int,
    use_gpu: bool,
    cpus_per_worker: float,
    gpus_per_worker: float | None = None,
    *,
    extra: dict[str, float] | None = None,
) -> Any:
    """The ``ray.train.ScalingConfig`` of ``workers`` workers, each reserving
    ``cpus_per_worker`` CPUs, with ``use_gpu`` ``gpus_per_worker`` GPUs (``None``: 1), and the
    ``extra`` resources (e.g. ``{"NPU": 1}``)."""
    import ray.train

    resources: dict[str, float] = {**(extra or {}), "CPU": float(cpus_per_worker)}
    if use_gpu:
        resources["GPU"] = 1.0 if gpus_per_worker is None else float(gpus_per_worker)
    return ray.train.ScalingConfig(
        num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources
    )


def run_lm_trainer(
    lm_config: Any,
    workers: int,
    address: str | None = None,
    *,
    storage_path: str | None = None,
    name: str | None = None,
    max_failures: int = 1,
    snapshot_store: str = "memory",
    on_lost_snapshot: str = "checkpoint",
    use_gpu: bool | None = None,
    cpus_per_worker: float | None = None,
    gpus_per_worker: float | None = None,
    num_to_keep: int | None = 2,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """Train the LM task with ``workers`` Ray Train V2 workers; returns rank 0's LM summary.

    Starts a local Ray (``ray.init(address="local")``) unless ``address`` is given
    (``"auto"`` joins the running cluster, or a ``host:port``) or Ray is already initialised;
    a Ray started here is shut down at the end (its snapshot holders included).

    Args:
        lm_config: a :class:`train_loops.lm.LMConfig` (or its dict); ``batch_size`` is per
            worker. Rank 0 writes metrics.parquet and summary.json to its ``out_dir`` (if set;
            on a cluster, on rank 0's node). Its ``resume`` (an LM checkpoint) starts the run
            when Ray Train has no checkpoint of this run yet; Ray's own checkpoint wins after.
        workers: number of Ray Train workers (>= 1).
        storage_path, name: where Ray Train keeps checkpoints: ``<storage_path>/<name>``
            (default ``<out_dir>/ray_train/lm``, or ``~/ray_results/adalrs-lm-<time>`` without an
            ``out_dir``). Running again with the same pair resumes that run.
        max_failures: worker-group restarts (``FailureConfig``); each resumes from the latest
            checkpoint.
        snapshot_store: ``"memory"`` or ``"object_store"`` (:func:`make_snapshot_store`).
        on_lost_snapshot: ``"checkpoint"`` (restart from the last checkpoint) or ``"fail"``
            (:class:`LostSnapshotPolicy`).
        use_gpu: ``None``: use GPUs when the cluster has one per worker.
        cpus_per_worker: ``None``: 1, or less when the cluster has fewer CPUs than workers.
        gpus_per_worker: GPUs each worker reserves (fractions allowed; 0: none). ``None``: 1
            when GPUs are used (``use_gpu``). Given with ``use_gpu``, the two must agree.
        num_to_keep: checkpoints kept by Ray Train (``None``: all).
        callbacks: further Ray Train ``UserCallback`` objects.
    """
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from train_loops.lm import LMConfig

    if isinstance(lm_config, dict):
        lm_config = LMConfig.from_dict(lm_config)
    check(
        isinstance(lm_config, LMConfig),
        f"lm_config is a {type(lm_config).__name__}, but must be an LMConfig or a dict",
    )
    # (the CLI's tests match this message as it reads: the prefix is kept)
    check(
        is_integer(workers) and workers >= 1,
        f"The value of `workers` is {workers!r}, but must be an integer >= 1",
    )
    check_number("cpus_per_worker", cpus_per_worker, low=0, optional=True)
    check_number("gpus_per_worker", gpus_per_worker, low=0, strict=False, optional=True)
    if gpus_per_worker is not None:
        check(
            use_gpu is None or use_gpu == (gpus_per_worker > 0),
            f"use_gpu is {use_gpu!r} and gpus_per_worker is {gpus_per_worker!r}, but GPUs are "
            "used exactly when gpus_per_worker > 0: give one of the two, or agreeing values",
        )
        use_gpu = gpus_per_worker > 0
    check_int("max_failures", max_failures, -1)
    check_choice("snapshot_store", snapshot_store, SNAPSHOT_STORES)
    policy = LostSnapshotPolicy(on_lost_snapshot)  # validates

    if lm_config.out_dir is not None:
        out = Path(lm_config.out_dir).expanduser().resolve()
        lm_config = dataclasses.replace(lm_config, out_dir=str(out))
        if storage_path is None:
            storage_path = str(out / "ray_train")
        if name is None:
            name = "lm"
    if name is None:
        name = f"adalrs-lm-{time.strftime('%Y%m%d-%H%M%S')}"
    if storage_path is not None and "://" not in storage_path:
        storage_path = str(Path(storage_path).expanduser().resolve())

    started = False
    if not ray.is_initialized():
        if address is None:  # a private local cluster (never joins RAY_ADDRESS by accident)
            ray.init(address="local", log_to_driver=False, logging_level="ERROR")
        else:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        started = True
    try:
        use_gpu, cpus = _auto_resources(workers, use_gpu, cpus_per_worker)
        trainer = TorchTrainer(
            lm_train_loop_per_worker,
            train_loop_config={"lm": lm_config.to_dict(), "snapshot_store": snapshot_store},
            scaling_config=worker_scaling_config(workers, use_gpu, cpus, gpus_per_worker),
            run_config=ray.train.RunConfig(
                name=name,
                storage_path=storage_path,
                failure_config=ray.train.FailureConfig(max_failures=max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=num_to_keep),
                callbacks=[policy, *(callbacks or [])],
            ),
        )
        logger.info(
            "Ray Train: %d workers (%s CPU%s each), storage %s, name %s",
            workers,
            cpus,
            " + 1 GPU" if use_gpu else "",
            storage_path or "~/ray_results",
            name,
        )
        result = trainer.fit()
        summary = dict(result.return_value or {})
        summary["ray_checkpoint"] = result.checkpoint.path if result.checkpoint else None
        summary["ray_run_path"] = result.path
        return summary
    finally:
        if started:
            if snapshot_store == "object_store":
                from adalrs_ray.ray_train import kill_snapshot_holders

                kill_snapshot_holders()
            ray.shutdown()
