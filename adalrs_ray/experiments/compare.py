"""The head-to-head LR-search comparison as library functions: resolve a preset, run it in one
``tune.Tuner``, report it, merge the arms of several runs.

:func:`run_compare` runs AdaLRS (Dong et al., "AdaLRS", NeurIPS 2025, arXiv 2506.13274), started
10x off the best LR, against a grid, HyperBand (or ASHA), PBT or random search in ONE
``tune.Tuner`` scheduled by :class:`adalrs_ray.comparison.AdaLRSComparison`, shows a one-line
progress summary while it runs, and writes the cost report of :mod:`adalrs_ray.report`
(``report.md``, ``report.html``, ``results.parquet``, PNGs) into ``out``. Budgets come from a
preset (:mod:`adalrs_ray.experiments.presets`, :func:`resolve_preset`).
:func:`rebuild_report` rebuilds the report of a saved directory, :func:`merge_compare_dirs` and
:func:`write_merged_report` report the arms of several runs together.

``adalrs-ray compare`` / ``adalrs-ray report`` (:mod:`adalrs_ray.cli.compare`) parse their
arguments and call these; so does ``examples/compare_arms.py``.

Ray: ``address=None`` starts a local Ray (``ray.init(address="local")``) and shuts it down at the
end; ``"auto"`` or ``host:port`` joins a cluster. An already initialised Ray (a notebook, a test
session) is used as is and left running.

Example::

    from adalrs_ray.experiments.compare import headline, resolve_preset, run_compare
    preset = resolve_preset("sim", total_steps=2000, report_every=500, grid_points=3)
    result = run_compare(preset, "runs/sim", progress=False)
    print(headline(result["summary"]))
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adalrs_ray import report as rep
from adalrs_ray.experiments.presets import (
    PRESETS,
    ComparePreset,
    adalrs_label,
    build_arms,
    get_preset,
)
from adalrs_ray.report.contract import CONFIG_FILE, TUNE_NAME

logger = logging.getLogger(__name__)

__all__ = [
    "LM_ONLY_OPTIONS",
    "SAME_TASK_KEYS",
    "RayContext",
    "check_trial_config",
    "default_out_dir",
    "headline",
    "make_progress_callback",
    "merge_compare_dirs",
    "read_compare_settings",
    "resume_settings",
    "rebuild_report",
    "resolve_preset",
    "run_compare",
    "train_trial_cpus",
    "trial_config_of",
    "write_merged_report",
]

#: Trial config keys only the lm task takes, and the ``compare`` option that sets each.
LM_ONLY_OPTIONS = {
    "data": "--data",
    "preset": "--model",
    "batch_size": "--batch-size",
    "seq_len": "--seq-len",
    "device": "--device",
}


# ------------------------------------------------------------------------------ resolution
def resolve_preset(name: str, *, task: str | None = None, **overrides: Any) -> ComparePreset:
    """The preset ``name`` with ``overrides`` applied (:meth:`ComparePreset.with_overrides`:
    preset fields or arm size options such as ``grid_points``; ``None`` values are ignored,
    mappings merged).

    ``task`` other than the preset's takes that task's own budgets first (preset ``sim`` for
    the simulator, ``quick`` for the LM), then the overrides. Raises ``ValueError`` when
    ``trial_config`` sets an LM-only key (:data:`LM_ONLY_OPTIONS`) for the sim task.
    """
    preset = get_preset(name)
    task = task or preset.task
    if task != preset.task:
        # another task: its own defaults, then the overrides
        base = "sim" if task == "sim" else "quick"
        logger.info("--task %s: budgets of preset %r", task, base)
        preset = PRESETS[base]
    trial = overrides.get("trial_config") or {}
    given = sorted(k for k in trial if k in LM_ONLY_OPTIONS)
    if preset.task != "lm" and given:
        names = [LM_ONLY_OPTIONS[k] for k in given]
        raise ValueError(f"{', '.join(names)} only apply to the lm task, but the task is 'sim'")
    return preset.with_overrides(**overrides)


# ------------------------------------------------------------------------------ trials
def check_trial_config(preset: ComparePreset, sched, trial_config: Mapping[str, Any]) -> None:
    """Fail before Ray starts: the config of every trial of ``sched`` (an
    :class:`~adalrs_ray.comparison.AdaLRSComparison`) on ``preset``'s task, the data path."""
    if preset.task != "lm":
        from train_loops.trainables import check_synthetic_config

        for slot in sched.slots():
            check_synthetic_config({**trial_config, **slot})
        return
    data = trial_config.get("data")
    if data is not None and not Path(data).exists():
        raise ValueError(f"--data {data!r} does not exist")
    if data is not None:  # read (and cache) the corpus once here: an unusable one fails now
        from train_loops.data import load_lm_data

        load_lm_data(
            data,
            text_column=trial_config.get("text_column", "text"),
            tokenizer=trial_config.get("tokenizer", "byte"),
            bpe_vocab_size=trial_config.get("bpe_vocab_size", 4096),
            cache_dir=trial_config.get("cache_dir"),
        )
    if "workers" in trial_config:
        from train_loops.trainables.lm_torchtrainer import check_train_config

        for slot in sched.slots():
            check_train_config({**trial_config, **slot})
        return
    from train_loops.trainables import lm_config_from_trial

    for slot in sched.slots():
        lm_config_from_trial({**trial_config, **slot}, out_dir="unused")


def trial_config_of(preset: ComparePreset) -> dict[str, Any]:
    """The config shared by every trial of ``preset`` (a data path made absolute: trials
    chdir)."""
    config = dict(preset.trial_config)
    if preset.task == "lm" and config.get("data") is not None:
        config["data"] = str(Path(config["data"]).resolve())  # trials chdir: absolute paths
    return config


# ------------------------------------------------------------------------------ Ray
class RayContext:
    """``ray.init`` unless Ray is already initialised; shuts down only what it started."""

    def __init__(self, address: str | None, cpus: float | None, dashboard: bool) -> None:
        self.address, self.cpus, self.dashboard = address, cpus, dashboard
        self.started = False

    def __enter__(self):
        import ray

        if ray.is_initialized():
            if self.address is not None:
                logger.info("Ray is already initialised: --address %s ignored", self.address)
            return ray
        kwargs: dict[str, Any] = dict(log_to_driver=False, logging_level="ERROR")
        if self.address is None:
            kwargs.update(
                address="local",
                include_dashboard=self.dashboard,
                runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
            )
            if self.cpus is not None:
                kwargs["num_cpus"] = self.cpus
        else:
            if self.cpus is not None:
                raise ValueError("--cpus sizes a local Ray; it cannot be used with --address")
            kwargs["address"] = self.address
        ray.init(**kwargs)
        self.started = True
        return ray

    def __exit__(self, *exc) -> None:
        if self.started:
            import ray

            ray.shutdown()


def _cluster_cpus(ray) -> float:
    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    if cpus <= 0:
        raise ValueError("the Ray cluster has no CPU to run trials on")
    return cpus


# ------------------------------------------------------------------------------ progress
def make_progress_callback(arms: Sequence[str], totals: Mapping[str, int], every: float):
    """A Tune callback printing to stderr one line every ``every`` seconds and one per finished
    trial: elapsed time, then per arm ``done+running/total`` trials and the best val_loss so
    far, then the steps trained by all arms, e.g.
    ``[  118s] adalrs_x0.1 0+1/1 2.2281 | grid 2+2/7 2.3407 | ... | 1,250 steps``."""
    from ray import tune

    class ProgressCallback(tune.Callback):
        def __init__(self) -> None:
            self.arms = list(arms)
            self.totals = dict(totals)
            self.every = every
            self.best: dict[str, float] = {a: math.nan for a in self.arms}
            self.steps = 0.0
            self.t0 = time.monotonic()
            self.last = self.t0

        def emit(self, text: str) -> None:
            print(f"[{time.monotonic() - self.t0:6.0f}s] {text}", file=sys.stderr, flush=True)

        @staticmethod
        def arm(trial) -> str:
            config = trial.config if isinstance(trial.config, Mapping) else {}
            return str(config.get("arm"))

        def line(self, trials, ended=None) -> str:
            done = dict.fromkeys(self.arms, 0)
            running = dict.fromkeys(self.arms, 0)
            for t in trials:
                arm = self.arm(t)
                if arm not in done:
                    continue
                if t is ended or t.status in ("TERMINATED", "ERROR"):
                    done[arm] += 1
                elif t.status == "RUNNING":
                    running[arm] += 1
            parts = []
            for arm in self.arms:
                best = self.best[arm]
                b = "-" if math.isnan(best) else f"{best:.4f}"
                run = f"+{running[arm]}" if running[arm] else ""
                parts.append(f"{arm} {done[arm]}{run}/{self.totals[arm]} {b}")
            return " | ".join(parts) + f" | {self.steps:,.0f} steps"

        def on_trial_result(self, iteration, trials, trial, result, **info):
            arm = self.arm(trial)
            value = result.get("val_loss")
            if isinstance(value, (int, float)) and math.isfinite(value) and arm in self.best:
                if math.isnan(self.best[arm]) or value < self.best[arm]:
                    self.best[arm] = float(value)
            inc = result.get("steps_done")
            if isinstance(inc, (int, float)) and math.isfinite(inc) and inc > 0:
                self.steps += inc
            now = time.monotonic()
            if now - self.last >= self.every:
                self.last = now
                self.emit(self.line(trials))

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.emit(f"{self.arm(trial)} {trial.trial_id} done; " + self.line(trials, trial))

        def on_trial_error(self, iteration, trials, trial, **info):
            self.emit(f"{self.arm(trial)} {trial.trial_id} ERROR; " + self.line(trials, trial))

    return ProgressCallback()


# ------------------------------------------------------------------------------ compare
def default_out_dir(preset: str) -> str:
    """``runs/compare-<preset>-<time>``: where a run goes when no directory is given."""
    import datetime as _dt

    return str(Path("runs") / f"compare-{preset}-{_dt.datetime.now():%Y%m%d-%H%M%S}")


def train_trial_cpus(total_cpus: float, max_concurrent: int, workers: int) -> tuple[float, float]:
    """``(trial process CPUs, CPUs per Train worker)`` for trials that each run a TorchTrainer.

    Tune admits a trial by its own process's CPU reservation only; its TorchTrainer then asks
    for the workers' placement group. With m = ``max_concurrent`` and T = ``total_cpus``, a trial
    process reserving d = T/(m + 0.5) > T/(m+1) caps the running trials at m, and workers
    reserving (T/m - d) per trial in all always fit beside them. (A small d admitted more trials
    than the workers' groups could fit: every trial waited for its group, a hang.) Reservations
    are logical: the waiting trial process uses no CPU, the workers use what they need.
    """
    driver = total_cpus / (max_concurrent + 0.5)
    return driver, (total_cpus / max_concurrent - driver) / workers


def _load_average() -> str:
    """The host's 1-minute load average (other jobs slow a run down), or "n/a"."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except (AttributeError, OSError):
        return "n/a"


def _remove_checkpoints(folder: Path) -> None:
    for ckpt in folder.glob("*/checkpoint_*"):
        if ckpt.is_dir():
            shutil.rmtree(ckpt, ignore_errors=True)


def run_compare(
    preset: ComparePreset,
    out: str | os.PathLike,
    *,
    workers: int = 1,
    address: str | None = None,
    cpus: float | None = None,
    progress_every: float = 10.0,
    progress: bool = True,
    keep_checkpoints: bool = False,
    command: str | None = None,
    loggers: bool = True,
    callbacks: Sequence[Any] = (),
    max_failures: int = 1,
    resume: bool = False,
) -> dict[str, Any]:
    """Run the comparison described by ``preset`` in one ``tune.Tuner`` and write its report
    into ``out`` (the Tune experiment under ``out/tune``, the resolved settings in
    ``out/compare_config.json``).

    Args:
        preset: the arms, budgets and trial config (:func:`resolve_preset`).
        out: the output directory; it must not hold an earlier run's ``tune/``.
        workers: training workers per trial: 1 trains inside the Tune trial, N > 1 runs a Ray
            Train ``TorchTrainer`` of N workers per trial (lm task only).
        address: Ray cluster to join; ``None`` starts a local Ray (an initialised Ray is used
            as is).
        cpus: CPUs of the local Ray it starts (default: all).
        progress_every, progress: seconds between progress lines on stderr; ``False``: none.
        keep_checkpoints: keep the trial checkpoints (removed at the end by default).
        command: the command line recorded in the settings and the report.
        loggers: Tune's own per-trial logs (TensorBoard event files, ``progress.csv``,
            ``result.json`` in every trial directory; :func:`adalrs_ray.comparison.tune_loggers`);
            ``False``: none.
        callbacks: further Tune callbacks for the run, e.g. Tune's own
            ``ray.air.integrations.mlflow.MLflowLoggerCallback`` or
            ``ray.air.integrations.wandb.WandbLoggerCallback`` (docs/tune.md, "Logs").
        max_failures: times Tune retries a failed trial from its last checkpoint
            (``tune.FailureConfig``); each retry is counted as a ``retry`` restart in the
            compute account and marked in the report. 0: a failed trial stays failed.
        resume: continue the interrupted run in ``out`` (``tune.Tuner.restore``) instead of
            starting one; ``preset``, ``workers``, ``loggers`` and ``max_failures`` must be the
            run's own (:func:`resume_settings` reads them from ``out``). Unfinished trials go on
            from their last checkpoints and the comparison from its last saved state; the
            Tuner's callbacks are the run's own (``callbacks`` must be empty).

    Returns ``{"paths": write_report's paths, "summary": per-arm summary DataFrame,
    "compute": the scheduler's compute per arm (``AdaLRSComparison.compute_table()``),
    "errors": [str], "unfinished": number of trials that did not finish (an interrupted run:
    Ctrl-C stops Tune, the report covers what ran), "wall_s": float}``. Raises ``ValueError``
    for bad settings (before any trial starts) and when the run produced no result to report.
    """
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"--workers is {workers!r}, but must be an integer >= 1")
    if workers > 1 and preset.task != "lm":
        raise ValueError(
            f"--workers {workers}: only the lm task trains on several workers (a Ray Train "
            "TorchTrainer per trial); the sim task runs in-process, use --workers 1"
        )
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 0:
        raise ValueError(f"--max-failures is {max_failures!r}, but must be an integer >= 0")
    arm_objs = build_arms(preset)
    if not isinstance(loggers, bool):
        raise ValueError(f"loggers is {loggers!r}, but must be True or False")
    extra_callbacks = list(callbacks)
    # before ray.tune is imported: Tune's console output off
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    out = Path(out).resolve()
    tune_dir = out / TUNE_NAME
    if resume:
        if not (tune_dir / "tuner.pkl").is_file():
            raise ValueError(
                f"--resume {out}: {tune_dir} holds no Tune experiment to continue (no tuner.pkl)"
            )
        if extra_callbacks:
            raise ValueError("resume: callbacks must be empty (the run's own are restored)")
        _check_saved_state(tune_dir)
    elif tune_dir.exists():
        raise ValueError(
            f"{tune_dir} already exists (a previous compare run): choose another --out, or "
            f"rebuild its report with: adalrs-ray report {out}"
        )
    from adalrs_ray.comparison import (
        AdaLRSComparison,
        compute_frame,
        explicit_loggers,
        load_comparison,
        tune_loggers,
    )

    sched = AdaLRSComparison(
        arm_objs, total_steps=preset.total_steps, report_every=preset.report_every
    )
    trial_config = trial_config_of(preset)
    if workers > 1:
        trial_config["workers"] = workers
    check_trial_config(preset, sched, trial_config)  # before Ray starts
    labels = list(sched.arms)
    n_trials = {key: 0 for key in labels}
    for slot in sched.slots():
        n_trials[slot["arm"]] += 1

    t_start = time.monotonic()
    load_start = _load_average()
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "command": command,
        "preset": preset.to_dict(),
        "arms": labels,
        "trials": n_trials,
        "workers": workers,
        "address": address,
        "loggers": loggers,
        "max_failures": max_failures,
    }
    if resume:  # the settings are the run's own: record the resume only
        saved = read_compare_settings(out)
        saved.setdefault("resumed", []).append(command)
        settings = saved
    (out / CONFIG_FILE).write_text(json.dumps(settings, indent=1, default=str) + "\n")

    from ray import tune

    from train_loops.trainables import get_trainable

    # Train runs stopped by Tune (HyperBand, PBT) need the dashboard's state API to free
    # their placement groups (shared RAY_NOTES); in-process trials do not
    with RayContext(address, cpus, dashboard=workers > 1) as ray:
        total_cpus = _cluster_cpus(ray)
        cpu = total_cpus / preset.max_concurrent
        # Tune's CSV, JSON and TensorBoard files per trial, then the caller's callbacks
        callbacks = [*tune_loggers(loggers), *extra_callbacks]
        if workers > 1:
            from train_loops.trainables.lm_torchtrainer import NAME, TrainPlacementGroupReaper

            driver_cpu, trial_config["cpus_per_worker"] = train_trial_cpus(
                total_cpus, preset.max_concurrent, workers
            )
            trainable = get_trainable(NAME, cpu=driver_cpu)
            callbacks.append(TrainPlacementGroupReaper())
        else:
            trainable = get_trainable("lm" if preset.task == "lm" else "synthetic", cpu=cpu)
        if progress:
            callbacks.append(make_progress_callback(labels, n_trials, progress_every))
        logger.info(
            "compare: %d trials in arms %s, %d steps each, %s CPU per trial (%d at once on %g "
            "CPUs) -> %s",
            sum(n_trials.values()),
            labels,
            preset.total_steps,
            f"{cpu:g}",
            preset.max_concurrent,
            total_cpus,
            out,
        )
        # the comparison's state in every experiment checkpoint: what --resume continues from
        callbacks.append(sched.checkpoint_callback())
        if resume:
            # Tune restores the run's own scheduler and callbacks (pickled at its start) and
            # the comparison's state saved with its last experiment checkpoint
            tuner = tune.Tuner.restore(
                str(tune_dir), trainable, resume_unfinished=True, resume_errored=False
            )
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=sched.param_space(trial_config),
                tune_config=tune.TuneConfig(scheduler=sched, reuse_actors=True),
                run_config=tune.RunConfig(
                    storage_path=str(out),
                    name=TUNE_NAME,
                    verbose=0,
                    callbacks=callbacks,
                    # PBT restores the donor's latest checkpoint, which may be older than the last
                    # few: keep all of them during the run (removed at the end)
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
                    # a trial whose process dies is retried from its last checkpoint
                    failure_config=tune.FailureConfig(max_failures=max_failures),
                ),
            )
        with explicit_loggers():  # exactly the loggers above, whatever the environment says
            results = tuner.fit()
        ray_cpus = total_cpus
    wall = time.monotonic() - t_start
    errors = [f"{r.metrics.get('trial_id', '?')}: {r.error}" for r in results if r.error]
    if errors:
        logger.warning("%d trial(s) failed; first: %s", len(errors), str(errors[0])[:500])
    if resume:  # Tune ran the scheduler restored from the run's start: read its files
        saved = load_comparison(tune_dir)
        trial_table, arm_table = (
            compute_frame(
                saved.results,
                saved.meta["trials"],
                by,
                arms=saved.meta["arms"],
                mode=saved.meta["mode"],
            )
            for by in ("trial", "arm")
        )
    else:
        trial_table, arm_table = sched.compute_table("trial"), sched.compute_table()
    status = trial_table["status"]
    unfinished = int(status.isin(["pending", "running", "paused"]).sum())
    if unfinished:  # Ctrl-C: Tune stops, the report covers what ran
        logger.warning("%d trial(s) did not finish (interrupted?): a partial report", unfinished)
    if not keep_checkpoints:
        _remove_checkpoints(tune_dir)

    try:
        df = rep.load_results(tune_dir)
    except (ValueError, FileNotFoundError) as exc:
        first = f"; first trial error: {str(errors[0]).splitlines()[-1]}" if errors else ""
        raise ValueError(f"the comparison produced no results to report ({exc}){first}") from None
    ada = [adalrs_label(s) for s in preset.adalrs_starts if adalrs_label(s) in labels]
    extra = {
        "command": command or "",
        "preset": preset.name,
        "task": preset.task,
        "steps per trial": preset.total_steps,
        "report every": preset.report_every,
        "lr_ref": preset.lr_ref,
        "LR range of the arms": f"[{preset.lr_min:.3g}, {preset.lr_max:.3g}]",
        "AdaLRS starts (x lr_ref)": ", ".join(f"{s:g}" for s in preset.adalrs_starts),
        "AdaLRS settings": json.dumps(preset.adalrs),
        "trials per arm": json.dumps(n_trials),
        "trial config": json.dumps(trial_config),
        "max concurrent trials": preset.max_concurrent,
        "Ray CPUs": ray_cpus,
        "wall time of the Tune run (s)": round(wall, 1),
        "host load average (1 min) at start, end": f"{load_start}, {_load_average()}",
        "failed trials": len(errors),
    }
    paths = rep.write_report(
        df,
        out,
        title=f"AdaLRS comparison ({preset.name}): compute to reach the best loss",
        extra=extra,
        baseline_steps=preset.total_steps,
        grid_arm="grid" if "grid" in labels else None,
        adalrs_arms=ada or None,
        lr_arms=lr_free_arms(labels) or None,
    )
    summary = rep.summarize(
        rep.validate_results(df),
        baseline_steps=preset.total_steps,
        grid_arm="grid" if "grid" in labels else None,
    )
    return {
        "paths": paths,
        "summary": summary,
        "compute": arm_table,
        "errors": errors,
        "unfinished": unfinished,
        "wall_s": wall,
    }


def _check_saved_state(tune_dir: Path) -> None:
    """``ValueError`` if the newest experiment checkpoint in ``tune_dir`` cannot be read: an
    interruption during Tune's upload of it to the storage path can leave a cut file, from
    which ``Tuner.restore`` would start the comparison afresh or fail."""
    import pickle

    for pattern, load in (
        ("experiment_state-*.json", json.loads),
        ("callback-states-*.pkl", pickle.loads),
    ):
        files = sorted(tune_dir.glob(pattern), key=lambda f: f.stat().st_mtime)
        if not files:
            raise ValueError(f"--resume: {tune_dir} has no {pattern}: nothing to continue from")
        try:
            load(files[-1].read_bytes())
        except Exception as exc:  # a cut or empty file, whatever its format says
            raise ValueError(
                f"--resume: {files[-1]} cannot be read ({type(exc).__name__}: {exc}); the run "
                "was interrupted while Tune copied its last experiment checkpoint"
            ) from None


def resume_settings(out: str | os.PathLike) -> dict[str, Any]:
    """The settings ``run_compare(..., resume=True)`` needs to continue the run in ``out``:
    ``preset`` (a :class:`ComparePreset`), ``workers``, ``loggers`` and ``max_failures``, as
    the run saved them at its start (:data:`CONFIG_FILE`). ``ValueError`` if ``out`` holds no
    compare run."""
    if not (Path(out) / CONFIG_FILE).is_file():
        raise ValueError(
            f"--resume {out}: no {CONFIG_FILE} there, so it is not the --out directory of a "
            "compare run"
        )
    settings = read_compare_settings(Path(out))
    try:
        preset = ComparePreset(**settings["preset"])
    except TypeError as exc:
        raise ValueError(
            f"{Path(out) / CONFIG_FILE}: its preset cannot be rebuilt ({exc})"
        ) from None
    return {
        "preset": preset,
        "workers": int(settings.get("workers", 1)),
        "loggers": bool(settings.get("loggers", True)),
        "max_failures": int(settings.get("max_failures", 1)),
    }


def lr_free_arms(labels: Sequence[str]) -> list[str]:
    """The labels of arms whose optimizer sets its own LR (the registered arms with an
    ``optimizer``: prodigy, schedulefree): the report draws their effective LR in plot (b)."""
    from search_algos import ARMS

    return [a for a in labels if getattr(ARMS.get(a), "optimizer", None)]


def headline(summary, threshold: str = "within_2pct") -> str:
    """A short plain-text table: per arm, best final val_loss, compute to reach the target."""
    lines = [
        f"{'arm':<14} {'best val':>9} {'steps to ' + threshold:>22} {'x full run':>10} "
        f"{'x grid':>7} {'total x full':>12}"
    ]
    has_grid = "grid" in set(summary["arm"])
    for _, row in summary.iterrows():
        steps = row.get(f"steps_to_{threshold}")

        def f(v, fmt):
            if v is None:  # no such column (e.g. no grid arm)
                return "-"
            return "never" if not math.isfinite(v) else format(v, fmt)

        lines.append(
            f"{row['arm']:<14} {f(row['best_final_val_loss'], '.4f'):>9} "
            f"{f(steps, ',.0f'):>22} {f(row.get(f'full_runs_to_{threshold}'), '.2f'):>10} "
            f"{f(row.get(f'grid_frac_to_{threshold}') if has_grid else None, '.2f'):>7} "
            f"{f(row.get('total_full_runs'), '.2f'):>12}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------ report
#: the settings two compare runs must share for their arms to appear in one report
SAME_TASK_KEYS = ("task", "total_steps", "report_every", "trial_config")


def read_compare_settings(d: Path) -> dict[str, Any]:
    """The resolved settings a compare run saved in ``d`` (:data:`CONFIG_FILE`); ``ValueError``
    when missing or malformed."""
    f = d / CONFIG_FILE
    if not f.is_file():
        raise ValueError(
            f"{str(d)!r} has no {CONFIG_FILE}: without the run's settings its arms cannot be "
            "checked against the other run's (same task, steps and report interval)"
        )
    try:
        settings = json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{f} is not valid JSON: {exc}") from None
    if not isinstance(settings, dict) or not isinstance(settings.get("preset"), dict):
        raise ValueError(f'{f} must hold a JSON object with a "preset" object')
    return settings


def _results_and_meta(d: Path) -> tuple[Any, dict[str, Any]]:
    """The results of the compare directory ``d`` and the report options saved beside them."""
    f = rep.find_results_file(d)
    return rep.load_results(f), rep.read_meta(f.parent)


def merge_compare_dirs(
    directory: str | Path, additions: Sequence[tuple[str | Path, Sequence[str]]]
) -> tuple[Any, dict[str, Any]]:
    """The results of ``directory`` with whole arms of other compare directories added, and the
    report options for them (``report_meta.json`` of ``directory``, the grid and AdaLRS arms of
    the merged table, and the source of every added arm in the settings table).

    The runs must agree on :data:`SAME_TASK_KEYS` of their resolved preset (else
    ``ValueError`` naming the key and both values): arms trained on another task or budget are
    not comparable. Worker-seconds are comparable only when both ran on the same machine at a
    similar load; the settings table records each source's command, wall time and load.
    """
    d = Path(directory)
    base = read_compare_settings(d)
    df, meta = _results_and_meta(d)
    extra = dict(meta.get("extra") or {"command": base.get("command") or ""})
    ada = list(meta.get("adalrs_arms") or [])
    parts = []
    for folder, arms in additions:
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"--add-arms: {str(folder)!r} does not exist or is not a directory")
        other = read_compare_settings(folder)
        for key in SAME_TASK_KEYS:
            a, b = base["preset"].get(key), other["preset"].get(key)
            if a != b:
                raise ValueError(
                    f"{str(folder)!r} ran with {key} = {b!r}, {str(d)!r} with {a!r}: arms of "
                    f"runs with another {key} are not comparable"
                )
        other_df, other_meta = _results_and_meta(folder)
        parts.append((other_df, arms, repr(str(folder))))
        ada += [a for a in (other_meta.get("adalrs_arms") or []) if a in arms]
        src = other_meta.get("extra") or {}
        how = ", ".join(
            f"{k} {src[k]}"
            for k in ("wall time of the Tune run (s)", "host load average (1 min) at start, end")
            if k in src
        )
        extra[f"arms {', '.join(arms)} from"] = (
            f"{folder} ({other.get('command') or 'command unknown'}" + (f"; {how})" if how else ")")
        )
    merged = rep.merge_arms(df, *parts)
    arms_now = set(merged["arm"])
    options = {
        k: meta[k] for k in ("title", "baseline_steps", "thresholds") if meta.get(k) is not None
    }
    options.setdefault("baseline_steps", base["preset"].get("total_steps"))
    options["extra"] = extra
    options["grid_arm"] = "grid" if "grid" in arms_now else None
    options["adalrs_arms"] = [a for a in dict.fromkeys(ada) if a in arms_now] or None
    options["lr_arms"] = lr_free_arms(sorted(arms_now)) or None
    return merged, options


def write_merged_report(
    directory: str | Path,
    additions: Sequence[tuple[str | Path, Sequence[str]]],
    out: str | Path,
    **options: Any,
) -> dict[str, Any]:
    """Write into ``out`` one report over ``directory``'s arms and the named arms of other
    compare directories (:func:`merge_compare_dirs`); ``options`` (e.g. ``thresholds``) take
    precedence over the merged ones. Returns ``write_report``'s paths."""
    merged, merged_options = merge_compare_dirs(directory, additions)
    return rep.write_report(merged, out, **{**merged_options, **options})


def rebuild_report(
    directory: str | Path, out: str | Path | None = None, **options: Any
) -> dict[str, Any]:
    """Rebuild the report of the compare directory ``directory`` into ``out`` (default: the
    directory) from its ``results.parquet``, or from the Tune compute log of an interrupted run
    (then the arms and command come from its :data:`CONFIG_FILE`). ``options`` go to
    ``build_report_from_dir`` (e.g. ``thresholds``). Raises ``ValueError`` when there are no
    results. Returns the report's paths."""
    d = Path(directory)
    try:
        rep.find_results_file(d)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    options = dict(options)
    if not (d / "results.parquet").is_file() and (d / CONFIG_FILE).is_file():
        # an interrupted compare: no report yet, rebuild from the Tune compute log
        settings = read_compare_settings(d)
        options.setdefault("extra", {"command": settings.get("command") or ""})
        labels = settings.get("arms") or []
        options.setdefault("adalrs_arms", [a for a in labels if a.startswith("adalrs")] or None)
        options.setdefault("grid_arm", "grid" if "grid" in labels else None)
        options.setdefault("lr_arms", lr_free_arms(labels) or None)
    return rep.build_report_from_dir(d, out, **options)
