"""AdaLRS snapshots in the Ray object store of each rank's own node.

AdaLRS (Dong et al., NeurIPS 2025, arXiv 2506.13274, Algorithm 1) snapshots model and optimizer
state before each LR-upscale trial and restores it when the trial fails (paper Fig. 4a).
:class:`ObjectStoreSnapshotStore` keeps that snapshot in shared memory of the node the rank runs
on instead of the worker's own heap, so it survives the death of the worker process that saved it
(a restarted worker on the same node finds it again by its key).

Ownership is the point (Ray 2.60): an object lives as long as its *owner*, the process that
called ``ray.put``, and ``ray.put(_owner=...)`` is gone. A training worker that put its own
snapshot would lose it when it dies. So every node runs one long-lived holder actor
(``_SnapshotHolder``: named, detached, pinned to the node with
``NodeAffinitySchedulingStrategy(soft=False)``, created on first use with ``get_if_exists``)
that calls ``ray.put`` itself and keeps the references. A rank's snapshot therefore never leaves
its node, and FSDP/TP ranks keep only their own shard.

Restores copy from the zero-copy, read-only object-store view into the live tensors
(``copy_``); object-store memory is never handed to ``load_state_dict`` (the optimizer would keep
references to it, and a later step would write into the stored snapshot).

If the object or its holder is gone (the node died, the holder was killed, the object was lost),
:meth:`ObjectStoreSnapshotStore.load_into` raises :class:`~adalrs_ray.torch_binding.snapshot.SnapshotMissingError`
naming the step and the reason; it never restores anything else.

Example (inside a Ray worker or driver)::

    store = ObjectStoreSnapshotStore(key="my-run/rank0")
    sched = AdaLRSScheduler(opt, AdaLRS(cfg), base, model=model, store=store)
"""

from __future__ import annotations

import copy
import logging
import threading
import uuid
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from adalrs_ray.torch_binding.snapshot import (
    SnapshotMissingError,
    SnapshotStore,
    check_tensors,
    synchronize,
)

logger = logging.getLogger(__name__)

__all__ = ["HOLDER_NAMESPACE", "ObjectStoreSnapshotStore", "kill_snapshot_holders"]

#: Ray namespace of the per-node holder actors (detached actors need a named namespace).
HOLDER_NAMESPACE = "adalrs_ray"
_HOLDER_PREFIX = "adalrs_snapshot_holder_"

# What "the snapshot is gone" looks like from the caller's side.
_LOST_ERRORS = (
    ray.exceptions.RayActorError,  # holder dead (ActorDiedError, ActorUnavailableError)
    ray.exceptions.ObjectLostError,  # OwnerDiedError, ObjectReconstructionFailed*, ObjectFreed
    ray.exceptions.GetTimeoutError,
    ray.exceptions.ObjectFetchTimedOutError,
)


class _SnapshotHolder:
    """Node-local owner of snapshot objects: it calls ``ray.put`` so the objects outlive callers.

    One slot per key: ``(step, [ObjectRef], meta, nbytes)``. Methods run in a small thread pool
    (several ranks of one node save concurrently); a lock guards the slot table.
    """

    def __init__(self) -> None:
        self._slots: dict[str, tuple[int, list, Any, int]] = {}
        self._lock = threading.Lock()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def put(self, key: str, step: int, arrays: list[np.ndarray], meta: Any) -> int:
        # `arrays` are zero-copy views of the caller's argument object; ray.put copies them into
        # a new object owned by this actor, so the caller may die afterwards.
        with self._lock:
            self._slots.pop(key, None)  # free the old snapshot before allocating the new one
        ref = ray.put(arrays)
        nbytes = int(sum(a.nbytes for a in arrays))
        with self._lock:
            self._slots[key] = (step, [ref], meta, nbytes)
        return nbytes

    def get(self, key: str) -> tuple[int, list, Any, int] | None:
        # The ref travels inside a list so Ray hands the caller the reference, not the value.
        with self._lock:
            return self._slots.get(key)

    def step(self, key: str) -> int | None:
        with self._lock:
            slot = self._slots.get(key)
        return None if slot is None else slot[0]

    def drop(self, key: str) -> bool:
        with self._lock:
            return self._slots.pop(key, None) is not None

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._slots)


_RemoteHolder = ray.remote(num_cpus=0, max_concurrency=8, max_restarts=0)(_SnapshotHolder)


def _holder_for_node(node_id: str) -> Any:
    """The holder actor of ``node_id``, created (detached, pinned to the node) if missing."""
    return _RemoteHolder.options(
        name=_HOLDER_PREFIX + node_id,
        namespace=HOLDER_NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
    ).remote()


def kill_snapshot_holders() -> int:
    """Kill every node's holder actor (freeing all their snapshots); returns how many.

    Holders are detached so that snapshots survive worker restarts; they outlive the job too.
    Call this when no run that uses :class:`ObjectStoreSnapshotStore` is active any more
    (:func:`train_loops.lm_ray_train.run_lm_trainer` does it at the end of a run it started Ray for).
    """
    killed = 0
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry.get("namespace") == HOLDER_NAMESPACE and entry["name"].startswith(_HOLDER_PREFIX):
            try:
                ray.kill(ray.get_actor(entry["name"], namespace=HOLDER_NAMESPACE))
                killed += 1
            except ValueError:  # already gone
                pass
    return killed


def _as_bytes(t: torch.Tensor) -> np.ndarray:
    """A flat uint8 numpy array with ``t``'s bytes (zero-copy for contiguous CPU tensors)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    return t.contiguous().reshape(-1).view(torch.uint8).numpy()


class ObjectStoreSnapshotStore(SnapshotStore):
    """One snapshot per store in the object store of this process's node, owned by its holder.

    Args:
        key: name of this store's slot in the node's holder. Two stores with the same key on the
            same node share the slot: a worker restarted on the node finds the snapshot its
            predecessor saved. ``None`` (default) makes a unique key. The Ray Train utility uses
            ``"<run name>/rank<r>"``.
        get_timeout_s: how long ``load``/``load_into`` wait for the object before reporting it
            lost.

    ``save`` blocks until the holder owns the copy, so a snapshot survives the death of the
    worker as soon as ``save`` returns. Cost per snapshot: one copy into the caller's argument
    object plus one ``ray.put`` by the holder; per restore one ``copy_`` from shared memory
    (numbers in docs/ray_train.md).
    """

    def __init__(self, key: str | None = None, *, get_timeout_s: float = 120.0) -> None:
        if key is not None and (not isinstance(key, str) or not key):
            raise ValueError(f"`key` must be a non-empty string or None; got {key!r}")
        if not (isinstance(get_timeout_s, (int, float)) and get_timeout_s > 0):
            raise ValueError(f"The value of `get_timeout_s` is {get_timeout_s!r}, but must be > 0")
        if not ray.is_initialized():
            raise RuntimeError(
                "ObjectStoreSnapshotStore needs a connected Ray (call it inside a Ray worker, or "
                "after ray.init())"
            )
        self._key = key if key is not None else f"store-{uuid.uuid4().hex}"
        self._timeout = float(get_timeout_s)
        self._node_id = ray.get_runtime_context().get_node_id()
        self._holder = _holder_for_node(self._node_id)
        self._step: int | None = None  # step of the snapshot this process saved or loaded
        self._nbytes = 0
        self._layout: tuple | None = None  # ((shape, dtype), ...) of the held snapshot

    # ------------------------------------------------------------------ properties
    @property
    def key(self) -> str:
        return self._key

    @property
    def node_id(self) -> str:
        """The node whose object store holds this store's snapshot."""
        return self._node_id

    @property
    def nbytes(self) -> int:
        return self._nbytes

    @property
    def step(self) -> int | None:
        """Step of the snapshot this process saved or last saw, or None."""
        return self._step

    # ------------------------------------------------------------------ API
    def save(self, step: int, tensors: Sequence[torch.Tensor], meta: Any) -> None:
        if isinstance(step, bool) or not isinstance(step, int):
            raise ValueError(f"save: `step` must be an int; got {step!r}")
        tensors = check_tensors(tensors, "save")
        self._step = None  # a failed save must not leave the old snapshot looking current
        arrays = [_as_bytes(t) for t in tensors]
        layout = tuple((tuple(t.shape), str(t.dtype)) for t in tensors)
        payload = {"layout": layout, "meta": copy.deepcopy(meta)}
        try:
            nbytes = self._put(step, arrays, payload)
        except _LOST_ERRORS as err:
            # The holder died (killed, OOM): a new one takes over the node for later snapshots.
            logger.warning(
                "snapshot holder on node %s is gone (%s); starting a new one", self._node_id, err
            )
            self._holder = _holder_for_node(self._node_id)
            try:
                nbytes = self._put(step, arrays, payload)
            except _LOST_ERRORS as err2:
                raise SnapshotMissingError(
                    f"saving the snapshot of step {step}: the snapshot holder on node "
                    f"{self._node_id} is unavailable ({type(err2).__name__}: {err2})"
                ) from err2
        self._step, self._nbytes, self._layout = step, nbytes, layout

    def _put(self, step: int, arrays: list[np.ndarray], payload: dict) -> int:
        # The arguments are serialised into the object store when .remote() returns, so the live
        # tensors may change from then on; get() waits until the holder owns its own copy.
        return ray.get(self._holder.put.remote(self._key, step, arrays, payload))

    def _fetch(self, what: str) -> tuple[int, list[np.ndarray], dict]:
        """``(step, read-only arrays, payload)`` of the held snapshot, or SnapshotMissingError."""
        expected = f" (this process saved step {self._step})" if self._step is not None else ""
        try:
            slot = ray.get(self._holder.get.remote(self._key), timeout=self._timeout)
        except _LOST_ERRORS as err:
            raise SnapshotMissingError(
                f"{what}: the snapshot{expected} is lost: its holder on node {self._node_id} is "
                f"gone ({type(err).__name__}: {err})"
            ) from err
        if slot is None:
            raise SnapshotMissingError(
                f"{what}: no snapshot under key {self._key!r} on node {self._node_id}{expected}; "
                "it was never saved there, was cleared, or the holder was restarted"
            )
        step, refs, payload, _ = slot
        if self._step is not None and step != self._step:
            raise SnapshotMissingError(
                f"{what}: the holder has the snapshot of step {step} under key {self._key!r}, "
                f"but this process saved step {self._step}; refusing a wrong restore"
            )
        try:
            arrays = ray.get(refs[0], timeout=self._timeout)
        except _LOST_ERRORS as err:
            raise SnapshotMissingError(
                f"{what}: the snapshot of step {step} is lost from the object store of node "
                f"{self._node_id} ({type(err).__name__}: {err})"
            ) from err
        return step, arrays, payload

    @staticmethod
    def _views(arrays: list[np.ndarray], layout: tuple) -> list[torch.Tensor]:
        """Read-only tensors over the object-store arrays (never written, never handed out)."""
        views = []
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not writable.*")
            for arr, (shape, dtype) in zip(arrays, layout):
                raw = torch.from_numpy(arr)
                views.append(raw.view(_DTYPES[dtype]).reshape(shape))
        return views

    def load_into(self, tensors: Sequence[torch.Tensor]) -> tuple[int, Any]:
        tensors = check_tensors(tensors, "load_into")
        step, arrays, payload = self._fetch("load_into")
        layout = payload["layout"]
        if len(tensors) != len(layout):
            raise ValueError(
                f"load_into: got {len(tensors)} tensors but the snapshot of step {step} holds "
                f"{len(layout)}"
            )
        for i, (t, (shape, dtype)) in enumerate(zip(tensors, layout)):
            if tuple(t.shape) != tuple(shape):
                raise ValueError(
                    f"load_into: tensors[{i}] has shape {tuple(t.shape)} but the snapshot of "
                    f"step {step} holds shape {tuple(shape)}"
                )
            if str(t.dtype) != dtype:
                raise ValueError(
                    f"load_into: tensors[{i}] has dtype {t.dtype} but the snapshot of step "
                    f"{step} holds dtype {dtype}"
                )
        devices = set()
        with torch.no_grad():
            for t, src in zip(tensors, self._views(arrays, layout)):
                t.copy_(src, non_blocking=False)
                devices.add(t.device)
        synchronize(devices)
        del arrays  # drop the zero-copy views so the object can be freed later
        self._step = step
        return step, copy.deepcopy(payload["meta"])

    def load(self, device: torch.device | str | None = None) -> tuple[int, list[torch.Tensor], Any]:
        step, arrays, payload = self._fetch("load")
        target = torch.device("cpu") if device is None else torch.device(device)
        owned = [v.to(target, copy=True) for v in self._views(arrays, payload["layout"])]
        synchronize({target})
        del arrays
        self._step = step
        return step, owned, copy.deepcopy(payload["meta"])

    def locations(self) -> list[str]:
        """Node ids whose object stores hold this store's snapshot ([] if none is held)."""
        try:
            slot = ray.get(self._holder.get.remote(self._key), timeout=self._timeout)
        except _LOST_ERRORS:
            return []
        if slot is None:
            return []
        ref = slot[1][0]
        return list(ray.experimental.get_object_locations([ref])[ref]["node_ids"])

    def has_snapshot(self) -> bool:
        if self._step is not None:
            return True  # saved by this process: a lost one is reported by load_into, not hidden
        try:
            step = ray.get(self._holder.step.remote(self._key), timeout=self._timeout)
        except _LOST_ERRORS:
            return False
        return step is not None

    def clear(self) -> None:
        self._step, self._nbytes, self._layout = None, 0, None
        try:
            ray.get(self._holder.drop.remote(self._key), timeout=self._timeout)
        except _LOST_ERRORS as err:  # nothing left to free
            logger.debug("clear: holder unavailable (%s)", err)

    def __repr__(self) -> str:
        return (
            f"ObjectStoreSnapshotStore(key={self._key!r}, node={self._node_id[:8]}, "
            f"step={self._step}, nbytes={self._nbytes})"
        )


_DTYPES: dict[str, torch.dtype] = {
    str(d): d
    for d in (
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.complex64,
        torch.complex128,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    )
}
for _name in ("float8_e4m3fn", "float8_e5m2", "uint16", "uint32", "uint64"):
    _dt = getattr(torch, _name, None)
    if _dt is not None:
        _DTYPES[str(_dt)] = _dt
