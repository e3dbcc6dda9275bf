"""AdaLRSTrial, the trial helper around a user's own PyTorch loop (issue 14 item 1): the LR it
applies, resuming from its checkpoints (PBT's LR included), what it reports, bad input. Runs
outside Ray through its ``report`` argument; the example test runs it in a real comparison."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from adalrs_ray.comparison import AdaLRSTrial
from adalrs_ray.comparison.trial import CHECKPOINT_FILE
from adalrs_ray.torch_binding import base_schedule_lambda

ADALRS = {"window": 4}  # search in [6, 24) of 60 steps: trials happen


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(16, 4, generator=g)
    return x, x.sum(dim=1, keepdim=True).sin()


class Recorder:
    """The ``report`` callable: keeps every report and a copy of every checkpoint."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.reports: list[dict] = []
        self.checkpoints: dict[int, Path] = {}

    def __call__(self, metrics: dict, checkpoint_dir: str | None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir is not None:
            dst = self.root / f"ckpt_{metrics['step']}"
            shutil.copytree(checkpoint_dir, dst)
            self.checkpoints[metrics["step"]] = dst


def run(trial: AdaLRSTrial, model, opt, stop_after: int | None = None) -> list[float]:
    """The user's loop; returns the LR every optimizer step used (seen by a later hook)."""
    used: list[float] = []
    hook = opt.register_step_pre_hook(lambda o, a, k: used.append(o.param_groups[0]["lr"]))
    try:
        for step in trial.steps():
            x, y = batch(step)
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            trial.step(loss)
            if stop_after is not None and step == stop_after:
                break
    finally:
        hook.remove()
    return used


def config(**kw) -> dict:
    return {"lr": 0.05, "total_steps": 60, "report_every": 10, "adalrs": None, **kw}


@pytest.mark.parametrize("adalrs", [None, ADALRS], ids=["plain", "adalrs"])
@pytest.mark.parametrize("schedule", [None, "cosine"])
def test_lr_applied_is_base_times_schedule_times_scale(tmp_path, adalrs, schedule):
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=123.0)  # only the trial's lr counts
    trial = AdaLRSTrial(
        config(lr=0.05, adalrs=adalrs), model, opt, schedule=schedule, report=Recorder(tmp_path)
    )
    factor = base_schedule_lambda("cosine", 60) if schedule else (lambda t: 1.0)
    expected, used = [], []
    hook = opt.register_step_pre_hook(lambda o, a, k: used.append(o.param_groups[0]["lr"]))
    for step in trial.steps():
        expected.append(0.05 * factor(step) * trial.scale)
        x, y = batch(step)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        trial.step(loss)
    hook.remove()
    assert len(used) == 60
    assert used == pytest.approx(expected, rel=1e-12)
    scales = {round(u / (0.05 * factor(t)), 9) for t, u in enumerate(used) if factor(t) > 0}
    if adalrs is None:
        assert scales == {1.0}
    else:
        assert len(scales) > 1  # AdaLRS moved the multiplier


def test_param_group_ratios_are_kept(tmp_path):
    model = make_model()
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 1.0},
            {"params": model[2].parameters(), "lr": 0.1},
        ]
    )
    trial = AdaLRSTrial(config(lr=0.02), model, opt, report=Recorder(tmp_path))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.02, 0.002])
    run(trial, model, opt, stop_after=3)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.02, 0.002])


def _state(model, opt) -> list[torch.Tensor]:
    tensors = [t.detach().clone() for t in model.state_dict().values()]
    for s in opt.state.values():
        tensors += [v.clone() for v in s.values() if isinstance(v, torch.Tensor)]
    return tensors


@pytest.mark.parametrize("adalrs", [None, ADALRS], ids=["plain", "adalrs"])
def test_resume_matches_the_uninterrupted_run(tmp_path, adalrs):
    """Stopped after the report of step 19 (AdaLRS mid-search) and resumed from its checkpoint in
    a fresh process-like setting (another init): same LRs, same weights, same decisions."""
    ref = Recorder(tmp_path / "ref")
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    trial = AdaLRSTrial(config(adalrs=adalrs), model, opt, schedule="cosine", report=ref)
    lrs_ref = run(trial, model, opt)
    final_ref = _state(model, opt)

    first = Recorder(tmp_path / "first")
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    trial = AdaLRSTrial(config(adalrs=adalrs), model, opt, schedule="cosine", report=first)
    lrs = run(trial, model, opt, stop_after=19)
    at_19 = _state(model, opt)
    controller_19 = trial.controller.state_dict()
    trial.close()

    second = Recorder(tmp_path / "second")
    model = make_model(seed=7)  # other weights: all must come from the checkpoint
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    trial = AdaLRSTrial(
        config(adalrs=adalrs),
        model,
        opt,
        schedule="cosine",
        report=second,
        checkpoint=str(first.checkpoints[19]),
    )
    assert trial.next_step == 20
    assert all(torch.equal(a, b) for a, b in zip(_state(model, opt), at_19))
    assert trial.controller.state_dict() == controller_19
    lrs += run(trial, model, opt)
    assert lrs == lrs_ref
    assert all(torch.equal(a, b) for a, b in zip(_state(model, opt), final_ref))
    assert [r["step"] for r in second.reports] == [29, 39, 49, 59]
    assert [r["val_loss"] for r in second.reports] == [r["val_loss"] for r in ref.reports[2:]]
    assert [r["adalrs_events"] for r in first.reports + second.reports] == [
        r["adalrs_events"] for r in ref.reports
    ]


def test_pbt_lr_survives_the_optimizer_load(tmp_path):
    """PBT copies a donor's checkpoint and gives the trial a new lr: after the optimizer's state
    (which holds the donor's LR) is loaded, the new lr is the one every step uses."""
    rec = Recorder(tmp_path)
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    trial = AdaLRSTrial(config(lr=0.01), model, opt, schedule="cosine", report=rec)
    run(trial, model, opt, stop_after=29)
    donor_opt = opt.state_dict()
    assert donor_opt["param_groups"][0]["lr"] == pytest.approx(
        0.01 * base_schedule_lambda("cosine", 60)(30)
    )

    model = make_model(seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    trial = AdaLRSTrial(
        config(lr=0.03), model, opt, schedule="cosine", report=rec, checkpoint=rec.checkpoints[29]
    )
    # the optimizer's moments are the donor's, its LR is the mutated one
    for a, b in zip(opt.state_dict()["state"].values(), donor_opt["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
    factor = base_schedule_lambda("cosine", 60)
    used = run(trial, model, opt)
    assert used == pytest.approx([0.03 * factor(t) for t in range(30, 60)], rel=1e-12)
    assert rec.reports[-1]["lr"] == pytest.approx(0.03 * factor(59), rel=1e-12)


def test_adalrs_refuses_a_changed_lr_and_a_mismatched_checkpoint(tmp_path):
    rec = Recorder(tmp_path)
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    trial = AdaLRSTrial(config(adalrs=ADALRS), model, opt, report=rec)
    run(trial, model, opt, stop_after=9)
    ckpt = rec.checkpoints[9]
    assert (ckpt / CHECKPOINT_FILE).is_file()
    with pytest.raises(ValueError, match="lr is 0.1, the checkpoint's 0.05"):
        AdaLRSTrial(config(lr=0.1, adalrs=ADALRS), make_model(), _adamw(), checkpoint=ckpt)
    with pytest.raises(ValueError, match="AdaLRS on, but this trial's adalrs is None"):
        AdaLRSTrial(config(), make_model(), _adamw(), checkpoint=ckpt)
    from ray import tune

    resumed = AdaLRSTrial(  # a Ray checkpoint (os.PathLike, but only as_directory() works)
        config(adalrs=ADALRS), make_model(), _adamw(), checkpoint=tune.Checkpoint(str(ckpt))
    )
    assert resumed.next_step == 10
    with pytest.raises(ValueError, match="holds no adalrs_trial.pt"):
        AdaLRSTrial(config(), make_model(), _adamw(), checkpoint=tmp_path)


def _adamw(model=None) -> torch.optim.Optimizer:
    model = model or make_model()
    return torch.optim.AdamW(model.parameters(), lr=0.05)


def test_reports_carry_compute_increments_events_and_a_checkpoint(tmp_path):
    rec = Recorder(tmp_path)
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)

    def evaluate():
        x, y = batch(-1)
        with torch.no_grad():
            return {"val_loss": float(torch.nn.functional.mse_loss(model(x), y)), "acc": 1.0}

    trial = AdaLRSTrial(
        config(total_steps=55, adalrs=ADALRS),
        model,
        opt,
        evaluate=evaluate,
        tokens_per_step=16,
        report=rec,
    )
    run(trial, model, opt)
    steps = [r["step"] for r in rec.reports]
    assert steps == [9, 19, 29, 39, 49, 54]  # every report_every steps and after the last
    assert [r["steps_done"] for r in rec.reports] == [10, 10, 10, 10, 10, 5]
    assert [r["tokens_done"] for r in rec.reports] == [160, 160, 160, 160, 160, 80]
    assert all(r["worker_s_done"] > 0 for r in rec.reports)
    assert sorted(rec.checkpoints) == steps
    events = [e for r in rec.reports for e in json.loads(r["adalrs_events"])]
    kinds = {e["kind"] for e in events}
    assert {"search_start", "search_end"} <= kinds and len(kinds) >= 3
    for r in rec.reports:
        assert set(r) >= {"step", "loss", "val_loss", "lr", "scale", "adalrs_events", "acc"}
        assert math.isfinite(r["loss"]) and r["val_loss"] != r["loss"]
    assert {r["scale"] for r in rec.reports} != {1.0}


def test_val_loss_defaults_to_the_window_training_loss(tmp_path):
    rec = Recorder(tmp_path)
    model = make_model()
    opt = _adamw(model)
    trial = AdaLRSTrial(config(total_steps=20), model, opt, evaluate=None, report=rec)
    run(trial, model, opt)
    assert [r["val_loss"] for r in rec.reports] == [r["loss"] for r in rec.reports]
    assert json.loads(rec.reports[0]["adalrs_events"]) == []
    assert {r["scale"] for r in rec.reports} == {1.0}


def test_a_loop_that_forgets_step_raises(tmp_path):
    model = make_model()
    trial = AdaLRSTrial(config(), model, _adamw(model), report=Recorder(tmp_path))
    with pytest.raises(RuntimeError, match="did not call trial.step"):
        for _ in trial.steps():
            pass


@pytest.mark.parametrize(
    "change, match",
    [
        ({"lr": None}, "lr is None"),
        ({"lr": 0.0}, r"lr is 0.0, but must be a finite number in \(0"),
        ({"lr": float("nan")}, "lr is nan"),
        ({"total_steps": 0}, "total_steps is 0, but must be an integer >= 1"),
        ({"total_steps": 10.5}, "total_steps is 10.5"),
        ({"report_every": 0}, "report_every is 0"),
        ({"report_every": 61}, "report_every is 61, but must be <= total_steps"),
        ({"adalrs": "on"}, "adalrs is 'on', but must be None or a mapping"),
        ({"adalrs": {"total_steps": 5}}, "adalrs must not set total_steps"),
        ({"adalrs": {"alpha": 0.5}}, "alpha"),
    ],
)
def test_bad_config_is_a_value_error(change, match):
    cfg = config(**change)
    with pytest.raises(ValueError, match=match):
        AdaLRSTrial(cfg, make_model(), _adamw(), report=lambda m, d: None)


def test_missing_config_key_and_bad_arguments_are_value_errors():
    cfg = config()
    del cfg["report_every"]
    ok = {"report": lambda m, d: None}
    with pytest.raises(ValueError, match="config has no 'report_every'"):
        AdaLRSTrial(cfg, make_model(), _adamw(), **ok)
    with pytest.raises(ValueError, match="model is a str"):
        AdaLRSTrial(config(), "net", _adamw(), **ok)
    with pytest.raises(ValueError, match="optimizer is a list"):
        AdaLRSTrial(config(), make_model(), [], **ok)
    with pytest.raises(ValueError, match="schedule 'linear'|must be one of"):
        AdaLRSTrial(config(), make_model(), _adamw(), schedule="linear", **ok)
    model = make_model()
    opt = _adamw(model)
    lambda_lr = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0)
    with pytest.raises(ValueError, match="pass its lr_lambda"):
        AdaLRSTrial(config(), model, opt, schedule=lambda_lr, **ok)
    with pytest.raises(ValueError, match="tokens_per_step is -1"):
        AdaLRSTrial(config(), make_model(), _adamw(), tokens_per_step=-1, **ok)
    with pytest.raises(ValueError, match="checkpoint is 3"):
        AdaLRSTrial(config(), make_model(), _adamw(), checkpoint=3, **ok)


# ------------------------------------------------------------------ in a TorchTrainer per trial
STEPS, EVERY = 24, 8  # 3 reports per trial


def _worker_loop(config: dict) -> None:
    """A user's loop in the workers of a TorchTrainer: DDP over 2 CPU workers, rank-local data."""
    import ray.train
    import ray.train.torch

    torch.set_num_threads(1)
    ctx = ray.train.get_context()
    model = ray.train.torch.prepare_model(make_model(), move_to_device=False)
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"])
    trial = AdaLRSTrial(config, model, opt, tokens_per_step=32)
    for step in trial.steps():
        x, y = batch(step * ctx.get_world_size() + ctx.get_world_rank())
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        trial.step(loss)


def _torchtrainer_trainable(config: dict) -> None:
    import os

    import ray.train

    from adalrs_ray.comparison.train_trial import run_train_trial

    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.1"  # Train forwards reports faster
    scaling = ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.2})
    run_train_trial(_worker_loop, config, scaling_config=scaling)


@pytest.fixture(scope="module")
def torchtrainer_comparison(ray_cluster, tmp_path_factory):
    """One Tuner, 3 trials of 2 Train workers running AdaLRSTrial: synchronous PBT (2 trials, the
    worse exploits the better after report 2 of 3) and AdaLRS (1 trial)."""
    import sys

    import ray.cloudpickle
    from ray import tune

    from adalrs_ray.comparison import AdaLRSComparison
    from adalrs_ray.comparison.train_trial import TrainPlacementGroupReaper
    from search_algos import get_arm

    module = sys.modules[__name__]
    ray.cloudpickle.register_pickle_by_value(module)  # tests/ is not importable by the workers
    arms = [
        get_arm("pbt", num_trials=2, perturbation_interval=2, synch=True, lrs=(1e-4, 3e-2)),
        get_arm(
            "adalrs",
            lrs=(1e-2,),
            adalrs={"window": 4, "start_ratio": 0.1, "end_ratio": 0.9, "ramp_steps": 2},
        ),
    ]
    sched = AdaLRSComparison(arms, total_steps=STEPS, report_every=EVERY)
    tuner = tune.Tuner(
        tune.with_resources(_torchtrainer_trainable, {"cpu": 0.1}),
        param_space=sched.param_space({}),
        tune_config=tune.TuneConfig(scheduler=sched, reuse_actors=True),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path_factory.mktemp("trial_tt")),
            name="cmp",
            verbose=0,
            callbacks=[TrainPlacementGroupReaper()],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        ),
    )
    try:
        results = tuner.fit()
    finally:
        ray.cloudpickle.unregister_pickle_by_value(module)
    return sched, results


@pytest.mark.ray
@pytest.mark.slow
def test_in_a_torchtrainer_per_trial_pbt_lr_survives_and_adalrs_decides(torchtrainer_comparison):
    sched, results = torchtrainer_comparison
    assert not results.errors
    rows = sched.results_table()
    assert len(rows) == 3 * STEPS // EVERY
    assert (rows["steps_done"] == EVERY).all() and (rows["worker_s_done"] > 0).all()
    assert (rows["tokens_done"] == EVERY * 32).all()
    # PBT's exploit: the donor's checkpoint, restored in both workers, then the explored LR
    (event,) = sched.exploit_log()
    mine = rows[rows["trial_id"] == event["trial_id"]]
    after = mine[mine["restart_kind"] == "exploit"].iloc[0]
    assert after["step"] == STEPS - 1 and after["steps_done"] == EVERY
    assert after["lr"] == pytest.approx(event["lr_after"], rel=1e-12) != event["lr_before"]
    # AdaLRS in the workers, on the loss averaged over both ranks
    ada = rows[rows["arm"] == "adalrs"]
    kinds = {e["kind"] for cell in ada["adalrs_events"] for e in json.loads(cell)}
    assert {"search_start", "trial_start"} <= kinds
    table = sched.compute_table().set_index("arm")
    assert table.loc["pbt", "steps"] == 2 * STEPS and table.loc["pbt", "exploits"] == 1


class Reports:
    """The ``report`` callable for runs whose steps repeat (a rewind): every report and a copy
    of its checkpoint, in order."""

    def __init__(self, root: Path) -> None:
        self.root, self.reports, self.checkpoints = root, [], []

    def __call__(self, metrics: dict, checkpoint_dir: str | None) -> None:
        self.reports.append(dict(metrics))
        dst = self.root / f"report_{len(self.reports)}"
        shutil.copytree(checkpoint_dir, dst)
        self.checkpoints.append(dst)


def _run_batches(trial, model, opt, stop_after_reports=None, reports=None):
    used = []
    hook = opt.register_step_pre_hook(lambda o, a, k: used.append(o.param_groups[0]["lr"]))
    try:
        for _, (x, y) in trial.batches():
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            trial.step(loss)
            if stop_after_reports is not None and len(reports.reports) == stop_after_reports:
                break
    finally:
        hook.remove()
    return used


def test_data_gives_the_rewinding_default_and_trains_as_a_loop_indexed_by_step(tmp_path):
    """``data=loader`` and ``rewinds=True`` (data indexed by step) both run AdaLRS's default in
    rewind mode and train alike; a run resumed from a checkpoint taken after a rewind ends with
    the same weights."""
    cfg = config(adalrs={"window": 4, "end_ratio": 0.9})
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    indexed = AdaLRSTrial(cfg, model, opt, rewinds=True, report=Reports(tmp_path / "i"))
    assert indexed.controller.config.backtrack_mode == "rewind"
    lrs_indexed = run(indexed, model, opt)
    final_indexed = _state(model, opt)
    assert len(lrs_indexed) > 60  # the opening's multipliers were rewound

    data = [batch(i) for i in range(60)]
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    full = Reports(tmp_path / "f")
    streamed = AdaLRSTrial(cfg, model, opt, data=data, report=full)
    assert streamed.controller.config.backtrack_mode == "rewind"
    assert _run_batches(streamed, model, opt) == lrs_indexed
    assert all(torch.equal(a, b) for a, b in zip(_state(model, opt), final_indexed))

    # the default without data or rewinds: continue mode; without data, batches() refuses
    plain = AdaLRSTrial(cfg, make_model(), opt, report=Reports(tmp_path / "p"))
    assert plain.controller.config.backtrack_mode == "continue"
    with pytest.raises(ValueError, match="without data="):
        next(plain.batches())
    with pytest.raises(ValueError, match="rewinds is 1"):
        AdaLRSTrial(cfg, make_model(), opt, rewinds=1, report=Reports(tmp_path / "q"))

    # resumed from the checkpoint of the report after the first rewound step
    steps = [r["step"] for r in full.reports]
    k = next(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1]) + 1
    model = make_model(seed=7)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    again = AdaLRSTrial(
        cfg, model, opt, data=data, report=Reports(tmp_path / "r"),
        checkpoint=str(full.checkpoints[k - 1]),
    )  # fmt: skip
    _run_batches(again, model, opt)
    assert all(torch.equal(a, b) for a, b in zip(_state(model, opt), final_indexed))
