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

from adalrs_ray.core.checks import (
    check,
    check_choice,
    check_int,
    check_number,
    is_integer,
    is_number,
)
from adalrs_ray.core.decisions import (
    TrialVerdict,
    Verdict,
    ar1_inflation,
    clamp_scale,
    decay_exponent,
    eager_theta,
    judge_trial,
    judge_trial_by_level,
    loss_rose_twice,
    next_direction,
    opening_bracket,
    opening_choice,
    opening_extension,
    opening_measured,
    opening_order,
    opening_refinement,
    opening_score,
    opening_sides,
    ramp_scale,
    rectified_alpha,
    rectified_beta_divisor,
    reference_windows,
    relaxed_theta,
    residual_lag1_sums,
    shrunk_factor,
    sides_after,
    slope_error_bound,
    trajectory_reference,
    trial_factor,
    velocity_decayed,
)
from adalrs_ray.core.stats import fit_velocity

logger = logging.getLogger(__name__)

STATE_VERSION = 3
# fields added after state version 1, with the values that reproduce version 1's behaviour
# (the paper's rule): a checkpoint whose config lacks one was made with that value
_V1_FIELDS = {
    "two_sided": False,
    "counter_trial": False,
    "inconclusive_turns": True,
    "inconclusive_shrinks": False,
    "factor_shrink": 1.0,
    "min_trial_factor": 1.0,
    "settle_steps": 0,
    "restore": "always",
    "reference": "nearest",
    "opening_factors": (),
    "error_ar1": False,
    "boundary_rule": "downscale",
    "bracket_stops": False,
}
# fields newer than some checkpoints that are not rule fields: a saved config without them was
# made with these values
_LATER_DEFAULTS = {
    "opening_steps": None,
    "opening_tail": None,
    "opening_narrows": False,
    "opening_refine": 0,
    "opening_extends": 0,
    "inconclusive_restores": False,
    "boundary_tested": False,
    "opening_trials": "all",
}
# the regression rule's departures from the paper (the default where the default's opening
# does not fit the run, and the base of the "opening" rule): two-sided trials, restore only on
# regress, v_ref from a line through H
_REGRESSION = {
    "two_sided": True,
    "factor_shrink": 0.5,
    "restore": "regressed",
    "reference": "regression",
}
# the opening range test and what goes with it (the "opening" rule), and their values without it
_OPENING = {
    "opening_factors": (0.1, 0.316, 3.16, 10.0),
    "opening_narrows": True,
    "opening_trials": "edge",
    "boundary_tested": True,
    "bracket_stops": True,
}
_NO_OPENING = {
    "opening_factors": (),
    "opening_extends": 0,
    "opening_narrows": False,
    "opening_trials": "all",
    "boundary_tested": False,
    "bracket_stops": False,
}
# the opening's extension rounds past its edge where the loop rewinds (an extension is then
# compute, not steps of the run): from 1/30 and 30x on both simulators the goal is met on every
# seed (the default without them: 28-57%), from 1/10 .. 10x every decision is unchanged, at up to
# +0.13 runs where the opening's choice is at an edge (docs/controller.md, "Starts further off").
# Continue mode was not measured with them and keeps 0.
_REWIND_EXTENDS = 2
# the fields whose default (None; backtrack_mode "auto") follows the loop: the opening rule in
# both kinds of loop, the factors decaying per adjustment where the loop rewinds (steps go
# back) and per window where it cannot. Where the opening does not fit the search window, or
# where the loop cannot rewind and its multipliers' steps would be more than
# _CONTINUE_OPENING_SHARE of the run, these fields take _NO_OPENING's values: the regression
# rule. docs/controller.md, "The default follows the loop", gives the measurements.
_BY_MODE: dict[str, dict[str, Any]] = {
    "continue": {"decay_basis": "windows", **_OPENING, "opening_extends": 0},
    "rewind": {"decay_basis": "adjustments", **_OPENING, "opening_extends": _REWIND_EXTENDS},
}
# the largest share of a run that a default opening may discard in a loop that cannot rewind
# (the opening's multipliers' steps are then the run's): at 1/3 of a 600-step run it ended
# worse than the regression rule from lr_grid/10 on the tiny LM; at 1/20 of a 4,000-step run
# and at up to 1/8 on the simulators it ended better from every start
_CONTINUE_OPENING_SHARE = 0.1
BACKTRACK_MODES = ("auto", "continue", "rewind")
#: what the boundary rule does (AdaLRSConfig.boundary_rule)
BOUNDARY_RULES = ("downscale", "trial", "off")
_CONTINUE = {"decay_basis": "windows", **_NO_OPENING, "backtrack_mode": "continue"}
# the rules measured before error_ar1 and boundary_rule existed keep the paper's values of them
_BEFORE_NOISE = {k: _V1_FIELDS[k] for k in ("error_ar1", "boundary_rule")}
# named rules: the beyond-the-paper fields each sets (docs/controller.md, "Beyond the paper",
# gives the measurements behind each). A rule fills only the fields the caller did not set.
# "paper", "regression" and "trajectory" were measured in continue mode and pin it; "opening"
# leaves the mode to the loop ("auto": rewind where the loop rewinds its data).
RULES: dict[str, dict[str, Any]] = {
    "paper": {**_CONTINUE, **_V1_FIELDS},
    "regression": {**_CONTINUE, **_REGRESSION, **_BEFORE_NOISE},
    # two-sided trials judged by the level against the base LR's extrapolated trajectory
    "trajectory": {
        **_CONTINUE,
        "two_sided": True,
        "factor_shrink": 0.5,
        "reference": "trajectory",
        **_BEFORE_NOISE,
    },
    # the default where the loop rewinds: the regression rule plus the opening range test
    # before the first step over 1/10 .. 10x; trials after it only when its choice is at the
    # edge of what it tried, and inside its bracket; the boundary rule only on significant
    # rises (docs/controller.md, "The opening" and "After the opening"); decay_basis follows
    # the mode the loop resolves
    "opening": {**_REGRESSION, **_OPENING},
}

#: how a trial's validation window is judged (AdaLRSConfig.reference)
REFERENCES = ("nearest", "regression", "regression_in_range", "trajectory")

EVENT_KINDS = (
    "search_start",  # first step inside [start_ratio, end_ratio)
    "opening_candidate",  # the opening range test scored one multiplier (restore follows)
    "opening",  # the opening range test kept the multiplier with the lowest score
    "trial_start",  # velocity decayed: snapshot taken, LR ramp toward alpha' begins
    "ramp_early_stop",  # a ramp loss exceeded max(H): ramp ended, validation at the reached scale
    "keep",  # upscale validated: v_new > v_ref + 2e (or the corner case says lower)
    "backtrack",  # upscale failed: restore the snapshot, scale /= beta'
    "inconclusive",  # |v_new - v_ref| <= 2e: back to the pre-trial scale, theta <- (theta+1)/2
    "boundary_downscale",  # the loss rose in two consecutive windows
    "nonfinite_loss",  # NaN/inf loss: failed trial or divergence (or ignored outside the search)
    "search_end",  # the scale is frozen from here on
)

_PHASES = ("before", "opening", "search", "ramp", "validate", "frozen")


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
        decay_basis: what t counts in lambda^t (``None``: by ``backtrack_mode``, ``"windows"``
            in continue mode, ``"adjustments"`` in rewind mode). ``"windows"``: windows of ``window``
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
        error_ar1: beyond the paper: e (trial verdicts, and the boundary rule with
            ``boundary_tested``) is also multiplied by ``sqrt((1 + rho) / (1 - rho))``, rho the
            lag-1 autocorrelation of the least-squares residuals pooled over every window the
            search has fitted (clipped to [0, 0.95]). The standard error of a window's slope
            assumes independent noise; a fixed probe batch's loss follows the weights, so its
            noise is autocorrelated (rho about 0.8 on the tiny LM) and the bare standard error
            understates a slope's error about threefold: two windows "rise significantly" by
            chance in a flat stretch. For independent noise (the training loss) rho <= 0 and
            nothing changes. Default ``True``; the paper's rule and the named rules
            ``regression`` and ``trajectory`` (measured before it) set ``False``.
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
        backtrack_mode: ``"auto"`` (default): ``"rewind"`` where the loop rewinds its data
            (it says so: :meth:`resolved`), ``"continue"`` elsewhere; the fields left at
            ``None`` (``decay_basis``, ``opening_factors``, ``opening_narrows``,
            ``opening_trials``, ``boundary_tested``, ``bracket_stops``) then take the
            ``opening`` rule's values in either mode (``decay_basis``: ``"adjustments"`` in
            rewind mode, ``"windows"`` in continue mode), unless the opening does not fit the search window or, in
            continue mode, its multipliers' steps would exceed a tenth of ``total_steps``
            (they are then steps of the run): then the ``regression`` rule's (no opening).
            ``"continue"``: after RESTORE the step counter, the data
            stream and the base schedule move on (the steps of a failed trial count against the
            budget, as in the paper's cost figures). ``"rewind"``: the loop also rewinds the
            step counter to ``restore_step + 1`` (and its data/RNG); needs
            ``decay_basis="adjustments"`` because steps go back. The boundary rule then
            downscales without restoring: a rewind would replay the same data, and on a flat
            loss the same noise would rise again, downscale after downscale.
        initial_scale: the multiplier before any decision (> 0).
        min_scale, max_scale: optional clamps of the multiplier.
        two_sided: beyond the paper. ``False`` (the paper): every trial is an upscale, and a
            failed one downscales by 1/beta' without ever measuring the lower LR. ``True``: a
            trial goes up (by alpha') or down (by 1/beta') and is validated either way; a kept
            trial keeps its direction, a failed or inconclusive one turns the next trial
            around, and a failed trial returns to the pre-trial scale (no blind downscale).
        inconclusive_turns: two-sided only: an inconclusive trial turns the next trial the
            other way (``True``), or keeps its direction (``False``; only a failed trial turns
            the search around, so an inconclusive downscale after a failed upscale is tried
            again, smaller, instead of the failed direction).
        inconclusive_shrinks: two-sided only: an inconclusive trial also shrinks its
            direction's factor by ``factor_shrink`` (``False``: only a failed one does). A step
            that could not be told from no step is tried smaller next time, as in a bisection.
        inconclusive_restores: an inconclusive trial also restores the snapshot taken at its
            start (``False``: its steps at the trial's LR are kept). What it trained proved
            nothing; a trial at 1.78x keeps its larger weights after the scale goes back.
            Costs the trial's steps: compute only in ``backtrack_mode="rewind"``, steps of the
            run in ``"continue"``. H is kept (the model is back where H ended).
        boundary_tested: the boundary rule fires only when each of the two rising windows
            rose by more than twice its slope's error bound (e as for a trial: ``error_bound``,
            or ``error_factor`` x the slope's standard error floored at ``error_floor``),
            as a trial's verdict must clear 2e (``False``, the paper: any two negative
            velocities). Where the loss is flat, two windows rise by chance one time in four.
            ``None``: by ``backtrack_mode`` (``True`` in rewind mode, ``False`` in continue).
        boundary_rule: what the boundary rule does when the loss rose in two windows:
            ``"downscale"`` (the paper: divide the scale by beta', blind), ``"trial"``
            (two-sided only, beyond the paper: start a downscale trial, validated like any
            trial, if one may start; a downscale is then never applied blind) or ``"off"``.
            ``None`` (default): ``"trial"`` with ``two_sided``, else ``"downscale"``; the
            named rules ``paper``, ``regression`` and ``trajectory`` set ``"downscale"``.
        counter_trial: two-sided only: a failed trial that restored the snapshot starts the
            trial the other way at once, from the restored model and with the same H (whose
            steps are moved on by the discarded ones), instead of after two fresh windows
            and a velocity decay. The paper's trigger asks when to try; right after a failure
            the question is only which way.
        factor_shrink: two-sided only, in (0, 1]: after a failed trial the factor of its
            direction becomes factor ** factor_shrink (0.5: half the step on a log scale), so
            the search brackets the optimum instead of bouncing across it.
        min_trial_factor: >= 1; no trial starts with a rectified factor at or below it
            (1: the paper's, trials stop only when alpha' reaches 1). With ``two_sided`` the
            other direction is tried, and the search stops when both are at or below it.
        settle_steps: >= 0 steps between the ramp and the validation window whose losses are
            not fitted (the paper: 0). The loss answers an LR change with a lag (an upscale
            first raises it, a downscale first lowers it); validating inside that transient
            measures the transient.
        restore: ``"always"`` (the paper): a failed trial restores the snapshot.
            ``"regressed"``: only a failed trial whose validation mean is no lower than the
            last window before it (``loss_before``) restores; one that still made progress
            keeps its steps. A non-finite loss always restores.
        reference: ``"nearest"`` (the paper): v_ref is the slope of the window of H whose mean
            loss is nearest to L_new, with the corner case when none is close.
            ``"regression"``: v_ref is predicted at L_new by a line of velocity on mean loss
            through the non-overlapping windows of H (``decisions.regression_reference``);
            its standard error enters e, and there is no corner case.
            ``"regression_in_range"``: the same line, read at L_new clipped to the range of
            H's window means: beyond the levels H measured the line is not extrapolated (a
            downscale that lands below every window of H is compared with the base LR's
            velocity at the lowest level it reached). ``"trajectory"``: no
            slopes at all: the validation window's mean loss against the loss the base LR
            would have reached over the same steps, extrapolated from H by a line in
            ln(step) (``decisions.trajectory_reference``); e in loss units from both
            standard errors (``error_bound`` is for slopes and is not used).
        opening_factors: beyond the paper (``()``: none, the paper; ``None``: by
            ``backtrack_mode``, (0.1, 0.316, 3.16, 10) in rewind mode, none in continue mode).
            At the run's
            first step an LR range test runs from one snapshot: each multiplier of the scale
            given here, then 1 last, trains ``opening_steps`` steps from the same model (a
            restore between two), and the multiplier whose last ``opening_tail`` losses have
            the lowest mean is kept (the model restored to the snapshot unless 1 wins). The
            search then starts at ``start_ratio`` (or right after the opening, if later), its
            first trial's direction set by the choice. It acts before a too-large LR does its
            damage (weights grow within the first windows, before the paper's trigger can
            fire). Costs ``len(opening_factors) * opening_steps`` steps (restored ones: the
            budget's in ``"continue"`` mode).
        opening_steps: steps per multiplier of the opening (``None``: ``2 * window``, the
            horizon of one velocity comparison; at one window the tiny LM's opening chose
            3.16x from a good LR, docs/controller.md, "The default follows the loop").
        opening_tail: the last this many losses of a multiplier score it (``None``:
            ``max(1, opening_steps // 4)``); a non-finite loss scores it +inf and ends it.
        opening_narrows: after the opening, both trial factors become at most the square
            root of the factor between the kept multiplier and its nearest tried neighbour
            (3.16 between 1 and 3.16: factors <= 1.78): the opening bracketed the optimum, so
            the trials after it refine within the bracket instead of leaving it. ``None``: by
            ``backtrack_mode`` (``True`` in rewind mode, ``False`` in continue mode).
        opening_refine: rounds of refinement after the opening's multipliers: each tries the
            kept multiplier times and divided by the square root of its bracket (1.78 around
            a choice from a 3.16-spaced grid, then 1.33), from the same snapshot. Each round
            costs 2 x ``opening_steps`` more steps.
        opening_extends: rounds of extension after the opening's multipliers (before any
            refinement): while its choice is the smallest or largest multiplier tried (or
            every one diverged), the next one a grid step beyond that edge (0.0316, then 0.01
            below the default grid; 31.6, then 100 above), from the same snapshot, so a start
            up to 100x off lies inside what the opening measures. An extension that loses
            beyond the choice changes nothing but its compute. Each round costs
            ``opening_steps`` more steps, and only where the choice is at an edge. ``None``:
            by ``backtrack_mode`` (``2`` in rewind mode, ``0`` in continue mode, where the
            steps would be the run's; ``0`` where the opening does not fit).
        opening_trials: ``"all"``: after the opening the search runs as usual. ``"edge"``
            (two-sided only): trials follow only when the opening's choice is the smallest or
            the largest multiplier it tried, where the optimum may lie beyond what it
            measured. With a tried multiplier on each side of the choice the optimum is
            bracketed and no trial follows (the boundary rule and divergence still act):
            within the bracket the loss is flat and trials cost more than they find. ``None``:
            by ``backtrack_mode`` (``"edge"`` in rewind mode if two-sided, else ``"all"``).
        bracket_stops: two-sided only: the search stops (no trial follows; the boundary rule and
            divergence still act) once both sides of the current scale measured worse than
            it: a failed or inconclusive trial measures its own side, a kept trial leaves the
            scale it came from on the side it came from, and the opening measures each side
            on which it tried a multiplier. Every trial has the same small chance of a false
            keep, so an endless search drifts: on the LM-like simulator at 8x its length,
            without it, the trials after the opening moved the LR away from the optimum 149
            times and toward it 9 times (80 seeds from 1/10 and 10x; docs/controller.md, "The
            search stops at a bracket"). ``None``: by ``backtrack_mode``, ``True`` where the
            opening runs (as ``opening_factors``), else ``False``.

    :meth:`paper` builds the paper's rule (Algorithm 1 with the details stated beside it).
    """

    total_steps: int
    window: int | None = None
    alpha: float = 3.0
    beta: float = 2.0
    lam: float = 0.99
    start_ratio: float = 0.1
    end_ratio: float = 0.4
    decay_basis: str | None = None
    theta0: float = 0.9
    theta_relax: float = 0.5
    ramp_steps: int | None = None
    ramp: str = "geometric"
    error_bound: float | None = None
    error_factor: float = 1.0
    error_floor: float = 0.0
    error_ar1: bool = True
    comparable_rtol: float = 0.05
    regress_guard: bool = True
    reference_excludes_trigger: bool = False
    reference_stride: int | None = None
    max_history_windows: int = 16
    snapshot_policy: str = "windows"
    backtrack_mode: str = "auto"
    initial_scale: float = 1.0
    min_scale: float | None = None
    max_scale: float | None = None
    # beyond the paper: the "regression" rule (docs/controller.md gives the measurements)
    two_sided: bool = True
    counter_trial: bool = False
    inconclusive_turns: bool = True
    inconclusive_shrinks: bool = False
    inconclusive_restores: bool = False
    boundary_tested: bool | None = None
    boundary_rule: str | None = None
    factor_shrink: float = 0.5
    min_trial_factor: float = 1.0
    settle_steps: int = 0
    bracket_stops: bool | None = None
    restore: str = "regressed"
    reference: str = "regression"
    opening_factors: tuple[float, ...] | None = None
    opening_steps: int | None = None
    opening_tail: int | None = None
    opening_narrows: bool | None = None
    opening_refine: int = 0
    opening_extends: int | None = None
    opening_trials: str | None = None

    @classmethod
    def paper(cls, total_steps: int, **fields: Any) -> AdaLRSConfig:
        """The paper's rule (Dong et al. 2025, Algorithm 1): upscale trials only, a blind
        downscale by 1/beta' after a failed one, the snapshot always restored, the nearest
        window of H as the reference with the corner case, validation right after the ramp.
        ``fields`` set the paper's free inputs (window, alpha, beta, lam, ...); setting one of
        the beyond-the-paper fields to another value is refused."""
        beyond = {k: v for k, v in fields.items() if k in _V1_FIELDS and v != _V1_FIELDS[k]}
        check(
            not beyond,
            f"AdaLRSConfig.paper() got {beyond}, but the paper's rule fixes these fields at "
            f"{ {k: _V1_FIELDS[k] for k in beyond} }; use AdaLRSConfig(...) to depart from it",
        )
        return cls(total_steps=total_steps, **{**RULES["paper"], **fields})

    @property
    def is_paper(self) -> bool:
        """True when every beyond-the-paper field has the paper's value."""
        return all(getattr(self, k) == v for k, v in _V1_FIELDS.items())

    def resolved(self, rewinds: bool) -> AdaLRSConfig:
        """This config as a loop runs it: ``backtrack_mode="auto"`` becomes ``"rewind"`` where
        the loop rewinds its data after a restore (``rewinds=True``: the LM loop,
        :func:`~adalrs_ray.core.simulator.simulate`) and ``"continue"`` elsewhere, and the
        fields left at ``None`` follow that mode (the ``opening`` rule's values where its
        opening fits the run, the ``regression`` rule's elsewhere: see ``backtrack_mode``). A
        config with a set mode is returned as is. Raises ``ValueError`` if the resolved config
        is invalid."""
        if self.backtrack_mode != "auto":
            return self
        mode = "rewind" if rewinds else "continue"
        try:
            return dataclasses.replace(self, backtrack_mode=mode)
        except ValueError as exc:
            where = "rewinds" if rewinds else "does not rewind"
            hint = f" (backtrack_mode='auto' runs as {mode!r} in a loop that {where} its data"
            raise ValueError(f"{exc}{hint})") from None

    def __post_init__(self) -> None:
        check_choice("backtrack_mode", self.backtrack_mode, BACKTRACK_MODES)
        if self.backtrack_mode == "auto":
            # valid if a loop of either kind can run it (a config only one kind can run, an
            # opening too long for continue mode say, fails where that kind resolves it), and
            # the fields that do not follow the mode normalised as that copy has them
            errors = []
            for mode in ("continue", "rewind"):
                try:
                    self._copy_fixed_fields(dataclasses.replace(self, backtrack_mode=mode))
                    return
                except ValueError as exc:
                    errors.append(exc)
            raise errors[0]  # the continue copy's error: neither kind of loop can run it
        followed = [name for name in _BY_MODE[self.backtrack_mode] if getattr(self, name) is None]
        for name in followed:
            value = _BY_MODE[self.backtrack_mode][name]
            if name == "opening_trials" and not self.two_sided:
                value = "all"  # "edge" needs two-sided trials
            if name == "bracket_stops" and not self.two_sided:
                value = False  # so does a bracket
            object.__setattr__(self, name, value)
        if self.boundary_rule is None:  # a validated downscale where trials go both ways
            object.__setattr__(self, "boundary_rule", "trial" if self.two_sided else "downscale")
        check_int("total_steps", self.total_steps, 1)
        for name in ("alpha", "beta", "lam", "start_ratio", "end_ratio", "theta0", "theta_relax"):
            value = getattr(self, name)
            check(is_number(value), f"{name} is {value!r}, but must be a finite number")
        check(self.alpha > 1, f"alpha is {self.alpha}, but must be alpha > 1")
        check(self.beta > 1, f"beta is {self.beta}, but must be beta > 1")
        if float(self.alpha).is_integer() and float(self.beta).is_integer():
            g = math.gcd(int(self.alpha), int(self.beta))
            check(
                g == 1,
                f"alpha={self.alpha} and beta={self.beta} have gcd {g}, but integer factors "
                "must satisfy gcd(alpha, beta) == 1",
            )
        check_number("lam", self.lam, low=0, high=1)
        check(
            0 <= self.start_ratio < self.end_ratio <= 1,
            f"start_ratio={self.start_ratio}, end_ratio={self.end_ratio}, but must satisfy "
            "0 <= start_ratio < end_ratio <= 1",
        )
        check_number("theta0", self.theta0, low=0, high=1)
        check(
            0 <= self.theta_relax < 1,
            f"theta_relax is {self.theta_relax}, but must be 0 <= theta_relax < 1",
        )
        check_choice("decay_basis", self.decay_basis, ("windows", "adjustments"))
        check_choice("ramp", self.ramp, ("geometric", "linear"))
        check_choice("snapshot_policy", self.snapshot_policy, ("windows", "trials"))
        check_choice("restore", self.restore, ("always", "regressed"))
        check_choice("reference", self.reference, REFERENCES)
        check_choice("opening_trials", self.opening_trials, ("all", "edge"))
        check_choice("boundary_rule", self.boundary_rule, BOUNDARY_RULES)
        check(
            self.boundary_rule != "trial" or self.two_sided,
            "boundary_rule is 'trial', but a downscale trial needs two_sided=True",
        )
        check(
            not self.bracket_stops or self.two_sided,
            "bracket_stops is True, but a bracket needs trials both ways: two_sided=True",
        )
        check(
            self.opening_trials == "all" or self.two_sided,
            f"opening_trials is {self.opening_trials!r}, but 'edge' stops the two-sided "
            "search's trials and needs two_sided=True",
        )
        for name in (
            "two_sided",
            "counter_trial",
            "inconclusive_turns",
            "inconclusive_shrinks",
            "inconclusive_restores",
            "boundary_tested",
            "opening_narrows",
            "error_ar1",
            "bracket_stops",
        ):
            value = getattr(self, name)
            check(isinstance(value, bool), f"{name} is {value!r}, but must be True or False")
        check(
            is_number(self.factor_shrink) and 0 < self.factor_shrink <= 1,
            f"factor_shrink is {self.factor_shrink!r}, but must be a number in (0, 1]",
        )
        check(
            is_number(self.min_trial_factor) and self.min_trial_factor >= 1,
            f"min_trial_factor is {self.min_trial_factor!r}, but must be a number >= 1",
        )
        check_int("settle_steps", self.settle_steps, 0)
        check(
            not (self.backtrack_mode == "rewind" and self.decay_basis == "windows"),
            "backtrack_mode='rewind' rewinds steps, so decay_basis='windows' would never decay "
            "the factors: use decay_basis='adjustments'",
        )
        check_number("error_bound", self.error_bound, low=0, strict=False, optional=True)
        check_number("error_factor", self.error_factor, low=0, strict=False)
        check_number("error_floor", self.error_floor, low=0, strict=False)
        check_number("comparable_rtol", self.comparable_rtol, low=0, strict=False)
        check_int("max_history_windows", self.max_history_windows, 2)
        check_number("initial_scale", self.initial_scale, low=0)
        check_number("min_scale", self.min_scale, low=0, optional=True)
        check_number("max_scale", self.max_scale, low=0, optional=True)
        if self.min_scale is not None and self.max_scale is not None:
            check(
                self.min_scale <= self.max_scale,
                f"min_scale={self.min_scale} > max_scale={self.max_scale}: need min <= max",
            )
        self._check_opening()
        search = self.search_end - self.search_start
        check(
            search >= 8,
            f"the search window [{self.start_ratio}, {self.end_ratio}) of total_steps="
            f"{self.total_steps} has {search} steps, but AdaLRS needs at least 8",
        )
        if self.window is None:
            object.__setattr__(self, "window", max(2, search // 6))
        check_int("window", self.window, 2)
        check_int("ramp_steps", self.ramp_steps, 1, optional=True)
        if self.reference_stride is not None:
            check(
                is_integer(self.reference_stride) and 1 <= self.reference_stride <= self.window,
                f"reference_stride is {self.reference_stride!r}, but must be None or an integer "
                f"in [1, window={self.window}]",
            )
        need = 3 * self.window + self.ramp_len + self.settle_steps
        if "opening_factors" in followed and self.opening_factors and not self._opening_fits(need):
            for name in followed:  # the default's opening does not fit: the regression rule
                if name in _NO_OPENING:
                    object.__setattr__(self, name, _NO_OPENING[name])
        if self.opening_factors:
            if self.opening_steps is None:  # two windows: the horizon of one velocity step
                object.__setattr__(self, "opening_steps", 2 * int(self.window))
            if self.opening_tail is None:
                object.__setattr__(self, "opening_tail", max(1, self.opening_steps // 4))
            check(
                self.opening_tail <= self.opening_steps,
                f"opening_tail is {self.opening_tail}, but must be <= opening_steps="
                f"{self.opening_steps}",
            )
            n, opening, left = self._opening_span()
            check(
                left >= need,
                f"the opening ({n} multipliers x opening_steps="
                f"{self.opening_steps}: steps 0-{opening - 1}) leaves {left} steps of the "
                f"search window [{self.search_start}, {self.search_end}), but the search needs "
                f"{need}; use fewer opening_factors, fewer opening_steps or a longer search "
                "window",
            )
        check(
            search >= need,
            f"window={self.window} is too long for the search window [{self.search_start}, "
            f"{self.search_end}) of {search} steps: two velocity windows plus one trial "
            f"(ramp {self.ramp_len} + settle {self.settle_steps} + validation {self.window}) "
            f"need {need} steps; use a "
            "smaller window, a wider [start_ratio, end_ratio) or a longer run",
        )

    def _opening_span(self) -> tuple[int, int, int]:
        """The opening's multipliers, the steps of the loop it takes (steps 0 .. opening - 1;
        all of them in continue mode, one multiplier's in rewind mode) and the steps of the
        search window it leaves (``opening_steps`` ``None``: two windows)."""
        steps = self.opening_steps if self.opening_steps is not None else 2 * int(self.window)
        n = len(self.opening_order) + 2 * self.opening_refine + self.opening_extends
        opening = (1 if self.backtrack_mode == "rewind" else n) * steps
        return n, opening, self.search_end - max(self.search_start, opening)

    def _opening_fits(self, need: int) -> bool:
        """Whether the default's opening fits this run: it leaves ``need`` steps of the search
        window and, where the loop cannot rewind, discards at most _CONTINUE_OPENING_SHARE of
        the run's steps."""
        _, opening, left = self._opening_span()
        rewinds = self.backtrack_mode == "rewind"
        return left >= need and (rewinds or opening <= _CONTINUE_OPENING_SHARE * self.total_steps)

    def _copy_fixed_fields(self, concrete: AdaLRSConfig) -> None:
        """An "auto" config takes the normalised values (window, opening_steps, tuples) of a
        resolved copy, except the mode and the fields left to follow it."""
        for f in dataclasses.fields(self):
            left = f.name in _BY_MODE["continue"] and getattr(self, f.name) is None
            if f.name != "backtrack_mode" and not left:
                object.__setattr__(self, f.name, getattr(concrete, f.name))

    def _check_opening(self) -> None:
        f = self.opening_factors
        check(
            isinstance(f, (tuple, list)),
            f"opening_factors is {f!r}, but must be a tuple of positive numbers",
        )
        f = tuple(f)
        for x in f:
            check(
                is_number(x) and x > 0,
                f"opening_factors holds {x!r}, but every multiplier must be a positive number",
            )
        check(
            len(set(f)) == len(f),
            f"opening_factors is {f}, but a multiplier may appear only once",
        )
        object.__setattr__(self, "opening_factors", tuple(float(x) for x in f))
        check_int("opening_steps", self.opening_steps, 2, optional=True)
        check_int("opening_tail", self.opening_tail, 1, optional=True)
        check_int("opening_refine", self.opening_refine, 0)
        check_int("opening_extends", self.opening_extends, 0)
        if not f:
            return
        check(
            any(x != 1 for x in f),
            f"opening_factors is {f}, but must hold a multiplier other than 1 (1 is always "
            "tried); use () for no opening",
        )

    # derived quantities (not stored: a pure function of the fields)
    @property
    def opening_order(self) -> tuple[float, ...]:
        """The multipliers the opening tries, in order (1 last); () without an opening."""
        f = self.opening_factors
        return opening_order(f) if f else ()  # None: "auto", resolved by the loop

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
        d = dataclasses.asdict(self)
        if self.opening_factors is not None:  # None: "auto", resolved by the loop
            d["opening_factors"] = list(self.opening_factors)  # JSON's form: saved == live
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdaLRSConfig:
        """The config of ``data``'s fields. A ``rule`` key names one of :data:`RULES`, whose
        fields fill those ``data`` does not set (``{"rule": "trajectory", "window": 64}``)."""
        data = dict(data)
        rule = data.pop("rule", None)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        check(
            not unknown,
            f"unknown AdaLRSConfig fields {unknown}; valid: {sorted(names)} and 'rule'",
        )
        if rule is not None:
            check_choice("rule", rule, tuple(RULES))
            data = {**RULES[rule], **data}
        return cls(**data)


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
        return fit_velocity(self.n, self.sx, self.sy, self.sxx, self.sxy, self.syy)


# the trial's keys in state_dict (format version 1): field name -> JSON key
_TRIAL_KEYS = {
    "start_step": "start_step",
    "base_scale": "s0",
    "alpha_eff": "alpha_eff",
    "target_scale": "target",
    "ramp_step": "i",
    "ramp_len": "n",
    "history_max": "hist_max",
    "loss_before": "l_before",
    "early_stop": "early_stop",
    "direction": "direction",
    "settle_left": "settle",
    "cause": "cause",
}
# keys a version-1 trial lacks, and their version-1 values
_TRIAL_V1 = {"direction": "up", "settle": 0, "cause": "decay"}


@dataclass
class Trial:
    """An upscale trial in progress (phases ``ramp`` and ``validate``).

    Fields (paper symbols): ``base_scale`` s, the scale before the trial (restored on an
    inconclusive verdict, divided by 1/beta' on a backtrack); ``alpha_eff`` alpha' at the
    trial start; ``target_scale`` s * alpha' (clamped), where the ramp ends; ``ramp_step`` and
    ``ramp_len`` the ramp's progress i of n; ``history_max`` max(H), the early-stop level of the
    ramp; ``loss_before`` the mean of the last window of H (the regress guard's level);
    ``early_stop`` whether the ramp stopped early; ``validated_scale`` the scale held during
    validation (``None`` during the ramp); ``direction`` ``"up"`` or ``"down"``;
    ``settle_left`` the settle steps still to skip; ``cause`` ``"decay"`` (the paper's
    trigger) or ``"boundary"`` (two rising windows, ``boundary_rule="trial"``).

    In ``state_dict()`` a trial is the dict of format version 1 (keys ``s0``, ``target``,
    ``i``, ``n``, ``hist_max``, ``l_before``...): :meth:`to_state` and :meth:`from_state`
    convert at that boundary, so checkpoints written before this class existed still load.
    """

    start_step: int
    base_scale: float
    alpha_eff: float
    target_scale: float
    ramp_step: int
    ramp_len: int
    history_max: float
    loss_before: float
    early_stop: bool = False
    validated_scale: float | None = None
    direction: str = "up"
    settle_left: int = 0
    cause: str = "decay"

    @property
    def tried_scale(self) -> float:
        """The scale the trial tried: the validated one, or the ramp's target before that."""
        return self.validated_scale if self.validated_scale is not None else self.target_scale

    def to_state(self) -> dict[str, Any]:
        """The state_dict form (``validated_scale`` present only once validation began)."""
        out = {key: getattr(self, name) for name, key in _TRIAL_KEYS.items()}
        if self.validated_scale is not None:
            out["validated_scale"] = self.validated_scale
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Trial:
        """Read :meth:`to_state`'s dict; ``KeyError``/``TypeError``/``ValueError`` when a key
        is missing or unknown or a value has the wrong type."""
        unknown = sorted(set(state) - set(_TRIAL_KEYS.values()) - {"validated_scale"})
        if unknown:
            raise ValueError(f"trial has unknown keys {unknown}")
        state = {**_TRIAL_V1, **state}
        if state["direction"] not in ("up", "down"):
            raise ValueError(f"trial direction is {state['direction']!r}, not 'up' or 'down'")
        if state["cause"] not in ("decay", "boundary"):
            raise ValueError(f"trial cause is {state['cause']!r}, not 'decay' or 'boundary'")
        early_stop = state["early_stop"]
        if not isinstance(early_stop, bool):
            raise ValueError(f"trial early_stop is {early_stop!r}, but must be a bool")
        validated = state.get("validated_scale")
        return cls(
            start_step=int(state["start_step"]),
            base_scale=float(state["s0"]),
            alpha_eff=float(state["alpha_eff"]),
            target_scale=float(state["target"]),
            ramp_step=int(state["i"]),
            ramp_len=int(state["n"]),
            history_max=float(state["hist_max"]),
            loss_before=float(state["l_before"]),
            early_stop=early_stop,
            validated_scale=None if validated is None else float(validated),
            direction=str(state["direction"]),
            settle_left=int(state["settle"]),
            cause=str(state["cause"]),
        )


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
        # "auto" as a loop that does not say it rewinds runs it; a rewinding loop passes
        # config.resolved(rewinds=True)
        self.config = config = config.resolved(rewinds=False)
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
        self._prev_se: float | None = None
        # the residuals' lag-1 products and squares, pooled over every fitted window (error_ar1)
        self._ar1 = [0.0, 0.0]
        self._trial: Trial | None = None
        self._val = _Fit()
        self._val_xs: list[int] = []
        self._val_ys: list[float] = []
        self._snapshot_step: int | None = None
        self._adjustments = 0
        self._events: list[dict[str, Any]] = []
        # two-sided search: the next trial's direction and each direction's base factor
        self._direction = "up"
        self._factors = {"up": float(config.alpha), "down": float(config.beta)}
        # the sides of the current scale measured worse than it (bracket_stops)
        self._sides: frozenset[str] = frozenset()
        # steps whose training a restore threw away (backtrack_mode="continue"): the model's
        # own step count is the loop's minus these (the trajectory reference fits on it)
        self._discarded = 0
        self._last_restore: int | None = None
        # the opening range test: the scale it started from, the candidate being trained, its
        # losses, and the scores of the candidates done
        self._open_base = self._scale
        self._open_i = 0
        self._open_losses: list[float] = []
        self._open_scores: list[float] = []
        self._open_order: list[float] = list(config.opening_order)
        self._open_round = 0
        self._open_extended = 0  # extension rounds done (or opening_extends: none left)
        self._open_extensions: list[float] = []  # the multipliers the extension added
        self._open_done = not config.opening_factors

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
        c = self.config
        return decay_exponent(
            step,
            basis=c.decay_basis,
            search_start=c.search_start,
            window=self._k,
            adjustments=self._adjustments,
        )

    def _alpha_eff(self, step: int) -> float:
        """alpha' = max(lambda^t * alpha, 1)."""
        return rectified_alpha(self.config.alpha, self.config.lam, self._decay_t(step))

    def _beta_eff(self, step: int) -> float:
        """1 / beta' = max(lambda^t * beta, 1): the divisor of a downscale."""
        return rectified_beta_divisor(self.config.beta, self.config.lam, self._decay_t(step))

    def _clamp(self, scale: float) -> float:
        return clamp_scale(scale, self.config.min_scale, self.config.max_scale)

    # ------------------------------------------------------------------ main entry
    def begin(self) -> Decision:
        """Call once before the run's first step (the torch binding does, when it is built).
        With an opening it returns SNAPSHOT: save the model as initialised (``restore_step``
        -1 names that snapshot), and the opening's first multiplier applies from step 0, before
        any update at the start LR. Otherwise, or once a step was observed, CONTINUE. A loop
        that never calls it gets the opening from its first observed step instead."""
        # no opening, or it is under way (phase "opening") or over, or a step was observed
        if self._open_done or self._phase != "before" or self._last_step is not None:
            return Decision(Action.CONTINUE, self._scale)
        self._start_opening(-1, [])
        self._snapshot_step = -1
        return Decision(Action.SNAPSHOT, self._scale)

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
        elif action is Action.RESTORE:  # the model is back at restore_step; the steps go on
            # trained since the snapshot, or since the last restore to it (a counter-trial)
            since = restore_step
            if self._last_restore is not None and self._last_restore > restore_step:
                since = self._last_restore
            self._discarded += step - since
            self._last_restore = step
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
        if self._phase == "before" and not self._open_done:
            if math.isfinite(loss):  # the run's first finite loss: the opening starts
                return self._start_opening(step, emitted)
        if self._phase == "opening":
            return self._on_opening(step, loss, emitted)
        if self._phase == "frozen" or (self._phase == "before" and step < c.search_start):
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

    # ------------------------------------------------------------------ opening range test
    def _start_opening(self, step: int, emitted: list) -> Action:
        """Snapshot the model after the run's first step and train the first multiplier
        from it."""
        self._phase = "opening"
        self._open_base = self._scale
        self._open_i = 0
        self._open_losses = []
        self._open_scores = []
        self._open_order = list(self.config.opening_order)
        self._open_round = 0
        self._open_extended = 0
        self._open_extensions = []
        self._scale = self._clamp(self._open_base * self._open_order[0])
        return Action.SNAPSHOT

    def _on_opening(self, step: int, loss: float, emitted: list) -> Action:
        """Record a loss of the multiplier being tried; at its end score it and go on to the
        next one (restore) or choose (restore unless the last one, 1, wins)."""
        c = self.config
        self._open_losses.append(loss)
        if math.isfinite(loss) and len(self._open_losses) < c.opening_steps:
            return Action.CONTINUE
        order = self._open_order
        score = opening_score(self._open_losses, c.opening_tail)
        self._open_scores.append(score)
        tried = self._scale
        self._open_i += 1
        self._open_losses = []
        if self._open_i == len(order) and self._open_extended < c.opening_extends:
            more = opening_extension(
                order, self._open_scores, opening_choice(order, self._open_scores)
            )
            self._open_extended = c.opening_extends if not more else self._open_extended + 1
            order.extend(more)
            self._open_extensions.extend(more)
        if self._open_i == len(order) and self._open_round < c.opening_refine:
            self._open_round += 1
            order.extend(opening_refinement(order, opening_choice(order, self._open_scores)))
        if self._open_i < len(order):
            self._scale = self._clamp(self._open_base * order[self._open_i])
            self._event(
                emitted,
                step,
                "opening_candidate",
                tried,
                factor=order[self._open_i - 1],
                score=_json_float(score),
                loss=str(loss) if not math.isfinite(loss) else loss,
                restore_step=self._snapshot_step,  # its steps are discarded (compute accounts)
            )
            return Action.RESTORE
        best = opening_choice(order, self._open_scores)
        self._scale = self._clamp(self._open_base * order[best])
        self._phase = "before"  # the search starts at its own step (or the next one)
        self._open_done = True
        self._reset_history()
        if c.two_sided and order[best] != 1:
            self._direction = "down" if order[best] < 1 else "up"
        # an extension that lost beyond the choice changes nothing but its compute
        measured, at = opening_measured(order, best, self._open_extensions)
        if c.opening_narrows:
            cap = math.sqrt(opening_bracket(measured, at))
            self._factors = {d: min(f, cap) for d, f in self._factors.items()}
        self._sides = opening_sides(measured, at)
        if len(self._sides) == 2 and (c.opening_trials == "edge" or c.bracket_stops):
            self._stop_search()  # bracketed: no trial follows
        if order[best] != 1:
            self._adjustments += 1
        restore = best != len(order) - 1
        self._event(
            emitted,
            step,
            "opening",
            self._open_base,
            factors=list(order),
            scores=[_json_float(x) for x in self._open_scores],
            factor=order[best],
            restored=restore,
            restore_step=self._snapshot_step if restore else None,
        )
        return Action.RESTORE if restore else Action.CONTINUE

    # ------------------------------------------------------------------ phases
    def _reset_history(self) -> None:
        self._hist_x.clear()
        self._hist_y.clear()
        self._n_windows = 0
        self._prev_v = None
        self._prev_se = None
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
        return self._trial.base_scale if self._trial is not None else self._scale

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
        self._pool_residuals(self._win_x, self._win_y)
        self._hist_x.extend(self._win_x)
        self._hist_y.extend(self._win_y)
        self._win.reset()
        self._win_x.clear()
        self._win_y.clear()
        self._n_windows += 1
        prev_v, self._prev_v = self._prev_v, v
        prev_se, self._prev_se = self._prev_se, se
        if self._n_windows < 2 or prev_v is None:
            if v > 0 and c.snapshot_policy == "windows":
                return Action.SNAPSHOT
            return action
        trial_fits = step + c.ramp_len + c.settle_steps + self._k < c.search_end
        direction, factor = self._next_trial(step + 1)
        decayed = velocity_decayed(v, prev_v, self._theta)
        if decayed and trial_fits and direction is not None:
            return self._start_trial(step, v, prev_v, factor, emitted, direction)
        if c.boundary_rule != "off" and loss_rose_twice(
            v, prev_v, *self._boundary_bounds(se, prev_se)
        ):
            if c.boundary_rule == "downscale":
                return self._boundary_downscale(step, v, prev_v, emitted)
            down = trial_factor(
                "down", self._factors["up"], self._factors["down"], c.lam, self._decay_t(step + 1)
            )
            if trial_fits and down > c.min_trial_factor:
                return self._start_trial(step, v, prev_v, down, emitted, "down", "boundary")
        if not decayed:  # (decayed: no trial fits before the search ends, or no factor > 1)
            self._theta = relaxed_theta(self._theta, c.theta_relax)
        if v > 0 and c.snapshot_policy == "windows":
            return Action.SNAPSHOT
        return action

    def _pool_residuals(self, xs: list, ys: list) -> None:
        lag1, squares = residual_lag1_sums(xs, ys)
        self._ar1[0] += lag1
        self._ar1[1] += squares

    def _error_factor(self) -> float:
        """``error_factor``, times the AR(1) inflation of the pooled residuals (error_ar1)."""
        c = self.config
        return c.error_factor * (ar1_inflation(*self._ar1) if c.error_ar1 else 1.0)

    def _boundary_bounds(self, se: float, prev_se: float | None) -> tuple[float, float]:
        """The error bounds the two rising windows must clear (0, 0 unless
        ``boundary_tested``)."""
        c = self.config
        if not c.boundary_tested:
            return 0.0, 0.0

        factor = self._error_factor()

        def bound(x: float) -> float:
            return slope_error_bound(x, x, fixed=c.error_bound, factor=factor, floor=c.error_floor)

        return bound(se), bound(prev_se if prev_se is not None else 0.0)

    def _boundary_downscale(self, step: int, v: float, prev_v: float, emitted: list) -> Action:
        """The loss rose in two windows: downscale, and restore the last good snapshot (policy
        ``windows``; not in ``backtrack_mode="rewind"``: a rewind replays the same data, and
        where the loss is flat the same noise would rise again, downscale after downscale)."""
        before = self._scale
        c = self.config
        restore = (
            c.snapshot_policy == "windows"
            and c.backtrack_mode == "continue"
            and self._snapshot_step is not None
        )
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

    def _next_trial(self, step: int) -> tuple[str | None, float]:
        """The direction and rectified factor of a trial starting at ``step``; direction
        ``None`` when no trial may start (every factor at or below ``min_trial_factor``)."""
        c = self.config
        if not c.two_sided:
            alpha_eff = self._alpha_eff(step)
            return ("up" if alpha_eff > c.min_trial_factor else None), alpha_eff
        t = self._decay_t(step)
        first = self._direction
        for d in (first, "down" if first == "up" else "up"):
            f = trial_factor(d, self._factors["up"], self._factors["down"], c.lam, t)
            if f > c.min_trial_factor:
                return d, f
        return None, 1.0

    def _start_trial(
        self, step, v, prev_v, factor, emitted, direction="up", cause="decay"
    ) -> Action:
        """Start a trial: ``cause`` is ``"decay"`` (the velocity decayed, the paper's trigger)
        or ``"boundary"`` (the loss rose in two windows, ``boundary_rule="trial"``)."""
        s0 = self._scale
        target = s0 * factor if direction == "up" else s0 / factor
        self._trial = Trial(
            start_step=step,
            base_scale=s0,
            alpha_eff=factor,
            target_scale=self._clamp(target),
            ramp_step=0,
            ramp_len=self.config.ramp_len,
            history_max=max(self._hist_y),
            loss_before=sum(list(self._hist_y)[-self._k :]) / self._k,
            direction=direction,
            cause=cause,
        )
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
            alpha_eff=factor,
            target_scale=self._trial.target_scale,
            direction=direction,
            **({"cause": cause} if cause != "decay" else {}),
        )
        return Action.SNAPSHOT

    def _ramp_scale(self, i: int) -> float:
        tr = self._trial
        return ramp_scale(tr.base_scale, tr.target_scale, i, tr.ramp_len, self.config.ramp)

    def _on_ramp(self, step: int, loss: float, emitted: list) -> Action:
        tr = self._trial
        if not math.isfinite(loss):
            return self._fail_trial(step, emitted, reason="nonfinite_loss", loss=str(loss))
        tr.ramp_step += 1
        if tr.direction == "up" and loss > tr.history_max:
            tr.early_stop = True
            self._event(
                emitted,
                step,
                "ramp_early_stop",
                self._scale,
                loss=loss,
                hist_max=tr.history_max,
                ramp_step=tr.ramp_step,
            )
            self._begin_validation()
        elif tr.ramp_step >= tr.ramp_len:
            self._begin_validation()
        else:
            self._scale = self._ramp_scale(tr.ramp_step + 1)
        return Action.CONTINUE

    def _begin_validation(self) -> None:
        # the scale reached by the ramp is the one validated (and kept on success)
        self._phase = "validate"
        self._val.reset()
        self._val_xs.clear()
        self._val_ys.clear()
        self._trial.validated_scale = self._scale
        self._trial.settle_left = self.config.settle_steps

    def _on_validate(self, step: int, loss: float, emitted: list) -> Action:
        """Collect k validation losses, then judge the trial and apply the verdict."""
        if not math.isfinite(loss):
            return self._fail_trial(step, emitted, reason="nonfinite_loss", loss=str(loss))
        if self._trial.settle_left > 0:  # the transient after the ramp: not fitted
            self._trial.settle_left -= 1
            return Action.CONTINUE
        self._val.add(step, loss)
        self._val_xs.append(step)
        self._val_ys.append(loss)
        if self._val.n < self._k:
            return Action.CONTINUE
        self._pool_residuals(self._val_xs, self._val_ys)
        j = self._judge()
        info = _verdict_fields(j, self._trial)
        if j.verdict is Verdict.BACKTRACK:
            return self._fail_trial(step, emitted, reason=j.backtrack_reason, **info)
        if j.verdict is Verdict.KEEP:
            return self._keep_trial(step, emitted, info)
        if self._trial.cause == "boundary":  # the loss rose at the base scale: a tie goes down
            return self._keep_trial(step, emitted, {**info, "tie": True})
        return self._drop_trial(step, emitted, info)

    def _judge(self) -> TrialVerdict:
        """The verdict on the trial from the validation window and H (decisions.judge_trial)."""
        c = self.config
        v_new, se_new = self._val.velocity()
        # a boundary trial starts where the loss rises at the base scale: its validation mean
        # lies above the last window's whatever the scale, so only the velocities decide
        guard = c.regress_guard and self._trial.cause != "boundary"
        if c.reference == "trajectory":
            n = self._val.n
            var = max(0.0, self._val.syy / n - (self._val.sy / n) ** 2) * n / max(1, n - 1)
            d = self._discarded  # H is reset at every restore: one offset for all its steps
            ref = trajectory_reference(
                [x - d for x in self._hist_x], list(self._hist_y), [x - d for x in self._val_xs]
            )
            return judge_trial_by_level(
                self._val.mean,
                math.sqrt(var / n),
                v_new,
                ref,
                self._trial.loss_before,
                error_factor=self._error_factor(),
                error_floor=c.error_floor,
                regress_guard=guard,
            )
        windows = reference_windows(
            list(self._hist_x),
            list(self._hist_y),
            self._k,
            self._k if c.reference.startswith("regression") else c.stride,
            exclude_trigger=c.reference_excludes_trigger,
        )
        return judge_trial(
            v_new,
            se_new,
            self._val.mean,
            windows,
            self._trial.loss_before,
            comparable_rtol=c.comparable_rtol,
            error_bound=c.error_bound,
            error_factor=self._error_factor(),
            error_floor=c.error_floor,
            regress_guard=guard,
            reference=c.reference,
        )

    def _keep_trial(self, step: int, emitted: list, info: dict[str, Any]) -> Action:
        """Upscale validated: keep the validated scale; H and theta start afresh."""
        tr = self._trial
        self._trial = None
        self._phase = "search"
        self._scale = tr.validated_scale
        self._adjustments += 1
        self._sides = sides_after(self._sides, tr.direction, Verdict.KEEP)
        self._event(emitted, step, "keep", tr.base_scale, direction=tr.direction, **info)
        self._reset_history()
        return Action.CONTINUE

    def _drop_trial(self, step: int, emitted: list, info: dict[str, Any]) -> Action:
        """Inconclusive: back to the pre-trial scale (model and H kept), theta more eager.
        ``inconclusive_restores``: the model goes back to the trial's snapshot too (H kept)."""
        tr, c = self._trial, self.config
        self._trial = None
        self._phase = "search"
        self._scale = tr.base_scale
        self._theta = eager_theta(self._theta)
        if c.two_sided:
            if c.inconclusive_shrinks:
                self._factors[tr.direction] = shrunk_factor(
                    self._factors[tr.direction], c.factor_shrink
                )
            self._direction = next_direction(
                tr.direction, Verdict.INCONCLUSIVE, turn_on_inconclusive=c.inconclusive_turns
            )
        self._win.reset()
        self._win_x.clear()
        self._win_y.clear()
        stops = self._measured(tr.direction, Verdict.INCONCLUSIVE)
        restore = c.inconclusive_restores
        if restore and c.backtrack_mode == "continue":
            self._move_history_to(step)
        self._event(
            emitted,
            step,
            "inconclusive",
            tr.base_scale,
            theta=self._theta,
            direction=tr.direction,
            restore_step=self._snapshot_step if restore else None,
            **info,
            **({"search_stops": True} if stops else {}),
        )
        return Action.RESTORE if restore else Action.CONTINUE

    def _measured(self, direction: str, verdict: Verdict) -> bool:
        """Record a failed or inconclusive trial's side; with ``bracket_stops``, once both sides
        of the scale measured worse, no factor is left (True: the search stops here)."""
        self._sides = sides_after(self._sides, direction, verdict)
        if self.config.bracket_stops and len(self._sides) == 2:
            self._stop_search()
            return True
        return False

    def _stop_search(self) -> None:
        """No factor left in either direction: no trial starts from here on."""
        self._factors = {"up": 1.0, "down": 1.0}

    def _move_history_to(self, step: int) -> None:
        """After a restore in continue mode with H kept: H's steps are moved on by the
        discarded ones, so that H ends where the restored model stands (right before the next
        step)."""
        shift = step - self._hist_x[-1]
        xs = [x + shift for x in self._hist_x]
        self._hist_x.clear()
        self._hist_x.extend(xs)

    def _fail_trial(self, step: int, emitted: list, reason: str, **info: Any) -> Action:
        """A failed trial. The paper: restore and downscale by 1/beta'. Two-sided: back to the
        pre-trial scale, a smaller factor in this direction, the next trial the other way.
        ``restore="regressed"``: restore only when the trial regressed (or the loss was not
        finite)."""
        c = self.config
        tr = self._trial
        s0 = tr.base_scale
        restore = (
            c.restore == "always"
            or reason == "nonfinite_loss"
            or info.get("l_new", math.inf) >= tr.loss_before
        )
        if c.two_sided:
            self._scale = s0
            self._factors[tr.direction] = shrunk_factor(
                self._factors[tr.direction], c.factor_shrink
            )
            self._direction = next_direction(tr.direction, Verdict.BACKTRACK)
        else:
            self._scale = self._downscale(step, s0)
        self._adjustments += 1
        self._trial = None
        self._phase = "search"
        stops = self._measured(tr.direction, Verdict.BACKTRACK)
        counter = self._counter_trial(step, restore and reason != "nonfinite_loss")
        if counter is None:
            self._reset_history()
        kind = "nonfinite_loss" if reason == "nonfinite_loss" else "backtrack"
        outcome = "restore" if restore else "continue"
        outcome += "" if c.two_sided else "_and_downscale"
        self._event(
            emitted,
            step,
            kind,
            s0,
            reason=reason,
            restore_step=self._snapshot_step if restore else None,
            tried_scale=tr.tried_scale,
            outcome=outcome,
            direction=tr.direction,
            **info,
            **({"search_stops": True} if stops else {}),
        )
        if counter is not None:
            self._begin_counter_trial(step, tr, *counter, emitted)
        return Action.RESTORE if restore else Action.CONTINUE

    def _counter_trial(self, step: int, restored: bool) -> tuple[str, float] | None:
        """(direction, factor) of the trial to start at once after a failed one, or ``None``
        (``counter_trial`` off, nothing restored, no factor left, or no room before the end)."""
        c = self.config
        if not (c.two_sided and c.counter_trial and restored):
            return None
        if step + c.ramp_len + c.settle_steps + self._k >= c.search_end:
            return None
        direction = self._direction
        f = trial_factor(
            direction, self._factors["up"], self._factors["down"], c.lam, self._decay_t(step + 1)
        )
        return (direction, f) if f > c.min_trial_factor else None

    def _begin_counter_trial(self, step, failed: Trial, direction, factor, emitted) -> None:
        """Start the trial the other way from the restored model: H is kept, its steps moved
        on by the discarded ones so that it ends right before the next step."""
        self._move_history_to(step)
        s0 = failed.base_scale
        target = s0 * factor if direction == "up" else s0 / factor
        self._trial = Trial(
            start_step=step,
            base_scale=s0,
            alpha_eff=factor,
            target_scale=self._clamp(target),
            ramp_step=0,
            ramp_len=self.config.ramp_len,
            history_max=failed.history_max,
            loss_before=failed.loss_before,
            direction=direction,
        )
        self._phase = "ramp"
        self._scale = self._ramp_scale(1)
        self._event(
            emitted,
            step,
            "trial_start",
            s0,
            theta=self._theta,
            alpha_eff=factor,
            target_scale=self._trial.target_scale,
            direction=direction,
            counter=True,
        )

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
            "prev_se": self._prev_se,
            "ar1": list(self._ar1),
            "trial": self._trial.to_state() if self._trial is not None else None,
            "val_x": list(self._val_xs),
            "val_y": list(self._val_ys),
            "snapshot_step": self._snapshot_step,
            "adjustments": self._adjustments,
            "events": self.events,
            "direction": self._direction,
            "factor_up": self._factors["up"],
            "factor_down": self._factors["down"],
            "sides": sorted(self._sides),
            "discarded_steps": self._discarded,
            "last_restore": self._last_restore,
            "opening": {
                "base": self._open_base,
                "i": self._open_i,
                "losses": list(self._open_losses),
                "scores": [_json_float(x) for x in self._open_scores],
                "order": list(self._open_order),
                "round": self._open_round,
                "extended": self._open_extended,
                "extensions": list(self._open_extensions),
                "done": self._open_done,
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`. Raises ``ValueError`` on a missing key, another
        version, a phase it does not know or a config that differs from this controller's."""
        if not isinstance(state, Mapping):
            raise ValueError(f"state is {type(state).__name__}, but must be a mapping")
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise ValueError(f"AdaLRS state_dict is missing keys {missing}")
        if state["version"] not in (1, 2, STATE_VERSION):
            raise ValueError(
                f"AdaLRS state_dict version is {state['version']!r}, but this code reads "
                f"versions 1 to {STATE_VERSION}"
            )
        mine = self.config.to_dict()
        # a config saved before a field existed was made with the paper's value of it
        theirs = {**_V1_FIELDS, **_LATER_DEFAULTS, **dict(state["config"])}
        mine, theirs = _plain(mine), _plain(theirs)
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
            prev_se = state.get("prev_se")  # newer than version 3's first releases
            self._prev_se = None if prev_se is None else float(prev_se)
            self._ar1 = [float(x) for x in state.get("ar1", (0.0, 0.0))]  # newer than v3
            if len(self._ar1) != 2:
                raise ValueError(f"ar1 holds {len(self._ar1)} numbers, but must hold 2")
            trial = state["trial"]
            self._trial = Trial.from_state(trial) if trial is not None else None
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
            direction = state.get("direction", "up")
            if direction not in ("up", "down"):
                raise ValueError(f"direction is {direction!r}, not 'up' or 'down'")
            self._direction = str(direction)
            self._factors = {
                "up": float(state.get("factor_up", self.config.alpha)),
                "down": float(state.get("factor_down", self.config.beta)),
            }
            sides = state.get("sides", [])  # newer than version 3's first releases
            if not isinstance(sides, (list, tuple)) or not set(sides) <= {"up", "down"}:
                raise ValueError(f"sides is {sides!r}, but must list 'up' and/or 'down'")
            self._sides = frozenset(sides)
            self._discarded = int(state.get("discarded_steps", 0))
            last = state.get("last_restore")
            self._last_restore = None if last is None else int(last)
            opening = state.get("opening") or {}
            self._open_base = float(opening.get("base", self._scale))
            self._open_i = int(opening.get("i", 0))
            self._open_losses = [float(x) for x in opening.get("losses", [])]
            self._open_scores = [float(x) for x in opening.get("scores", [])]
            self._open_order = [float(x) for x in opening.get("order", self.config.opening_order)]
            self._open_round = int(opening.get("round", 0))
            self._open_extended = int(opening.get("extended", 0))
            self._open_extensions = [float(x) for x in opening.get("extensions", [])]
            self._open_done = bool(
                opening.get("done", not self.config.opening_factors or self._phase != "before")
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"AdaLRS state_dict is corrupt: {exc}") from exc
        if len(self._win_x) != len(self._win_y) or len(self._val_xs) != len(self._val_ys):
            raise ValueError("AdaLRS state_dict is corrupt: x and y lists differ in length")
        if self.in_trial and self._trial is None:
            raise ValueError(f"AdaLRS state_dict is corrupt: phase {self._phase} without a trial")


def _json_float(x: float) -> float | str:
    """``x``, or its string for inf/nan (strict JSON has no such numbers)."""
    return x if math.isfinite(x) else str(x)


def _plain(d: Mapping[str, Any]) -> dict[str, Any]:
    """``d`` with tuples as lists (a config as JSON gives it back)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _verdict_fields(j: TrialVerdict, trial: Trial) -> dict[str, Any]:
    """The numbers a keep/backtrack/inconclusive event records (in this order)."""
    return {
        "v_new": j.v_new,
        "v_ref": j.v_ref,
        "l_new": j.l_new,
        "l_ref": j.l_ref,
        "l_before": trial.loss_before,
        "trial_start": trial.start_step,
        "early_stop": trial.early_stop,
        "regressed": j.regressed,
        "e": j.e,
        "corner_case": j.corner_case,
    }


def replay(config: AdaLRSConfig, losses: Iterable[float], start_step: int = 0) -> AdaLRS:
    """Feed a recorded loss stream (one loss per step from ``start_step``) to a fresh
    controller and return it; handy for offline analysis of a logged run."""
    ctl = AdaLRS(config)
    for i, loss in enumerate(losses):
        ctl.observe(start_step + i, loss)
    return ctl
