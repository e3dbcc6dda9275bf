"""The Ray Train V2 worker-loop utility: the same AdaLRS decision on every rank.

Holds :class:`AdaLRSTrainContext` and the loss all-reduce (:mod:`~adalrs_ray.ray_train.context`)
and the per-rank snapshot store in the node's object store
(:mod:`~adalrs_ray.ray_train.object_store`).

May import: :mod:`adalrs_ray.core`, :mod:`adalrs_ray.torch_binding`, torch and ``ray.train``.
Never the Tune comparison, the report or a task.
"""

from __future__ import annotations

from adalrs_ray.ray_train.context import (
    LOST_SNAPSHOT_POLICIES,
    RANK_FILE,
    SHARED_FILE,
    SNAPSHOT_STORES,
    AdaLRSTrainContext,
    LostSnapshotPolicy,
    PendingMean,
    SnapshotLostError,
    default_store_key,
    make_snapshot_store,
    reduce_mean,
    reduce_mean_async,
)
from adalrs_ray.ray_train.object_store import ObjectStoreSnapshotStore, kill_snapshot_holders

__all__ = [
    "LOST_SNAPSHOT_POLICIES",
    "RANK_FILE",
    "SHARED_FILE",
    "SNAPSHOT_STORES",
    "AdaLRSTrainContext",
    "LostSnapshotPolicy",
    "ObjectStoreSnapshotStore",
    "PendingMean",
    "SnapshotLostError",
    "default_store_key",
    "kill_snapshot_holders",
    "make_snapshot_store",
    "reduce_mean",
    "reduce_mean_async",
]
