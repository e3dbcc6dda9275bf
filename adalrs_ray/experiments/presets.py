"""Comparison presets for ``adalrs-ray compare``: budgets and arms, sized for a machine.

A preset fixes everything a head-to-head LR-search comparison needs (Dong et al., "AdaLRS",
NeurIPS 2025, arXiv 2506.13274, Sec. 4: the compute AdaLRS spends to find a good LR against a
search): the task and its shared trial config, the budget of one trial (``total_steps``,
``report_every``), a reference LR ``lr_ref`` (the best LR of a sweep of the task, measured, see
docs/compare.md), the LR range every arm searches (``[lr_ref / lr_span, lr_ref * lr_span]``) and
the size of each arm. AdaLRS runs one arm per starting LR multiple (``adalrs_starts``, default
``0.1`` and ``10``: started 10x too small and 10x too large), labelled ``adalrs_x0.1`` and
``adalrs_x10``, so each AdaLRS arm is one single full-budget run and its compute is directly
"x one full run".

Presets (:data:`PRESETS`):

* ``quick`` -- the README's main command: the tiny Qwen2 LM on the standard-library corpus, 21
  trials of 600 steps; 4 min 18 s end to end on 2 cores (measured, docs/compare.md).
* ``long`` -- the same task with 2x longer trials and 1.5x longer windows.
* ``wsd64`` -- the tiny LM at 64 x 128 tokens per step under WSD, trials of 2,000 steps: the
  setting in which AdaLRS from 10x too small reached 0.83x the grid's LR (docs/lm_task.md, F).
* ``sim`` -- the loss simulator (:class:`adalrs_ray.core.simulator.LossSimulator`): no training
  cost, Tune's overhead only.
* ``smoke`` -- the tiny LM for a handful of steps: checks the plumbing, shows nothing.

Example::

    from adalrs_ray.experiments.presets import get_preset, build_arms
    p = get_preset("quick").with_overrides(total_steps=200)
    arms = build_arms(p, ["adalrs", "grid", "hyperband", "pbt"])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: arm names the compare command accepts (search_algos.ARMS)
ARM_NAMES = ("adalrs", "grid", "hyperband", "asha", "pbt")
TASKS = ("lm", "sim")


@dataclass(frozen=True)
class ComparePreset:
    """Budgets and arm sizes of one comparison.

    Args:
        name: the preset's name.
        description: one line for ``--help`` and the report.
        task: ``"lm"`` (the LM trainable of :mod:`train_loops.trainables`) or ``"sim"``
            (the synthetic simulator trainable).
        total_steps: T, the budget of one full trial in optimizer steps.
        report_every: steps between two reports (the unit of HyperBand/ASHA/PBT time).
        lr_ref: the reference LR: the best LR of a sweep of this task (measured).
        lr_span: every arm searches ``[lr_ref / lr_span, lr_ref * lr_span]``.
        arms: the default arms.
        adalrs_starts: AdaLRS starting LRs as multiples of ``lr_ref``; one arm each.
        adalrs: AdaLRSConfig arguments of the AdaLRS trials (``total_steps`` excluded).
        grid_points: trials of the grid (log-spaced over the range, both ends included).
        hyperband: HyperBandArm arguments (besides the range and budget).
        asha: ASHAArm arguments.
        pbt: PBTArm arguments.
        trial_config: config shared by every trial (LMConfig fields for ``lm``, simulator
            settings for ``sim``).
        max_concurrent: trials running at once; each trial reserves ``cpus / max_concurrent``
            CPUs of the cluster (all trials are added at the start, which synchronous
            HyperBand needs).
    """

    name: str
    description: str
    task: str
    total_steps: int
    report_every: int
    lr_ref: float
    lr_span: float = 10.0
    arms: tuple[str, ...] = ("adalrs", "grid", "hyperband", "pbt")
    adalrs_starts: tuple[float, ...] = (0.1, 10.0)
    adalrs: Mapping[str, Any] = field(default_factory=dict)
    grid_points: int = 7
    hyperband: Mapping[str, Any] = field(default_factory=dict)
    asha: Mapping[str, Any] = field(default_factory=dict)
    pbt: Mapping[str, Any] = field(default_factory=dict)
    trial_config: Mapping[str, Any] = field(default_factory=dict)
    max_concurrent: int = 4

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"preset {self.name!r}: {message}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_pos(v: Any) -> bool:
            return (
                isinstance(v, (int, float))
                and not isinstance(v, bool)
                and math.isfinite(v)
                and v > 0
            )

        need(self.task in TASKS, f"task is {self.task!r}, but must be one of {TASKS}")
        for key in ("total_steps", "report_every", "grid_points", "max_concurrent"):
            v = getattr(self, key)
            need(is_int(v) and v >= 1, f"{key} is {v!r}, but must be an integer >= 1")
        need(
            self.report_every <= self.total_steps,
            f"report_every={self.report_every} exceeds total_steps={self.total_steps}",
        )
        need(is_pos(self.lr_ref), f"lr_ref is {self.lr_ref!r}, but must be a number > 0")
        need(
            is_pos(self.lr_span) and self.lr_span > 1,
            f"lr_span is {self.lr_span!r}, but must be a number > 1",
        )
        arms = tuple(self.arms)
        need(len(arms) > 0, "arms is empty, but a comparison needs at least one arm")
        bad = [a for a in arms if a not in ARM_NAMES]
        need(not bad, f"unknown arm(s) {bad}; valid arms: {list(ARM_NAMES)}")
        need(len(set(arms)) == len(arms), f"arms {list(arms)} name an arm twice")
        object.__setattr__(self, "arms", arms)
        starts = tuple(float(s) if is_pos(s) else s for s in self.adalrs_starts)
        need(
            len(starts) > 0 and all(is_pos(s) for s in starts),
            f"adalrs_starts is {self.adalrs_starts!r}, but must be one or more numbers > 0 "
            "(multiples of lr_ref)",
        )
        need(
            len({adalrs_label(s) for s in starts}) == len(starts),
            f"adalrs_starts {list(starts)} repeats a start",
        )
        object.__setattr__(self, "adalrs_starts", starts)
        for key in ("adalrs", "hyperband", "asha", "pbt", "trial_config"):
            v = getattr(self, key)
            need(isinstance(v, Mapping), f"{key} is {v!r}, but must be a mapping")
            object.__setattr__(self, key, dict(v))

    @property
    def lr_min(self) -> float:
        return self.lr_ref / self.lr_span

    @property
    def lr_max(self) -> float:
        return self.lr_ref * self.lr_span

    def with_overrides(self, **changes: Any) -> ComparePreset:
        """A copy with ``changes`` (``None`` values are ignored; mappings are merged into the
        preset's, e.g. ``adalrs={"window": 20}`` keeps the other AdaLRS settings)."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise ValueError(f"unknown preset field(s) {unknown}; fields: {sorted(fields)}")
        merged: dict[str, Any] = {}
        for key, value in changes.items():
            if value is None:
                continue
            current = getattr(self, key)
            if isinstance(current, Mapping) and isinstance(value, Mapping):
                value = {**current, **value}
            merged[key] = value
        return dataclasses.replace(self, **merged)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["arms"] = list(self.arms)
        out["adalrs_starts"] = list(self.adalrs_starts)
        return out


def adalrs_label(start: float) -> str:
    """The arm label of AdaLRS started at ``start * lr_ref``: ``adalrs_x0.1``, ``adalrs_x10``."""
    return f"adalrs_x{start:g}"


def build_arms(preset: ComparePreset, arms: Sequence[str] | None = None) -> list[Any]:
    """The :mod:`search_algos` arms of ``preset`` (``arms``: names, default ``preset.arms``).

    Every arm searches ``[preset.lr_min, preset.lr_max]``; ``adalrs`` becomes one arm per
    ``adalrs_starts`` entry. Raises ``ValueError`` for an unknown or repeated name.
    """
    from search_algos import get_arm

    names = list(preset.arms if arms is None else arms)
    if not names:
        raise ValueError("arms is empty, but a comparison needs at least one arm")
    bad = [a for a in names if a not in ARM_NAMES]
    if bad:
        raise ValueError(f"unknown arm(s) {bad}; valid arms: {', '.join(ARM_NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"arms {names} name an arm twice")
    lo, hi = preset.lr_min, preset.lr_max
    out = []
    for name in names:
        if name == "adalrs":
            for start in preset.adalrs_starts:
                out.append(
                    get_arm(
                        "adalrs",
                        lrs=(float(f"{preset.lr_ref * start:.6g}"),),
                        adalrs=dict(preset.adalrs),
                        lr_min=min(lo, preset.lr_ref * start / 2),
                        lr_max=max(hi, preset.lr_ref * start * 2),
                        label=adalrs_label(start),
                    )
                )
        elif name == "grid":
            out.append(get_arm("grid", lr_min=lo, lr_max=hi, num_trials=preset.grid_points))
        else:
            settings = dict(getattr(preset, name))
            settings.setdefault("seed", int(preset.trial_config.get("seed", 0) or 0))
            out.append(get_arm(name, lr_min=lo, lr_max=hi, **settings))
    return out


# Shared trial config of the LM presets (LMConfig fields): the tiny Qwen2 on the stdlib corpus,
# one torch thread per trial, cosine base schedule (the paper's).
_LM_TRIAL = {
    "preset": "tiny",
    "seq_len": 128,
    "batch_size": 16,
    "eval_batches": 4,
    "schedule": "cosine",
    "num_threads": 1,
    "device": "cpu",
    "log_every": 1000,
}


def _tiny_lm(name: str, description: str, total_steps: int, report_every: int, window: int):
    """A comparison on the tiny LM (the quick and long presets differ only in their budgets)."""
    return ComparePreset(
        name=name,
        description=description,
        task="lm",
        total_steps=total_steps,
        report_every=report_every,
        lr_ref=3e-3,
        # short runs: search from 5% to 50% of the run with a half-window ramp, so that
        # two or three upscales fit (the paper: [0.1, 0.4], ramp = window)
        adalrs={
            "window": window,
            "start_ratio": 0.05,
            "end_ratio": 0.5,
            "ramp_steps": window // 2,
        },
        grid_points=7,
        hyperband={"num_trials": 8, "reduction_factor": 3},
        asha={"num_trials": 8, "reduction_factor": 3, "grace_period": 2},
        pbt={"num_trials": 4},
        trial_config={**_LM_TRIAL, "seq_len": 64},
        max_concurrent=4,
    )


PRESETS: dict[str, ComparePreset] = {
    p.name: p
    for p in (
        _tiny_lm(
            name="quick",
            description="tiny Qwen2 LM on the stdlib corpus, 21 trials of 600 steps, sized for 2 cores",
            total_steps=600,
            report_every=50,
            window=20,
        ),
        _tiny_lm(
            name="long",
            description="tiny Qwen2 LM on the stdlib corpus, trials of 1200 steps (2x quick)",
            total_steps=1200,
            report_every=100,
            window=30,
        ),
        ComparePreset(
            name="wsd64",
            description="tiny Qwen2 LM, WSD, batch 64 x 128, trials of 2000 steps: the setting "
            "where AdaLRS recovers from 10x too small (docs/lm_task.md, F); adalrs,grid: 68 min on 2 cores",
            task="lm",
            total_steps=2000,
            report_every=100,
            lr_ref=3.16e-3,
            # setting F of docs/lm_task.md: window 100, search from 5% to 50% of the run, ramp = window
            adalrs={"window": 100, "start_ratio": 0.05, "end_ratio": 0.5},
            grid_points=7,
            hyperband={"num_trials": 8, "reduction_factor": 3},
            asha={"num_trials": 8, "reduction_factor": 3, "grace_period": 2},
            pbt={"num_trials": 4},
            trial_config={**_LM_TRIAL, "batch_size": 64, "schedule": "wsd", "eval_batches": 8},
            max_concurrent=2,
        ),
        ComparePreset(
            name="sim",
            description="loss simulator with a known optimum LR (1e-3): Tune overhead only",
            task="sim",
            total_steps=4000,
            report_every=200,
            lr_ref=1e-3,
            adalrs={"window": 100},
            grid_points=7,
            hyperband={"num_trials": 8, "reduction_factor": 3},
            asha={"num_trials": 8, "reduction_factor": 3, "grace_period": 2},
            pbt={"num_trials": 4},
            trial_config={"lr_opt": 1e-3, "sim": {"noise": 0.02}},
            max_concurrent=8,
        ),
        ComparePreset(
            name="smoke",
            description="tiny Qwen2 LM for 40 steps: checks the plumbing, shows nothing",
            task="lm",
            total_steps=40,
            report_every=10,
            lr_ref=3e-3,
            adalrs={"window": 2},
            adalrs_starts=(0.1,),
            grid_points=2,
            hyperband={"num_trials": 2, "reduction_factor": 3},
            asha={"num_trials": 2, "reduction_factor": 3},
            pbt={"num_trials": 2},
            trial_config={**_LM_TRIAL, "seq_len": 32, "batch_size": 4, "eval_batches": 1},
            max_concurrent=4,
        ),
    )
}


def get_preset(name: str) -> ComparePreset:
    """The preset called ``name``; ``ValueError`` listing the valid names otherwise."""
    preset = PRESETS.get(name) if isinstance(name, str) else None
    if preset is None:
        raise ValueError(f"unknown preset {name!r}; valid presets: {sorted(PRESETS)}")
    return preset


__all__ = [
    "ARM_NAMES",
    "PRESETS",
    "TASKS",
    "ComparePreset",
    "adalrs_label",
    "build_arms",
    "get_preset",
]
