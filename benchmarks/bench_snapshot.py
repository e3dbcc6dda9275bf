"""Cost of an AdaLRS snapshot + restore against one plain copy of the same bytes.

A snapshot (``store.save``) followed by a restore (``store.load_into``) moves the state twice;
the baseline is a single ``copy_`` of the same tensors into preallocated buffers, measured in the
same run. The printed ratio (snapshot + restore) / plain copy has a floor of about 2.0 (two
copies against one); the goal is <= 2x, i.e. no overhead beyond the copies themselves.

    .venv/bin/python benchmarks/bench_snapshot.py --mb 100 --repeats 5

To add a store (e.g. the Ray object-store one), put a factory in ``STORES`` (or call
``measure_store(factory, tensors)`` from your own script) and pass ``--stores name``. Each
repeat times the baseline next to the store's operations, so load from other processes on a
shared machine affects both.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import torch
from torch import nn

from adalrs_ray.core.controller import Action, Decision
from adalrs_ray.torch_binding import AdaLRSScheduler
from adalrs_ray.torch_binding.snapshot import InMemorySnapshotStore, SnapshotStore, synchronize

#: name -> zero-argument factory of a SnapshotStore; extend with other stores.
STORES: dict[str, Callable[[], SnapshotStore]] = {"in_memory": InMemorySnapshotStore}


def build_model(mb: float, device: str = "cpu", width: int = 1024):
    """A stack of ``width x width`` linear layers whose weights + AdamW moments total ~``mb`` MB,
    after one AdamW step (so the optimizer state exists)."""
    per_layer = 3 * (width * width + width) * 4  # fp32 weight + bias, times (param, m, v)
    layers = max(1, round(mb * 1e6 / per_layer))
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(torch.randn(2, width, device=device)).sum().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return model, opt


def state_tensors(model: nn.Module, opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The tensors an AdaLRS snapshot holds: model state_dict + optimizer state."""
    tensors = list(model.state_dict().values())
    for state in opt.state.values():
        tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return tensors


def _devices(tensors: Sequence[torch.Tensor]) -> set[torch.device]:
    return {t.device for t in tensors}


def _timed(fn: Callable[[], object], devices: set[torch.device]) -> float:
    synchronize(devices)
    t0 = time.perf_counter()
    fn()
    synchronize(devices)
    return time.perf_counter() - t0


def plain_copy_fn(tensors: Sequence[torch.Tensor]) -> Callable[[], None]:
    """One ``copy_`` of every tensor into host buffers preallocated here (the baseline)."""
    pin = any(t.device.type != "cpu" for t in tensors) and torch.cuda.is_available()
    dst = [torch.empty(t.shape, dtype=t.dtype, pin_memory=pin) for t in tensors]

    def copy_all() -> None:
        for d, s in zip(dst, tensors):
            d.copy_(s, non_blocking=pin)

    return copy_all


def measure_store(
    store_factory: Callable[[], SnapshotStore],
    tensors: Sequence[torch.Tensor],
    repeats: int = 5,
) -> dict[str, float]:
    """Median seconds of the plain-copy baseline, ``save``, ``load_into`` and save + load_into.

    Each repeat times the baseline right before the store's save and load_into, so a machine
    shared with other work slows both alike; ``ratio`` is the median over repeats of
    (save + load_into) / baseline. The first save (allocation) is a warm-up, not timed.
    """
    store = store_factory()
    devices = {t.device for t in tensors}
    plain = plain_copy_fn(tensors)
    plain()
    store.save(0, tensors, {"step": 0})
    store.load_into(tensors)
    rows = []
    for i in range(repeats):
        base = _timed(plain, devices)
        save = _timed(lambda i=i: store.save(i + 1, tensors, {"step": i + 1}), devices)
        load = _timed(lambda: store.load_into(tensors), devices)
        rows.append((base, save, load))
    out = {
        "plain": statistics.median(r[0] for r in rows),
        "save": statistics.median(r[1] for r in rows),
        "load_into": statistics.median(r[2] for r in rows),
        "total": statistics.median(r[1] + r[2] for r in rows),
        "ratio": statistics.median((r[1] + r[2]) / r[0] for r in rows),
        "nbytes": float(store.nbytes),
    }
    store.clear()
    return out


class _Alternate:
    """Controller stub for the binding measurement: SNAPSHOT and RESTORE on alternate calls."""

    def __init__(self) -> None:
        self.config = SimpleNamespace(backtrack_mode="continue")
        self.scale = 1.0
        self.n = 0
        self.snap = None

    def observe(self, step: int, loss: float) -> Decision:
        self.n += 1
        if self.n % 2:
            self.snap = step
            return Decision(Action.SNAPSHOT, 1.0)
        return Decision(Action.RESTORE, 1.0, (), self.snap)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, sd: dict) -> None:
        pass


def measure_binding(model, opt, store_factory, repeats: int = 5) -> dict[str, float]:
    """AdaLRSScheduler.step doing a SNAPSHOT then a RESTORE (flattening, RNG states and meta
    included) against the plain-copy baseline, interleaved as in :func:`measure_store`."""
    sched = AdaLRSScheduler(opt, _Alternate(), model=model, store=store_factory())
    tensors = list(model.state_dict().values())
    for state in opt.state.values():
        tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    devices = {t.device for t in tensors}
    plain = plain_copy_fn(tensors)

    def pair() -> None:
        sched.step(0.0)
        sched.step(0.0)

    plain()
    pair()
    rows = [(_timed(plain, devices), _timed(pair, devices)) for _ in range(repeats)]
    sched.close()
    return {
        "total": statistics.median(r[1] for r in rows),
        "ratio": statistics.median(r[1] / r[0] for r in rows),
    }


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mb", type=float, default=100.0, help="model + AdamW state size in MB")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--stores", nargs="+", default=sorted(STORES), choices=sorted(STORES))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, opt = build_model(args.mb, args.device)
    tensors = state_tensors(model, opt)
    nbytes = sum(t.nbytes for t in tensors)
    print(
        f"state: {len(tensors)} tensors, {nbytes / 1e6:.1f} MB on {args.device}; "
        f"threads={args.threads}; median of {args.repeats}"
    )
    for name in args.stores:
        r = measure_store(STORES[name], tensors, args.repeats)
        plain = r["plain"]
        print(
            f"plain copy_ (baseline)         {plain * 1e3:8.2f} ms  "
            f"({nbytes / plain / 1e9:.2f} GB/s)"
        )
        print(f"{name}: save                 {r['save'] * 1e3:8.2f} ms  ({r['save'] / plain:.2f}x)")
        print(
            f"{name}: load_into            {r['load_into'] * 1e3:8.2f} ms  "
            f"({r['load_into'] / plain:.2f}x)"
        )
        print(
            f"{name}: save + load_into     {r['total'] * 1e3:8.2f} ms  ratio {r['ratio']:.2f}x "
            "(goal <= 2x; floor ~2: two copies against one)"
        )
        b = measure_binding(model, opt, STORES[name], args.repeats)
        print(
            f"{name}: binding SNAPSHOT + RESTORE {b['total'] * 1e3:8.2f} ms  ratio "
            f"{b['ratio']:.2f}x (flattening, RNG states, meta included)"
        )


if __name__ == "__main__":
    main()
