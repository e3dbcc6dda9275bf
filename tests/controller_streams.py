"""Hand-made loss streams for the controller tests (tests/test_controller.py and
tests/test_controller_branches.py): a search over the whole run with window K, short streams."""

from __future__ import annotations

from adalrs_ray.core.controller import AdaLRS, AdaLRSConfig

K = 10


def cfg(**kw) -> AdaLRSConfig:
    """The paper's rule (fields in ``kw`` may depart from it) over the whole run, window 10
    (reference stride 2), so streams stay short."""
    base = dict(rule="paper", total_steps=100, window=K, start_ratio=0.0, end_ratio=1.0)
    base.update(kw)
    return AdaLRSConfig.from_dict(base)


def line(start: float, slope: float, n: int = K) -> list[float]:
    """n losses falling by ``slope`` per step from ``start`` (rising when slope < 0)."""
    return [start - slope * i for i in range(n)]


def feed(ctl: AdaLRS, losses, start: int):
    """Observe ``losses`` at steps start, start+1, ...; the decisions in order."""
    return [ctl.observe(start + i, x) for i, x in enumerate(losses)]


def kinds(ctl: AdaLRS) -> list[str]:
    return [e["kind"] for e in ctl.events]
