"""AdaLRS on Ray Train: snapshot stores against a plain copy, and the per-step overhead.

Two measurements, each a ratio against a baseline measured in the same run:

1. Snapshot + restore of a model + AdamW state of ~100 MB and ~1 GB (1 torch thread) for each
   store (``in_memory``: host buffers in the worker; ``object_store``: the node's Ray object
   store, owned by the node-local holder actor) against one plain ``copy_`` of the same bytes
   (``measure_store`` of benchmarks/bench_snapshot.py). Goal: the default store within 2x of the
   copy per operation.
2. Step time of a two-worker ``TorchTrainer`` with AdaLRS (``AdaLRSTrainContext``: one scalar
   all-reduce + the controller + the LR update per step) against the same loop without it,
   in short interleaved blocks in the same workers (rotating order), excluding SNAPSHOT/RESTORE
   steps, next to an A/A control (the plain loop twice) that shows the noise floor of the
   machine. Goal: < 2%.

    .venv/bin/python benchmarks/bench_ray_train.py            # 100 MB and 1 GB, 2 x 400 steps
    .venv/bin/python benchmarks/bench_ray_train.py --quick    # 100 MB only, 2 x 200 steps
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _local_ray import init_local_ray  # noqa: E402
from bench_snapshot import build_model, measure_store, state_tensors  # noqa: E402

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


# ----------------------------------------------------------------------------- 1. stores
def bench_stores(sizes_mb: list[float], repeats: int) -> None:
    from adalrs_ray.ray_train.object_store import ObjectStoreSnapshotStore
    from adalrs_ray.torch_binding.snapshot import InMemorySnapshotStore

    stores = {"in_memory": InMemorySnapshotStore, "object_store": ObjectStoreSnapshotStore}
    torch.set_num_threads(1)
    for mb in sizes_mb:
        model, opt = build_model(mb)
        tensors = state_tensors(model, opt)
        nbytes = sum(t.nbytes for t in tensors)
        print(f"\nstate {nbytes / 1e6:.0f} MB ({len(tensors)} tensors), median of {repeats}:")
        print(
            f"  {'store':<13} {'copy ms':>8} {'save ms':>8} {'load ms':>8} "
            f"{'save/copy':>9} {'load/copy':>9} {'(save+load)/copy':>16}"
        )
        for name, factory in stores.items():
            r = measure_store(factory, tensors, repeats)
            print(
                f"  {name:<13} {r['plain'] * 1e3:8.1f} {r['save'] * 1e3:8.1f} "
                f"{r['load_into'] * 1e3:8.1f} {r['save'] / r['plain']:8.2f}x "
                f"{r['load_into'] / r['plain']:8.2f}x {r['ratio']:15.2f}x"
            )
        del model, opt, tensors


# ----------------------------------------------------------------------------- 2. step time
def _overhead_loop(config: dict) -> dict:
    import ray.train
    import ray.train.torch
    from torch import nn

    from adalrs_ray import AdaLRS, AdaLRSConfig
    from adalrs_ray.ray_train import AdaLRSTrainContext
    from adalrs_ray.torch_binding import AdaLRSScheduler

    torch.set_num_threads(1)
    rank = ray.train.get_context().get_world_rank()
    steps, block, width = config["steps"], config["block"], config["width"]

    def build():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        model = ray.train.torch.prepare_model(net)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-3)

    variants: dict[str, tuple] = {}
    for name in ("plain", "plain_control", "adalrs", "adalrs_async"):
        model, opt = build()
        if name.startswith("plain"):
            variants[name] = (model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0))
            continue
        ctl = AdaLRS(AdaLRSConfig(total_steps=steps, window=config["window"]))
        sched = AdaLRSScheduler(opt, ctl, lambda t: 1.0, model=model)
        ctx = AdaLRSTrainContext(sched, model=model, optimizer=opt, report_every=10**9)
        variants[name] = (model, opt, ctx)
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(config["batch"], width, generator=g)
    y = torch.randn(config["batch"], width, generator=g)

    def one_step(name: str) -> bool:
        """One training step of variant ``name``; False for SNAPSHOT/RESTORE steps."""
        model, opt, aux = variants[name]
        loss = (model(x) - y).pow(2).mean()
        pending = aux.reduce_async(loss) if name == "adalrs_async" else None
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if name.startswith("plain"):  # without AdaLRS: the loss is read for logging
            loss.item()
            aux.step()
            return True
        # "adalrs": reduce after the step; "adalrs_async": started after the forward pass
        d = aux.step(pending if pending is not None else loss)
        return d.action.value == "continue"

    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    special = 0
    for rnd in range(steps // block):
        order = names[rnd % len(names) :] + names[: rnd % len(names)]  # rotate: no order bias
        for name in order:
            for _ in range(block):
                t0 = time.perf_counter()
                ok = one_step(name)
                dt = time.perf_counter() - t0
                if ok:
                    times[name].append(dt)
                else:
                    special += 1
    # the per-step additions on their own, in lock-step on both ranks
    loss = (variants["plain"][0](x) - y).pow(2).mean().detach()
    ctx = variants["adalrs"][2]
    t_reduce = []
    for _ in range(300):
        t0 = time.perf_counter()
        ctx.reduce_mean(loss)
        t_reduce.append(time.perf_counter() - t0)
    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    free = AdaLRSScheduler(
        dummy, AdaLRS(AdaLRSConfig(total_steps=10**6, window=10**4, start_ratio=0.0)), lambda t: 1.0
    )
    free.step(1.0)  # the search-start SNAPSHOT; CONTINUE from here on
    t_sched = []
    for i in range(3000):
        t0 = time.perf_counter()
        free.step(1.0 / (i + 2))
        t_sched.append(time.perf_counter() - t0)
    return {
        **times,
        "t_reduce": statistics.median(t_reduce),
        "t_sched": statistics.median(t_sched),
        "special_steps": special,
        "events": [e["kind"] for e in variants["adalrs"][2].scheduler.controller.events],
    }


def bench_overhead(steps: int, block: int, width: int, batch: int, storage: str) -> None:
    import ray.train
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        _overhead_loop,
        train_loop_config={
            "steps": steps,
            "block": block,
            "width": width,
            "batch": batch,
            "window": max(2, steps // 20),
        },
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(storage_path=storage, name=f"overhead-{int(time.time())}"),
    )
    r = trainer.fit().return_value

    def tmean(xs):  # trimmed mean: robust to the odd slow step of a shared machine
        xs = sorted(xs)
        k = len(xs) // 10
        return statistics.fmean(xs[k : len(xs) - k])

    print(
        f"\ntwo-worker TorchTrainer (DDP, gloo, MLP {width}-{4 * width}-{width}, batch {batch} "
        f"per worker), {steps} steps per variant, interleaved blocks of {block}; "
        f"{r['special_steps']} SNAPSHOT/RESTORE steps excluded:"
    )
    base_med, base_tm = statistics.median(r["plain"]), tmean(r["plain"])
    labels = {
        "plain": "without AdaLRS",
        "plain_control": "without AdaLRS again (A/A noise floor)",
        "adalrs": "AdaLRS, ctx.step(loss)",
        "adalrs_async": "AdaLRS, ctx.step(ctx.reduce_async(loss))",
    }
    for key, label in labels.items():
        med, tm = statistics.median(r[key]), tmean(r[key])
        extra = (
            ""
            if key == "plain"
            else f"  {med / base_med - 1:+6.2%} (median) {tm / base_tm - 1:+6.2%} (trimmed)"
        )
        print(f"  {label:<42} {med * 1e3:7.3f} ms median {tm * 1e3:7.3f} ms trimmed{extra}")
    add = r["t_reduce"] + r["t_sched"]
    print(
        f"  the additions alone: scalar all-reduce {r['t_reduce'] * 1e6:.0f} us + "
        f"scheduler.step {r['t_sched'] * 1e6:.1f} us = {add / base_med:.2%} of a plain step"
    )
    print("  goal: overhead < 2% outside snapshot steps")
    print(f"  AdaLRS events: {r['events']}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="100 MB only, fewer steps")
    p.add_argument("--sizes", type=float, nargs="+", help="state sizes in MB")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, help="steps per variant (default 400, quick 200)")
    p.add_argument("--block", type=int, default=5, help="steps per variant per round")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--skip-stores", action="store_true")
    p.add_argument("--skip-overhead", action="store_true")
    args = p.parse_args(argv)
    sizes = args.sizes or ([100.0] if args.quick else [100.0, 1000.0])
    steps = args.steps or (200 if args.quick else 400)

    import tempfile

    ray = init_local_ray(one_omp_thread=False)
    try:
        print(f"torch {torch.__version__}, ray {ray.__version__}, {os.cpu_count()} CPUs")
        if not args.skip_stores:
            bench_stores(sizes, args.repeats)
        if not args.skip_overhead:
            with tempfile.TemporaryDirectory() as storage:
                bench_overhead(steps, args.block, args.width, args.batch, storage)
    finally:
        from adalrs_ray.ray_train.object_store import kill_snapshot_holders

        kill_snapshot_holders()
        ray.shutdown()


if __name__ == "__main__":
    main()
