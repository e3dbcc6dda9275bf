"""AdaLRS in a Ray Train V2 TorchTrainer: one reduced loss, identical decisions, per-rank
snapshots, exact resume after a worker death, lost-snapshot policy, the LM task on two workers.

Train V2 worker groups are slow to start (10-20 s here), so two trainer runs are shared by most
tests: ``plain_run`` (two workers, object-store snapshots) and ``killed_run`` (the same run, with
rank 1 killed by ``os._exit`` in the middle of an upscale trial on the first attempt).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adalrs_ray import Action, AdaLRS, AdaLRSConfig
from tests.opening_events import assert_default_opening

# the paper's rule (AdaLRSConfig.paper): these streams were built on its backtracks
ADALRS = dict(
    total_steps=120, window=6, start_ratio=0.05, end_ratio=0.9, ramp_steps=3, alpha=3.0, beta=2.0
)
REPORT_EVERY = 4
LR = 0.002


# ----------------------------------------------------------------------------- worker side
def _data(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(32, 8, generator=g)
    y = x @ torch.linspace(-1, 1, 8) + 0.3 * torch.randn(32, generator=g)
    return x, y


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 1)
        # differs per rank (DDP does not broadcast it): proves each rank restores its own state
        self.register_buffer("rank_stat", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).squeeze(-1)


def _state_hash(model: torch.nn.Module, opt: torch.optim.Optimizer) -> str:
    h = hashlib.sha256()
    for t in model.state_dict().values():
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    for state in opt.state_dict()["state"].values():
        for key in sorted(state):
            v = state[key]
            h.update(v.cpu().numpy().tobytes() if torch.is_tensor(v) else repr(v).encode())
    return h.hexdigest()


def _train_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch

    from adalrs_ray.ray_train import AdaLRSTrainContext, default_store_key, make_snapshot_store
    from adalrs_ray.torch_binding import AdaLRSScheduler

    torch.set_num_threads(1)
    rank = ray.train.get_context().get_world_rank()
    torch.manual_seed(0)
    model = ray.train.torch.prepare_model(
        _Net(), parallel_strategy_kwargs={"broadcast_buffers": False}
    )
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    sched = AdaLRSScheduler(
        opt,
        AdaLRS(AdaLRSConfig.paper(**ADALRS)),
        model=model,
        store=make_snapshot_store(config["store"], key=default_store_key()),
    )
    ctx = AdaLRSTrainContext(sched, model=model, optimizer=opt, report_every=REPORT_EVERY)
    start = ctx.resume()
    out = Path(config["out"])
    attempt = len(list(out.glob(f"rank{rank}_attempt*.jsonl")))
    log = open(out / f"rank{rank}_attempt{attempt}.jsonl", "w")
    log.write(json.dumps({"resumed_at": start}) + "\n")
    while ctx.next_step < ADALRS["total_steps"]:
        step = ctx.next_step
        marker = config.get("marker")
        if rank == 1 and step == config.get("fail_at") and not Path(marker).exists():
            Path(marker).write_text("killed")
            log.close()
            os._exit(1)  # a worker dies, its in-memory snapshot with it
        if rank == 1 and step == config.get("kill_holders_at") and not Path(marker).exists():
            from adalrs_ray.ray_train.object_store import kill_snapshot_holders

            Path(marker).write_text(str(kill_snapshot_holders()))  # every snapshot is lost
        x, y = _data(step, rank)
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.module.rank_stat.add_(x.mean())
        scale = sched.scale
        decision = ctx.step(loss, tokens=x.shape[0])
        rec = {
            "step": step,
            "reduced": ctx.last_loss,
            "scale_used": scale,
            "scale_next": decision.scale,
            "action": decision.action.value,
            "restore_step": decision.restore_step,
            "events": [e["kind"] for e in decision.events],
        }
        if decision.action in (Action.SNAPSHOT, Action.RESTORE):
            rec["state"] = _state_hash(model, opt)
        log.write(json.dumps(rec) + "\n")
        log.flush()
    ctx.finish()
    log.close()


# ----------------------------------------------------------------------------- driver side
def _fit(tmp: Path, **config) -> object:
    import ray.cloudpickle
    import ray.train
    from ray.train.torch import TorchTrainer

    from adalrs_ray.ray_train import LostSnapshotPolicy

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    (tmp / "out").mkdir(parents=True, exist_ok=True)
    max_failures = config.pop("max_failures", 1)
    policy = config.pop("policy", "checkpoint")
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"out": str(tmp / "out"), **config},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=ray.train.RunConfig(
            storage_path=str(tmp / "ray"),
            name="run",
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            callbacks=[LostSnapshotPolicy(policy)],
        ),
    )
    return trainer.fit()


def _records(out: Path, rank: int) -> tuple[dict[int, dict], list[int]]:
    """The last record per step over all attempts, and the step each attempt resumed at."""
    by_step: dict[int, dict] = {}
    resumed = []
    for path in sorted(out.glob(f"rank{rank}_attempt*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if "resumed_at" in rec:
                resumed.append(rec["resumed_at"])
            else:
                by_step[rec["step"]] = rec
    return by_step, resumed


@pytest.fixture(scope="module")
def fast_reports():
    """Train V2 forwards one report per health-check interval (2 s by default) and workers wait
    for it; a short interval keeps these runs fast."""
    old = os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.1"
    yield
    if old is None:
        del os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]
    else:
        os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = old


@pytest.fixture(scope="module")
def plain_run(ray_cluster, fast_reports, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plain")
    result = _fit(tmp, store="object_store")
    return tmp / "out", result


@pytest.fixture(scope="module")
def killed_run(ray_cluster, fast_reports, tmp_path_factory, plain_run):
    """Rank 1 dies (os._exit) inside an upscale trial, after a checkpoint taken inside the
    trial; FailureConfig(max_failures=1) restarts the group from that checkpoint."""
    recs, _ = _records(plain_run[0], 0)
    fail_at = _step_inside_failed_trial(recs)
    tmp = tmp_path_factory.mktemp("killed")
    result = _fit(tmp, store="memory", fail_at=fail_at, marker=str(tmp / "killed.marker"))
    return tmp / "out", result, fail_at


def _step_inside_failed_trial(recs: dict[int, dict]) -> int:
    """The step that ends an upscale trial with a checkpoint taken inside the trial, preferring
    a trial whose snapshot a later RESTORE needs (the dead worker's copy of it is gone, so the
    resumed run can only get it from the checkpoint)."""
    ends = ("keep", "backtrack", "inconclusive")
    trials, start = [], None
    for step in sorted(recs):
        kinds = recs[step]["events"]
        if "trial_start" in kinds:
            start = step
        elif start is not None and any(k in kinds for k in ends):
            if any((c + 1) % REPORT_EVERY == 0 for c in range(start + 1, step - 1)):
                trials.append((start, step))
            start = None
    needed = {r["restore_step"] for r in recs.values() if r["action"] == "restore"}
    trials.sort(key=lambda t: t[0] not in needed)
    assert trials, f"no upscale trial with a checkpoint inside it: {recs}"
    return trials[0][1]  # rank 1 dies before running this step


@pytest.mark.ray
@pytest.mark.slow
def test_two_workers_make_identical_decisions(plain_run):
    out, result = plain_run
    assert result.error is None
    r0, _ = _records(out, 0)
    r1, _ = _records(out, 1)
    assert sorted(r0) == list(range(ADALRS["total_steps"]))
    keys = ("reduced", "scale_used", "scale_next", "action", "restore_step", "events")
    assert [[r0[s][k] for k in keys] for s in r0] == [[r1[s][k] for k in keys] for s in r1]
    actions = {r0[s]["action"] for s in r0}
    assert {"snapshot", "restore"} <= actions  # the run exercises both


@pytest.mark.ray
@pytest.mark.slow
def test_lr_trajectory_equals_the_bare_controller_on_the_reduced_losses(plain_run):
    r0, _ = _records(plain_run[0], 0)
    ctl = AdaLRS(AdaLRSConfig.paper(**ADALRS))
    for step in sorted(r0):
        assert ctl.scale == r0[step]["scale_used"]
        d = ctl.observe(step, r0[step]["reduced"])
        assert (d.scale, d.action.value, d.restore_step) == (
            r0[step]["scale_next"],
            r0[step]["action"],
            r0[step]["restore_step"],
        )


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("rank", [0, 1])
def test_backtracking_restores_each_ranks_own_parameters_and_optimizer_state(plain_run, rank):
    recs, _ = _records(plain_run[0], rank)
    other, _ = _records(plain_run[0], 1 - rank)
    restores = [s for s in recs if recs[s]["action"] == "restore"]
    assert restores
    for step in restores:
        saved = recs[recs[step]["restore_step"]]
        assert saved["action"] == "snapshot"
        assert recs[step]["state"] == saved["state"]
        assert recs[step]["state"] != other[step]["state"]  # rank-specific state, not a replica


@pytest.mark.ray
@pytest.mark.slow
def test_reports_carry_the_window_metrics(plain_run):
    out, result = plain_run
    m = result.metrics
    assert {"step", "loss", "lr", "scale", "steps_done", "tokens_done", "worker_s_done"} <= set(m)
    assert m["step"] == ADALRS["total_steps"] - 1
    assert m["tokens_done"] == m["steps_done"] * 32 * 2  # both ranks' tokens
    events = json.loads(m["adalrs_events"])
    assert isinstance(events, list)
    assert result.checkpoint is not None


@pytest.mark.ray
@pytest.mark.slow
def test_worker_killed_inside_a_trial_resumes_to_the_same_lr_trajectory(plain_run, killed_run):
    out, result, fail_at = killed_run
    assert result.error is None
    assert Path(out.parent / "killed.marker").exists()  # the failure really happened
    recs, resumed = _records(out, 0)
    assert len(resumed) == 2 and 0 < resumed[1] <= fail_at  # resumed from a checkpoint
    plain, _ = _records(plain_run[0], 0)
    keys = ("reduced", "scale_used", "scale_next", "action", "restore_step", "events", "state")
    assert {s: [recs[s].get(k) for k in keys] for s in recs} == {
        s: [plain[s].get(k) for k in keys] for s in plain
    }


@pytest.mark.ray
@pytest.mark.slow
def test_lost_snapshot_fails_the_run_under_policy_fail(
    ray_cluster, fast_reports, plain_run, tmp_path
):
    """The node-local holders are killed before a RESTORE: the snapshot objects die with their
    owner, every rank raises SnapshotLostError, and LostSnapshotPolicy('fail') ends the run
    without the retry that FailureConfig(max_failures=1) would otherwise allow."""
    recs, _ = _records(plain_run[0], 0)
    restore_at = min(s for s in recs if recs[s]["action"] == "restore")
    with pytest.raises(Exception, match="SnapshotLostError|snapshot lost") as info:
        _fit(
            tmp_path,
            store="object_store",
            kill_holders_at=restore_at,
            marker=str(tmp_path / "holders.marker"),
            policy="fail",
        )
    assert "policy 'fail'" in str(info.value)
    assert (tmp_path / "holders.marker").exists()
    assert [p.name for p in sorted((tmp_path / "out").glob("rank0_attempt*"))] == [
        "rank0_attempt0.jsonl"
    ]  # not retried
    recs, _ = _records(tmp_path / "out", 0)
    assert max(recs) == restore_at - 1  # nothing was recorded for the failed restore


def test_lost_snapshot_policy_callback_only_acts_on_lost_snapshots():
    from adalrs_ray.ray_train import LostSnapshotPolicy, SnapshotLostError
    from adalrs_ray.torch_binding.snapshot import SnapshotMissingError

    LostSnapshotPolicy("fail").after_exception(None, {0: RuntimeError("other failure")})
    LostSnapshotPolicy("checkpoint").after_exception(None, {1: SnapshotLostError("gone")})
    wrapped = RuntimeError("wrapper")
    wrapped.__cause__ = SnapshotMissingError("gone at step 3")
    with pytest.raises(SnapshotLostError, match="rank 1: wrapper"):
        LostSnapshotPolicy("fail").after_exception(None, {0: ValueError("x"), 1: wrapped})
    with pytest.raises(ValueError, match="policy"):
        LostSnapshotPolicy("retry")


@pytest.mark.ray
@pytest.mark.slow
def test_lm_task_trains_on_two_workers_with_reduced_loss(ray_cluster, fast_reports, tmp_path):
    from train_loops.lm import LMConfig
    from train_loops.lm_ray_train import run_lm_trainer

    cfg = LMConfig(
        preset="tiny",
        steps=48,
        seq_len=32,
        batch_size=4,
        adalrs=True,
        window=4,
        adalrs_options={"start_ratio": 0.1, "end_ratio": 0.9, "ramp_steps": 2},
        eval_batches=2,
        num_threads=1,
        out_dir=str(tmp_path / "lm"),
    )
    summary = run_lm_trainer(cfg, workers=2, cpus_per_worker=0.5)
    assert summary["status"] == "completed" and summary["world_size"] == 2
    # the default rewinds in the LM loop: the opening's discarded multipliers (8 steps each)
    # run on both ranks and count as tokens
    assert summary["steps"] == 48 and summary["steps_executed"] >= 48 + 4 * 8
    assert summary["tokens"] == summary["steps_executed"] * 4 * 32 * 2
    assert_default_opening(summary["adalrs_events"])
    assert "search_start" in [e["kind"] for e in summary["adalrs_events"]]
    assert (tmp_path / "lm" / "metrics.parquet").is_file()  # rank 0 wrote the run directory
    assert Path(summary["ray_checkpoint"], "trainer_state.pt").is_file()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_node_cluster_keeps_each_ranks_snapshot_on_its_own_node(tmp_path):
    """Its own two-node ray.cluster_utils.Cluster, in a subprocess (the session cluster stays)."""
    script = Path(__file__).with_name("ray_two_node_check.py")
    env = dict(os.environ, RAY_ADDRESS="", PYTHONPATH=str(Path(__file__).parent.parent))
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=220,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = json.loads((tmp_path / "two_node.json").read_text())
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert ranks[0]["node"] != ranks[1]["node"]  # one worker per node
    for r in ranks:
        assert r["snapshots"] > 0
        assert r["holder_node"] == r["node"]
        assert r["locations"] == [r["node"]]  # the snapshot object never left the rank's node
        assert r["restored_exactly"]


def test_reduce_mean_without_a_process_group_is_the_value():
    from adalrs_ray.ray_train import reduce_mean

    assert reduce_mean(torch.tensor(2.5)) == 2.5
    assert reduce_mean(1.25) == 1.25
    assert reduce_mean(torch.tensor([float("nan")])) != reduce_mean(torch.tensor(0.0))
    with pytest.raises(ValueError, match="scalar"):
        reduce_mean(torch.ones(2))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"report_every": 0}, "report_every"),
        ({"checkpoint_every": -1}, "checkpoint_every"),
        ({"get_loop_state": dict}, "set_loop_state"),
    ],
)
def test_context_rejects_bad_arguments(kwargs, message):
    from adalrs_ray.ray_train import AdaLRSTrainContext
    from adalrs_ray.torch_binding import AdaLRSScheduler

    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = AdaLRSScheduler(opt, AdaLRS(AdaLRSConfig.paper(**ADALRS)), model=model)
    with pytest.raises(ValueError, match=message):
        AdaLRSTrainContext(sched, model=model, optimizer=opt, **kwargs)


def _build_local(sharded: bool = False):
    from adalrs_ray.ray_train import AdaLRSTrainContext
    from adalrs_ray.torch_binding import AdaLRSScheduler

    torch.manual_seed(0)
    model = _Net()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    sched = AdaLRSScheduler(opt, AdaLRS(AdaLRSConfig.paper(**ADALRS)), model=model)
    ctx = AdaLRSTrainContext(sched, model=model, optimizer=opt, report_every=4, sharded=sharded)
    return model, opt, ctx


@pytest.mark.parametrize("sharded", [False, True])
def test_checkpoint_round_trip_outside_ray_restores_state_and_decisions(tmp_path, sharded):
    """save_checkpoint/load_checkpoint in one process: the resumed copy continues exactly
    (snapshot of a trial in progress included)."""
    from adalrs_ray.ray_train import RANK_FILE, SHARED_FILE

    def build():
        return _build_local(sharded)

    def run(model, opt, ctx, stop):
        trace = []
        while ctx.next_step < stop:
            x, y = _data(ctx.next_step, 0)
            loss = ((model(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            d = ctx.step(loss)
            trace.append((d.action.value, d.scale, _state_hash(model, opt)))
        return trace

    a = build()
    full = run(*a, ADALRS["total_steps"])
    b = build()
    first = run(*b, 88)  # inside the upscale trial of steps 83-92, which ends in a backtrack
    assert b[2].scheduler.controller.in_trial
    b[2].save_checkpoint(tmp_path)
    own = torch.load(tmp_path / RANK_FILE.format(rank=0), weights_only=True)
    shared = torch.load(tmp_path / SHARED_FILE, weights_only=True)
    assert own["snapshot"] is not None
    assert ("model" in own, "model" in shared) == (sharded, not sharded)
    c = build()
    assert c[2].load_checkpoint(tmp_path) == 88
    rest = run(*c, ADALRS["total_steps"])
    assert "restore" in [action for action, _, _ in rest]  # the checkpoint's snapshot was used
    assert first + rest == full


@pytest.mark.parametrize("stop", [25, 35])  # inside a trial (batches kept), in a replay
def test_a_ranks_rewindable_loader_is_checkpointed_in_its_own_file(tmp_path, stop):
    """Rewind mode with a RewindableLoader: the loader's position and kept batches go into the
    rank's own file (each rank streams its own shard), not the shared one; the resumed copy
    hands out the same batches and continues exactly."""
    from adalrs_ray.ray_train import RANK_FILE, SHARED_FILE, AdaLRSTrainContext
    from adalrs_ray.torch_binding import AdaLRSScheduler, RewindableLoader
    from tests.test_torch_binding import ScriptedController

    script = {20: ("snapshot", 2.0), 30: ("restore", 0.5), 50: ("snapshot", 0.5)}
    script[60] = ("restore", 0.25)

    def build():
        torch.manual_seed(0)
        model = _Net()
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
        data = RewindableLoader([_data(i, 0) for i in range(ADALRS["total_steps"])])
        ctl = ScriptedController(script, mode="rewind")
        sched = AdaLRSScheduler(opt, ctl, model=model, data=data)
        ctx = AdaLRSTrainContext(sched, model=model, optimizer=opt, report_every=4)
        return model, opt, ctx, iter(data)

    def run(model, opt, ctx, batches, calls):
        trace = []
        while ctx.next_step < ADALRS["total_steps"] and len(trace) < calls:
            x, y = next(batches)
            loss = ((model(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            d = ctx.step(loss)
            trace.append((d.action.value, d.scale, float(x[0, 0]), _state_hash(model, opt)))
        return trace

    full = run(*build(), 10**6)
    assert len(full) == ADALRS["total_steps"] + 20  # the two rewinds' steps ran again
    b = build()
    first = run(*b, stop)
    b[2].save_checkpoint(tmp_path)
    own = torch.load(tmp_path / RANK_FILE.format(rank=0), weights_only=True)
    shared = torch.load(tmp_path / SHARED_FILE, weights_only=True)
    assert own["data"]["buffer"] and "data" not in shared["scheduler"]
    c = build()
    c[2].load_checkpoint(tmp_path)
    assert first + run(*c, 10**6) == full


def test_checkpoint_of_another_world_size_is_refused(tmp_path):
    from adalrs_ray.ray_train import SHARED_FILE

    _, _, ctx = _build_local()
    ctx.save_checkpoint(tmp_path)
    shared = torch.load(tmp_path / SHARED_FILE, weights_only=True)
    torch.save(dict(shared, world_size=2), tmp_path / SHARED_FILE)
    with pytest.raises(ValueError, match="written by 2 workers but this run has 1"):
        _build_local()[2].load_checkpoint(tmp_path)
