"""AdaLRSScheduler on a real 2-layer MLP with AdamW: LR = base(t) * scale, exact backtracking,
resume, robustness to optimizer.load_state_dict, validation."""

from __future__ import annotations

import copy
import io
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler

from adalrs_ray.core.controller import Action, AdaLRS, AdaLRSConfig, Decision
from adalrs_ray.torch_binding import (
    BASE_SCHEDULES,
    AdaLRSScheduler,
    base_schedule_lambda,
    get_base_schedule,
)
from adalrs_ray.torch_binding.snapshot import InMemorySnapshotStore, SnapshotMissingError

T = 24
LRS = (1e-2, 3e-3)  # two param groups with different peak LRs


class ScriptedController:
    """Stands in for AdaLRS: ``script[n] = (action, scale after)`` for the n-th observe call."""

    def __init__(self, script=None, mode="continue"):
        self.script = dict(script or {})
        self.config = SimpleNamespace(backtrack_mode=mode)
        self.scale = 1.0
        self.snapshot_step = None
        self.observed: list[tuple[int, float]] = []

    def observe(self, step, loss):
        n = len(self.observed)
        self.observed.append((step, loss))
        name, scale = self.script.get(n, ("continue", self.scale))
        action = Action[name.upper()]
        restore = self.snapshot_step if action is Action.RESTORE else None
        if action is Action.SNAPSHOT:
            self.snapshot_step = step
        self.scale = scale
        return Decision(action, scale, (), restore)

    def state_dict(self):
        return {
            "scale": self.scale,
            "snapshot_step": self.snapshot_step,
            "observed": list(self.observed),
        }

    def load_state_dict(self, sd):
        self.scale = sd["scale"]
        self.snapshot_step = sd["snapshot_step"]
        self.observed = list(sd["observed"])


def make_model(seed: int = 0, optimizer: str = "adamw"):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    groups = [
        {"params": model[0].parameters(), "lr": LRS[0]},
        {"params": model[2].parameters(), "lr": LRS[1]},
    ]
    if optimizer == "adamw":
        opt = torch.optim.AdamW(groups, weight_decay=0.01)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(groups, momentum=0.9)
    else:  # keeps a Python int (`step`) in its state next to tensors
        from transformers.optimization import Adafactor

        opt = Adafactor(groups, scale_parameter=False, relative_step=False, warmup_init=False)
    return model, opt


def batch(step: int):
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(16, 4, generator=g)
    return x, x.sum(1, keepdim=True) + 0.1 * torch.randn(16, 1, generator=g)


def train_step(model, opt, step: int) -> torch.Tensor:
    x, y = batch(step)
    loss = (model(x) - y).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.detach()


def record_lrs(opt) -> list[list[float]]:
    """LRs each optimizer.step() actually uses (a pre-hook registered after the binding's)."""
    used: list[list[float]] = []
    opt.register_step_pre_hook(
        lambda o, a, k: used.append([float(g["lr"]) for g in o.param_groups])
    )
    return used


def opt_state(opt) -> dict:
    return copy.deepcopy(opt.state_dict()["state"])


def assert_model_equal(model, saved: dict):
    for name, t in model.state_dict().items():
        assert torch.equal(t, saved[name]), name


def assert_opt_state_equal(opt, saved: dict):
    live = opt.state_dict()["state"]
    assert live.keys() == saved.keys()
    for i in saved:
        assert live[i].keys() == saved[i].keys()
        for key, v in saved[i].items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(live[i][key], v), (i, key)
            else:
                assert type(live[i][key]) is type(v) and live[i][key] == v, (i, key)


# ----------------------------------------------------------------------------- base schedules

BASES = {
    "none": lambda opt: None,
    "constant_warmup": lambda opt: get_base_schedule("constant", opt, T, warmup_steps=3),
    "cosine": lambda opt: get_base_schedule("cosine", opt, T, warmup_steps=3),
    "cosine_min": lambda opt: get_base_schedule("cosine", opt, T, warmup_steps=3, min_lr_ratio=0.1),
    "wsd": lambda opt: get_base_schedule("wsd", opt, T, warmup_steps=3),
    "lambdalr": lambda opt: lr_scheduler.LambdaLR(opt, lambda t: 0.9**t),
    "cosine_annealing": lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=T, eta_min=1e-4),
    "exponential": lambda opt: lr_scheduler.ExponentialLR(opt, gamma=0.9),
    "sequential": lambda opt: lr_scheduler.SequentialLR(
        opt,
        [lr_scheduler.LinearLR(opt, 0.1, total_iters=4), lr_scheduler.ExponentialLR(opt, 0.9)],
        milestones=[4],
    ),
    "callable": lambda opt: lambda t: 1.0 / (1 + t),
}


def reference_base_lrs(name: str, steps: int) -> list[list[float]]:
    """base_lr_g(t) for t < steps, from the same schedule stepped by plain torch (no AdaLRS)."""
    _, opt = make_model()
    base = BASES[name](opt)
    out = []
    for t in range(steps):
        if base is None:
            out.append(list(LRS))
        elif callable(base) and not isinstance(base, lr_scheduler.LRScheduler):
            out.append([lr * base(t) for lr in LRS])
        else:
            out.append([float(g["lr"]) for g in opt.param_groups])
            opt.step()  # no grads: a no-op that keeps torch's call-order check quiet
            base.step()
    return out


SCALE_SCRIPT = {5: ("continue", 3.0), 9: ("continue", 1.7), 15: ("continue", 0.5)}


@pytest.mark.parametrize("name", sorted(BASES))
def test_lr_is_base_times_scale_at_every_step(name):
    model, opt = make_model()
    ctl = ScriptedController(SCALE_SCRIPT)
    sched = AdaLRSScheduler(opt, ctl, BASES[name](opt), model=model)
    used = record_lrs(opt)
    scales = []
    for t in range(T):
        scales.append(sched.scale)
        assert sched.lr == pytest.approx([b * sched.scale for b in sched.base_lrs], rel=1e-12)
        sched.step(train_step(model, opt, t))
    ref = reference_base_lrs(name, T)
    assert len(used) == T
    for t in range(T):
        assert used[t] == pytest.approx([b * scales[t] for b in ref[t]], rel=1e-12, abs=0), t
    assert sorted(set(scales)) == [0.5, 1.0, 1.7, 3.0]


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("constant", {"warmup_steps": 4}, lambda t: min(1.0, t / 4)),
        (
            "cosine",
            {"warmup_steps": 10},
            lambda t: t / 10 if t < 10 else 0.5 * (1 + math.cos(math.pi * (t - 10) / 90)),
        ),
        (
            "cosine",
            {"min_lr_ratio": 0.2},
            lambda t: 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * t / 100)),
        ),
        (
            "wsd",
            {"warmup_steps": 5},
            lambda t: t / 5 if t < 5 else (1.0 if t < 90 else 1 - (t - 90) / 10),
        ),
        (
            "wsd",
            {"decay_ratio": 0.2, "min_lr_ratio": 0.1},
            lambda t: 1.0 if t < 80 else 0.1 + 0.9 * (1 - (t - 80) / 20),
        ),
    ],
)
def test_named_schedules_match_their_formulas(name, kwargs, expected):
    f = base_schedule_lambda(name, 100, **kwargs)
    for t in range(100):
        assert f(t) == pytest.approx(expected(t), abs=1e-12), t


def test_schedule_registry_names():
    assert sorted(BASE_SCHEDULES) == ["constant", "cosine", "wsd"]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("linear", 10), {}, "`name` is 'linear'"),
        (("cosine", 0), {}, "`total_steps` is 0"),
        (("cosine", 10), {"warmup_steps": 10}, "`warmup_steps` is 10"),
        (("cosine", 10), {"warmup_steps": -1}, "`warmup_steps` is -1"),
        (("cosine", 10), {"decay_ratio": 0.1}, r"unexpected options \['decay_ratio'\]"),
        (("constant", 10), {"min_lr_ratio": 0.1}, r"unexpected options \['min_lr_ratio'\]"),
        (("wsd", 10), {"decay_ratio": 0.0}, "`decay_ratio` is 0.0"),
        (("wsd", 10), {"decay_ratio": 0.5, "warmup_steps": 6}, "must be <= total_steps"),
        (("cosine", 10), {"min_lr_ratio": 1.0}, "`min_lr_ratio` is 1.0"),
        (("cosine", 10), {"min_lr_ratio": float("nan")}, "`min_lr_ratio` is nan"),
    ],
)
def test_get_base_schedule_rejects_bad_input(args, kwargs, message):
    _, opt = make_model()
    name, total = args
    with pytest.raises(ValueError, match=message):
        get_base_schedule(name, opt, total, **kwargs)


def test_tensor_lr_stays_a_tensor():
    model, _ = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=torch.tensor(1e-2), foreach=False)
    sched = AdaLRSScheduler(opt, ScriptedController({0: ("continue", 2.0)}), model=model)
    sched.step(train_step(model, opt, 0))
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(2e-2)


def test_callable_base_returning_nan_is_rejected():
    _, opt = make_model()
    with pytest.raises(ValueError, match="`base` returned nan for step 0"):
        AdaLRSScheduler(opt, ScriptedController(), lambda t: float("nan"))


# ----------------------------------------------------------------------------- restore


def run_with_snapshot(script, mode="continue", base="cosine", steps=12, model_kw=True, **kw):
    """Train ``steps`` steps; return (model, opt, sched, saved model state, saved opt state)."""
    model, opt = make_model(**kw)
    ctl = ScriptedController(script, mode)
    sched = AdaLRSScheduler(opt, ctl, BASES[base](opt), model=model if model_kw else None)
    saved = {}
    for _ in range(steps):
        d = sched.step(train_step(model, opt, sched.last_step + 1))
        if d.action is Action.SNAPSHOT:
            saved = {"model": copy.deepcopy(model.state_dict()), "opt": opt_state(opt)}
    return model, opt, sched, saved


@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "adafactor"])
def test_restore_brings_back_the_snapshot_exactly(optimizer):
    script = {3: ("snapshot", 3.0), 7: ("restore", 1.5)}
    model, opt, sched, saved = run_with_snapshot(script, steps=8, optimizer=optimizer)
    assert_model_equal(model, saved["model"])
    assert_opt_state_equal(opt, saved["opt"])


def test_restore_writes_in_place_and_does_not_alias_the_store():
    script = {3: ("snapshot", 3.0), 7: ("restore", 1.5), 11: ("restore", 1.0)}
    model, opt = make_model()
    ptrs = [p.data_ptr() for p in model.parameters()]
    sched = AdaLRSScheduler(opt, ScriptedController(script), model=model)
    saved = None
    for t in range(12):
        d = sched.step(train_step(model, opt, t))
        if t == 3:
            saved = copy.deepcopy(model.state_dict()), opt_state(opt)
        if t == 7:  # training after the first restore must not leak into the snapshot
            assert d.action is Action.RESTORE
            assert [p.data_ptr() for p in model.parameters()] == ptrs
    assert_model_equal(model, saved[0])  # second restore, after 3 more training steps
    assert_opt_state_equal(opt, saved[1])


def test_restore_without_model_restores_the_optimizer_params():
    script = {2: ("snapshot", 2.0), 6: ("restore", 1.0)}
    model, opt, sched, saved = run_with_snapshot(script, steps=7, model_kw=False)
    assert_model_equal(model, saved["model"])
    assert_opt_state_equal(opt, saved["opt"])


def test_tied_weights_are_snapshotted_once_and_restored():
    torch.manual_seed(0)
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    store = InMemorySnapshotStore()
    sched = AdaLRSScheduler(
        opt,
        ScriptedController({1: ("snapshot", 1.0), 3: ("restore", 1.0)}),
        model=model,
        store=store,
    )
    saved = None
    for t in range(4):
        logits = model["head"](model["emb"](torch.arange(10)))
        loss = nn.functional.cross_entropy(logits, torch.arange(10))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step(loss.detach())
        if t == 1:
            saved = emb.weight.detach().clone()
            # weight, exp_avg, exp_avg_sq, step: the tied matrix is held once
            assert len(store.load()[1]) == 4
    assert torch.equal(emb.weight.detach(), saved)
    assert model["head"].weight is emb.weight


def test_restore_falls_back_to_load_state_dict_when_optimizer_state_was_empty():
    model, opt = make_model()
    sched = AdaLRSScheduler(
        opt, ScriptedController({0: ("snapshot", 1.0), 4: ("restore", 1.0)}), model=model
    )
    params0 = copy.deepcopy(model.state_dict())
    sched.step(1.0)  # step 0 skipped its optimizer.step (e.g. an inf-grad AMP step)
    for t in range(1, 5):
        sched.step(train_step(model, opt, t))
    assert_model_equal(model, params0)
    assert all(not s for s in opt.state.values())
    train_step(model, opt, 5)  # AdamW re-creates its state from scratch
    assert all(s["step"].item() == 1 for s in opt.state.values())


def test_restore_falls_back_to_load_state_dict_when_optimizer_state_was_reset():
    model, opt = make_model()
    sched = AdaLRSScheduler(
        opt, ScriptedController({2: ("snapshot", 1.0), 5: ("restore", 1.0)}), model=model
    )
    saved = None
    for t in range(6):
        loss = train_step(model, opt, t)
        if t == 5:
            opt.state.clear()  # the user reset the optimizer state mid-trial
        sched.step(loss)
        if t == 2:
            saved = copy.deepcopy(model.state_dict()), opt_state(opt)
    assert_model_equal(model, saved[0])
    assert_opt_state_equal(opt, saved[1])


def test_restore_from_a_snapshot_another_binding_saved_is_in_place():
    store = InMemorySnapshotStore()
    model, opt = make_model()
    first = AdaLRSScheduler(
        opt, ScriptedController({1: ("snapshot", 1.0)}), model=model, store=store
    )
    for t in range(2):
        first.step(train_step(model, opt, t))
    first.close()
    saved = copy.deepcopy(model.state_dict()), opt_state(opt)
    train_step(model, opt, 2)
    moments = [s["exp_avg"] for s in opt.state.values()]
    second = AdaLRSScheduler(
        opt, ScriptedController({0: ("restore", 1.0)}), model=model, store=store
    )
    second.step(0.5)
    assert_model_equal(model, saved[0])
    assert_opt_state_equal(opt, saved[1])
    assert all(s["exp_avg"] is m for s, m in zip(opt.state.values(), moments))


@pytest.fixture
def one_rank_mesh(tmp_path):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialised")
    from torch.distributed.device_mesh import DeviceMesh

    store = dist.FileStore(str(tmp_path / "pg"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield DeviceMesh("cpu", [0])
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("reset_state", [False, True])
def test_dtensor_model_is_restored_in_place(one_rank_mesh, reset_state):
    """FSDP2/TP parameters are DTensors: the binding snapshots and restores their local shards
    (and rebuilds DTensor optimizer state when it must fall back to load_state_dict)."""
    from torch.distributed.tensor import DTensor, Replicate, distribute_module, distribute_tensor

    model, _ = make_model()
    model = distribute_module(model, one_rank_mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = AdaLRSScheduler(
        opt, ScriptedController({1: ("snapshot", 1.0), 3: ("restore", 1.0)}), model=model
    )
    saved = moments = None
    for t in range(4):
        x, y = batch(t)
        out = model(distribute_tensor(x, one_rank_mesh, [Replicate()])).full_tensor()
        loss = (out - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if t == 3 and reset_state:
            opt.state.clear()  # restore must rebuild the DTensor state via load_state_dict
        sched.step(loss.detach())
        if t == 1:
            saved = {n: p.full_tensor().clone() for n, p in model.named_parameters()}
            moments = {
                n: opt.state[p]["exp_avg"].full_tensor().clone()
                for n, p in model.named_parameters()
            }
    for n, p in model.named_parameters():
        assert isinstance(p, DTensor)
        assert torch.equal(p.full_tensor(), saved[n]), n
        assert isinstance(opt.state[p]["exp_avg"], DTensor)
        assert torch.equal(opt.state[p]["exp_avg"].full_tensor(), moments[n]), n


def test_continue_mode_moves_step_counter_schedule_and_rng_on():
    script = {3: ("snapshot", 3.0), 7: ("restore", 1.5)}
    model, opt, sched, _ = run_with_snapshot(script, steps=8, base="cosine")
    assert sched.last_step == 7
    ref = reference_base_lrs("cosine", 9)
    assert sched.lr == pytest.approx([b * 1.5 for b in ref[8]], rel=1e-12)
    assert [s for s, _ in sched.controller.observed] == list(range(8))


def test_rewind_mode_restores_schedule_rng_and_step_counter():
    model, opt = make_model()
    ctl = ScriptedController({3: ("snapshot", 3.0), 7: ("restore", 1.5)}, mode="rewind")
    sched = AdaLRSScheduler(opt, ctl, get_base_schedule("cosine", opt, T, warmup_steps=3))
    rng_after_snapshot = None
    for _ in range(8):
        loss = train_step(model, opt, sched.last_step + 1)
        torch.rand(3), random.random(), np.random.rand()  # randomness of a step (dropout, ...)
        d = sched.step(loss)
        if d.action is Action.SNAPSHOT:
            rng_after_snapshot = (
                torch.get_rng_state(),
                random.getstate(),
                np.random.get_state()[1].copy(),
            )
    assert d.action is Action.RESTORE
    assert sched.last_step == 3
    assert torch.equal(torch.get_rng_state(), rng_after_snapshot[0])
    assert random.getstate() == rng_after_snapshot[1]
    assert np.array_equal(np.random.get_state()[1], rng_after_snapshot[2])
    ref = reference_base_lrs("cosine", 5)
    assert sched.lr == pytest.approx([b * 1.5 for b in ref[4]], rel=1e-12)
    sched.step(train_step(model, opt, sched.last_step + 1))
    assert ctl.observed[-1][0] == 4


def test_restore_without_snapshot_raises_snapshot_missing():
    store = InMemorySnapshotStore()
    model, opt = make_model()
    sched = AdaLRSScheduler(
        opt,
        ScriptedController({1: ("snapshot", 1.0), 3: ("restore", 1.0)}),
        model=model,
        store=store,
    )
    for t in range(3):
        sched.step(train_step(model, opt, t))
    store.clear()  # the store lost it
    with pytest.raises(SnapshotMissingError, match="holds no snapshot: it was cleared or lost"):
        sched.step(train_step(model, opt, 3))


def test_restore_of_an_other_step_than_the_store_holds_raises():
    class Liar(ScriptedController):
        def observe(self, step, loss):
            d = super().observe(step, loss)
            return Decision(d.action, d.scale, (), 0) if d.action is Action.RESTORE else d

    model, opt = make_model()
    sched = AdaLRSScheduler(opt, Liar({2: ("snapshot", 1.0), 4: ("restore", 1.0)}), model=model)
    for t in range(4):
        sched.step(train_step(model, opt, t))
    with pytest.raises(SnapshotMissingError, match="snapshot of step 0 is lost"):
        sched.step(train_step(model, opt, 4))


# ----------------------------------------------------------------------------- AMP scaler


def test_grad_scaler_state_is_restored():
    model, opt = make_model()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)
    sched = AdaLRSScheduler(
        opt,
        ScriptedController({1: ("snapshot", 1.0), 3: ("restore", 1.0)}),
        model=model,
        scaler=scaler,
    )
    saved = None
    for t in range(4):
        x, y = batch(t)
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()  # growth_interval=1: the scale doubles every clean step
        d = sched.step(loss.detach())
        if t == 1:
            saved = scaler.state_dict()
    assert d.action is Action.RESTORE
    assert scaler.state_dict() == saved
    assert scaler.get_scale() == saved["scale"] != 1024.0 * 16


def test_disabled_grad_scaler_is_accepted():
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    model, opt, sched, saved = run_with_snapshot(
        {1: ("snapshot", 1.0), 3: ("restore", 1.0)}, steps=4
    )
    sched2 = AdaLRSScheduler(
        opt,
        ScriptedController({0: ("snapshot", 1.0), 1: ("restore", 1.0)}),
        model=model,
        scaler=scaler,
    )
    sched2.step(train_step(model, opt, 0))
    sched2.step(train_step(model, opt, 1))
    assert scaler.state_dict() == {}


# ----------------------------------------------------------------------------- load_state_dict


@pytest.mark.parametrize("name", ["cosine", "cosine_annealing", "callable"])
def test_multiplier_survives_optimizer_load_state_dict(name):
    model, opt = make_model()
    sched = AdaLRSScheduler(opt, ScriptedController({2: ("continue", 3.0)}), BASES[name](opt))
    used = record_lrs(opt)
    early = copy.deepcopy(opt.state_dict())  # holds the LRs of step 1, scale 1
    for t in range(6):
        sched.step(train_step(model, opt, t))
    opt.load_state_dict(early)  # brings back the old lr (pytorch#65342)
    expected = sched.lr
    for t in range(6, 10):
        sched.step(train_step(model, opt, t))
    ref = reference_base_lrs(name, 10)
    assert used[6] == pytest.approx(expected, rel=1e-12)
    for t in range(6, 10):
        assert used[t] == pytest.approx([b * 3.0 for b in ref[t]], rel=1e-12), t


@pytest.mark.parametrize("mode", ["continue", "rewind"])
@pytest.mark.parametrize("stop", [2, 5, 9])  # before, inside and after the trial
def test_resume_gives_the_same_trajectory_as_an_uninterrupted_run(mode, stop):
    script = {3: ("snapshot", 3.0), 6: ("continue", 2.0), 8: ("restore", 1.5)}
    n_calls = 16

    def fresh():
        model, opt = make_model()
        base = get_base_schedule("wsd", opt, T, warmup_steps=2)
        ctl = ScriptedController(script, mode)
        return model, opt, AdaLRSScheduler(opt, ctl, base, model=model)

    def run(model, opt, sched, calls, used):
        for _ in range(calls):
            sched.step(train_step(model, opt, sched.last_step + 1))
            used.append(sched.lr)

    model, opt, sched = fresh()
    uninterrupted: list = []
    run(model, opt, sched, n_calls, uninterrupted)
    final = copy.deepcopy(model.state_dict())

    model, opt, sched = fresh()
    resumed: list = []
    run(model, opt, sched, stop, resumed)
    buf = io.BytesIO()
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf
    )
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    model, opt, sched = fresh()
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    sched.load_state_dict(ckpt["sched"])
    assert sched.store.has_snapshot() == (stop > 3)
    run(model, opt, sched, n_calls - stop, resumed)

    assert resumed == uninterrupted  # bit for bit
    assert_model_equal(model, final)


def test_state_dict_without_snapshot_then_restore_raises():
    script = {1: ("snapshot", 3.0), 4: ("restore", 1.0)}
    model, opt, sched, _ = run_with_snapshot(script, steps=3)
    sd = sched.state_dict(include_snapshot=False)
    assert sd["snapshot"] is None
    sched.load_state_dict(sd)
    sched.step(train_step(model, opt, 3))
    with pytest.raises(SnapshotMissingError):
        sched.step(train_step(model, opt, 4))


@pytest.mark.parametrize("key", ["version", "last_step", "controller", "base", "snapshot"])
def test_load_state_dict_rejects_a_missing_key(key):
    _, opt = make_model()
    sched = AdaLRSScheduler(opt, ScriptedController())
    sd = sched.state_dict()
    del sd[key]
    with pytest.raises(ValueError, match=f"missing keys \\['{key}'\\]"):
        sched.load_state_dict(sd)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 99}, "`version` is 99"),
        ({"base_kind": "scheduler"}, "base schedule is of kind 'scheduler'"),
        ({"initial_lrs": [1.0]}, "checkpoint has 1 param groups but the optimizer has 2"),
        ({"last_step": -5}, "`last_step` is -5"),
    ],
)
def test_load_state_dict_rejects_a_bad_value(change, message):
    _, opt = make_model()
    sched = AdaLRSScheduler(opt, ScriptedController())
    sd = {**sched.state_dict(), **change}
    with pytest.raises(ValueError, match=message):
        sched.load_state_dict(sd)


# ----------------------------------------------------------------------------- validation


def _other_optimizer_scheduler(opt):
    _, other = make_model()
    return lr_scheduler.LambdaLR(other, lambda t: 1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimizer": "sgd"}, "`optimizer` must be a torch.optim.Optimizer; got str"),
        ({"controller": object()}, "object has no observe"),
        ({"base": _other_optimizer_scheduler}, "bound to another optimizer"),
        ({"base": lambda opt: "cosine"}, "`base` must be None, a torch LRScheduler or a callable"),
        (
            {"base": lambda opt: lr_scheduler.ReduceLROnPlateau(opt)},
            "ReduceLROnPlateau",
        ),
        ({"model": "mlp"}, "`model` must be a torch.nn.Module; got str"),
        ({"scaler": 3}, "`scaler` must be a GradScaler"),
        ({"store": {}}, "`store` must be a SnapshotStore; got dict"),
        ({"rng": 1}, "`rng` is 1"),
        ({"mode": "replay"}, "`controller.config.backtrack_mode` is 'replay'"),
    ],
)
def test_constructor_rejects_bad_input(kwargs, message):
    model, opt = make_model()
    args = {
        "optimizer": opt,
        "controller": ScriptedController(mode=kwargs.pop("mode", "continue")),
        "base": None,
    }
    if "base" in kwargs:
        kwargs["base"] = kwargs["base"](opt)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        AdaLRSScheduler(args.pop("optimizer"), args.pop("controller"), **args)


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        ("0.5", "got str: '0.5'"),
        (True, "got bool: True"),
        (torch.ones(2), r"tensor of shape \(2,\)"),
        (None, "got NoneType"),
    ],
)
def test_step_rejects_a_bad_loss(loss, message):
    _, opt = make_model()
    sched = AdaLRSScheduler(opt, ScriptedController())
    with pytest.raises(ValueError, match=message):
        sched.step(loss)


@pytest.mark.parametrize("loss", [float("nan"), float("inf"), torch.tensor(float("nan"))])
def test_non_finite_loss_is_passed_to_the_controller(loss):
    _, opt = make_model()
    ctl = ScriptedController()
    sched = AdaLRSScheduler(opt, ctl)
    sched.step(loss)
    assert not math.isfinite(ctl.observed[0][1])


def test_adding_a_param_group_after_construction_is_an_error():
    model, opt = make_model()
    sched = AdaLRSScheduler(opt, ScriptedController())
    opt.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "lr": 1.0})
    with pytest.raises(ValueError, match="3 param groups but AdaLRSScheduler was built for 2"):
        sched.step(0.1)


# ----------------------------------------------------------------------------- real controller


def test_with_the_real_controller_lr_and_backtracking_hold():
    """The real AdaLRS on a loss stream that punishes large LRs: every RESTORE brings back the
    state saved at its restore_step, and the LR is always base(t) * scale; the binding makes
    the same decisions as the bare controller fed the same losses."""
    from adalrs_ray.core.simulator import LossSimulator

    steps = 200
    model, opt = make_model()
    cfg = AdaLRSConfig(total_steps=steps, window=10, start_ratio=0.1, end_ratio=0.6)
    sched = AdaLRSScheduler(
        opt, AdaLRS(cfg), get_base_schedule("cosine", opt, steps, warmup_steps=10), model=model
    )
    sim = LossSimulator(lr_opt=LRS[0] * 1.2, rate=0.05, noise=0.002, diverge_ratio=2.0, seed=1)
    used = record_lrs(opt)
    snapshots, restores, losses, scales, bases = {}, 0, [], [], []
    for t in range(steps):
        scales.append(sched.scale)
        bases.append(sched.base_lrs)
        train_step(model, opt, t)
        loss = sim.step(used[-1][0])
        losses.append(loss)
        d = sched.step(loss)
        if d.action is Action.SNAPSHOT:
            snapshots[t] = (copy.deepcopy(model.state_dict()), opt_state(opt))
        elif d.action is Action.RESTORE:
            restores += 1
            assert_model_equal(model, snapshots[d.restore_step][0])
            assert_opt_state_equal(opt, snapshots[d.restore_step][1])
    assert restores >= 1
    for t in range(steps):
        assert used[t] == pytest.approx([b * scales[t] for b in bases[t]], rel=1e-12)

    bare = AdaLRS(cfg)
    bare_scales = []
    for t, loss in enumerate(losses):
        bare_scales.append(bare.scale)
        bare.observe(t, loss)
    assert bare_scales == scales
    assert bare.events == sched.controller.events


def test_with_the_real_controller_resume_mid_trial_matches_an_uninterrupted_run():
    from adalrs_ray.core.simulator import LossSimulator

    steps = 200
    cfg = AdaLRSConfig(total_steps=steps, window=10, start_ratio=0.1, end_ratio=0.6)

    def fresh():
        model, opt = make_model()
        base = get_base_schedule("wsd", opt, steps, warmup_steps=10)
        sched = AdaLRSScheduler(opt, AdaLRS(cfg), base, model=model)
        sim = LossSimulator(lr_opt=LRS[0] * 1.2, rate=0.05, noise=0.002, seed=1)
        return model, opt, sched, sim

    def run(model, opt, sched, sim, until, lrs, stop_in_trial=False):
        while sched.last_step + 1 < until:
            lrs.append(sched.lr)
            train_step(model, opt, sched.last_step + 1)
            sched.step(sim.step(lrs[-1][0]))
            if stop_in_trial and sched.controller.in_trial:
                return

    model, opt, sched, sim = fresh()
    uninterrupted: list = []
    run(model, opt, sched, sim, steps, uninterrupted)
    final = copy.deepcopy(model.state_dict())

    model, opt, sched, sim = fresh()
    resumed: list = []
    run(model, opt, sched, sim, steps, resumed, stop_in_trial=True)
    assert sched.controller.in_trial and sched.store.has_snapshot()
    buf = io.BytesIO()
    torch.save(
        {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "sim": sim.state_dict(),
        },
        buf,
    )
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    model, opt, sched, sim = fresh()
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    sched.load_state_dict(ckpt["sched"])
    sim.load_state_dict(ckpt["sim"])
    run(model, opt, sched, sim, steps, resumed)

    assert resumed == uninterrupted
    assert_model_equal(model, final)
