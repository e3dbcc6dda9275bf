"""The decision math of AdaLRS as pure functions: numbers in, a number or a verdict out.

Dong et al., "AdaLRS: Loss-Guided Adaptive Learning Rate Search for Efficient Foundation Model
Pretraining" (NeurIPS 2025, arXiv 2506.13274), Algorithm 1 and the details stated beside it.
:class:`~adalrs_ray.core.controller.AdaLRS` holds the state (H, theta, the trial, the scale) and
calls these functions; they read nothing but their arguments, so each can be tested alone (as
Optuna keeps its pruners' math in functions such as ``_is_trial_promotable_to_next_rung``).

Symbols: alpha, beta, lambda (``lam``), t (:func:`decay_exponent`), theta, k (``window``),
H (the loss history), L_new / v_new (mean and velocity of the validation window),
L_ref / v_ref (the reference window of H), e (:func:`slope_error_bound`).

NaN: the controller never passes one (a non-finite loss fails the trial before any of this
runs). Called directly, the functions follow Python's comparisons, so a NaN compares false: a
NaN slope is no evidence either way (inconclusive), a NaN L_new counts as comparable to every
window and does not trip the regress guard. ``tests/test_decisions.py`` pins this.

Example::

    windows = reference_windows(hist_x, hist_y, k=100, stride=25)
    j = judge_trial(v_new, se_new, l_new, windows, l_before, comparable_rtol=0.05)
    if j.verdict is Verdict.KEEP:
        ...
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from adalrs_ray.core.stats import fit_velocity

__all__ = [
    "TrialVerdict",
    "ar1_inflation",
    "Verdict",
    "WindowStat",
    "clamp_scale",
    "corner_case_verdict",
    "decay_exponent",
    "eager_theta",
    "judge_trial",
    "judge_trial_by_level",
    "loss_rose_twice",
    "nearest_window",
    "needs_corner_case",
    "next_direction",
    "regression_reference",
    "ramp_scale",
    "rectified_alpha",
    "rectified_beta_divisor",
    "reference_windows",
    "shrunk_factor",
    "trajectory_reference",
    "trial_factor",
    "regress_guard_trips",
    "relaxed_theta",
    "residual_lag1_sums",
    "slope_error_bound",
    "slope_verdict",
    "velocity_decayed",
    "window_stats",
]


class Verdict(enum.Enum):
    """The outcome of a trial's validation; the value is the event kind it leads to."""

    KEEP = "keep"  # scale <- the validated scale (s * alpha', or less after an early stop)
    BACKTRACK = "backtrack"  # restore the snapshot, scale <- s / max(lambda^t beta, 1)
    INCONCLUSIVE = "inconclusive"  # scale <- s, theta <- (theta + 1) / 2


class WindowStat(NamedTuple):
    """One k-window of H: its mean loss, velocity v = -slope, the slope's standard error and
    the index of its first loss in H."""

    mean: float
    velocity: float
    se: float
    start: int


@dataclass(frozen=True)
class TrialVerdict:
    """What :func:`judge_trial` decided and the numbers the event records.

    ``e`` is ``None`` when the corner case decided (no slope comparison was made);
    ``regressed`` is true when the regress guard turned the verdict into a backtrack.
    """

    verdict: Verdict
    v_new: float
    v_ref: float
    l_new: float
    l_ref: float
    e: float | None
    corner_case: bool
    regressed: bool

    @property
    def backtrack_reason(self) -> str:
        """``"regressed"`` (the guard decided) or ``"slower"`` (the slopes or the corner case)."""
        return "regressed" if self.regressed else "slower"


# ---------------------------------------------------------------- factors: alpha', beta', t
def decay_exponent(
    step: int, *, basis: str, search_start: int, window: int, adjustments: int
) -> int:
    """t in lambda^t. ``basis="windows"``: windows of ``window`` steps elapsed since
    ``search_start`` (0 before it); ``"adjustments"``: the number of adjustments so far."""
    if basis == "adjustments":
        return adjustments
    return max(0, (step - search_start) // window)


def rectified_alpha(alpha: float, lam: float, t: int) -> float:
    """alpha' = max(lambda^t * alpha, 1): the factor of an upscale trial."""
    return max(lam**t * alpha, 1.0)


def rectified_beta_divisor(beta: float, lam: float, t: int) -> float:
    """1 / beta' = max(lambda^t * beta, 1): a downscale divides the scale by this."""
    return max(lam**t * beta, 1.0)


def clamp_scale(scale: float, min_scale: float | None, max_scale: float | None) -> float:
    """The scale clamped to [min_scale, max_scale] (a ``None`` bound is open). Not in the paper."""
    if min_scale is not None:
        scale = max(scale, min_scale)
    if max_scale is not None:
        scale = min(scale, max_scale)
    return scale


# ---------------------------------------------------------------- search phase: theta and v_t
def velocity_decayed(v: float, v_prev: float, theta: float) -> bool:
    """The trial trigger v_t < theta * v_{t-k}, for a descending previous window (v_{t-k} > 0)."""
    return v_prev > 0 and v < theta * v_prev


def loss_rose_twice(v: float, v_prev: float, e: float = 0.0, e_prev: float = 0.0) -> bool:
    """The boundary rule's condition v_t < 0 and v_{t-k} < 0: the loss rose in two windows.
    With error bounds ``e`` and ``e_prev`` (``boundary_tested``), each rise must exceed twice
    its window's bound, as a trial's verdict must: v_t < -2e and v_{t-k} < -2e_prev."""
    return v < -2 * e and v_prev < -2 * e_prev


def relaxed_theta(theta: float, relax: float) -> float:
    """theta after a window without a trial: ``relax`` of the way toward 1 (not in the paper;
    it makes a slowly decaying velocity trigger in finite time)."""
    return theta + relax * (1.0 - theta)


def eager_theta(theta: float) -> float:
    """theta <- (theta + 1) / 2 after an inconclusive trial."""
    return (theta + 1.0) / 2.0


def trial_factor(direction: str, alpha: float, beta: float, lam: float, t: int) -> float:
    """The rectified factor of a trial in ``direction``: alpha' for ``"up"``, 1/beta' (the
    divisor) for ``"down"``; both decay with lambda^t as the paper's."""
    if direction == "up":
        return rectified_alpha(alpha, lam, t)
    return rectified_beta_divisor(beta, lam, t)


def next_direction(direction: str, verdict: Verdict, *, turn_on_inconclusive: bool = True) -> str:
    """Two-sided search (not in the paper): a kept trial keeps its direction; a failed one
    turns the search around, and so does an inconclusive one unless ``turn_on_inconclusive``
    is False."""
    if verdict is Verdict.KEEP or (verdict is Verdict.INCONCLUSIVE and not turn_on_inconclusive):
        return direction
    return "down" if direction == "up" else "up"


def shrunk_factor(factor: float, exponent: float) -> float:
    """factor ** exponent: after a failed trial the two-sided search tries a smaller step in
    that direction (``exponent`` 0.5 halves it on a log scale; 1 keeps it)."""
    return factor**exponent


# ---------------------------------------------------------------- ramp
def ramp_scale(base: float, target: float, i: int, n: int, shape: str) -> float:
    """The scale at ramp step ``i`` of ``n`` from s (``base``) to s * alpha' (``target``):
    ``"geometric"`` s * (target / s)^(i / n), else linear; ``i`` past ``n`` holds the target."""
    frac = min(i, n) / n
    if shape == "geometric":
        return base * (target / base) ** frac
    return base + (target - base) * frac


# ---------------------------------------------------------------- validation: L_ref, e, verdict
def window_stats(xs: Sequence[float], ys: Sequence[float], k: int, stride: int) -> list[WindowStat]:
    """Every k-window of (xs, ys) starting at a multiple of ``stride`` (and the last one), in
    O(len) through prefix sums centred on the first point; ``[]`` when there are fewer than k."""
    n = len(ys)
    if n < k:
        return []
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
        v, se = fit_velocity(k, sx, sy, pxx[e] - pxx[s], pxy[e] - pxy[s], pyy[e] - pyy[s])
        out.append(WindowStat(y0 + sy / k, v, se, s))
    return out


def reference_windows(
    hist_x: Sequence[float],
    hist_y: Sequence[float],
    k: int,
    stride: int,
    *,
    exclude_trigger: bool = False,
) -> list[WindowStat]:
    """The candidate reference windows of H (steps ``hist_x``, losses ``hist_y``).

    With ``exclude_trigger`` the last k losses of H (the window that triggered the trial: H does
    not grow during a trial) are left out, unless that would leave fewer than k losses.
    """
    if exclude_trigger:
        cut = len(hist_x) - k
        if cut >= k:
            hist_x, hist_y = hist_x[:cut], hist_y[:cut]
    return window_stats(hist_x, hist_y, k, stride)


def nearest_window(windows: Sequence[WindowStat], l_new: float) -> WindowStat:
    """L_ref: the window whose mean loss is closest to L_new (the first one on a tie)."""
    if not windows:
        raise ValueError("windows is empty, but must hold at least one k-window of H")
    return min(windows, key=lambda w: abs(w.mean - l_new))


def needs_corner_case(l_ref: float, l_new: float, rtol: float) -> bool:
    """True when even the nearest window is not at a comparable loss level:
    |L_ref - L_new| > rtol * |L_new| (the paper's "close enough" threshold)."""
    return abs(l_ref - l_new) > rtol * abs(l_new)


def corner_case_verdict(l_new: float, window_means: Sequence[float]) -> Verdict:
    """The paper's corner case: keep if L_new is below every window mean of H, backtrack if
    above every one, else inconclusive."""
    if l_new < min(window_means):
        return Verdict.KEEP
    if l_new > max(window_means):
        return Verdict.BACKTRACK
    return Verdict.INCONCLUSIVE


def regression_reference(
    windows: Sequence[WindowStat], l_new: float, *, in_range: bool = False
) -> WindowStat:
    """v_ref predicted at L_new by a least-squares line of velocity on mean loss through the
    (non-overlapping) windows of H; not in the paper.

    The paper's nearest window rests on one window's noisy slope, is often the window that
    triggered the trial (selected for its low slope), and has no match at all when L_new is
    below every window (then its corner case keeps any trial that did not stop the descent).
    The line uses every window and extrapolates. The prediction is sum_i c_i v_i with
    c_i = 1/n + (L_new - mean)(L_i - mean) / Sxx, so its standard error is
    sqrt(sum_i c_i^2 se_i^2) (the windows do not overlap, so their slopes are independent).
    With one window, or windows at one level, it is their mean velocity.
    ``in_range``: the line is read at L_new clipped to [min, max] of the window means, never
    extrapolated past the levels H measured (far outside them the coefficients, and so v_ref
    and its error, grow without bound).
    Returns a :class:`WindowStat` with ``mean`` the level read (L_new unless clipped) and
    ``start = -1``.
    """
    if not windows:
        raise ValueError("windows is empty, but must hold at least one k-window of H")
    if in_range:
        l_new = min(max(l_new, min(w.mean for w in windows)), max(w.mean for w in windows))
    n = len(windows)
    xbar = sum(w.mean for w in windows) / n
    sxx = sum((w.mean - xbar) ** 2 for w in windows)
    if sxx > 0:
        coef = [1 / n + (l_new - xbar) * (w.mean - xbar) / sxx for w in windows]
    else:
        coef = [1 / n] * n
    v = sum(c * w.velocity for c, w in zip(coef, windows))
    se = sum((c * w.se) ** 2 for c, w in zip(coef, windows)) ** 0.5
    return WindowStat(l_new, v, se, -1)


class TrajectoryRef(NamedTuple):
    """The base LR's loss predicted over the validation steps from H: its mean ``level``, the
    standard error of that prediction, and the predicted velocity at their centre."""

    level: float
    se: float
    velocity: float


def trajectory_reference(
    hist_x: Sequence[float], hist_y: Sequence[float], val_x: Sequence[float]
) -> TrajectoryRef:
    """Where the loss would have been over the validation steps had the LR not changed; not
    in the paper.

    Fits L = a + b ln(step + 1) by least squares through H (a loss curve is close to linear in
    log steps over a few windows) and extrapolates to the validation steps. The standard error
    is the fit's at the mean of their ln(step + 1): s sqrt(1/n + (x0 - mean)^2 / Sxx), with s
    the residual standard deviation (so misfit counts as noise). A curve that flattens faster
    than the log makes the prediction low, which favours no trial; one that falls faster makes
    it high. ``ValueError`` with fewer than 3 points or one step only.
    """
    n = len(hist_x)
    if n < 3 or len(hist_y) != n or not val_x:
        raise ValueError(
            f"trajectory_reference needs >= 3 (step, loss) pairs of H and validation steps; "
            f"got {n} pairs, {len(hist_y)} losses and {len(val_x)} validation steps"
        )
    xs = [math.log(x + 1.0) for x in hist_x]
    xbar = sum(xs) / n
    ybar = sum(hist_y) / n
    sxx = sum((x - xbar) ** 2 for x in xs)
    if sxx <= 0:
        raise ValueError("trajectory_reference needs H to span more than one step")
    b = sum((x - xbar) * (y - ybar) for x, y in zip(xs, hist_y)) / sxx
    a = ybar - b * xbar
    resid = sum((y - a - b * x) ** 2 for x, y in zip(xs, hist_y))
    s = math.sqrt(resid / (n - 2)) if n > 2 else 0.0
    x0 = sum(math.log(x + 1.0) for x in val_x) / len(val_x)
    centre = sum(val_x) / len(val_x)
    se = s * math.sqrt(1.0 / n + (x0 - xbar) ** 2 / sxx)
    return TrajectoryRef(a + b * x0, se, -b / (centre + 1.0))


def judge_trial_by_level(
    l_new: float,
    se_mean: float,
    v_new: float,
    ref: TrajectoryRef,
    l_before: float,
    *,
    error_factor: float = 1.0,
    error_floor: float = 0.0,
    regress_guard: bool = True,
) -> TrialVerdict:
    """The verdict from the validation window's mean loss against the base trajectory's
    prediction (:func:`trajectory_reference`): keep if L_new < level - 2e, backtrack if
    L_new > level + 2e, else inconclusive, with e = max(floor, factor sqrt(se_mean^2 + se^2))
    in loss units; then the regress guard. A level holds the whole gain (or loss) of the trial
    since it began, where a slope holds one window's; the event's ``v_ref`` is the predicted
    velocity and ``l_ref`` the predicted level."""
    e = max(error_floor, error_factor * math.hypot(se_mean, ref.se))
    if l_new < ref.level - 2 * e:
        verdict = Verdict.KEEP
    elif l_new > ref.level + 2 * e:
        verdict = Verdict.BACKTRACK
    else:
        verdict = Verdict.INCONCLUSIVE
    regressed = bool(regress_guard) and regress_guard_trips(verdict, l_new, l_before)
    if regressed:
        verdict = Verdict.BACKTRACK
    return TrialVerdict(verdict, v_new, ref.velocity, l_new, ref.level, e, False, regressed)


def residual_lag1_sums(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """``(sum r_i r_{i-1}, sum r_i^2)`` over the residuals r of the least-squares line through
    ``(xs, ys)``: one window's share of the pooled lag-1 autocorrelation (``(0, 0)`` below
    three points)."""
    n = len(xs)
    if n < 3 or len(ys) != n:
        return 0.0, 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    cxx = sum((x - mx) ** 2 for x in xs)
    if cxx <= 0:
        return 0.0, 0.0
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / cxx
    r = [y - my - b * (x - mx) for x, y in zip(xs, ys)]
    return sum(r[i] * r[i - 1] for i in range(1, n)), sum(v * v for v in r)


def ar1_inflation(lag1: float, squares: float, max_rho: float = 0.95) -> float:
    """How much a least-squares slope's standard error understates its error when the noise is
    AR(1) with the lag-1 autocorrelation ``rho = lag1 / squares`` (clipped to [0, max_rho]):
    ``sqrt((1 + rho) / (1 - rho))``, the effective-sample-size correction. 1 without data or
    for rho <= 0 (independent noise: the residuals of a fitted line are slightly negatively
    correlated, never corrected downward)."""
    if not squares > 0:
        return 1.0
    rho = min(max(lag1 / squares, 0.0), max_rho)
    return math.sqrt((1.0 + rho) / (1.0 - rho))


def slope_error_bound(
    se_new: float,
    se_ref: float,
    *,
    fixed: float | None = None,
    factor: float = 1.0,
    floor: float = 0.0,
) -> float:
    """e: ``fixed`` if given, else max(floor, factor * max(se_new, se_ref)) with se the standard
    errors of the two least-squares slopes."""
    if fixed is not None:
        return fixed
    return max(floor, factor * max(se_new, se_ref))


def slope_verdict(v_new: float, v_ref: float, e: float) -> Verdict:
    """Keep if v_new > v_ref + 2e, backtrack if v_new < v_ref - 2e, else inconclusive."""
    if v_new > v_ref + 2 * e:
        return Verdict.KEEP
    if v_new < v_ref - 2 * e:
        return Verdict.BACKTRACK
    return Verdict.INCONCLUSIVE


def regress_guard_trips(verdict: Verdict, l_new: float, l_before: float) -> bool:
    """Our safeguard (not in the paper): a trial not already backtracked whose validation mean
    L_new is no lower than ``l_before``, the mean of the last window before the trial, made
    things worse whatever its slope says (a loss spike recovering looks like a fast descent)."""
    return verdict is not Verdict.BACKTRACK and l_new >= l_before


def judge_trial(
    v_new: float,
    se_new: float,
    l_new: float,
    windows: Sequence[WindowStat],
    l_before: float,
    *,
    comparable_rtol: float,
    error_bound: float | None = None,
    error_factor: float = 1.0,
    error_floor: float = 0.0,
    regress_guard: bool = True,
    reference: str = "nearest",
) -> TrialVerdict:
    """The verdict on a trial from its validation window (v_new, its standard error, L_new) and
    the candidate reference windows of H: L_ref by :func:`nearest_window`; the corner case if
    it is not comparable, else the slope test with e; then the regress guard. With
    ``reference="regression"`` (or ``"regression_in_range"``) v_ref comes from
    :func:`regression_reference` (``windows`` must not overlap) and there is no corner case."""
    regression = reference in ("regression", "regression_in_range")
    if regression:
        ref = regression_reference(windows, l_new, in_range=reference == "regression_in_range")
    else:
        ref = nearest_window(windows, l_new)
    if not regression and needs_corner_case(ref.mean, l_new, comparable_rtol):
        e = None
        corner = True
        verdict = corner_case_verdict(l_new, [w.mean for w in windows])
    else:
        e = slope_error_bound(
            se_new, ref.se, fixed=error_bound, factor=error_factor, floor=error_floor
        )
        corner = False
        verdict = slope_verdict(v_new, ref.velocity, e)
    regressed = bool(regress_guard) and regress_guard_trips(verdict, l_new, l_before)
    if regressed:
        verdict = Verdict.BACKTRACK
    return TrialVerdict(verdict, v_new, ref.velocity, l_new, ref.mean, e, corner, regressed)


# ---------------------------------------------------------------- opening range test
def opening_order(factors: Sequence[float]) -> tuple[float, ...]:
    """The order in which the opening tries its multipliers: the given ones, then 1 (the start
    scale) last, so that when 1 wins its steps are kept and no restore is needed."""
    return tuple(float(f) for f in factors if f != 1) + (1.0,)


def opening_score(losses: Sequence[float], tail: int) -> float:
    """A candidate's score: the mean of its last ``tail`` losses (inf if any is not finite or
    none was recorded). Lower is better."""
    last = list(losses)[-max(1, int(tail)) :]
    if not last or not all(math.isfinite(x) for x in last):
        return math.inf
    return sum(last) / len(last)


def opening_choice(order: Sequence[float], scores: Sequence[float]) -> int:
    """The index of the multiplier the opening keeps: the lowest score; ties and an all-inf
    field go to the multiplier nearest 1 on a log scale (the start scale when it is tied)."""
    best = min(range(len(order)), key=lambda i: (scores[i], abs(math.log(order[i]))))
    return best


def opening_bracket(order: Sequence[float], best: int) -> float:
    """How far the opening's choice is from its nearest tried neighbour, as a factor > 1
    (inf when it tried no other multiplier): the optimum lies within about this factor."""
    ratios = [
        max(order[i], order[best]) / min(order[i], order[best])
        for i in range(len(order))
        if i != best
    ]
    return min(ratios) if ratios else math.inf


def opening_sides(order: Sequence[float], best: int) -> frozenset[str]:
    """The sides of the opening's choice (``"down"``, ``"up"``) on which it tried a
    multiplier: there the choice measured better than what the opening tried."""
    b = order[best]
    return frozenset(
        side
        for side, tried in (("down", any(x < b for x in order)), ("up", any(x > b for x in order)))
        if tried
    )


def opening_bracketed(order: Sequence[float], best: int) -> bool:
    """Whether the opening tried a multiplier below its choice and one above it: the
    optimum is then bracketed by what it measured (an edge choice may lie short of it)."""
    return len(opening_sides(order, best)) == 2


def sides_after(sides: frozenset[str], direction: str, verdict: Verdict) -> frozenset[str]:
    """``bracket_stops``: the sides of the current scale measured worse than it, after a trial
    in ``direction`` ended with ``verdict``. A kept trial leaves behind the scale it came from,
    which measured worse (the side it came from); a failed or inconclusive one adds its own
    side. Both sides: the scale is bracketed and the search stops."""
    if verdict is Verdict.KEEP:
        return frozenset({"down" if direction == "up" else "up"})
    return sides | {direction}


def opening_extension(order: Sequence[float], scores: Sequence[float], best: int) -> list[float]:
    """One extension round of the opening: when its choice is the smallest or the largest
    multiplier it tried, the next one beyond that edge, one grid step (the ratio between the
    edge and its nearest tried neighbour) further. A field where no multiplier scored better
    than another (every one diverged, or saturated at the same loss) is taken as all too large:
    the next one below the smallest. ``[]`` when the choice lies inside what was tried, or
    fewer than two were tried."""
    if len(order) < 2:
        return []
    lo, hi = min(order), max(order)
    says_nothing = not any(math.isfinite(x) for x in scores) or len(set(scores)) == 1
    if says_nothing or order[best] == lo:
        edge, up = lo, False
    elif order[best] == hi:
        edge, up = hi, True
    else:
        return []
    nearest = min((x for x in order if x != edge), key=lambda x: abs(math.log(x / edge)))
    step = max(edge / nearest, nearest / edge)
    return [edge * step if up else edge / step]


def opening_measured(
    order: Sequence[float], best: int, extensions: Sequence[float]
) -> tuple[tuple[float, ...], int]:
    """The multipliers that bound the opening's choice, and its index among them: ``order``
    without the extension multipliers that lost beyond it (further out than the choice on
    their side). An extension that loses then changes nothing but its compute: the choice's
    sides and bracket are those of the opening without it."""
    b = order[best]
    lost = {x for x in extensions if (x > b if x > 1 else x < b)}
    kept = [i for i, x in enumerate(order) if x not in lost]
    return tuple(order[i] for i in kept), kept.index(best)


def opening_refinement(order: Sequence[float], best: int) -> list[float]:
    """One refinement round of the opening: the kept multiplier times and divided by the square
    root of its bracket (:func:`opening_bracket`), leaving out any within 1% of one already
    tried."""
    b = order[best]
    step = math.sqrt(opening_bracket(order, best))
    if not math.isfinite(step):
        return []
    new = [b * step, b / step]
    return [x for x in new if all(abs(math.log(x / t)) > 0.01 for t in order)]
