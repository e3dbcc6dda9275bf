"""The synthetic comparison trainable: :class:`~adalrs_ray.core.simulator.LossSimulator`,
optionally with AdaLRS inside; milliseconds per report, for tests and examples."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

from adalrs_ray.comparison.reporter import TuneReporter
from adalrs_ray.core.checks import (
    check,
    check_choice,
    check_int,
    check_number,
    is_integer,
)
from adalrs_ray.core.controller import Action, AdaLRS, AdaLRSConfig
from adalrs_ray.report.contract import TRIAL_KEYS

logger = logging.getLogger(__name__)

__all__ = ["STATE_FILE", "check_synthetic_config", "synthetic_trainable"]

STATE_FILE = "synthetic_state.json"
STATE_VERSION = 1


def _schedule(name: str, total: int, min_lr_ratio: float) -> Callable[[int], float] | None:
    """The base schedule's ``step -> factor`` (the torch binding's, transformers' lambdas), or
    None for a constant LR (also cosine down to ``min_lr_ratio`` = 1): no torch import then."""
    if name == "cosine" and min_lr_ratio < 1:
        from adalrs_ray.torch_binding.scheduler import base_schedule_lambda

        return base_schedule_lambda("cosine", total, min_lr_ratio=min_lr_ratio)
    return None


def _get(config: Mapping[str, Any], key: str, default: Any) -> Any:
    value = config.get(key, default)
    return default if value is None and default is not None else value


_SYNTHETIC_KEYS = (
    "lr_opt",
    "seed",
    "sim",
    "schedule",
    "min_lr_ratio",
    "tokens_per_step",
    "seconds_per_step",
    "checkpoint_every",
    "fault_at_step",
    "fault_marker_dir",
)


def check_synthetic_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The synthetic trainable's settings from a trial config, validated (``ValueError`` naming
    the key, the value and the rule). Call it before Ray starts to fail early."""
    unknown = sorted(k for k in config if k not in _SYNTHETIC_KEYS and k not in TRIAL_KEYS)
    check(
        not unknown,
        f"synthetic_trainable: unknown config keys {unknown}; it reads the comparison keys "
        f"{list(TRIAL_KEYS)} and {list(_SYNTHETIC_KEYS)}",
    )
    c = {
        "lr": config.get("lr"),
        "total_steps": config.get("total_steps"),
        "report_every": config.get("report_every"),
        "adalrs": config.get("adalrs"),
        "lr_opt": _get(config, "lr_opt", 1e-3),
        "seed": _get(config, "seed", 0),
        "sim": _get(config, "sim", {}),
        "schedule": _get(config, "schedule", "constant"),
        "min_lr_ratio": _get(config, "min_lr_ratio", 0.1),
        "tokens_per_step": _get(config, "tokens_per_step", 4096),
        "seconds_per_step": _get(config, "seconds_per_step", 0.0),
        "checkpoint_every": _get(config, "checkpoint_every", 1),
        "fault_at_step": config.get("fault_at_step"),
        "fault_marker_dir": config.get("fault_marker_dir"),
    }

    check_number("lr", c["lr"], low=0)
    for key in ("total_steps", "report_every"):
        check_int(key, c[key], 1)
    check(
        c["report_every"] <= c["total_steps"],
        f"report_every={c['report_every']} exceeds total_steps={c['total_steps']}",
    )
    check(
        c["adalrs"] is None or isinstance(c["adalrs"], Mapping),
        f"adalrs is {c['adalrs']!r}, but must be None or a mapping of AdaLRSConfig arguments",
    )
    check(isinstance(c["sim"], Mapping), f"sim is {c['sim']!r}, but must be a mapping")
    check_choice("schedule", c["schedule"], ("constant", "cosine"))
    check_number("min_lr_ratio", c["min_lr_ratio"], low=0, high=1, strict=False)
    check_number("tokens_per_step", c["tokens_per_step"], low=0, strict=False)
    check_number("seconds_per_step", c["seconds_per_step"], low=0, strict=False)
    check(
        is_integer(c["checkpoint_every"]) and c["checkpoint_every"] >= 0,
        f"checkpoint_every is {c['checkpoint_every']!r}, but must be an integer >= 0 "
        "(reports between checkpoints; 0: never)",
    )
    check(is_integer(c["seed"]), f"seed is {c['seed']!r}, but must be an integer")
    fault, marker = c["fault_at_step"], c["fault_marker_dir"]
    check(
        fault is None or (is_integer(fault) and 0 < fault < c["total_steps"]),
        f"fault_at_step is {fault!r}, but must be None or an integer in (0, total_steps)",
    )
    check(
        (fault is None) == (marker is None),
        "fault_at_step and fault_marker_dir go together (the marker makes the fault happen once "
        f"per trial); got {fault!r} and {marker!r}",
    )
    return c


def _inject_fault(c: Mapping[str, Any], config: Mapping[str, Any], step: int) -> None:
    """Fault injection for tests and failure drills (``fault_at_step``, ``fault_marker_dir``):
    the trial's process dies at that step, once per trial slot (a marker file remembers it), as
    a killed worker would: no exception, no report. Tune retries it from its last checkpoint."""
    if c["fault_at_step"] is None or step != c["fault_at_step"]:
        return
    marker = os.path.join(c["fault_marker_dir"], f"fault_slot{config.get('slot', 0)}")
    if os.path.exists(marker):
        return
    open(marker, "w").close()
    logger.warning("fault injection: the trial process dies at step %d", step)
    os._exit(1)


def _load_state(folder: str) -> dict[str, Any]:
    """The trainable's state in a checkpoint directory; ``ValueError`` naming the file and what
    is wrong with it (a corrupt checkpoint fails the trial, it never hangs the run)."""
    path = os.path.join(folder, STATE_FILE)
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"checkpoint file {path!r} is unreadable: {exc}") from None
    keys = ("version", "step", "sim", "snapshot", "adalrs")
    missing = [k for k in keys if k not in state] if isinstance(state, dict) else list(keys)
    if missing:
        raise ValueError(
            f"checkpoint file {path!r} is not a synthetic trial state (missing {missing})"
        )
    if state.get("version") != STATE_VERSION:
        raise ValueError(
            f"checkpoint file {path!r} has version {state.get('version')!r}, but this code reads "
            f"version {STATE_VERSION}"
        )
    return state


def synthetic_trainable(config: dict[str, Any]) -> None:
    """A Tune function trainable driven by :class:`~adalrs_ray.core.simulator.LossSimulator`.

    Config keys (besides the comparison's ``lr``, ``total_steps``, ``report_every``,
    ``adalrs``): ``lr_opt`` (1e-3, the simulator's optimum), ``seed`` (0), ``sim`` (other
    ``LossSimulator`` arguments), ``schedule`` (``"constant"`` or ``"cosine"`` down to
    ``min_lr_ratio`` * lr), ``tokens_per_step`` (4096, for ``tokens_done``),
    ``seconds_per_step`` (0: simulated compute time), ``checkpoint_every`` (1 report), and for
    tests and failure drills ``fault_at_step`` with ``fault_marker_dir`` (the trial's process
    dies once at that step, see :func:`_inject_fault`).

    The effective LR of step t is ``schedule(t) * scale``, ``scale`` being the AdaLRS multiplier
    (paper: the LR AdaLRS controls is a multiplier on the base schedule). AdaLRS snapshots and
    restores the simulator's model state; the noise stream (the data) moves on. ``val_loss`` is
    the simulator's noise-free loss level at the report.
    """
    from ray import tune

    from adalrs_ray.core.simulator import LossSimulator

    c = check_synthetic_config(config)
    total, every = c["total_steps"], c["report_every"]
    sim = LossSimulator(lr_opt=c["lr_opt"], seed=c["seed"], **dict(c["sim"]))
    ctl = None
    if c["adalrs"] is not None:
        ctl = AdaLRS(AdaLRSConfig.from_dict({"total_steps": total, **dict(c["adalrs"])}))
    step = 0
    snapshot: dict[str, Any] | None = None
    reporter = TuneReporter(tokens_per_step=c["tokens_per_step"])
    base = _schedule(c["schedule"], total, c["min_lr_ratio"])

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = _load_state(folder)
        step = int(state["step"])
        sim.load_state_dict(state["sim"])
        snapshot = state["snapshot"]
        if ctl is not None:
            if state["adalrs"] is None:
                raise ValueError("the checkpoint was made without AdaLRS, but adalrs is set")
            ctl.load_state_dict(state["adalrs"])
        logger.debug("restored the synthetic trial at step %d", step)

    losses: list[float] = []
    events: list[dict[str, Any]] = []
    reports = 0
    lr = scale = math.nan
    while step < total:
        scale = ctl.scale if ctl is not None else 1.0
        lr = (c["lr"] if base is None else c["lr"] * base(step)) * scale
        loss = sim.step(lr)
        losses.append(loss)
        if ctl is not None:
            decision = ctl.observe(step, loss)
            events.extend(decision.events)
            if decision.action is Action.SNAPSHOT:
                snapshot = sim.state_dict(include_rng=False)
            elif decision.action is Action.RESTORE and snapshot is not None:
                sim.load_state_dict(snapshot)
        step += 1
        reporter.count(1)
        _inject_fault(c, config, step)
        if c["seconds_per_step"]:
            time.sleep(c["seconds_per_step"])
        if step % every and step < total:
            continue
        reports += 1
        metrics = {
            "step": step - 1,  # the 0-based index of the last finished step, as train_loops.lm
            "loss": sum(losses) / len(losses),
            "val_loss": sim.loss,
            "lr": lr,
            "scale": scale,
            "adalrs_events": json.dumps(events),
        }
        losses, events = [], []
        folder = None
        if c["checkpoint_every"] and (reports % c["checkpoint_every"] == 0 or step >= total):
            folder = tempfile.mkdtemp(prefix="adalrs_synth_")
            state = {
                "version": STATE_VERSION,
                "step": step,
                "sim": sim.state_dict(include_rng=True),
                "snapshot": snapshot,
                "adalrs": ctl.state_dict() if ctl is not None else None,
            }
            with open(os.path.join(folder, STATE_FILE), "w") as f:
                json.dump(state, f)
        try:
            reporter.report(metrics, folder)
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
