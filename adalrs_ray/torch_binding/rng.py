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


def _accelerator_type(device: torch.device | str | None) -> str | None:
    """The device type whose RNG states are saved: ``device``'s (None for a CPU device), or the
    process's accelerator when ``device`` is None."""
    if device is None:
        return accelerator_type()
    device_type = torch.device(device).type
    return None if device_type == "cpu" else device_type


def get_rng_state(device: torch.device | str | None = None) -> dict[str, Any]:
    """RNG states, in types ``torch.load(weights_only=True)`` accepts.

    Args:
        device: the device a loop trains on: its accelerator's RNG states are saved (none for a
            CPU device). None: the process's accelerator (:func:`accelerator_type`), if any.

    The Mersenne-Twister key arrays are kept as int64 tensors: copying meta stays cheap. The
    accelerator's entry is ``(device type, [state of each device])`` (one state on backends
    without ``get_rng_state_all``, such as mps).
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
    device_type = _accelerator_type(device)
    module = getattr(torch, device_type, None) if device_type else None
    if module is not None and getattr(module, "is_initialized", lambda: True)():
        if hasattr(module, "get_rng_state_all"):
            state["accelerator"] = (device_type, module.get_rng_state_all())
        elif hasattr(module, "get_rng_state"):
            state["accelerator"] = (device_type, [module.get_rng_state()])
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | str | None = None) -> None:
    """Restore what :func:`get_rng_state` saved. ``device`` as there: the accelerator's states
    are restored when they were saved for the same device type (else a warning)."""
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
        if module is None or _accelerator_type(device) != device_type:
            logger.warning("snapshot holds %s RNG state but no %s device here", *[device_type] * 2)
        elif hasattr(module, "set_rng_state_all"):
            module.set_rng_state_all(states)
        else:
            module.set_rng_state(states[0])
