"""AdaLRS in transformers' Trainer (adalrs_ray.integrations.hf_trainer) on a tiny MLP on CPU:
LR = base x scale at every optimizer step, exact backtracking, exact resume from a checkpoint
taken inside an LR trial, one observation per optimizer step under gradient accumulation, and
the loss averaged across DDP ranks."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
from transformers import Trainer, TrainingArguments, get_scheduler  # noqa: E402

from adalrs_ray.core.controller import AdaLRS, AdaLRSConfig  # noqa: E402
from adalrs_ray.integrations.common import reduce_mean_across_ranks  # noqa: E402
from adalrs_ray.integrations.hf_trainer import (  # noqa: E402
    STATE_FILE,
    AdaLRSTrainer,
    AdaLRSTrainerCallback,
)
from tests.opening_events import assert_default_opening
from tests.test_torch_binding import ScriptedController  # noqa: E402

LR = 0.05


class TinyRegressor(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, x, labels=None):
        pred = self.net(x).squeeze(-1)
        out = {"logits": pred}
        if labels is not None:
            out["loss"] = (pred - labels).pow(2).mean()
        return out


class Rows(torch.utils.data.Dataset):
    def __init__(self, n: int = 64):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 4, generator=g)
        self.y = torch.sin(self.x.sum(-1)) + 0.1 * torch.randn(n, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class Recorder:
    """Records, per optimizer step, the LR the optimizer used, the scale, the model and the
    optimizer state right after the step (a TrainerCallback added after AdaLRS's)."""

    def __init__(self):
        from transformers import TrainerCallback

        rec = self

        class _CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                rec.scales.append(rec.adalrs.scheduler.scale)
                rec.bases.append(rec.adalrs.scheduler.base_lrs[0])

            def on_optimizer_step(self, args, state, control, optimizer=None, model=None, **kw):
                rec.lrs.append(float(optimizer.param_groups[0]["lr"]))
                rec.states.append(
                    (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))
                )

        self.callback = _CB()
        self.scales, self.bases, self.lrs, self.states = [], [], [], []
        self.adalrs = None


def make_trainer(tmp_path, controller, *, steps=24, accum=1, save_steps=None, seed=0):
    cb = AdaLRSTrainerCallback(controller)
    rec = Recorder()
    rec.adalrs = cb
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=accum,
        learning_rate=LR,
        lr_scheduler_type="cosine",
        warmup_steps=3,
        weight_decay=0.0,
        logging_steps=1000,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
    )
    trainer = AdaLRSTrainer(
        model=TinyRegressor(seed),
        args=args,
        train_dataset=Rows(),
        callbacks=[cb, rec.callback],
    )
    return trainer, cb, rec


def expected_base_lrs(steps: int) -> list[float]:
    opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=LR)
    sched = get_scheduler("cosine", opt, num_warmup_steps=3, num_training_steps=steps)
    out = []
    for _ in range(steps):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out


def small_config(steps: int) -> AdaLRSConfig:
    return AdaLRSConfig(total_steps=steps, window=3, start_ratio=0.1, end_ratio=0.9)


def test_lr_is_the_trainers_schedule_times_scale_at_every_optimizer_step(tmp_path):
    script = {4: ("snapshot", 2.0), 8: ("continue", 3.0), 12: ("continue", 0.5)}
    trainer, cb, rec = make_trainer(tmp_path, ScriptedController(script))
    trainer.train()
    base = expected_base_lrs(24)
    assert len(rec.lrs) == 24
    assert rec.bases == pytest.approx(base, rel=1e-12)
    assert rec.lrs == pytest.approx([b * s for b, s in zip(base, rec.scales)], rel=1e-12)
    assert sorted(set(rec.scales)) == [0.5, 1.0, 2.0, 3.0]
    # the Trainer logs the effective LR: its lr_scheduler stand-in reports base x scale
    assert trainer.lr_scheduler.get_last_lr() == pytest.approx(cb.scheduler.lr)


def test_a_backtrack_restores_model_and_optimizer_exactly(tmp_path):
    script = {5: ("snapshot", 3.0), 11: ("restore", 0.5)}
    trainer, cb, rec = make_trainer(tmp_path, ScriptedController(script), steps=16)
    restored = {}

    from transformers import TrainerCallback

    class AfterRestore(TrainerCallback):  # runs after AdaLRS's on_step_end
        def on_step_end(self, args, state, control, model=None, optimizer=None, **kw):
            if state.global_step == 12:
                restored["model"] = copy.deepcopy(model.state_dict())
                restored["opt"] = copy.deepcopy(optimizer.state_dict())

    trainer.add_callback(AfterRestore())
    trainer.train()
    snap_model, snap_opt = rec.states[5]  # right after optimizer step 5 (0-based)
    after_step_11 = rec.states[11][0]
    assert any(not torch.equal(after_step_11[k], snap_model[k]) for k in snap_model)
    for k, v in snap_model.items():
        assert torch.equal(restored["model"][k], v), k
    for pid, st in snap_opt["state"].items():
        for key, v in st.items():
            got = restored["opt"]["state"][pid][key]
            assert torch.equal(got, v) if isinstance(v, torch.Tensor) else got == v
    assert rec.scales[12] == 0.5


def test_resume_inside_an_lr_trial_makes_the_same_decisions(tmp_path):
    steps = 40
    full, cb_full, rec_full = make_trainer(
        tmp_path / "full", AdaLRS(small_config(steps)), steps=steps, save_steps=1
    )
    full.train()
    events = cb_full.controller.events
    assert any(e["kind"] == "trial_start" for e in events)
    # a checkpoint taken while an LR trial was running (the controller in its state file)
    mid = None
    for step in range(2, steps - 4):
        sd = torch.load(tmp_path / "full" / f"checkpoint-{step}" / STATE_FILE, weights_only=True)
        ctl = AdaLRS(small_config(steps))
        ctl.load_state_dict(sd["controller"])
        if ctl.in_trial:
            mid = step
            break
    assert mid is not None, events

    resumed, cb_res, rec_res = make_trainer(
        tmp_path / "res", AdaLRS(small_config(steps)), steps=steps
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / f"checkpoint-{mid}"))
    assert cb_res.controller.events == events
    assert rec_res.lrs == rec_full.lrs[mid:]
    assert rec_res.scales == rec_full.scales[mid:]
    for k, v in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k


def test_resume_from_a_checkpoint_without_adalrs_state_is_refused(tmp_path):
    plain_args = TrainingArguments(
        output_dir=str(tmp_path / "plain"),
        max_steps=4,
        per_device_train_batch_size=4,
        save_strategy="steps",
        save_steps=2,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    Trainer(model=TinyRegressor(), args=plain_args, train_dataset=Rows()).train()
    trainer, _, _ = make_trainer(tmp_path / "res", ScriptedController(), steps=4)
    with pytest.raises(ValueError, match=STATE_FILE):
        trainer.train(resume_from_checkpoint=str(tmp_path / "plain" / "checkpoint-2"))


@pytest.mark.parametrize("accum", [1, 3])
def test_one_observation_per_optimizer_step_with_the_mean_micro_batch_loss(tmp_path, accum):
    ctl = ScriptedController()
    trainer, _, _ = make_trainer(tmp_path, ctl, steps=6, accum=accum)
    micro: list[float] = []
    original = Trainer.training_step

    def spy(self, model, inputs, num_items_in_batch=None):
        with torch.no_grad():
            micro.append(float(model(**inputs)["loss"]))  # before this micro-batch's backward
        return original(self, model, inputs, num_items_in_batch)

    Trainer.training_step = spy
    try:
        trainer.train()
    finally:
        Trainer.training_step = original
    assert [s for s, _ in ctl.observed] == list(range(6))
    # 16 micro-batches per epoch: with accum=3 the sixth step has the epoch's last one only
    sizes = [min(accum, 16 - i * accum) for i in range(6)]
    assert len(micro) == sum(sizes)
    starts = [sum(sizes[:i]) for i in range(6)]
    means = [sum(micro[a : a + n]) / n for a, n in zip(starts, sizes)]
    assert [loss for _, loss in ctl.observed] == pytest.approx(means, rel=1e-5)


def test_trainer_without_the_mixin_is_refused(tmp_path):
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, report_to=[], use_cpu=True, disable_tqdm=True
    )
    cb = AdaLRSTrainerCallback(ScriptedController())
    trainer = Trainer(model=TinyRegressor(), args=args, train_dataset=Rows(), callbacks=[cb])
    with pytest.raises(ValueError, match="AdaLRSTrainerMixin"):
        trainer.train()


def test_the_default_rewinds_and_rewind_false_keeps_continue_mode():
    rewind = AdaLRSConfig(total_steps=1000, window=20, backtrack_mode="rewind")
    with pytest.raises(ValueError, match="backtrack_mode.*'rewind'.*does not rewind its data"):
        AdaLRSTrainerCallback(rewind, rewind=False)
    assert AdaLRSTrainerCallback(rewind).rewinds
    # the default resolves as a loop that rewinds: the opening rule at 50 windows already
    cb = AdaLRSTrainerCallback(AdaLRSConfig(total_steps=1000, window=20))
    assert cb.rewinds and cb.controller.config.backtrack_mode == "rewind"
    assert cb.controller.config.opening_factors == (0.1, 0.316, 3.16, 10.0)
    # rewind=False: a loop that cannot rewind; at 50 windows the opening's 10 windows would be a
    # fifth of the run, so the regression rule; at 100 the opening rule
    cont = AdaLRSTrainerCallback(AdaLRSConfig(total_steps=1000, window=20), rewind=False)
    assert not cont.rewinds and cont.controller.config.backtrack_mode == "continue"
    assert cont.controller.config.opening_factors == ()
    long = AdaLRSTrainerCallback(AdaLRSConfig(total_steps=2000, window=20), rewind=False)
    assert long.controller.config.backtrack_mode == "continue"
    assert long.controller.config.opening_factors == (0.1, 0.316, 3.16, 10.0)
    with pytest.raises(ValueError, match="controller"):
        AdaLRSTrainerCallback(object())
    with pytest.raises(ValueError, match="`rewind` is 1"):
        AdaLRSTrainerCallback(rewind, rewind=1)


class BatchSpy:
    """Records (schedule step, first value of the batch) for every micro-batch the Trainer
    trains on."""

    def __init__(self, cb):
        self.cb, self.seen = cb, []
        self.original = Trainer.training_step

    def __enter__(self):
        spy = self

        def training_step(trainer, model, inputs, num_items_in_batch=None):
            spy.seen.append((spy.cb.scheduler.last_step + 1, float(inputs["x"][0, 0])))
            return spy.original(trainer, model, inputs, num_items_in_batch)

        Trainer.training_step = training_step
        return self

    def __exit__(self, *exc):
        Trainer.training_step = self.original


def test_a_rewind_replays_the_trainers_batches_and_the_run_ends_at_max_steps(tmp_path):
    script = {5: ("snapshot", 3.0), 11: ("restore", 0.5)}  # step 11 back to after step 5
    ctl = ScriptedController(script, mode="rewind")
    trainer, cb, rec = make_trainer(tmp_path, ctl, steps=16)
    with BatchSpy(cb) as spy:
        trainer.train()
    assert [s for s, _ in ctl.observed] == list(range(12)) + list(range(6, 16))
    assert trainer.state.global_step == 22  # 16 schedule steps and the 6 it took back
    first = dict(spy.seen[:12])
    assert [v for _, v in spy.seen[12:18]] == [first[s] for s in range(6, 12)]
    # the 16 batches of one pass over the 64 rows: each row once (the stream is the
    # Trainer's shuffled sampler), then pass 1, reshuffled
    fresh = [v for _, v in spy.seen[:12] + spy.seen[18:]]
    rows = {float(x) for x in Rows().x[:, 0]}
    assert len(set(fresh[:16])) == 16 and set(fresh[:16]) <= rows
    assert fresh[16:] != fresh[:4]
    # the LR of every optimizer step is the base schedule at the schedule's step x scale
    base = expected_base_lrs(16)
    steps = [s for s, _ in spy.seen]
    assert rec.lrs == pytest.approx([base[s] * x for s, x in zip(steps, rec.scales)], rel=1e-12)


REWIND_SCRIPT = {5: ("snapshot", 3.0), 11: ("restore", 0.5)}


@pytest.mark.parametrize(
    "kind, resume_at",
    [("default", "replaying"), ("scripted", 8), ("scripted", 14)],
)
def test_resume_while_rewinding_makes_the_same_decisions_on_the_same_batches(
    tmp_path, kind, resume_at
):
    """Checkpoints taken inside a trial (batches kept) and while a rewind replays them: the
    resumed run hands out the same batches, decides the same and ends with the same model.
    ``default``: the rewinding default, whose opening tries each multiplier on the same first
    batches; ``scripted``: a snapshot after step 5 and a rewind to it at step 11."""
    steps = 40 if kind == "default" else 16
    cfg = small_config(steps)  # the callback resolves it: rewind mode, the default rule

    def controller():
        return cfg if kind == "default" else ScriptedController(REWIND_SCRIPT, mode="rewind")

    full, cb_full, rec_full = make_trainer(
        tmp_path / "full", controller(), steps=steps, save_steps=1
    )
    with BatchSpy(cb_full) as spy_full:
        full.train()
    ran = full.state.global_step
    assert ran > steps  # the rewinds' steps were run again
    if kind == "default":
        assert cb_full.controller.config.backtrack_mode == "rewind"
        assert_default_opening(cb_full.controller.events)
    mid = resume_at
    if resume_at == "replaying":  # the first checkpoint in the middle of a replay
        for step in range(2, ran):
            path = tmp_path / "full" / f"checkpoint-{step}" / STATE_FILE
            data = torch.load(path, weights_only=True)["data"]
            if 0 < data["cursor"] < len(data["buffer"]):
                mid = step
                break
    sd = torch.load(tmp_path / "full" / f"checkpoint-{mid}" / STATE_FILE, weights_only=True)
    assert sd["data"]["buffer"], mid  # kept batches travel in the checkpoint
    resumed, cb_res, rec_res = make_trainer(tmp_path / "res", controller(), steps=steps)
    with BatchSpy(cb_res) as spy_res:
        resumed.train(resume_from_checkpoint=str(tmp_path / "full" / f"checkpoint-{mid}"))
    assert resumed.state.global_step == ran
    assert spy_res.seen == spy_full.seen[mid:]
    assert rec_res.lrs == rec_full.lrs[mid:]
    if kind == "default":
        assert cb_res.controller.events == cb_full.controller.events
    else:
        assert cb_res.controller.observed == cb_full.controller.observed
    for k, v in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k


def test_rewinding_needs_max_steps_and_the_mixins_loader(tmp_path):
    trainer, _, _ = make_trainer(tmp_path, ScriptedController(mode="rewind"), steps=4)
    trainer.args.max_steps = -1
    with pytest.raises(ValueError, match="`max_steps` is -1.*rewinds its data"):
        trainer.train()

    class OwnLoader(AdaLRSTrainer):
        def get_train_dataloader(self):
            return Trainer.get_train_dataloader(self)

    cb = AdaLRSTrainerCallback(ScriptedController(mode="rewind"))
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, report_to=[], use_cpu=True, disable_tqdm=True
    )
    own = OwnLoader(model=TinyRegressor(), args=args, train_dataset=Rows(), callbacks=[cb])
    with pytest.raises(ValueError, match="not the RewindableLoader"):
        own.train()


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        got = reduce_mean_across_ranks(torch.tensor(1.0 + 2.0 * rank))
        torch.save(float(got), f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


def test_the_loss_is_averaged_across_ranks_in_a_gloo_group(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "mean")
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, out), nprocs=2, join=True)
    assert [torch.load(f"{out}.{r}") for r in range(2)] == [2.0, 2.0]  # mean of 1 and 3
    assert float(reduce_mean_across_ranks(torch.tensor(1.5))) == 1.5  # not initialised: as is


def test_an_opening_starts_from_the_initial_model_at_every_multiplier(tmp_path):
    """The opening (issue 13): the binding snapshots the model when the Trainer starts
    training; each multiplier trains from it (continue mode: the Trainer's steps go on)."""
    cfg = AdaLRSConfig(
        total_steps=40,
        window=3,
        start_ratio=0.3,
        end_ratio=0.9,
        opening_factors=(0.1, 10.0),
        opening_steps=4,
        opening_tail=2,
    )
    trainer, cb, rec = make_trainer(tmp_path, AdaLRS(cfg), steps=40)
    init = copy.deepcopy(trainer.model.state_dict())
    after = {}

    from transformers import TrainerCallback

    class AfterRestore(TrainerCallback):  # after AdaLRS's on_step_end
        def on_step_end(self, args, state, control, model=None, optimizer=None, **kw):
            if state.global_step in (4, 8):
                after[state.global_step] = (
                    copy.deepcopy(model.state_dict()),
                    copy.deepcopy(optimizer.state_dict()),
                )

    trainer.add_callback(AfterRestore())
    trainer.train()
    assert rec.scales[:4] == pytest.approx([0.1] * 4) and rec.scales[4:8] == pytest.approx(
        [10.0] * 4
    )
    for step in (4, 8):  # restored after each multiplier: initial weights, no optimizer state
        model, opt = after[step]
        for k, v in init.items():
            assert torch.equal(model[k], v), (step, k)
        assert opt["state"] == {}
    kinds = [e["kind"] for e in cb.scheduler.controller.events]
    assert kinds[:3] == ["opening_candidate", "opening_candidate", "opening"]


def test_under_several_processes_each_saves_and_resumes_its_own_loader_state(tmp_path):
    """Each process streams its own shard: a process other than zero writes its loader's
    state as adalrs_data_<rank>.pt and reads it back on resume (process zero's is in
    adalrs_state.pt). Driven here with the Trainer's arguments of a 2-process run."""
    from types import SimpleNamespace

    from adalrs_ray.integrations.hf_trainer import DATA_FILE

    ctl = ScriptedController(REWIND_SCRIPT, mode="rewind")
    trainer, cb, _ = make_trainer(tmp_path / "run", ctl, steps=16)
    trainer.train()
    ckpt = tmp_path / "ck" / "checkpoint-7"
    ckpt.mkdir(parents=True)
    torch.save(cb.scheduler.state_dict(), ckpt / STATE_FILE)  # process zero's file

    rank1 = SimpleNamespace(output_dir=str(tmp_path / "ck"), world_size=2, process_index=1)
    state = SimpleNamespace(global_step=7, is_world_process_zero=False)
    with pytest.raises(ValueError, match="holds no adalrs_data_1.pt.*same number of processes"):
        cb._read_state(str(ckpt / STATE_FILE), rank1)
    cb.scheduler.data._passes = 5  # this process's own position, unlike process zero's file
    cb.on_save(rank1, state, None)
    own = torch.load(ckpt / DATA_FILE.format(rank=1), weights_only=True)
    assert own["passes"] == 5
    assert cb._read_state(str(ckpt / STATE_FILE), rank1)["data"]["passes"] == 5
    rank0 = SimpleNamespace(output_dir=str(tmp_path / "ck"), world_size=2, process_index=0)
    assert cb._read_state(str(ckpt / STATE_FILE), rank0)["data"]["passes"] != 5
