"""A loss process with the effects a real language model shows, calibrated to the tiny LM.

:class:`~adalrs_ray.core.simulator.LossSimulator` follows the paper's Hypothesis 1 and nothing
else: its loss answers an LR change at once, a too-large LR diverges, and the optimum never
moves. The tiny Qwen2 of ``train_loops`` (docs/lm_task.md) shows three more effects, and a rule
tried only on the first simulator cannot be judged on them:

1. **The loss carries a noise term that follows the LR with a lag** (the LR-annealing term of
   Tissue et al. 2024, arXiv 2408.11029: loss = L0 + A * S1^-alpha - C * S2). An upscale first
   *raises* the observed loss, a downscale first *lowers* it, and a WSD or cosine decay anneals
   the term away at the end. A velocity measured right after an LR change sees this transient.
2. **A too-large LR is stable but slow**: progress per step falls off on a log scale past the
   optimum (LM grid at batch 64, WSD: final loss +0.08 at 3x, +0.20 at 10x, +1.5 at 30x).
3. **A too-large LR grows the weights** (after 600 steps at 10x the LM's weight matrices are
   3.4-8.2x larger, ``benchmarks/lm_weight_norms.py``), and AdamW's relative step is
   lr / ||w||, so a damaged model continues best at a larger LR, until weight decay shrinks it.

The model, per step at ``lr`` with ``r = lr / lr_opt`` (``lr_opt``: the best constant LR for a
fresh model)::

    w        = exp(u)                          weight-norm factor, 1 for a fresh model
    r_eff    = r / w                           the LR as the weights feel it
    p       += gain(r_eff) / w**damage          progress, in steps-at-the-optimum
    n       += (noise_coef * r_eff**noise_power - n) / noise_lag     the lagged noise term
    u       += growth * max(0, ln r_eff) - shrink * r * u            weight growth, decay
    loss     = floor + (loss0 - floor) * (1 + p / p_scale)**-power + n + N(0, noise^2)

    gain(x) = x * exp(1 - x)                   x <= 1     (progress ~ LR for small LRs)
            = exp(-(ln x)^2 / (2 width^2))     1 < x <= diverge_ratio  (stable but slow)
            = -min(1, ln(x / diverge_ratio))   past it: progress is lost, the loss rises

The defaults are calibrated to the tiny LM's setting F (WSD, batch 64, 2,000 steps, lr_grid
3.16e-3; docs/lm_task.md) by ``python benchmarks/sim_calibrate.py``, which prints each target
next to what the simulator gives. ``simulate`` drives it like the first simulator; snapshots
keep ``p``, ``n`` and ``u`` (the model and its weights) but not the noise stream.
"""

from __future__ import annotations

import math
import random
from typing import Any

from adalrs_ray.core.checks import check, check_number

__all__ = ["LMLossSimulator", "constant_schedule", "cosine_schedule", "wsd_schedule"]


class LMLossSimulator:
    """Seeded loss process with a lagged LR noise term, stable-but-slow large LRs and weight
    growth (see the module docstring for the equations).

    Args:
        lr_opt: the best constant LR for a fresh model (> 0).
        loss0, floor: the initial loss and the loss of a perfect model (floor < loss0).
        p_scale, power: the shape of the loss against progress p (both > 0).
        width: log-width of the gain past the optimum (> 0).
        diverge_ratio: r_eff past which progress is lost (> 1).
        noise_coef, noise_power, noise_lag: the LR noise term's level at r_eff = 1, its power
            in r_eff and its time constant in steps (>= 1).
        growth, shrink: weight growth per step and per unit ln r_eff past 1, and the weight
            decay rate per step and per unit r (both >= 0).
        damage: grown weights also learn slower at any LR: progress is divided by
            w**damage (>= 0), so a damaged model stays behind even at its best LR.
        noise: standard deviation of the per-step observation noise (>= 0).
        seed: seed of the noise stream.
    """

    def __init__(
        self,
        lr_opt: float = 3.16e-3,
        *,
        loss0: float = 5.5,
        floor: float = 1.0,
        p_scale: float = 10.0,
        power: float = 0.5,
        width: float = 0.75,
        diverge_ratio: float = 30.0,
        noise_coef: float = 0.08,
        noise_power: float = 0.5,
        noise_lag: float = 50.0,
        growth: float = 6e-3,
        shrink: float = 1 / 3000,
        damage: float = 0.4,
        noise: float = 0.05,
        seed: int = 0,
    ) -> None:
        check_number("lr_opt", lr_opt, low=0)
        check(floor < loss0, f"floor={floor}, loss0={loss0}, but must satisfy floor < loss0")
        for name, value in (("p_scale", p_scale), ("power", power), ("width", width)):
            check_number(name, value, low=0)
        check(diverge_ratio > 1, f"diverge_ratio is {diverge_ratio}, but must be > 1")
        for name, value in (
            ("noise_coef", noise_coef),
            ("noise_power", noise_power),
            ("growth", growth),
            ("shrink", shrink),
            ("damage", damage),
            ("noise", noise),
        ):
            check_number(name, value, low=0, strict=False)
        check_number("noise_lag", noise_lag, low=1, strict=False)
        self.lr_opt = float(lr_opt)
        self.loss0, self.floor = float(loss0), float(floor)
        self.p_scale, self.power, self.width = float(p_scale), float(power), float(width)
        self.diverge_ratio = float(diverge_ratio)
        self.noise_coef, self.noise_power = float(noise_coef), float(noise_power)
        self.noise_lag = float(noise_lag)
        self.growth, self.shrink = float(growth), float(shrink)
        self.damage = float(damage)
        self.noise = float(noise)
        self.seed = int(seed)
        self.progress = 0.0
        self.noise_term = 0.0
        self.log_weight = 0.0
        self.steps = 0
        self._rng = random.Random(seed)

    # ------------------------------------------------------------------ the model
    def gain(self, r_eff: float) -> float:
        """Progress per step at the effective ratio ``r_eff`` (1 at 1; negative past
        ``diverge_ratio``; -1 for a non-finite or non-positive ratio)."""
        if not (math.isfinite(r_eff) and r_eff > 0):
            return -1.0
        if r_eff <= 1:
            return r_eff * math.exp(1.0 - r_eff)
        if r_eff <= self.diverge_ratio:
            return math.exp(-(math.log(r_eff) ** 2) / (2 * self.width**2))
        return -min(1.0, math.log(r_eff / self.diverge_ratio))

    @property
    def weight_factor(self) -> float:
        """w: how much larger the weights are than a fresh model's (1 = fresh)."""
        return math.exp(self.log_weight)

    def effective_ratio(self, lr: float) -> float:
        """r_eff = (lr / lr_opt) / w: the best LR for this model now is ``lr_opt * w``."""
        return lr / self.lr_opt / self.weight_factor

    def model_loss(self, progress: float | None = None) -> float:
        """The loss of the model without the noise term: floor + A (1 + p / p_scale)^-power."""
        p = self.progress if progress is None else progress
        return self.floor + (self.loss0 - self.floor) * (1.0 + p / self.p_scale) ** -self.power

    @property
    def expected_loss(self) -> float:
        """The noise-free observed loss now: model loss plus the LR noise term."""
        return self.model_loss() + self.noise_term

    def step(self, lr: float) -> float:
        """Advance one optimizer step at ``lr``; return the observed (noisy) loss."""
        r = lr / self.lr_opt if math.isfinite(lr) else math.inf
        r_eff = r / self.weight_factor
        g = self.gain(r_eff)
        if g > 0:
            g /= self.weight_factor**self.damage
        self.progress = max(0.0, self.progress + g)
        if math.isfinite(r_eff) and r_eff > 0:
            target = self.noise_coef * r_eff**self.noise_power
            self.noise_term += (target - self.noise_term) / self.noise_lag
            up = self.growth * max(0.0, math.log(r_eff)) if r_eff > 1 else 0.0
            self.log_weight = max(0.0, self.log_weight + up - self.shrink * r * self.log_weight)
        self.steps += 1
        return self.expected_loss + self._rng.gauss(0.0, self.noise)

    # ------------------------------------------------------------------ snapshots
    def state_dict(self, include_rng: bool = True) -> dict[str, Any]:
        """The model state (progress, noise term, weight factor, steps) and optionally the
        noise stream."""
        state: dict[str, Any] = {
            "progress": self.progress,
            "noise_term": self.noise_term,
            "log_weight": self.log_weight,
            "steps": self.steps,
        }
        if include_rng:
            state["rng"] = self._rng.getstate()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("progress", "noise_term", "log_weight", "steps"):
            if key not in state:
                raise ValueError(f"LMLossSimulator state is missing key {key!r}")
        self.progress = float(state["progress"])
        self.noise_term = float(state["noise_term"])
        self.log_weight = float(state["log_weight"])
        self.steps = int(state["steps"])
        if "rng" in state:
            rng = state["rng"]
            self._rng.setstate((rng[0], tuple(rng[1]), rng[2]))


# ---------------------------------------------------------------- base schedules (step -> lr)
def constant_schedule(lr: float):
    """``step -> lr``."""
    check_number("lr", lr, low=0)
    return lambda _t: lr


def cosine_schedule(lr: float, total_steps: int, warmup_steps: int = 0):
    """Linear warmup, then cosine from ``lr`` to 0 at ``total_steps`` (as transformers')."""
    check_number("lr", lr, low=0)
    check(
        0 <= warmup_steps < total_steps,
        f"warmup_steps is {warmup_steps}, but must be in [0, total_steps={total_steps})",
    )

    def at(t: int) -> float:
        if t < warmup_steps:
            return lr * (t + 1) / warmup_steps
        frac = (t - warmup_steps) / max(1, total_steps - warmup_steps)
        return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))

    return at


def wsd_schedule(lr: float, total_steps: int, decay_ratio: float = 0.1, warmup_steps: int = 0):
    """Warmup-stable-decay: linear warmup, constant ``lr``, then a linear decay to 0 over the
    last ``decay_ratio`` of the steps (as the LM task's ``--schedule wsd``)."""
    check_number("lr", lr, low=0)
    check(0 < decay_ratio <= 1, f"decay_ratio is {decay_ratio}, but must be in (0, 1]")
    decay = max(1, round(decay_ratio * total_steps))
    check(
        warmup_steps + decay <= total_steps,
        f"warmup_steps={warmup_steps} + decay steps {decay} is more than total_steps={total_steps}",
    )
    start = total_steps - decay

    def at(t: int) -> float:
        if t < warmup_steps:
            return lr * (t + 1) / warmup_steps
        if t < start:
            return lr
        return lr * max(0.0, (total_steps - t) / decay)

    return at
