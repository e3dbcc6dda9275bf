"""The AdaLRS controller: a pure state machine fed ``(step, loss)``.

Implements Algorithm 1 of Dong et al., "AdaLRS: Loss-Guided Adaptive Learning Rate Search for
Efficient Foundation Model Pretraining" (NeurIPS 2025, arXiv 2506.13274), plus the details the
paper states beside the pseudocode. The controller owns one number, the multiplier ``scale`` on
any base LR schedule, and tells the training loop when to snapshot and when to restore
(backtrack). It imports neither torch nor ray.

Symbols (paper -> :class:`AdaLRSConfig` field): eta_0 -> the base schedule (not ours);
alpha -> ``alpha``; beta -> ``beta``; lambda -> ``lam``; k -> ``window``; theta_0 -> ``theta0``;
e -> ``error_bound`` or the automatic estimate (``error_factor``, ``error_floor``);
t_start, t_end -> ``start_ratio``, ``end_ratio``.

Example::

    ctl = AdaLRS(AdaLRSConfig(total_steps=10_000, window=100))
    for t in range(10_000):
        loss = train_step(lr=base_lr(t) * ctl.scale)
        d = ctl.observe(t, loss)
        if d.action is Action.SNAPSHOT:
            save_model_and_optimizer()
        elif d.action is Action.RESTORE:
            load_model_and_optimizer()

Every choice the paper leaves open is a documented config field (see docs/controller.md).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

STATE_VERSION = 1

EVENT_KINDS = (
    "search_start",  # first step inside [start_ratio, end_ratio)
    "trial_start",  # velocity decayed: snapshot taken, LR ramp toward alpha' begins
    "ramp_early_stop",  # a ramp loss exceeded max(H): ramp ended, validation at the reached scale
    "keep",  # upscale validated: v_new > v_ref + 2e (or the corner case says lower)
    "backtrack",  # upscale failed: restore the snapshot, scale /= beta'
    "inconclusive",  # |v_new - v_ref| <= 2e: back to the pre-trial scale, theta <- (theta+1)/2
    "boundary_downscale",  # the loss rose in two consecutive windows
    "nonfinite_loss",  # NaN/inf loss: failed trial or divergence (or ignored outside the search)
    "search_end",  # the scale is frozen from here on
)

_PHASES = ("before", "search", "ramp", "validate", "frozen")


class Action(enum.Enum):
    """What the training loop must do after :meth:`AdaLRS.observe`."""

    CONTINUE = "continue"
    SNAPSHOT = "snapshot"  # save model + optimizer state as it is after this step
    RESTORE = "restore"  # load the most recent snapshot


@dataclass(frozen=True)
class Decision:
    """The result of one :meth:`AdaLRS.observe` call.

    ``scale`` is the multiplier for the next step; ``events`` the audit records emitted by this
    call; ``restore_step`` (RESTORE only) the step after which the snapshot was taken.
    """

    action: Action
    scale: float
    events: tuple[dict[str, Any], ...] = ()
    restore_step: int | None = None


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class AdaLRSConfig:
    """Every input of Algorithm 1 and every open point of the paper, as explicit fields.

    Args:
        total_steps: T, the number of optimizer steps of the whole run (> 0).
        window: k, steps per least-squares slope fit. ``None`` picks ``search_steps // 6``
            (at least 2), so one velocity comparison and one trial fit in the search window.
        alpha: upscale factor alpha > 1 (paper: 3).
        beta: downscale factor beta > 1 (paper: 2); gcd(alpha, beta) must be 1 when both are
            integers, so that up- and downscales never cycle back onto the same LR.
        lam: lambda in (0, 1), decay of both factors (paper: 0.99).
        start_ratio, end_ratio: the search window [t_start, t_end) as fractions of
            ``total_steps`` (paper: [0.1, 0.4]). Outside it the scale is frozen.
        decay_basis: what t counts in lambda^t. ``"windows"`` (default): windows of ``window``
            steps elapsed since the search started, i.e. (step - search_start) // window.
            ``"adjustments"``: kept upscales, backtracks and boundary downscales so far. Steps
            are never the basis: 0.99^t would reach 1 within ~110 steps.
        theta0: theta_0 in (0, 1), the velocity-decay threshold after a reset: a trial starts
            when v_t < theta * v_{t-k}.
        theta_relax: in [0, 1); after each window that did not trigger a trial, theta moves
            this fraction of the way toward 1, so a trial starts in finite time even when the
            velocity decays slowly (needed by the paper's convergence argument). 0 disables it.
        ramp_steps: length of the gradual LR ramp to alpha' (``None``: ``window``).
        ramp: ``"geometric"`` (scale * alpha'^(i/n)) or ``"linear"``.
        error_bound: e, a fixed bound on the slope error (in loss per step). ``None``
            (default) estimates it per comparison as ``error_factor * max(se_new, se_ref)``, with
            se the standard error of the least-squares slope, floored at ``error_floor``.
        error_factor, error_floor: see ``error_bound``.
        comparable_rtol: the reference window must have a mean loss within this relative
            distance of mean(L_new); otherwise the corner case applies: keep if mean(L_new) is
            below every history loss, backtrack if above every one, else inconclusive.
        regress_guard: our safeguard, not in the paper: a trial whose validation mean is not
            below the mean of the last window before the trial backtracks whatever the slopes
            say. A too-large upscale makes the loss spike and then fall fast while it recovers;
            that recovery would otherwise pass for a faster descent.
        reference_excludes_trigger: optional (off by default, as in the paper): search the
            reference window in H without the window that triggered the trial (kept when H
            holds only that window). That window was selected for its low, noisy slope; as the
            reference it biases the validation toward keeping upscales. On the simulator it
            centres the LR found better but costs more backtracks.
        reference_stride: stride of the candidate reference windows in H
            (``None``: max(1, window // 4)).
        max_history_windows: H keeps at most this many windows of losses (memory O(history)).
        snapshot_policy: ``"windows"`` (default): snapshot at the search start, at the end of
            every descending window and before every trial, so a divergence or two rising
            windows can be restored to the last good point. ``"trials"``: only before trials;
            rising loss and non-finite losses outside a trial then downscale without restoring.
        backtrack_mode: ``"continue"`` (default): after RESTORE the step counter, the data
            stream and the base schedule move on (the steps of a failed trial count against the
            budget, as in the paper's cost figures). ``"rewind"``: the loop also rewinds the
            step counter to ``restore_step + 1`` (and its data/RNG); needs
            ``decay_basis="adjustments"`` because steps go back.
        initial_scale: the multiplier before any decision (> 0).
        min_scale, max_scale: optional clamps of the multiplier.
    """

    total_steps: int
    window: int | None = None
    alpha: float = 3.0
    beta: float = 2.0
    lam: float = 0.99
    start_ratio: float = 0.1
    end_ratio: float = 0.4
    decay_basis: str = "windows"
    theta0: float = 0.9
    theta_relax: float = 0.5
    ramp_steps: int | None = None
    ramp: str = "geometric"
    error_bound: float | None = None
    error_factor: float = 1.0
    error_floor: float = 0.0
    comparable_rtol: float = 0.05
    regress_guard: bool = True
    reference_excludes_trigger: bool = False
    reference_stride: int | None = None
    max_history_windows: int = 16
    snapshot_policy: str = "windows"
    backtrack_mode: str = "continue"
    initial_scale: float = 1.0
    min_scale: float | None = None
    max_scale: float | None = None

    def __post_init__(self) -> None:
        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        _check(
            is_int(self.total_steps) and self.total_steps > 0,
            f"total_steps is {self.total_steps!r}, but must be an integer > 0",
        )
        for name in ("alpha", "beta", "lam", "start_ratio", "end_ratio", "theta0", "theta_relax"):
            value = getattr(self, name)
            _check(is_num(value), f"{name} is {value!r}, but must be a finite number")
        _check(self.alpha > 1, f"alpha is {self.alpha}, but must be alpha > 1")
        _check(self.beta > 1, f"beta is {self.beta}, but must be beta > 1")
        if float(self.alpha).is_integer() and float(self.beta).is_integer():
            g = math.gcd(int(self.alpha), int(self.beta))
            _check(
                g == 1,
                f"alpha={self.alpha} and beta={self.beta} have gcd {g}, but integer factors "
                "must satisfy gcd(alpha, beta) == 1",
            )
        _check(0 < self.lam < 1, f"lam is {self.lam}, but must be 0 < lam < 1")
        _check(
            0 <= self.start_ratio < self.end_ratio <= 1,
            f"start_ratio={self.start_ratio}, end_ratio={self.end_ratio}, but must satisfy "
            "0 <= start_ratio < end_ratio <= 1",
        )
        _check(0 < self.theta0 < 1, f"theta0 is {self.theta0}, but must be 0 < theta0 < 1")
        _check(
            0 <= self.theta_relax < 1,
            f"theta_relax is {self.theta_relax}, but must be 0 <= theta_relax < 1",
        )
        _check(
            self.decay_basis in ("windows", "adjustments"),
            f"decay_basis is {self.decay_basis!r}, but must be 'windows' or 'adjustments'",
        )
        _check(
            self.ramp in ("geometric", "linear"),
            f"ramp is {self.ramp!r}, but must be 'geometric' or 'linear'",
        )
        _check(
            self.snapshot_policy in ("windows", "trials"),
            f"snapshot_policy is {self.snapshot_policy!r}, but must be 'windows' or 'trials'",
        )
        _check(
            self.backtrack_mode in ("continue", "rewind"),
            f"backtrack_mode is {self.backtrack_mode!r}, but must be 'continue' or 'rewind'",
        )
        _check(
            not (self.backtrack_mode == "rewind" and self.decay_basis == "windows"),
            "backtrack_mode='rewind' rewinds steps, so decay_basis='windows' would never decay "
            "the factors: use decay_basis='adjustments'",
        )
        if self.error_bound is not None:
            _check(
                is_num(self.error_bound) and self.error_bound >= 0,
                f"error_bound is {self.error_bound!r}, but must be None or a number >= 0",
            )
        _check(
            is_num(self.error_factor) and self.error_factor >= 0,
            f"error_factor is {self.error_factor!r}, but must be a number >= 0",
        )
        _check(
            is_num(self.error_floor) and self.error_floor >= 0,
            f"error_floor is {self.error_floor!r}, but must be a number >= 0",
        )
        _check(
            is_num(self.comparable_rtol) and self.comparable_rtol >= 0,
            f"comparable_rtol is {self.comparable_rtol!r}, but must be a number >= 0",
        )
        _check(
            is_int(self.max_history_windows) and self.max_history_windows >= 2,
            f"max_history_windows is {self.max_history_windows!r}, but must be an integer >= 2",
        )
        _check(
            is_num(self.initial_scale) and self.initial_scale > 0,
            f"initial_scale is {self.initial_scale!r}, but must be a finite number > 0",
        )
        for name in ("min_scale", "max_scale"):
            value = getattr(self, name)
            _check(
                value is None or (is_num(value) and value > 0),
                f"{name} is {value!r}, but must be None or a finite number > 0",
            )
        if self.min_scale is not None and self.max_scale is not None:
            _check(
                self.min_scale <= self.max_scale,
                f"min_scale={self.min_scale} > max_scale={self.max_scale}: need min <= max",
            )
        search = self.search_end - self.search_start
        _check(
            search >= 8,
            f"the search window [{self.start_ratio}, {self.end_ratio}) of total_steps="
            f"{self.total_steps} has {search} steps, but AdaLRS needs at least 8",
        )
        if self.window is None:
            object.__setattr__(self, "window", max(2, search // 6))
        _check(
            is_int(self.window) and self.window >= 2,
            f"window is {self.window!r}, but must be an integer >= 2",
        )
        if self.ramp_steps is not None:
            _check(
                is_int(self.ramp_steps) and self.ramp_steps >= 1,
                f"ramp_steps is {self.ramp_steps!r}, but must be None or an integer >= 1",
            )
        if self.reference_stride is not None:
            _check(
                is_int(self.reference_stride) and 1 <= self.reference_stride <= self.window,
                f"reference_stride is {self.reference_stride!r}, but must be None or an integer "
                f"in [1, window={self.window}]",
            )
        need = 3 * self.window + self.ramp_len
        _check(
            search >= need,
            f"window={self.window} is too long for the search window [{self.search_start}, "
            f"{self.search_end}) of {search} steps: two velocity windows plus one trial "
            f"(ramp {self.ramp_len} + validation {self.window}) need {need} steps; use a "
            "smaller window, a wider [start_ratio, end_ratio) or a longer run",
        )

    # derived quantities (not stored: a pure function of the fields)
    @property
    def search_start(self) -> int:
        """First step inside the search window."""
        return int(math.ceil(self.start_ratio * self.total_steps))

    @property
    def search_end(self) -> int:
        """First step after the search window."""
        return int(math.floor(self.end_ratio * self.total_steps))

    @property
    def ramp_len(self) -> int:
        return self.ramp_steps if self.ramp_steps is not None else int(self.window)

    @property
    def stride(self) -> int:
        return self.reference_stride or max(1, int(self.window) // 4)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdaLRSConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        _check(not unknown, f"unknown AdaLRSConfig fields {unknown}; valid: {sorted(names)}")
        return cls(**dict(data))


class _Fit:
    """Running least-squares sums over (x, y); O(1) per point. x is centred on the first x and
    y on the first y, so large step numbers and loss offsets do not cancel catastrophically."""

    __slots__ = ("n", "x0", "y0", "sx", "sy", "sxx", "sxy", "syy")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.x0 = 0.0
        self.y0 = 0.0
        self.sx = self.sy = self.sxx = self.sxy = self.syy = 0.0

    def add(self, x: float, y: float) -> None:
        if self.n == 0:
            self.x0, self.y0 = x, y
        dx, dy = x - self.x0, y - self.y0
        self.n += 1
        self.sx += dx
        self.sy += dy
        self.sxx += dx * dx
        self.sxy += dx * dy
        self.syy += dy * dy

    @property
    def mean(self) -> float:
        return self.y0 + self.sy / self.n

    def velocity(self) -> tuple[float, float]:
        """(v, se): v = -slope (positive when the loss falls), se its standard error."""
        return _velocity(self.n, self.sx, self.sy, self.sxx, self.sxy, self.syy)


def _velocity(n: int, sx: float, sy: float, sxx: float, sxy: float, syy: float):
    cxx = sxx - sx * sx / n
    if n < 2 or cxx <= 0:
        return 0.0, math.inf
    cxy = sxy - sx * sy / n
    cyy = syy - sy * sy / n
    slope = cxy / cxx
    if n > 2:
        rss = max(cyy - slope * cxy, 0.0)
        se = math.sqrt(rss / (n - 2) / cxx)
    else:
        se = math.inf
    return -slope, se


def _window_stats(xs: list[float], ys: list[float], k: int, stride: int):
    """Mean, velocity and standard error of every k-window of (xs, ys) starting at a multiple of
    ``stride`` (and the last one), in O(len) through prefix sums."""
    n = len(ys)
    x0, y0 = xs[0], ys[0]
    px = [0.0]
    py = [0.0]
    pxx = [0.0]
    pxy = [0.0]
    pyy = [0.0]
    for x, y in zip(xs, ys):
        dx, dy = x - x0, y - y0
        px.append(px[-1] + dx)
        py.append(py[-1] + dy)
        pxx.append(pxx[-1] + dx * dx)
        pxy.append(pxy[-1] + dx * dy)
        pyy.append(pyy[-1] + dy * dy)
    starts = list(range(0, n - k + 1, stride))
    if starts and starts[-1] != n - k:
        starts.append(n - k)
    out = []
    for s in starts:
        e = s + k
        sx, sy = px[e] - px[s], py[e] - py[s]
        v, se = _velocity(k, sx, sy, pxx[e] - pxx[s], pxy[e] - pxy[s], pyy[e] - pyy[s])
        out.append((y0 + sy / k, v, se, s))
    return out


_STATE_KEYS = (
    "version",
    "val_x",
    "val_y",
    "config",
    "phase",
    "scale",
    "theta",
    "last_step",
    "min_next_step",
    "window_x",
    "window_y",
    "hist_x",
    "hist_y",
    "n_windows",
    "prev_v",
    "trial",
    "snapshot_step",
    "adjustments",
    "events",
)


class AdaLRS:
    """AdaLRS as a pure state machine (Dong et al., 2025, Algorithm 1).

    Feed every finished optimizer step with :meth:`observe`; read :attr:`scale` before each
    step. ``observe`` costs O(1) amortised: running least-squares sums per window, and an
    O(|H|) reference search once per trial, which lasts at least ``2 * window`` steps.
    """

    def __init__(self, config: AdaLRSConfig | None = None, **kwargs: Any) -> None:
        if config is None:
            config = AdaLRSConfig(**kwargs)
        elif kwargs:
            raise ValueError(f"pass either an AdaLRSConfig or keyword fields, not both: {kwargs}")
        if not isinstance(config, AdaLRSConfig):
            raise ValueError(f"config is {type(config).__name__}, but must be an AdaLRSConfig")
        self.config = config
        k = int(config.window)
        self._k = k
        self._phase = "before"
        self._scale = float(config.initial_scale)
        self._theta = config.theta0
        self._last_step: int | None = None
        self._min_next_step = 0
        self._win = _Fit()
        self._win_x: list[int] = []
        self._win_y: list[float] = []
        maxlen = config.max_history_windows * k
        self._hist_x: deque[int] = deque(maxlen=maxlen)
        self._hist_y: deque[float] = deque(maxlen=maxlen)
        self._n_windows = 0
        self._prev_v: float | None = None
        self._trial: dict[str, Any] | None = None
        self._val = _Fit()
        self._val_xs: list[int] = []
        self._val_ys: list[float] = []
        self._snapshot_step: int | None = None
        self._adjustments = 0
        self._events: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ read-only view
    @property
    def scale(self) -> float:
        """The multiplier on the base LR for the coming step (ramps included)."""
        return self._scale

    @property
    def phase(self) -> str:
        """One of ``before``, ``search``, ``ramp``, ``validate``, ``frozen``."""
        return self._phase

    @property
    def events(self) -> list[dict[str, Any]]:
        """Audit log of every decision (copies; JSON-serialisable)."""
        return [dict(e) for e in self._events]

    @property
    def theta(self) -> float:
        return self._theta

    @property
    def snapshot_step(self) -> int | None:
        return self._snapshot_step

    @property
    def in_trial(self) -> bool:
        return self._phase in ("ramp", "validate")

    # ------------------------------------------------------------------ factors
    def _decay_t(self, step: int) -> int:
        if self.config.decay_basis == "adjustments":
            return self._adjustments
        return max(0, (step - self.config.search_start) // self._k)

    def _alpha_eff(self, step: int) -> float:
        """alpha' = max(lambda^t * alpha, 1)."""
        return max(self.config.lam ** self._decay_t(step) * self.config.alpha, 1.0)

    def _beta_eff(self, step: int) -> float:
        """1 / beta' = max(lambda^t * beta, 1): the divisor of a downscale."""
        return max(self.config.lam ** self._decay_t(step) * self.config.beta, 1.0)

    def _clamp(self, scale: float) -> float:
        c = self.config
        if c.min_scale is not None:
            scale = max(scale, c.min_scale)
        if c.max_scale is not None:
            scale = min(scale, c.max_scale)
        return scale

    # ------------------------------------------------------------------ main entry
    def observe(self, step: int, loss: float) -> Decision:
        """Record the loss of the optimizer step ``step`` that just finished and decide.

        ``step`` must be an integer that increases strictly (after a RESTORE in
        ``backtrack_mode="rewind"`` it may go back to ``restore_step + 1``). ``loss`` may be
        NaN or infinite: that is a failed trial or a divergence, never an exception.
        """
        if isinstance(step, bool) or not isinstance(step, int):
            try:
                as_int = int(step)
            except (TypeError, ValueError):
                as_int = None
            if as_int is None or as_int != step:
                raise ValueError(f"step is {step!r}, but must be an integer")
            step = as_int
        if step < self._min_next_step:
            raise ValueError(
                f"step is {step}, but steps must increase: the next step must be >= "
                f"{self._min_next_step} (last observed: {self._last_step})"
            )
        try:
            loss = float(loss)
        except (TypeError, ValueError):
            raise ValueError(f"loss is {loss!r}, but must be a real number") from None
        self._last_step = step
        self._min_next_step = step + 1
        emitted: list[dict[str, Any]] = []
        action = self._dispatch(step, loss, emitted)
        restore_step = self._snapshot_step if action is Action.RESTORE else None
        if action is Action.RESTORE and self.config.backtrack_mode == "rewind":
            self._min_next_step = restore_step + 1
        if action is Action.SNAPSHOT:
            self._snapshot_step = step
        self._events.extend(emitted)
        for ev in emitted:
            logger.debug("AdaLRS %s", ev)
        return Decision(action, self._scale, tuple(dict(e) for e in emitted), restore_step)

    def _event(self, emitted: list, step: int, kind: str, before: float, **extra: Any) -> None:
        ev = {"step": step, "kind": kind, "scale_before": before, "scale_after": self._scale}
        ev.update(extra)
        emitted.append(ev)

    def _dispatch(self, step: int, loss: float, emitted: list) -> Action:
        c = self.config
        action = Action.CONTINUE
        if self._phase == "frozen":
            if not math.isfinite(loss):
                self._event(
                    emitted,
                    step,
                    "nonfinite_loss",
                    self._scale,
                    loss=str(loss),
                    outcome="ignored_outside_search",
                )
            return action
        if self._phase == "before":
            if step < c.search_start:
                if not math.isfinite(loss):
                    self._event(
                        emitted,
                        step,
                        "nonfinite_loss",
                        self._scale,
                        loss=str(loss),
                        outcome="ignored_outside_search",
                    )
                return action
            self._phase = "search"
            self._event(emitted, step, "search_start", self._scale)
            if c.snapshot_policy == "windows" and math.isfinite(loss):
                action = Action.SNAPSHOT
        if self._phase == "search":
            action = self._on_search(step, loss, emitted, action)
        elif self._phase == "ramp":
            action = self._on_ramp(step, loss, emitted)
        elif self._phase == "validate":
            action = self._on_validate(step, loss, emitted)
        if step >= c.search_end - 1 and self._phase == "search":
            self._phase = "frozen"
            self._event(emitted, step, "search_end", self._scale, adjustments=self._adjustments)
        return action

    # ------------------------------------------------------------------ phases
    def _reset_history(self) -> None:
        self._hist_x.clear()
        self._hist_y.clear()
        self._n_windows = 0
        self._prev_v = None
        self._theta = self.config.theta0
        self._win.reset()
        self._win_x.clear()
        self._win_y.clear()

    def _downscale(self, step: int, base: float) -> float:
        return self._clamp(base / self._beta_eff(step))

    def _diverged(self, step: int, loss: float, emitted: list) -> Action:
        """A non-finite loss during the search: restore (if a snapshot exists) and downscale."""
        before = self._base_scale()
        can_restore = self._snapshot_step is not None and (
            self.config.snapshot_policy == "windows" or self.in_trial
        )
        self._scale = self._downscale(step, before)
        self._adjustments += 1
        self._trial = None
        self._phase = "search"
        self._reset_history()
        self._event(
            emitted,
            step,
            "nonfinite_loss",
            before,
            loss=str(loss),
            outcome="restore_and_downscale" if can_restore else "downscale",
            restore_step=self._snapshot_step if can_restore else None,
        )
        return Action.RESTORE if can_restore else Action.CONTINUE

    def _base_scale(self) -> float:
        return self._trial["s0"] if self._trial is not None else self._scale

    def _on_search(self, step: int, loss: float, emitted: list, action: Action) -> Action:
        c = self.config
        if not math.isfinite(loss):
            return self._diverged(step, loss, emitted)
        self._win.add(step, loss)
        self._win_x.append(step)
        self._win_y.append(loss)
        if self._win.n < self._k:
            return action
        v, se = self._win.velocity()
        self._hist_x.extend(self._win_x)
        self._hist_y.extend(self._win_y)
        self._win.reset()
        self._win_x.clear()
        self._win_y.clear()
        self._n_windows += 1
        prev_v, self._prev_v = self._prev_v, v
        if self._n_windows < 2 or prev_v is None:
            if v > 0 and c.snapshot_policy == "windows":
                return Action.SNAPSHOT
            return action
        trial_fits = step + c.ramp_len + self._k < c.search_end
        alpha_eff = self._alpha_eff(step + 1)
        if prev_v > 0 and v < self._theta * prev_v and trial_fits and alpha_eff > 1.0:
            return self._start_trial(step, v, prev_v, alpha_eff, emitted)
        if v < 0 and prev_v < 0:
            before = self._scale
            restore = c.snapshot_policy == "windows" and self._snapshot_step is not None
            self._scale = self._downscale(step, before)
            self._adjustments += 1
            self._event(
                emitted,
                step,
                "boundary_downscale",
                before,
                v=v,
                v_prev=prev_v,
                restored=restore,
                restore_step=self._snapshot_step if restore else None,
            )
            self._reset_history()
            return Action.RESTORE if restore else Action.CONTINUE
        if prev_v > 0 and v < self._theta * prev_v:
            pass  # would trigger, but no trial fits before the search ends (or alpha' == 1)
        else:
            self._theta += c.theta_relax * (1.0 - self._theta)
        if v > 0 and c.snapshot_policy == "windows":
            return Action.SNAPSHOT
        return action

    def _start_trial(self, step, v, prev_v, alpha_eff, emitted) -> Action:
        s0 = self._scale
        self._trial = {
            "start_step": step,
            "s0": s0,
            "alpha_eff": alpha_eff,
            "target": self._clamp(s0 * alpha_eff),
            "i": 0,
            "n": self.config.ramp_len,
            "hist_max": max(self._hist_y),
            "l_before": sum(list(self._hist_y)[-self._k :]) / self._k,
            "early_stop": False,
        }
        self._phase = "ramp"
        self._scale = self._ramp_scale(1)
        self._event(
            emitted,
            step,
            "trial_start",
            s0,
            v=v,
            v_prev=prev_v,
            theta=self._theta,
            alpha_eff=alpha_eff,
            target_scale=self._trial["target"],
        )
        return Action.SNAPSHOT

    def _ramp_scale(self, i: int) -> float:
        tr = self._trial
        frac = min(i, tr["n"]) / tr["n"]
        if self.config.ramp == "geometric":
            return tr["s0"] * (tr["target"] / tr["s0"]) ** frac
        return tr["s0"] + (tr["target"] - tr["s0"]) * frac

    def _on_ramp(self, step: int, loss: float, emitted: list) -> Action:
        tr = self._trial
        if not math.isfinite(loss):
            return self._fail_trial(step, emitted, reason="nonfinite_loss", loss=str(loss))
        tr["i"] += 1
        if loss > tr["hist_max"]:
            tr["early_stop"] = True
            self._event(
                emitted,
                step,
                "ramp_early_stop",
                self._scale,
                loss=loss,
                hist_max=tr["hist_max"],
                ramp_step=tr["i"],
            )
            self._begin_validation()
        elif tr["i"] >= tr["n"]:
            self._begin_validation()
        else:
            self._scale = self._ramp_scale(tr["i"] + 1)
        return Action.CONTINUE

    def _begin_validation(self) -> None:
        # the scale reached by the ramp is the one validated (and kept on success)
        self._phase = "validate"
        self._val.reset()
        self._val_xs.clear()
        self._val_ys.clear()
        self._trial["validated_scale"] = self._scale

    def _on_validate(self, step: int, loss: float, emitted: list) -> Action:
        c = self.config
        tr = self._trial
        if not math.isfinite(loss):
            return self._fail_trial(step, emitted, reason="nonfinite_loss", loss=str(loss))
        self._val.add(step, loss)
        self._val_xs.append(step)
        self._val_ys.append(loss)
        if self._val.n < self._k:
            return Action.CONTINUE
        v_new, se_new = self._val.velocity()
        l_new = self._val.mean
        hist_x, hist_y = list(self._hist_x), list(self._hist_y)
        if c.reference_excludes_trigger:
            # the window that triggered the trial was picked for its low slope: reusing it as
            # the reference would bias validation toward keeping the upscale (H does not grow
            # during a trial, so its last k losses are that window)
            cut = len(hist_x) - self._k
            if cut >= self._k:
                hist_x, hist_y = hist_x[:cut], hist_y[:cut]
        cands = _window_stats(hist_x, hist_y, self._k, c.stride)
        mean_ref, v_ref, se_ref, _ = min(cands, key=lambda r: abs(r[0] - l_new))
        info = {
            "v_new": v_new,
            "v_ref": v_ref,
            "l_new": l_new,
            "l_ref": mean_ref,
            "l_before": tr["l_before"],
            "trial_start": tr["start_step"],
            "early_stop": tr["early_stop"],
            "regressed": False,
        }
        if abs(mean_ref - l_new) > c.comparable_rtol * abs(l_new):
            # corner case of the paper: no window of H at a comparable loss level
            info["e"] = None
            info["corner_case"] = True
            means = [r[0] for r in cands]
            if l_new < min(means):
                verdict = "keep"
            elif l_new > max(means):
                verdict = "backtrack"
            else:
                verdict = "inconclusive"
        else:
            if c.error_bound is not None:
                e = c.error_bound
            else:
                e = max(c.error_floor, c.error_factor * max(se_new, se_ref))
            info["e"] = e
            info["corner_case"] = False
            if v_new > v_ref + 2 * e:
                verdict = "keep"
            elif v_new < v_ref - 2 * e:
                verdict = "backtrack"
            else:
                verdict = "inconclusive"
        if c.regress_guard and verdict != "backtrack" and l_new >= tr["l_before"]:
            # our safeguard: a trial whose losses end no lower than the window before it made
            # things worse, whatever its slope says (a spike recovering looks fast)
            verdict = "backtrack"
            info["regressed"] = True
        if verdict == "backtrack":
            reason = "regressed" if info["regressed"] else "slower"
            return self._fail_trial(step, emitted, reason=reason, **info)
        s0 = tr["s0"]
        self._trial = None
        self._phase = "search"
        if verdict == "keep":
            self._scale = tr["validated_scale"]
            self._adjustments += 1
            self._event(emitted, step, "keep", s0, **info)
            self._reset_history()
        else:
            self._scale = s0
            self._theta = (self._theta + 1.0) / 2.0
            self._win.reset()
            self._win_x.clear()
            self._win_y.clear()
            self._event(emitted, step, "inconclusive", s0, theta=self._theta, **info)
        return Action.CONTINUE

    def _fail_trial(self, step: int, emitted: list, reason: str, **info: Any) -> Action:
        tr = self._trial
        s0 = tr["s0"]
        self._scale = self._downscale(step, s0)
        self._adjustments += 1
        self._trial = None
        self._phase = "search"
        self._reset_history()
        kind = "nonfinite_loss" if reason == "nonfinite_loss" else "backtrack"
        self._event(
            emitted,
            step,
            kind,
            s0,
            reason=reason,
            restore_step=self._snapshot_step,
            tried_scale=tr.get("validated_scale", tr["target"]),
            outcome="restore_and_downscale",
            **info,
        )
        return Action.RESTORE

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Plain, versioned, JSON-serialisable state. Exact resume: a controller that loads it
        makes the same decisions as this one on the same loss stream."""
        return {
            "version": STATE_VERSION,
            "config": self.config.to_dict(),
            "phase": self._phase,
            "scale": self._scale,
            "theta": self._theta,
            "last_step": self._last_step,
            "min_next_step": self._min_next_step,
            "window_x": list(self._win_x),
            "window_y": list(self._win_y),
            "hist_x": list(self._hist_x),
            "hist_y": list(self._hist_y),
            "n_windows": self._n_windows,
            "prev_v": self._prev_v,
            "trial": dict(self._trial) if self._trial is not None else None,
            "val_x": list(self._val_xs),
            "val_y": list(self._val_ys),
            "snapshot_step": self._snapshot_step,
            "adjustments": self._adjustments,
            "events": self.events,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`. Raises ``ValueError`` on a missing key, another
        version, a phase it does not know or a config that differs from this controller's."""
        if not isinstance(state, Mapping):
            raise ValueError(f"state is {type(state).__name__}, but must be a mapping")
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise ValueError(f"AdaLRS state_dict is missing keys {missing}")
        if state["version"] != STATE_VERSION:
            raise ValueError(
                f"AdaLRS state_dict version is {state['version']!r}, but this code reads "
                f"version {STATE_VERSION}"
            )
        mine = self.config.to_dict()
        theirs = dict(state["config"])
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if diff:
            detail = ", ".join(
                f"{k}: checkpoint={theirs.get(k)!r} vs config={mine.get(k)!r}" for k in diff
            )
            raise ValueError(
                f"AdaLRS checkpoint was made with another config ({detail}); "
                "build the controller with the checkpoint's config to resume"
            )
        if state["phase"] not in _PHASES:
            raise ValueError(f"AdaLRS state phase is {state['phase']!r}, not one of {_PHASES}")
        try:
            self._phase = str(state["phase"])
            self._scale = float(state["scale"])
            self._theta = float(state["theta"])
            self._last_step = None if state["last_step"] is None else int(state["last_step"])
            self._min_next_step = int(state["min_next_step"])
            self._win.reset()
            self._win_x = [int(x) for x in state["window_x"]]
            self._win_y = [float(y) for y in state["window_y"]]
            for x, y in zip(self._win_x, self._win_y):
                self._win.add(x, y)
            self._hist_x.clear()
            self._hist_y.clear()
            self._hist_x.extend(int(x) for x in state["hist_x"])
            self._hist_y.extend(float(y) for y in state["hist_y"])
            self._n_windows = int(state["n_windows"])
            self._prev_v = None if state["prev_v"] is None else float(state["prev_v"])
            self._trial = dict(state["trial"]) if state["trial"] is not None else None
            self._val.reset()
            self._val_xs = [int(x) for x in state["val_x"]]
            self._val_ys = [float(y) for y in state["val_y"]]
            for x, y in zip(self._val_xs, self._val_ys):
                self._val.add(x, y)
            self._snapshot_step = (
                None if state["snapshot_step"] is None else int(state["snapshot_step"])
            )
            self._adjustments = int(state["adjustments"])
            self._events = [dict(e) for e in state["events"]]
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"AdaLRS state_dict is corrupt: {exc}") from exc
        if len(self._win_x) != len(self._win_y) or len(self._val_xs) != len(self._val_ys):
            raise ValueError("AdaLRS state_dict is corrupt: x and y lists differ in length")
        if self.in_trial and self._trial is None:
            raise ValueError(f"AdaLRS state_dict is corrupt: phase {self._phase} without a trial")


def replay(config: AdaLRSConfig, losses: Iterable[float], start_step: int = 0) -> AdaLRS:
    """Feed a recorded loss stream (one loss per step from ``start_step``) to a fresh
    controller and return it; handy for offline analysis of a logged run."""
    ctl = AdaLRS(config)
    for i, loss in enumerate(losses):
        ctl.observe(start_step + i, loss)
    return ctl
