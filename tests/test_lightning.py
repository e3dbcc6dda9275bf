"""AdaLRS in Lightning (adalrs_ray.integrations.lightning) on a tiny MLP on CPU: LR = base x
scale at every optimizer step, exact backtracking, exact resume from a checkpoint taken inside
an LR trial, and one observation per optimizer step under accumulate_grad_batches."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

pytest.importorskip("lightning")
import lightning as L  # noqa: E402
from lightning.pytorch.callbacks import Callback, ModelCheckpoint  # noqa: E402

from adalrs_ray.core.controller import AdaLRS, AdaLRSConfig  # noqa: E402
from adalrs_ray.integrations.lightning import AdaLRSLightningCallback  # noqa: E402
from adalrs_ray.torch_binding import base_schedule_lambda  # noqa: E402
from tests.opening_events import assert_default_opening
from tests.test_torch_binding import ScriptedController  # noqa: E402

LR = 0.05
BATCHES = 8  # batches per epoch


class TinyModule(L.LightningModule):
    def __init__(self, steps: int, schedule: bool = True, seed: int = 0, by_step: bool = False):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
        self.steps, self.schedule, self.by_step = steps, schedule, by_step
        self.micro: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.by_step:
            # The batch is a function of the optimizer step: Lightning resumes a plain
            # DataLoader at the start of the epoch (and, from an epoch-end checkpoint, runs the
            # next epoch's first batch twice: seen with lightning 2.6), so data indexed by the
            # loader position would differ between a resumed and an uninterrupted run.
            g = torch.Generator().manual_seed(1000 + self.global_step)
            x = torch.randn(4, 4, generator=g)
            y = torch.sin(x.sum(-1)) + 0.1 * torch.randn(4, generator=g)
        loss = (self.net(x).squeeze(-1) - y).pow(2).mean()
        self.micro.append(float(loss.detach()))
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=LR, weight_decay=0.0)
        if not self.schedule:
            return opt
        from adalrs_ray.torch_binding import get_base_schedule

        sched = get_base_schedule("cosine", opt, self.steps, warmup_steps=3)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def rows() -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCHES * 4, 4, generator=g)
    y = torch.sin(x.sum(-1)) + 0.1 * torch.randn(len(x), generator=g)
    return torch.utils.data.TensorDataset(x, y)


def loader():
    return torch.utils.data.DataLoader(rows(), batch_size=4)


def make_trainer(tmp_path, callbacks, *, every=None, devices=1, **limits) -> L.Trainer:
    """A quiet CPU Trainer of ``devices`` processes (several: spawned DDP); ``every``: a
    checkpoint every that many optimizer steps; ``limits``: max_steps, max_epochs,
    accumulate_grad_batches."""
    if every:
        callbacks = [
            *callbacks,
            ModelCheckpoint(
                dirpath=tmp_path, every_n_train_steps=every, save_top_k=-1, filename="{step}"
            ),
        ]
    return L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        logger=False,
        enable_checkpointing=bool(every),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        callbacks=callbacks,
        **limits,
    )


class Recorder(Callback):
    """Per optimizer step: the scale and base LR before it (``scales``, ``bases``), model and
    optimizer state right after the optimizer step (``states``, an optimizer post hook) and
    after AdaLRS has acted on the step's loss (``after``: this callback runs after AdaLRS's)."""

    def __init__(self, adalrs):
        self.adalrs = adalrs
        self.scales, self.bases, self.states, self.after = [], [], [], []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.scales.append(self.adalrs.scheduler.scale)
        self.bases.append(self.adalrs.scheduler.base_lrs[0])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if len(self.after) < trainer.global_step:  # the optimizer stepped on this batch
            opt = trainer.optimizers[0]
            self.after.append(
                (copy.deepcopy(pl_module.state_dict()), copy.deepcopy(opt.state_dict()))
            )


def fit(tmp_path, controller, *, steps=24, accum=1, schedule=True, ckpt_path=None, every=None):
    cb = AdaLRSLightningCallback(controller)
    rec = Recorder(cb)
    # a rewinding run takes its batches from cb.wrap(loader), which resumes at its own
    # position; other runs index their data by the step (see TinyModule.training_step)
    module = TinyModule(steps, schedule, by_step=bool(every or ckpt_path) and not cb.rewinds)
    used = []
    trainer = make_trainer(
        tmp_path, [cb, rec], every=every, max_steps=steps, accumulate_grad_batches=accum
    )

    def record_lr(opt, args, kwargs):
        used.append(float(opt.param_groups[0]["lr"]))
        rec.states.append((copy.deepcopy(module.state_dict()), copy.deepcopy(opt.state_dict())))

    class HookOnStart(Callback):  # after AdaLRS's on_train_start: its hook runs first
        def on_train_start(self, trainer, pl_module):
            trainer.optimizers[0].register_step_post_hook(record_lr)

    trainer.callbacks.append(HookOnStart())
    data = cb.wrap(loader()) if cb.rewinds else loader()
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return trainer, module, cb, rec, used


def test_lr_is_the_modules_schedule_times_scale_at_every_optimizer_step(tmp_path):
    script = {4: ("snapshot", 2.0), 8: ("continue", 3.0), 12: ("continue", 0.5)}
    _, _, cb, rec, used = fit(tmp_path, ScriptedController(script))
    factor = base_schedule_lambda("cosine", 24, warmup_steps=3)
    base = [LR * factor(t) for t in range(24)]
    assert len(used) == 24
    assert rec.bases == pytest.approx(base, rel=1e-12)
    assert used == pytest.approx([b * s for b, s in zip(base, rec.scales)], rel=1e-12)
    assert sorted(set(rec.scales)) == [0.5, 1.0, 2.0, 3.0]


def test_without_a_scheduler_the_base_is_the_constant_lr(tmp_path):
    _, _, _, rec, used = fit(
        tmp_path, ScriptedController({2: ("continue", 2.0)}), steps=6, schedule=False
    )
    assert used == pytest.approx([LR * s for s in rec.scales], rel=1e-12)
    assert rec.scales == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]


def test_a_backtrack_restores_model_and_optimizer_exactly(tmp_path):
    script = {5: ("snapshot", 3.0), 11: ("restore", 0.5)}
    _, _, _, rec, _ = fit(tmp_path, ScriptedController(script), steps=16)
    snap_model, snap_opt = rec.states[5]  # right after optimizer step 5 (0-based)
    assert any(not torch.equal(rec.states[11][0][k], v) for k, v in snap_model.items())
    restored_model, restored_opt = rec.after[11]  # after AdaLRS acted on step 11's loss
    for k, v in snap_model.items():
        assert torch.equal(restored_model[k], v), k
    for pid, st in snap_opt["state"].items():
        for key, v in st.items():
            got = restored_opt["state"][pid][key]
            assert torch.equal(got, v) if isinstance(v, torch.Tensor) else got == v
    assert rec.scales[12] == 0.5


def small_config(steps: int) -> AdaLRSConfig:
    return AdaLRSConfig(total_steps=steps, window=3, start_ratio=0.1, end_ratio=0.9)


def test_resume_inside_an_lr_trial_makes_the_same_decisions(tmp_path):
    steps = 40
    full_trainer, full_module, cb_full, rec_full, used_full = fit(
        tmp_path / "full", AdaLRS(small_config(steps)), steps=steps, every=1
    )
    events = cb_full.controller.events
    assert any(e["kind"] == "trial_start" for e in events)
    mid = None
    for ckpt in sorted((tmp_path / "full").glob("*.ckpt"), key=lambda p: p.stat().st_mtime):
        state = torch.load(ckpt, weights_only=False)["callbacks"]
        sd = next(v for k, v in state.items() if "AdaLRSLightningCallback" in k)["adalrs"]
        ctl = AdaLRS(small_config(steps))
        ctl.load_state_dict(sd["controller"])
        if ctl.in_trial and sd["last_step"] + 1 < steps - 4:
            mid = (ckpt, sd["last_step"] + 1)
            break
    assert mid is not None, events
    ckpt, at = mid
    _, res_module, cb_res, rec_res, used_res = fit(
        tmp_path / "res", AdaLRS(small_config(steps)), steps=steps, ckpt_path=str(ckpt)
    )
    assert cb_res.controller.events == events
    assert used_res == used_full[at:]
    assert rec_res.scales == rec_full.scales[at:]
    for k, v in full_module.state_dict().items():
        assert torch.equal(res_module.state_dict()[k], v), k


@pytest.mark.parametrize("accum", [1, 3])
def test_one_observation_per_optimizer_step_with_the_mean_micro_batch_loss(tmp_path, accum):
    ctl = ScriptedController()
    _, module, _, _, _ = fit(tmp_path, ctl, steps=4, accum=accum)
    assert [s for s, _ in ctl.observed] == list(range(4))
    # BATCHES=8 per epoch: with accum=3 the epoch's steps take 3, 3 and 2 micro-batches
    sizes = [3, 3, 2, 3] if accum == 3 else [1, 1, 1, 1]
    assert len(module.micro) == sum(sizes)
    starts = [sum(sizes[:i]) for i in range(4)]
    means = [sum(module.micro[a : a + n]) / n for a, n in zip(starts, sizes)]
    # the short step is its own mean (Lightning divided it by accumulate_grad_batches too)
    assert [loss for _, loss in ctl.observed] == pytest.approx(means, rel=1e-5)


def test_resume_from_a_checkpoint_without_adalrs_state_is_refused(tmp_path):
    trainer = L.Trainer(
        max_steps=8,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "plain", save_top_k=-1, every_n_epochs=1)],
    )
    trainer.fit(TinyModule(8), loader())
    ckpt = next((tmp_path / "plain").glob("*.ckpt"))
    with pytest.raises(ValueError, match="holds no AdaLRSLightningCallback state"):
        fit(tmp_path / "res", ScriptedController(), steps=12, ckpt_path=str(ckpt))


def test_the_default_rewinds_and_rewind_false_keeps_continue_mode():
    rewind = AdaLRSConfig(total_steps=1000, window=20, backtrack_mode="rewind")
    with pytest.raises(ValueError, match="backtrack_mode.*'rewind'.*does not rewind its data"):
        AdaLRSLightningCallback(rewind, rewind=False)
    cb = AdaLRSLightningCallback(AdaLRSConfig(total_steps=1000, window=20))
    assert cb.rewinds and cb.controller.config.backtrack_mode == "rewind"
    assert cb.controller.config.opening_factors == (0.1, 0.316, 3.16, 10.0)
    cont = AdaLRSLightningCallback(AdaLRSConfig(total_steps=1000, window=20), rewind=False)
    assert cont.controller.config.backtrack_mode == "continue"  # "auto" here: no rewind
    # 50 windows: the opening's 10 windows would be a fifth of the run, so no opening; at 100
    # windows (a tenth) the default opens with it in continue mode
    assert cont.controller.config.opening_factors == ()
    long = AdaLRSLightningCallback(AdaLRSConfig(total_steps=2000, window=20), rewind=False)
    assert long.controller.config.opening_factors == (0.1, 0.316, 3.16, 10.0)
    assert long.controller.config.backtrack_mode == "continue"


class BatchSpy(Callback):
    """(schedule step, first value of the batch) for every batch Lightning trains on."""

    def __init__(self, adalrs):
        self.adalrs, self.seen = adalrs, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append((self.adalrs.scheduler.last_step + 1, float(batch[0][0, 0])))


def fit_rewinding(tmp_path, controller, *, steps, ckpt_path=None, every=None):
    cb = AdaLRSLightningCallback(controller)
    spy = BatchSpy(cb)
    module = TinyModule(steps)
    trainer = make_trainer(tmp_path, [cb, spy], every=every, max_steps=steps)
    data = rows()
    # a seeded shuffle per pass (set_epoch), so a resumed pass repeats its order
    sampler = torch.utils.data.DistributedSampler(data, num_replicas=1, rank=0, seed=5)
    shuffled = torch.utils.data.DataLoader(data, batch_size=4, sampler=sampler)
    trainer.fit(module, cb.wrap(shuffled), ckpt_path=ckpt_path)
    return trainer, module, cb, spy


REWIND_SCRIPT = {5: ("snapshot", 3.0), 11: ("restore", 0.5)}  # step 11 back to after step 5


def test_a_rewind_replays_the_batches_and_the_run_ends_at_max_steps(tmp_path):
    ctl = ScriptedController(REWIND_SCRIPT, mode="rewind")
    trainer, _, cb, spy = fit_rewinding(tmp_path, ctl, steps=16)
    assert [s for s, _ in ctl.observed] == list(range(12)) + list(range(6, 16))
    assert trainer.global_step == 22  # 16 schedule steps and the 6 it took back
    first = dict(spy.seen[:12])
    assert [v for _, v in spy.seen[12:18]] == [first[s] for s in range(6, 12)]
    fresh = [v for _, v in spy.seen[:12] + spy.seen[18:]]
    assert len(set(fresh[:BATCHES])) == BATCHES  # one pass: each batch once
    assert fresh[BATCHES : 2 * BATCHES] != fresh[:BATCHES]  # the next pass: set_epoch(1)
    assert cb.scheduler.last_step == 15


@pytest.mark.parametrize(
    "kind, resume_at", [("default", "replaying"), ("scripted", 8), ("scripted", 14)]
)
def test_resume_while_rewinding_makes_the_same_decisions_on_the_same_batches(
    tmp_path, kind, resume_at
):
    steps = 40 if kind == "default" else 16

    def controller():
        if kind == "default":
            return small_config(steps)  # the callback resolves it: rewind mode, the default
        return ScriptedController(REWIND_SCRIPT, mode="rewind")

    full, full_module, cb_full, spy_full = fit_rewinding(
        tmp_path / "full", controller(), steps=steps, every=1
    )
    ran = full.global_step
    assert ran > steps
    if kind == "default":
        assert_default_opening(cb_full.controller.events)
    ckpts = {int(p.stem.split("=")[1]): p for p in (tmp_path / "full").glob("*.ckpt")}
    mid = resume_at
    if resume_at == "replaying":
        for step in sorted(ckpts):
            state = torch.load(ckpts[step], weights_only=False)["callbacks"]
            sd = next(v for k, v in state.items() if "AdaLRSLightningCallback" in k)
            data = sd["adalrs"]["data"]
            if 0 < data["cursor"] < len(data["buffer"]):
                mid = step
                break
    _, res_module, cb_res, spy_res = fit_rewinding(
        tmp_path / "res", controller(), steps=steps, ckpt_path=str(ckpts[mid])
    )
    assert spy_res.seen == spy_full.seen[mid:]
    if kind == "default":
        assert cb_res.controller.events == cb_full.controller.events
    else:
        assert cb_res.controller.observed == cb_full.controller.observed
    for k, v in full_module.state_dict().items():
        assert torch.equal(res_module.state_dict()[k], v), k


def test_rewinding_needs_the_wrapped_loader_and_max_steps(tmp_path):
    cb = AdaLRSLightningCallback(ScriptedController(mode="rewind"))
    trainer = make_trainer(tmp_path, [cb], max_steps=4)
    with pytest.raises(ValueError, match="give it cb.wrap"):
        trainer.fit(TinyModule(4), loader())
    again = AdaLRSLightningCallback(ScriptedController(mode="rewind"))
    epochs = make_trainer(tmp_path, [again], max_epochs=1)
    with pytest.raises(ValueError, match="`max_steps` is -1"):
        epochs.fit(TinyModule(4), cb.wrap(loader()))

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter([(torch.zeros(4, 4), torch.zeros(4))])

    with pytest.raises(ValueError, match="has no length"):
        cb.wrap(torch.utils.data.DataLoader(Stream(), batch_size=None))


class _DumpOnEnd(Callback):
    """Writes, per rank, its local micro-batch losses and what AdaLRS observed."""

    def __init__(self, out, adalrs):
        self.out, self.adalrs = str(out), adalrs

    def on_train_end(self, trainer, pl_module):
        torch.save(
            {"micro": pl_module.micro, "observed": self.adalrs.controller.observed},
            f"{self.out}.{trainer.global_rank}",
        )


@pytest.mark.slow  # two spawned processes (about 100 s at load 12 on 2 cores)
def test_under_ddp_every_rank_observes_the_mean_loss_of_all_ranks(tmp_path):
    ctl = ScriptedController()
    cb = AdaLRSLightningCallback(ctl)
    out = tmp_path / "rank"
    trainer = make_trainer(tmp_path, [cb, _DumpOnEnd(out, cb)], devices=2, max_steps=4)
    trainer.fit(TinyModule(4), loader())
    ranks = [torch.load(f"{out}.{r}", weights_only=False) for r in range(2)]
    local = [r["micro"] for r in ranks]
    assert local[0] != local[1]  # each rank trains on its own shard
    observed = [[loss for _, loss in r["observed"]] for r in ranks]
    assert observed[0] == observed[1]
    assert observed[0] == pytest.approx([(a + b) / 2 for a, b in zip(*local)], rel=1e-6)


class ShardedModule(TinyModule):
    """Builds its loader in each process: its rank's shard (a DistributedSampler with a seeded
    shuffle per pass), wrapped for the rewinding callback."""

    def train_dataloader(self):
        data = rows()
        sampler = torch.utils.data.DistributedSampler(
            data, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, seed=5
        )
        loader = torch.utils.data.DataLoader(data, batch_size=4, sampler=sampler)
        return AdaLRSLightningCallback.wrap(loader)


class _DumpRewind(Callback):
    """Writes, per rank, the batches it trained on (BatchSpy) and its final weights."""

    def __init__(self, out, spy):
        self.out, self.spy = str(out), spy

    def on_train_end(self, trainer, pl_module):
        torch.save(
            {"seen": self.spy.seen, "weights": pl_module.state_dict()},
            f"{self.out}.{trainer.global_rank}",
        )


def fit_ddp_rewinding(tmp_path, *, steps, ckpt_path=None, every=None, devices=2):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cb = AdaLRSLightningCallback(ScriptedController(REWIND_SCRIPT, mode="rewind"))
    spy = BatchSpy(cb)
    callbacks = [cb, spy, _DumpRewind(tmp_path / "rank", spy)]
    trainer = make_trainer(tmp_path, callbacks, every=every, devices=devices, max_steps=steps)
    trainer.fit(ShardedModule(steps), ckpt_path=ckpt_path)
    return [torch.load(f"{tmp_path / 'rank'}.{r}", weights_only=False) for r in range(devices)]


@pytest.mark.slow  # spawned processes: two runs of two
def test_under_ddp_each_rank_resumes_its_own_kept_batches(tmp_path):
    """Lightning saves rank 0's callback state only; each rank's loader state (its shard's
    position and the batches kept since the snapshot) travels in it, so a run resumed in the
    middle of a replay hands every rank its own batches and ends with the same weights."""
    full = fit_ddp_rewinding(tmp_path / "full", steps=16, every=1)
    assert full[0]["seen"] != full[1]["seen"]  # each rank streams its own shard
    # the rewind at global step 12 (schedule step 11 back to 6) replays global steps 12-17:
    # global step 14 is inside the replay
    mid = 14
    state = torch.load(tmp_path / "full" / f"step={mid}.ckpt", weights_only=False)["callbacks"]
    sd = next(v for k, v in state.items() if "AdaLRSLightningCallback" in k)
    assert len(sd["data_by_rank"]) == 2
    assert all(0 < d["cursor"] < len(d["buffer"]) for d in sd["data_by_rank"])
    resumed = fit_ddp_rewinding(
        tmp_path / "res", steps=16, ckpt_path=str(tmp_path / "full" / f"step={mid}.ckpt")
    )
    for rank in range(2):
        assert resumed[rank]["seen"] == full[rank]["seen"][mid:], rank
        for k, v in full[rank]["weights"].items():
            assert torch.equal(resumed[rank]["weights"][k], v), (rank, k)
    # another number of ranks cannot take over the shards
    with pytest.raises(Exception, match="loader states of 2 ranks"):
        fit_ddp_rewinding(
            tmp_path / "one", steps=16, devices=1,
            ckpt_path=str(tmp_path / "full" / f"step={mid}.ckpt"),
        )  # fmt: skip
