"""The PyTorch binding: AdaLRS as a multiplier on any base LR schedule, with snapshot stores.

Holds :class:`AdaLRSScheduler` (:mod:`~adalrs_ray.torch_binding.scheduler`), the snapshot store
interface and its in-memory store (:mod:`~adalrs_ray.torch_binding.snapshot`), the data stream a
rewind takes back (:class:`RewindableLoader`, :mod:`~adalrs_ray.torch_binding.rewind`) and the RNG
state format shared by snapshots and checkpoints (:mod:`~adalrs_ray.torch_binding.rng`).

May import: :mod:`adalrs_ray.core`, torch and transformers' schedules. Never ray.
"""

from __future__ import annotations

from adalrs_ray.torch_binding.rewind import RewindableLoader
from adalrs_ray.torch_binding.scheduler import (
    BASE_SCHEDULES,
    AdaLRSScheduler,
    base_schedule_lambda,
    get_base_schedule,
)
from adalrs_ray.torch_binding.snapshot import (
    InMemorySnapshotStore,
    SnapshotMissingError,
    SnapshotStore,
)

__all__ = [
    "BASE_SCHEDULES",
    "AdaLRSScheduler",
    "InMemorySnapshotStore",
    "RewindableLoader",
    "SnapshotMissingError",
    "SnapshotStore",
    "base_schedule_lambda",
    "get_base_schedule",
]
