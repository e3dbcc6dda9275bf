"""A loss process with a known optimal learning rate, and a replayer for recorded loss logs.

Used to test and tune the controller without training a network. The simulator follows the
paper's Hypothesis 1 (Dong et al., 2025): the descent velocity is a near-convex function of the
LR whose optimum is also the optimum of the loss. With ``r = lr / lr_opt`` the noise-free loss
moves each step as

    L <- L - rate * g(r) * (L - floor)              if g(r) >= 0  (descent)
    L <- L + rate * |g(r)| * (ceiling - L)          if g(r) < 0   (too large: the loss rises)

    g(r) = r * exp(1 - r)                 for r <= 1   (progress ~ lr for small LRs)
    g(r) = max(-1, 1 - (ln r / ln diverge_ratio)^2)  for r > 1  (zero at diverge_ratio,
                                           negative past it: the loss rises toward ceiling)

so g peaks at r = 1 with g = 1, and at a matched loss level the velocity rate * g(r) * (L-floor)
is ordered exactly like g: both the loss and the velocity share the optimum ``lr_opt``.
The observed loss adds seeded Gaussian noise of standard deviation ``noise``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from adalrs_ray.core.checks import check, check_number
from adalrs_ray.core.controller import Action, AdaLRS, AdaLRSConfig


class LossSimulator:
    """Seeded loss process whose descent velocity peaks at a known LR ``lr_opt``.

    Args:
        lr_opt: the optimal learning rate (> 0).
        rate: the fraction of the gap to ``floor`` closed per step at ``lr_opt``, in (0, 1).
        loss0: the initial loss; ``floor < loss0 <= ceiling``.
        floor: the loss floor reached in the limit.
        ceiling: the loss a diverging run drifts to.
        noise: standard deviation of the per-step observation noise (>= 0).
        diverge_ratio: ``lr / lr_opt`` at which progress stops (> 1); beyond it the loss rises.
        seed: seed of the noise stream.
    """

    def __init__(
        self,
        lr_opt: float = 1e-3,
        *,
        rate: float = 2e-3,
        loss0: float = 6.0,
        floor: float = 2.0,
        ceiling: float | None = None,
        noise: float = 0.02,
        diverge_ratio: float = 2.0,
        seed: int = 0,
    ) -> None:
        check_number("lr_opt", lr_opt, low=0)
        check_number("rate", rate, low=0, high=1)
        ceiling = loss0 + 4.0 if ceiling is None else ceiling
        check(
            floor < loss0 <= ceiling,
            f"floor={floor}, loss0={loss0}, ceiling={ceiling}, but must satisfy "
            "floor < loss0 <= ceiling",
        )
        check_number("noise", noise, low=0, strict=False)
        check(diverge_ratio > 1, f"diverge_ratio is {diverge_ratio}, but must be > 1")
        self.lr_opt = float(lr_opt)
        self.rate = float(rate)
        self.floor = float(floor)
        self.ceiling = float(ceiling)
        self.noise = float(noise)
        self.diverge_ratio = float(diverge_ratio)
        self.seed = int(seed)
        self.loss = float(loss0)  # noise-free level
        self.steps = 0
        self._rng = random.Random(seed)

    def gain(self, lr: float) -> float:
        """g(lr / lr_opt): 1 at the optimum, smaller on both sides, negative past divergence."""
        if not (math.isfinite(lr) and lr > 0):
            return -1.0
        r = lr / self.lr_opt
        if r <= 1:
            return r * math.exp(1.0 - r)
        return max(-1.0, 1.0 - (math.log(r) / math.log(self.diverge_ratio)) ** 2)

    def velocity(self, lr: float, loss: float | None = None) -> float:
        """Expected loss decrease per step at ``lr`` and loss level ``loss``."""
        level = self.loss if loss is None else loss
        g = self.gain(lr)
        if g >= 0:
            return self.rate * g * (level - self.floor)
        return -self.rate * (-g) * (self.ceiling - level)

    def step(self, lr: float) -> float:
        """Advance one optimizer step at ``lr``; return the observed (noisy) loss."""
        self.loss = max(self.floor, min(self.ceiling, self.loss - self.velocity(lr)))
        self.steps += 1
        return self.loss + self._rng.gauss(0.0, self.noise)

    def state_dict(self, include_rng: bool = True) -> dict[str, Any]:
        """The model state (loss level, step count) and, optionally, the noise stream."""
        state: dict[str, Any] = {"loss": self.loss, "steps": self.steps}
        if include_rng:
            state["rng"] = self._rng.getstate()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("loss", "steps"):
            if key not in state:
                raise ValueError(f"LossSimulator state is missing key {key!r}")
        self.loss = float(state["loss"])
        self.steps = int(state["steps"])
        if "rng" in state:
            rng = state["rng"]
            # JSON turns the tuple state into lists: turn it back
            self._rng.setstate((rng[0], tuple(rng[1]), rng[2]))


class LossReplayer:
    """Replays a recorded loss log step by step (the LR passed to :meth:`step` is ignored).

    Useful to see what the controller would have decided on a real run's losses.
    """

    def __init__(self, losses: Iterable[float]) -> None:
        self.losses = [float(x) for x in losses]
        if not self.losses:
            raise ValueError("LossReplayer needs at least one loss, got an empty log")
        self.steps = 0

    @classmethod
    def from_file(cls, path: str, column: str = "loss") -> LossReplayer:
        """Load a log from Parquet (e.g. a run's ``metrics.parquet``) or CSV."""
        import pandas as pd

        frame = pd.read_csv(path) if str(path).endswith(".csv") else pd.read_parquet(path)
        if column not in frame.columns:
            raise ValueError(f"{path} has no column {column!r}; columns: {list(frame.columns)}")
        return cls(frame[column].tolist())

    def __len__(self) -> int:
        return len(self.losses)

    def step(self, lr: float | None = None) -> float:
        if self.steps >= len(self.losses):
            raise ValueError(f"the log has {len(self.losses)} losses; step {self.steps} is past it")
        loss = self.losses[self.steps]
        self.steps += 1
        return loss

    def state_dict(self, include_rng: bool = True) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass  # a replay never rewinds: the log is what happened


@dataclass
class SimResult:
    """What :func:`simulate` recorded, one entry per step."""

    lrs: list[float] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    controller: AdaLRS | None = None
    compute_steps: int = 0  # every step simulated, rewound ones included

    @property
    def final_scale(self) -> float:
        return self.scales[-1]

    def final_loss(self, last: int = 100) -> float:
        tail = [x for x in self.losses[-last:] if math.isfinite(x)]
        return sum(tail) / len(tail) if tail else math.nan


def simulate(
    sim: LossSimulator | LossReplayer,
    base_lr: float | Callable[[int], float],
    config: AdaLRSConfig | None,
    steps: int | None = None,
    *,
    backtracking: bool = True,
) -> SimResult:
    """Drive ``sim`` with AdaLRS (``config``) or without it (``config=None``).

    ``base_lr`` is a constant or a schedule ``step -> lr``. With ``backtracking=False`` the
    RESTORE action is ignored (the paper's ablation, Fig. 4a). In ``backtrack_mode="continue"``
    snapshots keep the model state but not the noise stream: the data moves on, as in a real
    run. In ``"rewind"`` a RESTORE also takes the step counter back to ``restore_step + 1`` and
    replays the noise stream from there, as a loop that rewinds its data does: the result's
    lists then hold the steps of the run as it finally went, and ``compute_steps`` counts every
    step simulated. A config with ``backtrack_mode="auto"`` resolves to ``"rewind"`` on a
    :class:`LossSimulator` (it replays its noise like a loop that rewinds its data) and to
    ``"continue"`` on a :class:`LossReplayer`.
    """
    if config is not None:
        config = config.resolved(rewinds=not isinstance(sim, LossReplayer))
    ctl = AdaLRS(config) if config is not None else None
    total = steps if steps is not None else (config.total_steps if config else None)
    if total is None:
        raise ValueError("steps is None and there is no config to take total_steps from")
    rewind = config is not None and config.backtrack_mode == "rewind" and backtracking
    if rewind and isinstance(sim, LossReplayer):
        raise ValueError(
            "backtrack_mode is 'rewind', but a LossReplayer cannot rewind (its log is what "
            "happened): use backtrack_mode='continue' or backtracking=False"
        )
    schedule = base_lr if callable(base_lr) else (lambda _t, v=float(base_lr): v)
    out = SimResult(controller=ctl)
    snapshot: dict[str, Any] | None = None
    if ctl is not None and ctl.begin().action is Action.SNAPSHOT:  # the opening, before step 0
        snapshot = sim.state_dict(include_rng=rewind)
    step = 0  # the run's step, which a rewind takes back
    while step < total:
        scale = ctl.scale if ctl is not None else 1.0
        lr = schedule(step) * scale
        loss = sim.step(lr)
        out.compute_steps += 1
        out.lrs.append(lr)
        out.scales.append(scale)
        out.losses.append(loss)
        if ctl is None:
            step += 1
            continue
        d = ctl.observe(step, loss)
        step += 1
        out.events.extend(d.events)
        if d.action is Action.SNAPSHOT:
            snapshot = sim.state_dict(include_rng=rewind)
        elif d.action is Action.RESTORE and backtracking:
            if snapshot is None:
                raise RuntimeError("the controller asked RESTORE before any SNAPSHOT")
            sim.load_state_dict(snapshot)
            if rewind:  # back to the step after the snapshot, data included
                step = d.restore_step + 1
                del out.lrs[step:], out.scales[step:], out.losses[step:]
    return out


def final_scales(
    lr_ratios: Sequence[float], seeds: Sequence[int], config: AdaLRSConfig, **sim_kwargs: Any
) -> dict[tuple[float, int], float]:
    """Final LR / lr_opt reached from each starting ratio and seed (for tuning and tests)."""
    out = {}
    for ratio in lr_ratios:
        for seed in seeds:
            sim = LossSimulator(seed=seed, **sim_kwargs)
            res = simulate(sim, sim.lr_opt * ratio, config)
            out[(ratio, seed)] = res.lrs[-1] / sim.lr_opt
    return out
