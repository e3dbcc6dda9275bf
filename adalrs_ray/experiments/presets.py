"""Comparison presets for ``adalrs-ray compare``: budgets and arms, sized for a machine.

A preset fixes everything a head-to-head LR-search comparison needs (Dong et al., "AdaLRS",
NeurIPS 2025, arXiv 2506.13274, Sec. 4: the compute AdaLRS spends to find a good LR against a
search): the task and its shared trial config, the budget of one trial (``total_steps``,
``report_every``), a reference LR ``lr_ref`` (the best LR of a sweep of the task, measured, see
docs/compare.md), the LR range every arm searches (``[lr_ref / lr_span, lr_ref * lr_span]``) and
the size of each arm. The arms' settings come from the arm registry (:mod:`search_algos`): each
arm class declares its settings per preset (``preset_settings``) and its size option
(``grid_points``, ``hyperband_trials``, ...); a preset's ``arm_settings`` overrides them. AdaLRS runs one arm per starting LR multiple (``adalrs_starts``, default
``0.1`` and ``10``: started 10x too small and 10x too large), labelled ``adalrs_x0.1`` and
``adalrs_x10``, so each AdaLRS arm is one single full-budget run and its compute is directly
"x one full run".

Presets (:data:`PRESETS`):

* ``quick`` -- the README's main command: the tiny Qwen2 LM on the standard-library corpus, 21
  trials of 600 steps under WSD; the AdaLRS trials observe a fixed 16-sequence probe batch
  (their training loss at 16 x 64 tokens per step is below its own noise level in 20-step
  windows; docs/compare.md gives the time on 2 cores).
* ``long`` -- the tiny LM under cosine with the training-loss signal, trials of 1,200 steps and
  1.5x longer windows (the earlier quick preset at twice the budget).
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from adalrs_ray.core.checks import check, check_int, is_number
from search_algos import ARMS, DEFAULT_ARMS, Arm, get_arm, size_options

#: arm names the compare command accepts (the registry, search_algos.ARMS)
ARM_NAMES = tuple(ARMS)
TASKS = ("lm", "sim")


def _is_positive(value: Any) -> bool:
    return is_number(value) and value > 0


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
        arms: the default arms (:data:`search_algos.DEFAULT_ARMS` unless given).
        adalrs_starts: AdaLRS starting LRs as multiples of ``lr_ref``; one arm each.
        adalrs: AdaLRSConfig arguments of the AdaLRS trials (``total_steps`` excluded).
        arm_settings: per arm name, the arm's keyword arguments besides the LR range and the
            budget (e.g. ``{"hyperband": {"num_trials": 8, "reduction_factor": 3}}``), merged
            over the arm's own settings for this preset
            (:meth:`search_algos.base.Arm.settings_for_preset`). Every arm with a size option
            can also be sized by that option's name: ``preset.grid_points``,
            ``with_overrides(pbt_trials=6)``. Not for ``adalrs``: its arms come from
            ``adalrs_starts`` and ``adalrs``.
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
    arms: tuple[str, ...] = DEFAULT_ARMS
    adalrs_starts: tuple[float, ...] = (0.1, 10.0)
    adalrs: Mapping[str, Any] = field(default_factory=dict)
    arm_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    trial_config: Mapping[str, Any] = field(default_factory=dict)
    max_concurrent: int = 4

    def __post_init__(self) -> None:
        try:
            self._check_and_normalise()
        except ValueError as exc:
            raise ValueError(f"preset {self.name!r}: {exc}") from None

    def _check_and_normalise(self) -> None:
        check(self.task in TASKS, f"task is {self.task!r}, but must be one of {TASKS}")
        for key in ("total_steps", "report_every", "max_concurrent"):
            check_int(key, getattr(self, key), 1)
        check(
            self.report_every <= self.total_steps,
            f"report_every={self.report_every} exceeds total_steps={self.total_steps}",
        )
        check(_is_positive(self.lr_ref), f"lr_ref is {self.lr_ref!r}, but must be a number > 0")
        check(
            _is_positive(self.lr_span) and self.lr_span > 1,
            f"lr_span is {self.lr_span!r}, but must be a number > 1",
        )
        arms = tuple(self.arms)
        check(len(arms) > 0, "arms is empty, but a comparison needs at least one arm")
        bad = [a for a in arms if a not in ARM_NAMES]
        check(not bad, f"unknown arm(s) {bad}; valid arms: {list(ARM_NAMES)}")
        check(len(set(arms)) == len(arms), f"arms {list(arms)} name an arm twice")
        object.__setattr__(self, "arms", arms)
        starts = tuple(float(s) if _is_positive(s) else s for s in self.adalrs_starts)
        check(
            len(starts) > 0 and all(_is_positive(s) for s in starts),
            f"adalrs_starts is {self.adalrs_starts!r}, but must be one or more numbers > 0 "
            "(multiples of lr_ref)",
        )
        check(
            len({adalrs_label(s) for s in starts}) == len(starts),
            f"adalrs_starts {list(starts)} repeats a start",
        )
        object.__setattr__(self, "adalrs_starts", starts)
        for key in ("adalrs", "arm_settings", "trial_config"):
            v = getattr(self, key)
            check(isinstance(v, Mapping), f"{key} is {v!r}, but must be a mapping")
            object.__setattr__(self, key, dict(v))
        object.__setattr__(self, "arm_settings", self._resolve_arm_settings(self.arm_settings))

    def _resolve_arm_settings(self, given: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Every registered arm's settings in this preset: the arm's own, then ``given``."""
        bad = [a for a in given if a not in ARM_NAMES]
        check(not bad, f"arm_settings names unknown arm(s) {bad}; valid arms: {list(ARM_NAMES)}")
        check(
            "adalrs" not in given,
            "arm_settings must not hold 'adalrs': the AdaLRS arms come from adalrs_starts and "
            "adalrs",
        )
        out: dict[str, dict[str, Any]] = {}
        for name, cls in ARMS.items():
            if name == "adalrs":
                continue
            mine = given.get(name, {})
            check(
                isinstance(mine, Mapping),
                f"arm_settings[{name!r}] is {mine!r}, but must be a mapping",
            )
            out[name] = {**cls.settings_for_preset(self.name), **mine}
        for name, option in size_options().items():
            value = out.get(name, {}).get(option.kwarg)
            if value is not None:
                check_int(option.name, value, 1)
        return out

    def __getattr__(self, name: str) -> Any:
        """``preset.<size option>`` (``grid_points``, ``pbt_trials``, ...): that arm's size here
        (``None`` when the arm takes its own default)."""
        for arm, option in size_options().items():
            if option.name == name:
                return self.arm_settings[arm].get(option.kwarg)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def lr_min(self) -> float:
        return self.lr_ref / self.lr_span

    @property
    def lr_max(self) -> float:
        return self.lr_ref * self.lr_span

    def with_overrides(self, **changes: Any) -> ComparePreset:
        """A copy with ``changes`` (``None`` values are ignored; mappings are merged into the
        preset's, e.g. ``adalrs={"window": 20}`` keeps the other AdaLRS settings, and
        ``arm_settings`` arm by arm). An arm's size option name sets its size:
        ``with_overrides(grid_points=3, pbt_trials=6)``."""
        fields = {f.name for f in dataclasses.fields(self)}
        sizes = {option.name: (arm, option.kwarg) for arm, option in size_options().items()}
        unknown = sorted(set(changes) - fields - set(sizes))
        if unknown:
            raise ValueError(
                f"unknown preset field(s) {unknown}; fields: {sorted(fields | set(sizes))}"
            )
        merged: dict[str, Any] = {}
        for key, value in changes.items():
            if value is None or key in sizes:
                continue
            current = getattr(self, key)
            if key == "arm_settings" and isinstance(value, Mapping):  # merged arm by arm
                value = {
                    a: {**current.get(a, {}), **value.get(a, {})} for a in {**current, **value}
                }
            elif isinstance(current, Mapping) and isinstance(value, Mapping):
                value = {**current, **value}
            merged[key] = value
        for key, value in changes.items():
            if key in sizes and value is not None:
                arm, kwarg = sizes[key]
                settings = merged.setdefault("arm_settings", dict(self.arm_settings))
                settings[arm] = {**settings.get(arm, {}), kwarg: value}
        return dataclasses.replace(self, **merged)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["arms"] = list(self.arms)
        out["adalrs_starts"] = list(self.adalrs_starts)
        return out


def adalrs_label(start: float) -> str:
    """The arm label of AdaLRS started at ``start * lr_ref``: ``adalrs_x0.1``, ``adalrs_x10``."""
    return f"adalrs_x{start:g}"


def build_arms(preset: ComparePreset, arms: Sequence[str] | None = None) -> list[Arm]:
    """The :mod:`search_algos` arms of ``preset`` (``arms``: names, default ``preset.arms``).

    Every arm searches ``[preset.lr_min, preset.lr_max]`` with its ``preset.arm_settings``;
    ``adalrs`` becomes one arm per ``adalrs_starts`` entry. The arms that sample their LRs
    (``sampling == "log_uniform"``) are seeded by the trial config's ``seed`` unless their
    settings give one. Raises ``ValueError`` for an unknown or repeated name.
    """
    names = list(preset.arms if arms is None else arms)
    if not names:
        raise ValueError("arms is empty, but a comparison needs at least one arm")
    bad = [a for a in names if a not in ARM_NAMES]
    if bad:
        raise ValueError(f"unknown arm(s) {bad}; valid arms: {', '.join(ARM_NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"arms {names} name an arm twice")
    lo, hi = preset.lr_min, preset.lr_max
    seed = int(preset.trial_config.get("seed", 0) or 0)
    out: list[Arm] = []
    for name in names:
        if name == "adalrs":  # the subject of the comparison: one arm per starting LR
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
            continue
        tasks = getattr(ARMS[name], "tasks", None)  # e.g. the LR-free arms: the lm task only
        if tasks is not None and preset.task not in tasks:
            raise ValueError(
                f"arm {name!r} trains with the {ARMS[name].optimizer!r} optimizer, which the "
                f"task {preset.task!r} does not have; it runs on the task(s) {list(tasks)}"
            )
        settings = dict(preset.arm_settings.get(name, {}))
        if ARMS[name].sampling == "log_uniform":
            settings.setdefault("seed", seed)
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


def _tiny_lm(
    name: str,
    description: str,
    total_steps: int,
    report_every: int,
    window: int,
    schedule: str = "cosine",
    probe_sequences: int = 0,
    opening_steps: int = 0,
):
    """A comparison on the tiny LM at 16 x 64 tokens per step. ``probe_sequences`` > 0: the
    AdaLRS trials observe the loss of a fixed probe batch of that many sequences
    (``LMConfig.adalrs_signal="probe"``), the other arms' trials do not probe.
    ``opening_steps`` > 0: AdaLRS opens with the LR range test of the ``opening`` rule, that
    many steps per multiplier (a quarter of them, rounded up, score it), and rewinds (the LM loop rewinds its data), so the opening and
    failed trials cost compute, not steps of the run."""
    probe = (
        {"adalrs_signal": "probe", "probe_sequences": probe_sequences} if probe_sequences else {}
    )
    opening = (
        {
            "rule": "opening",
            "opening_steps": opening_steps,
            "opening_tail": -(-opening_steps // 4),
            "backtrack_mode": "rewind",
            "decay_basis": "adjustments",
        }
        if opening_steps
        else {}
    )
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
            **opening,
        },
        trial_config={**_LM_TRIAL, "seq_len": 64, "schedule": schedule, **probe},
        max_concurrent=4,
    )


PRESETS: dict[str, ComparePreset] = {
    p.name: p
    for p in (
        _tiny_lm(
            name="quick",
            description="tiny Qwen2 LM on the stdlib corpus, WSD, 21 trials of 600 steps, AdaLRS "
            "on a 16-sequence probe batch, sized for 2 cores",
            total_steps=600,
            report_every=50,
            window=20,
            # at 16 x 64 tokens per step a 20-step slope of the training loss is below its own
            # standard error (median |v|/se 0.82); the probe batch's is 3.8 for 0.30 of a
            # training step (benchmarks/lm_probe_signal.py, docs/lm_task.md)
            schedule="wsd",
            probe_sequences=16,
            # the LR range test before the first step: 1/10 .. 10x of the start, 30 steps each
            # (from 10x a single update at the start LR already damages the tiny model;
            # benchmarks/lm_adalrs_recovery.py, docs/controller.md "The opening")
            opening_steps=30,
        ),
        _tiny_lm(
            name="long",
            description="tiny Qwen2 LM on the stdlib corpus, cosine, training-loss signal, trials "
            "of 1200 steps",
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
