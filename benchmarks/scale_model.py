"""The cost model of AdaLRS at pretraining scale, printed from its parameters (docs/scale.md).

Every number is computed from the arguments below; nothing is measured by this script. The
defaults are a 7B model trained with AdamW on 64 GPUs (8 per node) under FSDP2, with the
constants of docs/scale.md (each there with its source: measured here, or cited). Rerun with
your own numbers, e.g.

    .venv/bin/python benchmarks/scale_model.py --params 70e9 --gpus 512 --window 500

Snapshot model (``InMemorySnapshotStore``, docs/torch_binding.md): each rank copies its own
FSDP2 shard of parameters and both AdamW moments to pinned host memory (device-to-host over
its PCIe link), and a restore copies it back (host-to-device). All ranks copy at once; a node's
ranks share its host memory bandwidth. The object-store store adds host-to-host copies
(docs/ray_train.md: a save about 4-8 copies, a restore about 1.2-1.5).

Failed-trial model (docs/controller.md): a trial is ``ramp_steps`` (default: one window) plus
one validation window. ``restore="always"`` (the paper's rule) restores every failed trial,
discarding those steps (``backtrack_mode="continue"``: data and schedule move on, so the steps
are spent and their progress is thrown away); ``restore="regressed"`` (the default rule)
restores only a failed trial whose validation mean did not fall below the last window before
it, and otherwise keeps its steps.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

#: bytes per parameter held in a snapshot: (parameters, AdamW exp_avg, exp_avg_sq)
LAYOUTS = {
    "fp32 params + fp32 moments": (4, 4, 4),
    "bf16 params + fp32 moments": (2, 4, 4),
}

GB = 1e9


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"--{name.replace('_', '-')}={value}: must be > 0")
    return value


def model(args: argparse.Namespace) -> dict[str, object]:
    """Every quantity of the cost model, from the parsed arguments."""
    for name in (
        "params",
        "gpus",
        "gpus_per_node",
        "d2h_gbps",
        "node_host_gbps",
        "host_copy_gbps",
        "storage_gbps",
        "tokens_per_step",
        "gpu_tflops",
        "mfu",
        "total_steps",
        "restart_s",
    ):
        _positive(name, getattr(args, name))
    if args.gpus % args.gpus_per_node:
        raise ValueError(
            f"--gpus={args.gpus} --gpus-per-node={args.gpus_per_node}: the GPUs must fill whole nodes"
        )
    if not 0 < args.mfu <= 1:
        raise ValueError(f"--mfu={args.mfu}: must be in (0, 1]")
    if not 0 <= args.start_ratio < args.end_ratio <= 1:
        raise ValueError(
            f"--start-ratio={args.start_ratio} --end-ratio={args.end_ratio}: need 0 <= start < end <= 1"
        )
    nodes = args.gpus // args.gpus_per_node
    search_steps = int(args.total_steps * args.end_ratio) - int(args.total_steps * args.start_ratio)
    window = args.window if args.window else max(2, search_steps // 6)  # the controller's default
    if window < 1 or 3 * window + (args.ramp_steps or window) > search_steps:
        raise ValueError(
            f"--window={window}: 3 windows + a ramp must fit in the {search_steps}-step search"
        )
    ramp = args.ramp_steps or window
    # per-rank copy bandwidth: its PCIe link, or its share of the node's host memory bandwidth
    rank_gbps = min(args.d2h_gbps, args.node_host_gbps / args.gpus_per_node)
    step_s = (
        6 * args.params * args.tokens_per_step / (args.gpus * args.gpu_tflops * 1e12 * args.mfu)
    )
    layouts = {}
    for name, parts in LAYOUTS.items():
        per_param = sum(parts)
        rank_bytes = args.params * per_param / args.gpus
        snap_s = rank_bytes / (rank_gbps * GB)
        obj_save_s = snap_s + args.obj_save_copies * rank_bytes / (args.host_copy_gbps * GB)
        obj_restore_s = snap_s + args.obj_restore_copies * rank_bytes / (args.host_copy_gbps * GB)
        # PBT exploit: every rank reads its shard of the donor's checkpoint; a node reads 8 shards
        load_s = args.gpus_per_node * rank_bytes / (args.storage_gbps * GB)
        layouts[name] = {
            "bytes_per_param": per_param,
            "total_gb": args.params * per_param / GB,
            "rank_gb": rank_bytes / GB,
            "node_gb": args.gpus_per_node * rank_bytes / GB,
            "snapshot_s": snap_s,
            "restore_s": snap_s,
            "obj_save_s": obj_save_s,
            "obj_restore_s": obj_restore_s,
            "ckpt_load_s": load_s,
            "exploit_s": args.restart_s + load_s,
        }
    trial_steps = ramp + window
    snapshots = search_steps // window  # policy "windows": at most one per window (+1 per trial)
    return {
        "nodes": nodes,
        "rank_gbps": rank_gbps,
        "step_s": step_s,
        "search_steps": search_steps,
        "window": window,
        "ramp": ramp,
        "trial_steps": trial_steps,
        "snapshots": snapshots,
        "layouts": layouts,
    }


def render(args: argparse.Namespace, m: dict[str, object]) -> str:
    step_s = m["step_s"]
    lines = [
        f"{args.params / 1e9:g}B parameters, AdamW, FSDP2 over {args.gpus} GPUs "
        f"({m['nodes']} nodes x {args.gpus_per_node})",
        f"step: {args.tokens_per_step / 1e6:g}M tokens, {args.gpu_tflops:g} TFLOP/s per GPU at "
        f"MFU {args.mfu:g} -> {step_s:.1f} s per step; run {args.total_steps} steps",
        f"copy bandwidth per rank: min(PCIe {args.d2h_gbps:g} GB/s, node host "
        f"{args.node_host_gbps:g} GB/s / {args.gpus_per_node}) = {m['rank_gbps']:g} GB/s; "
        f"host-to-host {args.host_copy_gbps:g} GB/s; storage {args.storage_gbps:g} GB/s per node",
        "",
        "| quantity | " + " | ".join(m["layouts"]) + " |",
        "|---|" + "---|" * len(m["layouts"]),
    ]

    def row(label: str, fmt: str, key: str) -> None:
        lines.append(
            f"| {label} | " + " | ".join(fmt.format(v[key]) for v in m["layouts"].values()) + " |"
        )

    row("bytes per parameter in a snapshot", "{:d}", "bytes_per_param")
    row("model + optimizer state, whole model (GB)", "{:.1f}", "total_gb")
    row("snapshot per rank (GB)", "{:.3f}", "rank_gb")
    row(
        f"host / object-store memory per node, {args.gpus_per_node} ranks (GB)", "{:.1f}", "node_gb"
    )
    row("one snapshot, memory store (s)", "{:.3f}", "snapshot_s")
    row("one restore, memory store (s)", "{:.3f}", "restore_s")
    row(
        f"one snapshot, object store (+{args.obj_save_copies:g} host copies) (s)",
        "{:.2f}",
        "obj_save_s",
    )
    row(
        f"one restore, object store (+{args.obj_restore_copies:g} host copies) (s)",
        "{:.2f}",
        "obj_restore_s",
    )
    row("PBT exploit: checkpoint read per node (s)", "{:.2f}", "ckpt_load_s")
    row(f"PBT exploit: + restart {args.restart_s:g} s (s)", "{:.1f}", "exploit_s")
    first = next(iter(m["layouts"].values()))
    lines += [
        "",
        f"search window: {m['search_steps']} steps ({args.start_ratio:g}-{args.end_ratio:g} of the "
        f"run), window k = {m['window']}, ramp = {m['ramp']}",
        f"snapshots (policy 'windows'): at most {m['snapshots']} + 1 per trial; each "
        f"{first['snapshot_s']:.2f} s = {first['snapshot_s'] / step_s:.3f} steps (fp32 layout); "
        f"all of them {m['snapshots'] * first['snapshot_s'] / step_s:.1f} steps",
        f"a failed trial: ramp {m['ramp']} + validation {m['window']} = {m['trial_steps']} steps "
        f"({m['trial_steps'] * step_s / 3600:.1f} h, {100 * m['trial_steps'] / args.total_steps:.2f}% "
        "of the run)",
        f"  paper's rule (restore='always'): every failed trial discards {m['trial_steps']} steps "
        f"+ one restore ({first['restore_s']:.2f} s)",
        "  default rule (restore='regressed'): discards them only when its validation mean did not "
        "fall below the last window before it; else 0 steps discarded, no restore",
        f"a PBT exploit: the loser's steps since its last exploit (>= perturbation interval "
        f"{args.perturbation_interval} steps, {args.perturbation_interval * step_s / 3600:.1f} h) "
        f"+ {first['exploit_s']:.1f} s = {first['exploit_s'] / step_s:.1f} steps of reload "
        "(fp32 layout), for each of the trial's GPUs",
    ]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    a = p.add_argument
    a("--params", type=float, default=7e9, help="model parameters")
    a("--gpus", type=int, default=64)
    a("--gpus-per-node", type=int, default=8)
    a("--d2h-gbps", type=float, default=25.0, help="device<->host GB/s per GPU (PCIe 4.0 x16)")
    a("--node-host-gbps", type=float, default=400.0, help="host memory GB/s per node")
    a("--host-copy-gbps", type=float, default=6.2, help="host-to-host copy GB/s per process")
    a("--obj-save-copies", type=float, default=8.0, help="host copies of an object-store save")
    a(
        "--obj-restore-copies",
        type=float,
        default=1.5,
        help="host copies of an object-store restore",
    )
    a("--storage-gbps", type=float, default=5.0, help="checkpoint read GB/s per node")
    a("--restart-s", type=float, default=30.0, help="seconds to restart a trial's worker group")
    a("--tokens-per-step", type=float, default=4e6)
    a("--gpu-tflops", type=float, default=312.0, help="dense BF16 peak per GPU (A100)")
    a("--mfu", type=float, default=0.4, help="model FLOPs utilisation")
    a("--total-steps", type=int, default=50_000)
    a("--start-ratio", type=float, default=0.1)
    a("--end-ratio", type=float, default=0.4)
    a("--window", type=int, default=0, help="k; 0: the controller's default search_steps // 6")
    a("--ramp-steps", type=int, default=0, help="0: one window")
    a("--perturbation-interval", type=int, default=500, help="PBT steps between exploits")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    print(render(args, model(args)))


if __name__ == "__main__":
    main()
