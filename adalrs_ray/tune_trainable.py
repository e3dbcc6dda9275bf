"""Tune function trainables for the LR-search comparison (:mod:`adalrs_ray.tune_scheduler`).

Every comparison trainable follows one contract (docs/tune.md):

* it reads ``lr`` (the base LR, which PBT may change between restarts), ``total_steps``,
  ``report_every`` and ``adalrs`` (``None``: AdaLRS off; else keyword arguments of
  :class:`adalrs_ray.AdaLRSConfig` without ``total_steps``) from its config;
* it reports once every ``report_every`` steps, never per step, the metric keys of
  docs/design.md: ``step, loss, val_loss, lr, scale, steps_done, tokens_done, worker_s_done,
  adalrs_events``, with a ``tune.Checkpoint`` at each report (PBT exploits and HyperBand pauses
  restore from it);
* on start it restores from ``tune.get_checkpoint()`` when there is one.

:class:`TuneReporter` does the reporting part for any training loop. Trainables here:

* :func:`synthetic_trainable` -- the :class:`~adalrs_ray.simulator.LossSimulator`, optionally
  with AdaLRS inside; milliseconds per report, for tests and examples.
* :func:`lm_trainable` -- the LM task of :mod:`train_loops.lm`, trained in-process inside the
  Tune trial (single worker: restarts cost seconds, see RAY_NOTES).
* Extension point: a trainable that launches a Ray Train ``TorchTrainer`` (several workers per
  trial) plugs in through :func:`register_trainable`; see the "Adding a trainable" section of
  docs/tune.md for what it must do (forward rank 0's reports and checkpoints with
  :class:`TuneReporter`, restore from ``tune.get_checkpoint()``, new Train run name per start).

Resources: a Tune trial reserves 1 CPU by default; give comparison trials a fraction
(:func:`get_trainable` with ``cpu=0.25``) so several run at once on a small machine.
"""

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

from adalrs_ray.controller import Action, AdaLRS, AdaLRSConfig

logger = logging.getLogger(__name__)

STATE_FILE = "synthetic_state.json"
STATE_VERSION = 1
# the keys AdaLRSComparison fills per trial (search_algos.base.SLOT_KEYS plus the slot index)
_COMPARISON_KEYS = ("slot", "arm", "lr", "total_steps", "report_every", "adalrs")


class TuneReporter:
    """Reports one window of training to Tune with the compute increments the comparison sums.

    Call :meth:`count` after every optimizer step and :meth:`report` every ``report_every``
    steps. ``steps_done`` / ``tokens_done`` are the steps and tokens counted since the previous
    report of this process, ``worker_s_done`` the wall seconds since then (since construction for
    the first report, so checkpoint loading counts) times ``num_workers``. Metrics that already
    carry these keys (a loop that measures them itself) are reported unchanged.

    Args:
        tokens_per_step: tokens of one optimizer step (global batch), used when :meth:`count`
            is given no token count.
        num_workers: workers (devices) busy during the steps: worker-seconds = wall * workers.
    """

    def __init__(self, *, tokens_per_step: float = 0.0, num_workers: int = 1) -> None:
        if not (isinstance(tokens_per_step, (int, float)) and tokens_per_step >= 0):
            raise ValueError(f"tokens_per_step is {tokens_per_step!r}, but must be a number >= 0")
        if not (isinstance(num_workers, int) and num_workers >= 1):
            raise ValueError(f"num_workers is {num_workers!r}, but must be an integer >= 1")
        self.tokens_per_step = float(tokens_per_step)
        self.num_workers = num_workers
        self._since = time.perf_counter()
        self._steps = 0
        self._tokens = 0.0

    def count(self, steps: int = 1, tokens: float | None = None) -> None:
        """Record ``steps`` optimizer steps (and their tokens) done since the last call."""
        self._steps += steps
        self._tokens += self.tokens_per_step * steps if tokens is None else float(tokens)

    def increments(self) -> dict[str, float]:
        """The compute since the previous call, and restart the count."""
        now = time.perf_counter()
        out = {
            "steps_done": self._steps,
            "tokens_done": self._tokens,
            "worker_s_done": (now - self._since) * self.num_workers,
        }
        self._since, self._steps, self._tokens = now, 0, 0.0
        return out

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: str | None = None) -> None:
        """``tune.report`` the metrics plus the increments, with ``checkpoint_dir`` (copied into
        the trial's storage before this returns) as the trial's checkpoint."""
        from ray import tune

        out = dict(metrics)
        for key, value in self.increments().items():
            out.setdefault(key, value)
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(out, checkpoint=checkpoint)


# ---------------------------------------------------------------------- synthetic trainable
def _base_lr(schedule: str, lr: float, step: int, total: int, min_ratio: float) -> float:
    if schedule == "cosine":
        frac = min(step, total) / total
        return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))
    return lr


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
)


def check_synthetic_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The synthetic trainable's settings from a trial config, validated (``ValueError`` naming
    the key, the value and the rule). Call it before Ray starts to fail early."""
    unknown = sorted(k for k in config if k not in _SYNTHETIC_KEYS and k not in _COMPARISON_KEYS)
    if unknown:
        raise ValueError(
            f"synthetic_trainable: unknown config keys {unknown}; it reads the comparison keys "
            f"{list(_COMPARISON_KEYS)} and {list(_SYNTHETIC_KEYS)}"
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
    }

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ValueError(f"synthetic_trainable: {message}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    need(is_num(c["lr"]) and c["lr"] > 0, f"lr is {c['lr']!r}, but must be a number > 0")
    for key in ("total_steps", "report_every"):
        need(is_int(c[key]) and c[key] >= 1, f"{key} is {c[key]!r}, but must be an integer >= 1")
    need(
        c["report_every"] <= c["total_steps"],
        f"report_every={c['report_every']} exceeds total_steps={c['total_steps']}",
    )
    need(
        c["adalrs"] is None or isinstance(c["adalrs"], Mapping),
        f"adalrs is {c['adalrs']!r}, but must be None or a mapping of AdaLRSConfig arguments",
    )
    need(isinstance(c["sim"], Mapping), f"sim is {c['sim']!r}, but must be a mapping")
    need(
        c["schedule"] in ("constant", "cosine"),
        f"schedule is {c['schedule']!r}, but must be 'constant' or 'cosine'",
    )
    need(
        is_num(c["min_lr_ratio"]) and 0 <= c["min_lr_ratio"] <= 1,
        f"min_lr_ratio is {c['min_lr_ratio']!r}, but must be in [0, 1]",
    )
    need(
        is_num(c["tokens_per_step"]) and c["tokens_per_step"] >= 0,
        f"tokens_per_step is {c['tokens_per_step']!r}, but must be a number >= 0",
    )
    need(
        is_num(c["seconds_per_step"]) and c["seconds_per_step"] >= 0,
        f"seconds_per_step is {c['seconds_per_step']!r}, but must be a number >= 0",
    )
    need(
        is_int(c["checkpoint_every"]) and c["checkpoint_every"] >= 0,
        f"checkpoint_every is {c['checkpoint_every']!r}, but must be an integer >= 0 "
        "(reports between checkpoints; 0: never)",
    )
    need(is_int(c["seed"]), f"seed is {c['seed']!r}, but must be an integer")
    return c


def synthetic_trainable(config: dict[str, Any]) -> None:
    """A Tune function trainable driven by :class:`~adalrs_ray.simulator.LossSimulator`.

    Config keys (besides the comparison's ``lr``, ``total_steps``, ``report_every``,
    ``adalrs``): ``lr_opt`` (1e-3, the simulator's optimum), ``seed`` (0), ``sim`` (other
    ``LossSimulator`` arguments), ``schedule`` (``"constant"`` or ``"cosine"`` down to
    ``min_lr_ratio`` * lr), ``tokens_per_step`` (4096, for ``tokens_done``),
    ``seconds_per_step`` (0: simulated compute time), ``checkpoint_every`` (1 report).

    The effective LR of step t is ``schedule(t) * scale``, ``scale`` being the AdaLRS multiplier
    (paper: the LR AdaLRS controls is a multiplier on the base schedule). AdaLRS snapshots and
    restores the simulator's model state; the noise stream (the data) moves on. ``val_loss`` is
    the simulator's noise-free loss level at the report.
    """
    from ray import tune

    from adalrs_ray.simulator import LossSimulator

    c = check_synthetic_config(config)
    total, every = c["total_steps"], c["report_every"]
    sim = LossSimulator(lr_opt=c["lr_opt"], seed=c["seed"], **dict(c["sim"]))
    ctl = None
    if c["adalrs"] is not None:
        ctl = AdaLRS(AdaLRSConfig.from_dict({"total_steps": total, **dict(c["adalrs"])}))
    step = 0
    snapshot: dict[str, Any] | None = None
    reporter = TuneReporter(tokens_per_step=c["tokens_per_step"])

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            with open(os.path.join(folder, STATE_FILE)) as f:
                state = json.load(f)
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"synthetic checkpoint version is {state.get('version')!r}, but this code reads "
                f"version {STATE_VERSION}"
            )
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
        lr = _base_lr(c["schedule"], c["lr"], step, total, c["min_lr_ratio"]) * scale
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


_check_synthetic = check_synthetic_config  # the name adalrs_ray.cli_compare imports


# ---------------------------------------------------------------------- LM trainable
# LMConfig fields the trainable owns (where it writes, what it resumes from)
_OWNED_LM_FIELDS = ("out_dir", "resume", "init_from", "steps", "adalrs", "window")


def lm_config_from_trial(config: Mapping[str, Any], out_dir: str):
    """The :class:`train_loops.lm.LMConfig` of a comparison trial: ``lr`` -> ``lr``,
    ``total_steps`` -> ``steps``, ``report_every`` -> ``report_every``, ``adalrs`` (``None`` or
    AdaLRSConfig arguments) -> ``adalrs``/``window``/``adalrs_options``; every other key is an
    LMConfig field shared by all trials (``preset``, ``data``, ``batch_size``, ...)."""
    import dataclasses

    from train_loops.lm import LMConfig

    fields = {f.name for f in dataclasses.fields(LMConfig)}
    unknown = sorted(k for k in config if k not in fields and k not in _COMPARISON_KEYS)
    if unknown:
        raise ValueError(
            f"lm_trainable: config keys {unknown} are neither LMConfig fields nor comparison "
            f"keys {list(_COMPARISON_KEYS)}; LMConfig fields: {sorted(fields)}"
        )
    owned = sorted(k for k in config if k in _OWNED_LM_FIELDS and k not in _COMPARISON_KEYS)
    if owned:
        raise ValueError(
            f"lm_trainable: config sets {owned}, which the trainable fills itself (steps from "
            "total_steps, adalrs/window from adalrs, out_dir/resume per trial)"
        )
    kwargs = {k: v for k, v in config.items() if k in fields}
    adalrs = config.get("adalrs")
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


# ---------------------------------------------------------------------- registry
def _lm_torchtrainer_trainable(config: dict[str, Any]) -> None:
    """:func:`adalrs_ray.tune_train_trainable.lm_torchtrainer_trainable` (several Ray Train
    workers per trial), imported when a trial runs: importing this module stays light."""
    from adalrs_ray.tune_train_trainable import lm_torchtrainer_trainable

    lm_torchtrainer_trainable(config)


TRAINABLES: dict[str, Callable[[dict[str, Any]], None]] = {
    "synthetic": synthetic_trainable,
    "lm": lm_trainable,
    "lm_torchtrainer": _lm_torchtrainer_trainable,
}


def register_trainable(name: str, fn: Callable[[dict[str, Any]], None]) -> None:
    """Make ``fn`` (a Tune function trainable following the contract above) available to
    :func:`get_trainable` and the ``compare`` CLI under ``name``."""
    if not (isinstance(name, str) and name):
        raise ValueError(f"name is {name!r}, but must be a non-empty string")
    if not callable(fn):
        raise ValueError(f"fn is {fn!r}, but must be a callable taking the trial config")
    TRAINABLES[name] = fn


def get_trainable(name: str, *, cpu: float | None = 0.25):
    """The trainable registered as ``name``, wrapped with ``tune.with_resources({"cpu": cpu})``
    (``cpu=None``: Tune's default of 1 CPU per trial)."""
    fn = TRAINABLES.get(name) if isinstance(name, str) else None
    if fn is None:
        raise ValueError(f"unknown trainable {name!r}; valid: {sorted(TRAINABLES)}")
    if cpu is None:
        return fn
    if not (isinstance(cpu, (int, float)) and not isinstance(cpu, bool) and 0 < cpu <= 1024):
        raise ValueError(f"cpu is {cpu!r}, but must be None or a number of CPUs > 0")
    from ray import tune

    return tune.with_resources(fn, {"cpu": cpu})
