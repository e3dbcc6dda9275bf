"""The LM comparison trainable: the task of :mod:`train_loops.lm` trained in-process inside the
Tune trial (single worker: restarts cost seconds)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

from adalrs_ray.comparison.reporter import TuneReporter
from adalrs_ray.report.contract import TRIAL_KEYS

__all__ = ["lm_config_from_trial", "lm_trainable"]

# LMConfig fields the trainable owns (where it writes, what it resumes from)
_OWNED_LM_FIELDS = ("out_dir", "resume", "init_from", "steps", "adalrs", "window")


def lm_config_from_trial(config: Mapping[str, Any], out_dir: str):
    """The :class:`train_loops.lm.LMConfig` of a comparison trial: ``lr`` -> ``lr``,
    ``total_steps`` -> ``steps``, ``report_every`` -> ``report_every``, ``adalrs`` (``None`` or
    AdaLRSConfig arguments) -> ``adalrs``/``window``/``adalrs_options``; every other key is an
    LMConfig field shared by all trials (``preset``, ``data``, ``batch_size``, ...).
    ``adalrs_signal`` and ``probe_sequences`` are AdaLRS settings: a trial without AdaLRS
    neither probes nor pays for it."""
    import dataclasses

    from train_loops.lm import LMConfig

    fields = {f.name for f in dataclasses.fields(LMConfig)}
    unknown = sorted(k for k in config if k not in fields and k not in TRIAL_KEYS)
    if unknown:
        raise ValueError(
            f"lm_trainable: config keys {unknown} are neither LMConfig fields nor comparison "
            f"keys {list(TRIAL_KEYS)}; LMConfig fields: {sorted(fields)}"
        )
    owned = sorted(k for k in config if k in _OWNED_LM_FIELDS and k not in TRIAL_KEYS)
    if owned:
        raise ValueError(
            f"lm_trainable: config sets {owned}, which the trainable fills itself (steps from "
            "total_steps, adalrs/window from adalrs, out_dir/resume per trial)"
        )
    kwargs = {k: v for k, v in config.items() if k in fields}
    if kwargs.get("optimizer", "adamw") is None:  # a trial of an arm without an optimizer key
        del kwargs["optimizer"]
    adalrs = config.get("adalrs")
    if adalrs is None:  # the probe batch is AdaLRS's signal, not a metric of every trial
        kwargs.update(adalrs_signal="train", probe_sequences=0)
    if adalrs is not None and not isinstance(adalrs, Mapping):
        raise ValueError(f"lm_trainable: adalrs is {adalrs!r}, but must be None or a mapping")
    options = dict(adalrs or {})
    kwargs.update(
        lr=config["lr"],
        steps=config["total_steps"],
        report_every=config["report_every"],
        adalrs=adalrs is not None,
        window=options.pop("window", None),
        adalrs_options=options,
        out_dir=out_dir,
        keep_checkpoints=max(2, int(config.get("keep_checkpoints", 2))),
    )
    return LMConfig(**kwargs)


def lm_trainable(config: dict[str, Any]) -> None:
    """The LM task of :mod:`train_loops.lm` trained in-process inside the Tune trial.

    The loop calls ``report(metrics, checkpoint_dir)`` every ``report_every`` steps with the
    metric keys of docs/design.md and a checkpoint written at that step; this trainable forwards
    each call to ``tune.report`` with the directory as a ``tune.Checkpoint`` (copied into the
    trial's storage before the loop goes on) and restarts from ``tune.get_checkpoint()``. The
    trial's ``lr`` (changed by PBT between restarts) is the base LR of the run; ``adalrs``
    switches AdaLRS on. See :func:`lm_config_from_trial` for the config keys.
    """
    from ray import tune

    from train_loops.lm import LMTrainer, LoopHooks

    work = tempfile.mkdtemp(prefix="adalrs_lm_trial_")
    try:
        cfg = lm_config_from_trial(config, out_dir=work)
        reporter = TuneReporter()
        hooks = LoopHooks(report=reporter.report, checkpoint_on_report=True)
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            trainer = LMTrainer(cfg, hooks)
            trainer.setup()
        else:
            with checkpoint.as_directory() as folder:
                cfg.resume = folder
                trainer = LMTrainer(cfg, hooks)
                trainer.setup()  # loads model, optimizer, schedule, data position, RNG
            trainer.set_base_lr(float(config["lr"]))
        try:
            trainer.train()
        finally:
            trainer.cleanup()
    finally:
        shutil.rmtree(work, ignore_errors=True)
