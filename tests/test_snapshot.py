"""InMemorySnapshotStore: exact round trips, no aliasing, buffer reuse, validation."""

from __future__ import annotations

import pytest
import torch

from adalrs_ray.torch_binding.snapshot import (
    InMemorySnapshotStore,
    SnapshotMissingError,
    SnapshotStore,
)


def _tensors() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(3, 5, generator=g),
        torch.randn(5, 4, generator=g).t(),  # non-contiguous source
        torch.tensor(7.0),  # 0-d (AdamW's `step`)
        torch.zeros(0),
        torch.randn(6, generator=g).to(torch.bfloat16),
        torch.randn(2, 2, generator=g).to(torch.float16),
        torch.randn(3, generator=g).double(),
        torch.arange(5, dtype=torch.int64),
        torch.tensor([True, False, True]),
        torch.arange(3, dtype=torch.uint8),
    ]


def _scramble(tensors: list[torch.Tensor]) -> None:
    for t in tensors:
        if t.dtype is torch.bool:
            t.logical_not_()
        else:
            t.add_(3)


def test_is_a_snapshot_store():
    assert isinstance(InMemorySnapshotStore(), SnapshotStore)


def test_round_trip_restores_every_dtype_and_shape_exactly():
    live = _tensors()
    saved = [t.clone() for t in live]
    store = InMemorySnapshotStore()
    store.save(4, live, {"k": 1})
    _scramble(live)
    step, meta = store.load_into(live)
    assert (step, meta) == (4, {"k": 1})
    for got, want in zip(live, saved):
        assert torch.equal(got, want)


def test_modifying_live_tensors_after_save_does_not_change_snapshot():
    live = _tensors()
    saved = [t.clone() for t in live]
    store = InMemorySnapshotStore()
    store.save(0, live, None)
    _scramble(live)
    _, tensors, _ = store.load()
    for got, want in zip(tensors, saved):
        assert torch.equal(got, want)


def test_modifying_live_tensors_after_load_into_does_not_change_snapshot():
    live = _tensors()
    saved = [t.clone() for t in live]
    store = InMemorySnapshotStore()
    store.save(0, live, None)
    store.load_into(live)
    _scramble(live)  # training goes on after a restore
    store.load_into(live)  # a second restore must still give the snapshot
    for got, want in zip(live, saved):
        assert torch.equal(got, want)


def test_load_returns_owned_copies():
    live = _tensors()
    saved = [t.clone() for t in live]
    store = InMemorySnapshotStore()
    store.save(2, live, None)
    _, first, _ = store.load()
    _scramble(first)
    _, second, _ = store.load()
    for got, want in zip(second, saved):
        assert torch.equal(got, want)


def test_load_to_device_gives_tensors_on_that_device():
    store = InMemorySnapshotStore()
    store.save(1, [torch.ones(2)], None)
    _, tensors, _ = store.load(device="cpu")
    assert tensors[0].device == torch.device("cpu")
    assert torch.equal(tensors[0], torch.ones(2))


def test_meta_is_copied_on_save_and_on_load():
    meta = {"lst": [1, 2], "t": torch.zeros(2)}
    store = InMemorySnapshotStore()
    store.save(0, [torch.ones(1)], meta)
    meta["lst"].append(3)
    meta["t"].add_(1)
    _, got = store.load_into([torch.ones(1)])
    assert got["lst"] == [1, 2] and torch.equal(got["t"], torch.zeros(2))
    got["lst"].append(9)
    _, again = store.load_into([torch.ones(1)])
    assert again["lst"] == [1, 2]


def test_same_structure_reuses_the_host_buffer():
    store = InMemorySnapshotStore()
    store.save(0, _tensors(), None)
    ptr, nbytes = store._flat.data_ptr(), store.nbytes
    store.save(1, _tensors(), None)
    assert store._flat.data_ptr() == ptr
    assert store.nbytes == nbytes


@pytest.mark.parametrize(
    "second",
    [
        [torch.ones(3, 5)],  # fewer tensors
        [torch.ones(3, 6)],  # other shape
        [torch.ones(3, 5, dtype=torch.float64)],  # other dtype
    ],
)
def test_structure_change_reallocates_and_round_trips(second):
    store = InMemorySnapshotStore()
    store.save(0, [torch.zeros(3, 5), torch.zeros(4)], None)
    store.save(1, second, "m")
    live = [torch.empty_like(t) for t in second]
    assert store.load_into(live) == (1, "m")
    assert all(torch.equal(a, b) for a, b in zip(live, second))
    assert store.nbytes >= sum(t.nbytes for t in second)


def test_nbytes_counts_the_held_buffer():
    store = InMemorySnapshotStore()
    assert store.nbytes == 0
    tensors = [torch.zeros(1000), torch.zeros(10, dtype=torch.float64)]
    store.save(0, tensors, None)
    assert sum(t.nbytes for t in tensors) <= store.nbytes <= sum(t.nbytes for t in tensors) + 128


@pytest.mark.parametrize(
    ("live", "message"),
    [
        ([torch.zeros(3, 5)], "got 1 tensors but the snapshot of step 3 holds 2"),
        ([torch.zeros(3, 5), torch.zeros(5)], r"tensors\[1\] has shape \(5,\)"),
        (
            [torch.zeros(3, 5), torch.zeros(4, dtype=torch.float16)],
            r"tensors\[1\] has dtype torch.float16",
        ),
    ],
)
def test_load_into_rejects_a_structure_mismatch(live, message):
    store = InMemorySnapshotStore()
    store.save(3, [torch.ones(3, 5), torch.ones(4)], None)
    with pytest.raises(ValueError, match=message):
        store.load_into(live)
    assert torch.equal(live[0], torch.zeros(3, 5))  # nothing was copied


@pytest.mark.parametrize("call", ["load_into", "load"])
def test_empty_store_raises_snapshot_missing(call):
    store = InMemorySnapshotStore()
    with pytest.raises(SnapshotMissingError, match="holds no snapshot"):
        store.load_into([torch.ones(1)]) if call == "load_into" else store.load()


def test_clear_drops_the_snapshot_and_its_memory():
    store = InMemorySnapshotStore()
    store.save(0, [torch.ones(10)], None)
    assert store.has_snapshot()
    store.clear()
    assert not store.has_snapshot()
    assert store.nbytes == 0
    with pytest.raises(LookupError):
        store.load()


@pytest.mark.parametrize(
    ("step", "tensors", "message"),
    [
        (1.5, [torch.ones(1)], "`step` must be an int; got 1.5"),
        (True, [torch.ones(1)], "`step` must be an int; got True"),
        (0, torch.ones(3), "must be a sequence of torch.Tensor; got Tensor"),
        (0, [torch.ones(1), [1.0]], r"tensors\[1\] is a list"),
        (0, [torch.ones(2).to_sparse()], "layout torch.sparse_coo"),
    ],
)
def test_save_rejects_bad_input(step, tensors, message):
    with pytest.raises(ValueError, match=message):
        InMemorySnapshotStore().save(step, tensors, None)


def test_parameters_that_require_grad_are_saved_and_restored():
    p = torch.nn.Parameter(torch.ones(3))
    store = InMemorySnapshotStore()
    store.save(0, [p], None)
    with torch.no_grad():
        p.mul_(4)
    store.load_into([p])
    assert torch.equal(p.detach(), torch.ones(3))
    assert p.requires_grad and p.is_leaf


def test_cpu_tensors_use_pageable_memory():
    store = InMemorySnapshotStore()
    store.save(0, [torch.ones(4)], None)
    assert not store._flat.is_pinned()
