"""adalrs-ray: AdaLRS (Dong et al., NeurIPS 2025, arXiv 2506.13274) on Ray.

The controller (:class:`AdaLRS`, :class:`AdaLRSConfig`, :class:`Action`) is pure Python and
imports neither torch nor ray. Everything else is loaded lazily on first attribute access so that
``import adalrs_ray`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from adalrs_ray.controller import Action, AdaLRS, AdaLRSConfig, Decision

__version__ = "0.1.0"

# name -> module that defines it; imported on first access (PEP 562).
_LAZY = {
    "AdaLRSScheduler": "adalrs_ray.torch_binding",
    "SnapshotStore": "adalrs_ray.snapshot",
    "InMemorySnapshotStore": "adalrs_ray.snapshot",
    "ObjectStoreSnapshotStore": "adalrs_ray.ray_snapshot",
    "AdaLRSComparison": "adalrs_ray.tune_scheduler",
    "LossSimulator": "adalrs_ray.simulator",
}

__all__ = ["Action", "AdaLRS", "AdaLRSConfig", "Decision", "__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'adalrs_ray' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
