"""The pure core of AdaLRS: the controller state machine, its decision math, the loss simulator.

Holds :mod:`~adalrs_ray.core.controller` (:class:`AdaLRSConfig`, :class:`AdaLRS`,
:class:`Action`, :class:`Decision`), :mod:`~adalrs_ray.core.simulator` (a seeded loss process with
a known optimum LR), :mod:`~adalrs_ray.core.lm_simulator` (one with the effects the tiny LM shows:
a lagged LR noise term, stable-but-slow large LRs, weight growth) and the shared helpers every layer uses (argument checks, least-squares
slope, schedules as pure functions of the step).

May import: the standard library (and numpy in the simulator). Never torch, ray or pandas: the
whole algorithm can be read, tested and replayed without them.
"""

from __future__ import annotations

from adalrs_ray.core.controller import (
    EVENT_KINDS,
    Action,
    AdaLRS,
    AdaLRSConfig,
    Decision,
    Trial,
    replay,
)
from adalrs_ray.core.decisions import TrialVerdict, Verdict, judge_trial

__all__ = [
    "EVENT_KINDS",
    "Action",
    "AdaLRS",
    "AdaLRSConfig",
    "Decision",
    "Trial",
    "TrialVerdict",
    "Verdict",
    "judge_trial",
    "replay",
]
