"""Snapshot stores: where AdaLRS keeps the state it may backtrack to.

AdaLRS (Dong et al., NeurIPS 2025, arXiv 2506.13274, Algorithm 1) snapshots model and optimizer
state before each LR-upscale trial and restores it when the trial fails ("backtracking", paper
Fig. 4a). The torch binding (:mod:`adalrs_ray.torch_binding`) flattens that state into a list of
tensors plus a picklable ``meta`` description, so a store only moves tensors.

:class:`InMemorySnapshotStore` keeps one snapshot in host memory. Its buffers are allocated once
(one flat, pinned-if-useful host buffer) and reused by every later ``save`` while the shapes and
dtypes stay the same, so a snapshot costs one device-to-host copy and a restore one host-to-device
copy, with no allocation.
"""

from __future__ import annotations

import abc
import copy
import logging
from collections.abc import Sequence
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["InMemorySnapshotStore", "SnapshotMissingError", "SnapshotStore"]

# Byte alignment of each tensor inside the flat host buffer (covers every dtype's itemsize and
# keeps the views cache-line aligned).
_ALIGN = 64


class SnapshotMissingError(LookupError):
    """The snapshot asked for is not in the store (never saved, cleared, or lost)."""


class SnapshotStore(abc.ABC):
    """Holds the most recent snapshot of a flat list of tensors plus a picklable ``meta``.

    Contract (docs/design.md): ``save`` copies the tensors (any device) into the store;
    ``load_into`` copies the snapshot back into live tensors in place; ``load`` returns fresh,
    owned copies. A store never aliases the caller's tensors, in either direction.
    """

    @abc.abstractmethod
    def save(self, step: int, tensors: Sequence[torch.Tensor], meta: Any) -> None:
        """Copy ``tensors`` (any device) and ``meta`` into the store, replacing any snapshot."""

    @abc.abstractmethod
    def load_into(self, tensors: Sequence[torch.Tensor]) -> tuple[int, Any]:
        """Copy the snapshot into these live tensors in place; return ``(step, meta)``.

        Raises :class:`SnapshotMissingError` if there is no snapshot and ``ValueError`` if the
        count, a shape or a dtype differs from the snapshot's.
        """

    @abc.abstractmethod
    def load(self, device: torch.device | str | None = None) -> tuple[int, list[torch.Tensor], Any]:
        """Return ``(step, tensors, meta)`` with fresh, owned tensors (on ``device``, else CPU)."""

    @abc.abstractmethod
    def has_snapshot(self) -> bool:
        """Whether a snapshot is held."""

    @abc.abstractmethod
    def clear(self) -> None:
        """Drop the snapshot (and release its memory)."""

    @property
    @abc.abstractmethod
    def nbytes(self) -> int:
        """Bytes of memory the store holds for its snapshot."""


def accelerator_type() -> str | None:
    """Device type of the current accelerator (``"cuda"``, ``"npu"``, ...), or None."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        device = accelerator.current_accelerator()
        return None if device is None else device.type
    return "cuda" if torch.cuda.is_available() else None


def synchronize(devices: set[torch.device]) -> None:
    """Wait for queued work on each non-CPU device in ``devices`` (non_blocking copies)."""
    for device in devices:
        if device.type in ("cpu", "meta"):
            continue
        accelerator = getattr(torch, "accelerator", None)
        if accelerator is not None and device.type == accelerator_type():
            accelerator.synchronize(device)
        else:
            module = getattr(torch, device.type, None)
            sync = getattr(module, "synchronize", None)
            if sync is None:
                raise RuntimeError(f"cannot synchronize device {device}: no torch.{device.type}")
            try:
                sync(device)
            except TypeError:  # backends whose synchronize() takes no device (mps)
                sync()


def check_tensors(tensors: Any, what: str) -> list[torch.Tensor]:
    if isinstance(tensors, torch.Tensor) or not isinstance(tensors, Sequence):
        raise ValueError(
            f"{what}: `tensors` must be a sequence of torch.Tensor; got {type(tensors).__name__}"
        )
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{what}: tensors[{i}] is a {type(t).__name__}, not a torch.Tensor")
        if t.layout is not torch.strided:
            raise ValueError(
                f"{what}: tensors[{i}] has layout {t.layout}; only dense (strided) tensors "
                "can be snapshotted"
            )
    return list(tensors)


class InMemorySnapshotStore(SnapshotStore):
    """One snapshot in host memory, in buffers allocated once and reused.

    ``save`` copies every tensor into a view of one flat host buffer. The buffer is pinned when
    the tensors live on the current accelerator (CUDA, NPU, ...) and pinning is available, so the
    device-to-host copies are issued ``non_blocking`` and synchronised once at the end. A later
    ``save`` with the same shapes and dtypes reuses the buffer; a different structure (count,
    shape or dtype) reallocates it. ``load_into`` copies back into the live tensors, on whatever
    device they are. Nothing returned or kept aliases the caller's tensors.

    Example:
        >>> import torch
        >>> store = InMemorySnapshotStore()
        >>> w = torch.ones(3)
        >>> store.save(7, [w], {"note": "after step 7"})
        >>> _ = w.mul_(5)
        >>> store.load_into([w])
        (7, {'note': 'after step 7'})
        >>> w
        tensor([1., 1., 1.])
    """

    def __init__(self) -> None:
        self._flat: torch.Tensor | None = None
        self._views: list[torch.Tensor] = []
        self._signature: tuple | None = None
        self._step: int | None = None
        self._meta: Any = None

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _signature_of(tensors: list[torch.Tensor]) -> tuple:
        device_types = {t.device.type for t in tensors} - {"cpu"}
        pin = bool(device_types) and accelerator_type() in device_types
        return (pin, tuple((tuple(t.shape), t.dtype) for t in tensors))

    def _allocate(self, signature: tuple) -> None:
        pin, layout = signature
        offsets, total = [], 0
        for shape, dtype in layout:
            offsets.append(total)
            nbytes = _numel(shape) * _itemsize(dtype)
            total += -(-nbytes // _ALIGN) * _ALIGN
        self._flat = self._views = None  # release the old buffer before allocating a new one
        flat = None
        if pin:
            try:
                flat = torch.empty(total, dtype=torch.uint8, pin_memory=True)
            except RuntimeError as err:  # no pinning support on this build/driver
                logger.warning("pinned host memory unavailable (%s); using pageable memory", err)
        if flat is None:
            flat = torch.empty(total, dtype=torch.uint8)
        views = []
        for (shape, dtype), off in zip(layout, offsets):
            nbytes = _numel(shape) * _itemsize(dtype)
            views.append(flat[off : off + nbytes].view(dtype).view(shape))
        self._flat, self._views, self._signature = flat, views, signature
        logger.debug("allocated %d snapshot bytes (pinned=%s)", total, flat.is_pinned())

    # ------------------------------------------------------------------ API
    def save(self, step: int, tensors: Sequence[torch.Tensor], meta: Any) -> None:
        if isinstance(step, bool) or not isinstance(step, int):
            raise ValueError(f"save: `step` must be an int; got {step!r}")
        tensors = check_tensors(tensors, "save")
        signature = self._signature_of(tensors)
        self._step = None  # a failed copy must not leave a half-written snapshot looking valid
        if signature != self._signature:
            self._allocate(signature)
        non_blocking = self._flat.is_pinned()
        devices = set()
        with torch.no_grad():
            for view, t in zip(self._views, tensors):
                view.copy_(t, non_blocking=non_blocking and t.device.type != "cpu")
                devices.add(t.device)
        synchronize(devices)
        self._meta = copy.deepcopy(meta)
        self._step = step

    def _require(self, what: str) -> None:
        if self._step is None:
            raise SnapshotMissingError(
                f"{what}: the InMemorySnapshotStore holds no snapshot (none saved since it was "
                "created or cleared)"
            )

    def load_into(self, tensors: Sequence[torch.Tensor]) -> tuple[int, Any]:
        self._require("load_into")
        tensors = check_tensors(tensors, "load_into")
        if len(tensors) != len(self._views):
            raise ValueError(
                f"load_into: got {len(tensors)} tensors but the snapshot of step {self._step} "
                f"holds {len(self._views)}"
            )
        for i, (view, t) in enumerate(zip(self._views, tensors)):
            if t.shape != view.shape:
                raise ValueError(
                    f"load_into: tensors[{i}] has shape {tuple(t.shape)} but the snapshot of "
                    f"step {self._step} holds shape {tuple(view.shape)}"
                )
            if t.dtype != view.dtype:
                raise ValueError(
                    f"load_into: tensors[{i}] has dtype {t.dtype} but the snapshot of step "
                    f"{self._step} holds dtype {view.dtype}"
                )
        non_blocking = self._flat.is_pinned()
        devices = set()
        with torch.no_grad():
            for view, t in zip(self._views, tensors):
                t.copy_(view, non_blocking=non_blocking and t.device.type != "cpu")
                devices.add(t.device)
        # The host buffer must not change while an asynchronous copy still reads it.
        synchronize(devices)
        return self._step, copy.deepcopy(self._meta)

    def load(self, device: torch.device | str | None = None) -> tuple[int, list[torch.Tensor], Any]:
        self._require("load")
        target = torch.device("cpu") if device is None else torch.device(device)
        tensors = [view.to(target, copy=True) for view in self._views]
        synchronize({target})
        return self._step, tensors, copy.deepcopy(self._meta)

    def has_snapshot(self) -> bool:
        return self._step is not None

    def clear(self) -> None:
        self._flat, self._views, self._signature = None, [], None
        self._step, self._meta = None, None

    @property
    def nbytes(self) -> int:
        return 0 if self._flat is None else self._flat.numel()

    @property
    def step(self) -> int | None:
        """Step of the held snapshot, or None."""
        return self._step

    def __repr__(self) -> str:
        return f"InMemorySnapshotStore(step={self._step}, nbytes={self.nbytes})"


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _itemsize(dtype: torch.dtype) -> int:
    return dtype.itemsize
