"""Process RNG states (torch, Python, NumPy, the accelerator's) in one format that
``torch.load(weights_only=True)`` accepts: snapshots, Ray Train checkpoints and LM checkpoints
all save and restore them through :func:`get_rng_state` / :func:`set_rng_state`."""

from __future__ import annotations

import logging
import random
from typing import Any

import torch

from adalrs_ray.torch_binding.snapshot import accelerator_type

logger = logging.getLogger(__name__)

__all__ = ["get_rng_state", "set_rng_state"]


def get_rng_state() -> dict[str, Any]:
    """RNG states, in types ``torch.load(weights_only=True)`` accepts.

    The Mersenne-Twister key arrays are kept as int64 tensors: copying meta stays cheap.
    """
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": (version, torch.tensor(internal, dtype=torch.int64), gauss_next),
    }
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency of torch's usual installs
        np = None
    if np is not None:
        name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        keys = torch.from_numpy(keys.astype(np.int64))
        state["numpy"] = (name, keys, int(pos), int(has_gauss), float(cached))
    device_type = accelerator_type()
    module = getattr(torch, device_type, None) if device_type else None
    if module is not None and hasattr(module, "get_rng_state_all"):
        if getattr(module, "is_initialized", lambda: True)():
            state["accelerator"] = (device_type, module.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal.tolist()), gauss_next))
    if "numpy" in state:
        import numpy as np

        name, keys, pos, has_gauss, cached = state["numpy"]
        keys = keys.numpy().astype(np.uint32)
        np.random.set_state((name, keys, pos, has_gauss, cached))
    if "accelerator" in state:
        device_type, states = state["accelerator"]
        module = getattr(torch, device_type, None)
        if module is None or accelerator_type() != device_type:
            logger.warning("snapshot holds %s RNG state but no %s device here", *[device_type] * 2)
        else:
            module.set_rng_state_all(states)
