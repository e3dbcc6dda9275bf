"""Cost of an AdaLRS snapshot + restore against one plain copy of the same bytes.

A snapshot (``store.save``) followed by a restore (``store.load_into``) moves the state twice;
the baseline is a single ``copy_`` of the same tensors into preallocated buffers, measured in the
same run. The printed ratio (snapshot + restore) / plain copy has a floor of about 2.0 (two
copies against one); the goal is <= 2x, i.e. no overhead beyond the copies themselves.

    .venv/bin/python benchmarks/bench_snapshot.py --mb 100 --repeats 5

To add a store (e.g. the Ray object-store one), put a factory in ``STORES`` (or call
``measure_store(factory, tensors)`` from your own script) and pass ``--stores name``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import torch
from torch import nn

from adalrs_ray.controller import Action, Decision
from adalrs_ray.snapshot import InMemorySnapshotStore, SnapshotStore, synchronize
from adalrs_ray.torch_binding import AdaLRSScheduler

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


def _median_time(fn: Callable[[], None], devices: set, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    synchronize(devices)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(devices)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_plain_copy(tensors: Sequence[torch.Tensor], repeats: int = 5) -> float:
    """Median seconds of one ``copy_`` of every tensor into preallocated host buffers."""
    pin = any(t.device.type != "cpu" for t in tensors) and torch.cuda.is_available()
    dst = [torch.empty(t.shape, dtype=t.dtype, pin_memory=pin) for t in tensors]

    def copy_all() -> None:
        for d, s in zip(dst, tensors):
            d.copy_(s, non_blocking=pin)

    return _median_time(copy_all, _devices(tensors), repeats)


def measure_store(
    store_factory: Callable[[], SnapshotStore],
    tensors: Sequence[torch.Tensor],
    repeats: int = 5,
) -> dict[str, float]:
    """Median seconds of ``save``, ``load_into`` and save + load_into with a fresh store.

    The first save (allocation) is a warm-up and not timed: buffers are reused afterwards.
    """
    store = store_factory()
    devices = _devices(tensors)
    store.save(0, tensors, {"step": 0})
    store.load_into(tensors)
    saves, loads, totals = [], [], []
    for i in range(repeats):
        synchronize(devices)
        t0 = time.perf_counter()
        store.save(i + 1, tensors, {"step": i + 1})
        synchronize(devices)
        t1 = time.perf_counter()
        store.load_into(tensors)
        synchronize(devices)
        t2 = time.perf_counter()
        saves.append(t1 - t0)
        loads.append(t2 - t1)
        totals.append(t2 - t0)
    out = {
        "save": statistics.median(saves),
        "load_into": statistics.median(loads),
        "total": statistics.median(totals),
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


def measure_binding(model, opt, store_factory, repeats: int = 5) -> float:
    """Median seconds of AdaLRSScheduler.step doing a SNAPSHOT then a RESTORE (flattening,
    RNG states and meta included)."""
    sched = AdaLRSScheduler(opt, _Alternate(), model=model, store=store_factory())
    devices = _devices(list(model.parameters()))

    def pair() -> None:
        sched.step(0.0)
        sched.step(0.0)

    out = _median_time(pair, devices, repeats)
    sched.close()
    return out


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
    plain = measure_plain_copy(tensors, args.repeats)
    print(f"plain copy_ (baseline)      {plain * 1e3:9.2f} ms  ({nbytes / plain / 1e9:.2f} GB/s)")
    for name in args.stores:
        r = measure_store(STORES[name], tensors, args.repeats)
        print(f"{name}: save              {r['save'] * 1e3:9.2f} ms  ({r['save'] / plain:.2f}x)")
        print(
            f"{name}: load_into         {r['load_into'] * 1e3:9.2f} ms  "
            f"({r['load_into'] / plain:.2f}x)"
        )
        print(
            f"{name}: save + load_into  {r['total'] * 1e3:9.2f} ms  "
            f"ratio {r['total'] / plain:.2f}x (goal <= 2x; floor ~2: two copies vs one)"
        )
        b = measure_binding(model, opt, STORES[name], args.repeats)
        print(
            f"{name}: binding SNAPSHOT+RESTORE {b * 1e3:9.2f} ms  ratio {b / plain:.2f}x "
            "(flatten, RNG, meta included)"
        )


if __name__ == "__main__":
    main()
