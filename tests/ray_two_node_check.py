"""Two-node check for tests/test_ray_train.py (run as a script: it starts its own cluster).

A ``ray.cluster_utils.Cluster`` with two 1-CPU nodes runs a two-worker ``TorchTrainer`` (one
worker per node). Each rank trains a tiny model with AdaLRS and ``ObjectStoreSnapshotStore``,
and writes to ``<out>/two_node.json``: its node, the node of its snapshot holder, the nodes whose
object stores hold its snapshot, and whether a restore from the store was exact.

Usage: python tests/ray_two_node_check.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def train_loop(config: dict) -> None:
    import ray
    import ray.train
    import ray.train.torch
    import torch

    from adalrs_ray import AdaLRS, AdaLRSConfig
    from adalrs_ray.ray_train import AdaLRSTrainContext, default_store_key, make_snapshot_store
    from adalrs_ray.torch_binding import AdaLRSScheduler

    torch.set_num_threads(1)
    rank = ray.train.get_context().get_world_rank()
    torch.manual_seed(0)
    model = ray.train.torch.prepare_model(torch.nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    store = make_snapshot_store("object_store", key=default_store_key())
    sched = AdaLRSScheduler(
        opt,
        AdaLRS(AdaLRSConfig(total_steps=40, window=3, ramp_steps=2, end_ratio=0.9)),
        model=model,
        store=store,
    )
    ctx = AdaLRSTrainContext(sched, model=model, optimizer=opt, report_every=20)
    snapshots = 0
    restored_exactly = True
    while ctx.next_step < 40:
        step = ctx.next_step
        g = torch.Generator().manual_seed(100 * step + rank)
        x = torch.randn(16, 8, generator=g)
        loss = (model(x).squeeze(-1) - x.sum(-1)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        decision = ctx.step(loss)
        if decision.action.value == "snapshot":
            snapshots += 1
            live = [p.detach().clone() for p in model.parameters()]
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(1.0)
            targets = list(model.state_dict().values())
            n = len(targets)
            step_saved, tensors, _ = store.load()
            with torch.no_grad():
                for t, src in zip(targets, tensors[:n]):
                    t.copy_(src)
            restored_exactly &= step_saved == step and all(
                torch.equal(a, b) for a, b in zip(live, model.parameters())
            )
    record = {
        "rank": rank,
        "node": ray.get_runtime_context().get_node_id(),
        "holder_node": ray.get(store._holder.node_id.remote()),
        "locations": store.locations(),
        "snapshots": snapshots,
        "restored_exactly": bool(restored_exactly),
    }
    Path(config["out"], f"rank{rank}.json").write_text(json.dumps(record))
    ctx.finish()


def main(out: str) -> int:
    import ray
    import ray.train
    from ray.cluster_utils import Cluster
    from ray.train.torch import TorchTrainer

    from adalrs_ray.ray_train.object_store import kill_snapshot_holders

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
    try:
        cluster.wait_for_nodes()
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={"out": out},
            scaling_config=ray.train.ScalingConfig(
                num_workers=2, resources_per_worker={"CPU": 1}, placement_strategy="STRICT_SPREAD"
            ),
            run_config=ray.train.RunConfig(storage_path=str(Path(out, "ray")), name="two_node"),
        )
        trainer.fit()
        ranks = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in (0, 1)]
        Path(out, "two_node.json").write_text(json.dumps(ranks))
        kill_snapshot_holders()
    finally:
        ray.shutdown()
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
