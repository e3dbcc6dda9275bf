"""adalrs-ray: AdaLRS (Dong et al., NeurIPS 2025, arXiv 2506.13274) on Ray.

The controller (:class:`AdaLRS`, :class:`AdaLRSConfig`, :class:`Action`) is pure Python and
imports neither torch nor ray. Everything else is loaded lazily on first attribute access so that
``import adalrs_ray`` stays cheap.

Layers, bottom to top (docs/design.md; each may import only the ones below it, checked by
``lint-imports``): :mod:`adalrs_ray.core` (pure) < :mod:`adalrs_ray.torch_binding` <
:mod:`adalrs_ray.ray_train` | :mod:`adalrs_ray.report` < :mod:`search_algos` (the arms) <
:mod:`adalrs_ray.comparison` (Ray Tune) < :mod:`train_loops` (tasks and trainables) <
:mod:`adalrs_ray.experiments` < :mod:`adalrs_ray.cli`. This top-level module may import the
core eagerly and names every other public class lazily.
"""

from __future__ import annotations

from adalrs_ray.core.controller import Action, AdaLRS, AdaLRSConfig, Decision
from adalrs_ray.core.lazy import lazy_exports

__version__ = "0.1.0"

# name -> module that defines it; imported on first access (PEP 562).
_LAZY = {
    "AdaLRSScheduler": "adalrs_ray.torch_binding",
    "SnapshotStore": "adalrs_ray.torch_binding.snapshot",
    "InMemorySnapshotStore": "adalrs_ray.torch_binding.snapshot",
    "ObjectStoreSnapshotStore": "adalrs_ray.ray_train.object_store",
    "AdaLRSComparison": "adalrs_ray.comparison",
    "AdaLRSTrial": "adalrs_ray.comparison",
    "LossSimulator": "adalrs_ray.core.simulator",
}

__all__ = ["Action", "AdaLRS", "AdaLRSConfig", "Decision", "__version__", *sorted(_LAZY)]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
