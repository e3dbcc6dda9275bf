"""RewindableLoader (adalrs_ray.torch_binding.rewind): a loop that iterates a DataLoader and
gives it to the binding trains exactly as a loop that indexes its batches by step, through
rewinds, snapshots taken while replaying, the opening's snapshot before the first step,
gradient accumulation and a checkpoint taken in the middle of a replay."""

from __future__ import annotations

import copy
from collections import namedtuple

import pytest
import torch
from torch import nn

from adalrs_ray.core.controller import AdaLRS, AdaLRSConfig
from adalrs_ray.torch_binding import AdaLRSScheduler, RewindableLoader
from tests.test_torch_binding import ScriptedController

N_BATCHES = 5  # one pass over the data: fewer batches than steps, so passes repeat


def batches():
    g = torch.Generator().manual_seed(3)
    out = []
    for _ in range(N_BATCHES):
        x = torch.randn(8, 4, generator=g)
        out.append({"x": x, "y": x.sum(-1, keepdim=True).sin()})
    return out


class Passes:
    """A re-iterable over the batches whose order depends on the pass (like a seeded
    sampler's set_epoch): pass p starts at batch p % N."""

    def __init__(self):
        self.data = batches()
        self.epoch = 0
        self.iters = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        self.iters += 1
        k = self.epoch % N_BATCHES
        return iter(self.data[k:] + self.data[:k])


def timeline_batch(data, position):
    """The batch an uninterrupted stream over Passes hands out at ``position``."""
    p, i = divmod(position, N_BATCHES)
    order = data[p % N_BATCHES :] + data[: p % N_BATCHES]
    return order[i]


def model_and_opt():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    return model, torch.optim.AdamW(model.parameters(), lr=0.02)


def train_step(model, opt, batch, accum=1):
    for micro in batch if isinstance(batch, list) else [batch]:
        loss = (model(micro["x"]) - micro["y"]).pow(2).mean() / accum
        loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.detach() * accum


SCRIPT = {
    2: ("snapshot", 1.0),
    5: ("restore", 0.5),  # step 5 back to after step 2
    7: ("snapshot", 0.5),  # taken while replaying (step 4 of the new timeline)
    9: ("restore", 0.5),  # back to after step 4: steps 5, 6 replay, then the kept rest
    13: ("snapshot", 0.5),
    15: ("restore", 0.25),
}


def run_indexed(steps):
    """The reference: batch = the stream's batch at the step's position."""
    data = batches()
    model, opt = model_and_opt()
    sched = AdaLRSScheduler(opt, ScriptedController(SCRIPT, mode="rewind"), None, model=model)
    seen = []
    while sched.last_step + 1 < steps:
        step = sched.last_step + 1
        batch = timeline_batch(data, step)
        seen.append((step, batch["x"][0, 0].item()))
        sched.step(train_step(model, opt, batch))
    return model, seen


def run_streamed(steps, loader=None, stop_after=None):
    model, opt = model_and_opt()
    loader = loader or RewindableLoader(Passes())
    sched = AdaLRSScheduler(
        opt, ScriptedController(SCRIPT, mode="rewind"), None, model=model, data=loader
    )
    seen = []
    it = iter(loader)
    calls = 0
    while sched.last_step + 1 < steps and calls != stop_after:
        step = sched.last_step + 1
        batch = next(it)
        seen.append((step, batch["x"][0, 0].item()))
        sched.step(train_step(model, opt, batch))
        calls += 1
    return model, opt, sched, seen


def test_a_streamed_loop_rewinds_exactly_like_an_indexed_one():
    ref_model, ref_seen = run_indexed(20)
    model, _, sched, seen = run_streamed(20)
    assert seen == ref_seen
    assert len(seen) > 20  # the rewinds replayed steps
    for k, v in ref_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert sched.data.replaying == 0


def test_kept_batches_are_only_those_after_the_held_snapshot():
    loader = RewindableLoader(Passes())
    assert loader.kept == 0 and loader.nbytes == 0
    _, _, sched, _ = run_streamed(4, loader)  # snapshot after step 2, then step 3 taken
    assert loader.kept == 1
    assert loader.nbytes == 8 * 4 * 4 + 8 * 4  # x and y of one batch, float32
    _, _, _, _ = run_streamed(1, RewindableLoader(Passes()))
    fresh = RewindableLoader(Passes())
    run_streamed(2, fresh)  # no snapshot yet: nothing kept
    assert fresh.kept == 0


def test_a_checkpoint_taken_while_replaying_resumes_the_same_batches():
    ref_model, ref_seen = run_indexed(20)
    for stop in (4, 6, 8, 11, 16):  # before, in and after replays
        model, opt, sched, seen = run_streamed(20, stop_after=stop)
        state = copy.deepcopy(
            {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
        )
        sched.close()
        model2, opt2 = model_and_opt()
        model2.load_state_dict(state["model"])
        opt2.load_state_dict(state["opt"])
        source = Passes()
        loader = RewindableLoader(source)
        sched2 = AdaLRSScheduler(
            opt2, ScriptedController(SCRIPT, mode="rewind"), None, model=model2, data=loader
        )
        sched2.load_state_dict(state["sched"])
        it = iter(loader)
        while sched2.last_step + 1 < 20:
            step = sched2.last_step + 1
            batch = next(it)
            seen.append((step, batch["x"][0, 0].item()))
            sched2.step(train_step(model2, opt2, batch))
        assert seen == ref_seen, stop
        for k, v in ref_model.state_dict().items():
            assert torch.equal(model2.state_dict()[k], v), (stop, k)


def test_gradient_accumulation_replays_every_micro_batch_of_a_step():
    accum = 2
    data = batches()
    script = {1: ("snapshot", 1.0), 3: ("restore", 0.5)}

    def run(streamed):
        model, opt = model_and_opt()
        loader = RewindableLoader(Passes()) if streamed else None
        sched = AdaLRSScheduler(
            opt, ScriptedController(script, mode="rewind"), None, model=model, data=loader
        )
        it = iter(loader) if streamed else None
        seen = []
        while sched.last_step + 1 < 6:
            step = sched.last_step + 1
            if streamed:
                micro = [next(it) for _ in range(accum)]
            else:
                micro = [timeline_batch(data, accum * step + i) for i in range(accum)]
            seen.append([m["x"][0, 0].item() for m in micro])
            sched.step(train_step(model, opt, micro, accum))
        return model, seen

    (m1, s1), (m2, s2) = run(False), run(True)
    assert s1 == s2 and len(s1) == 8
    for k, v in m1.state_dict().items():
        assert torch.equal(m2.state_dict()[k], v), k


def test_the_opening_snapshot_before_the_first_step_is_kept_from_batch_zero():
    """With an opening the binding snapshots before step 0: every multiplier trains on the
    same first batches."""
    cfg = AdaLRSConfig(
        total_steps=60,
        window=3,
        start_ratio=0.3,
        end_ratio=0.9,
        opening_factors=(0.1, 10.0),
        opening_steps=4,
        opening_tail=2,
    ).resolved(rewinds=True)
    model, opt = model_and_opt()
    loader = RewindableLoader(Passes())
    sched = AdaLRSScheduler(opt, AdaLRS(cfg), None, model=model, data=loader)
    it = iter(loader)
    firsts = []
    for _ in range(12):
        step = sched.last_step + 1
        batch = next(it)
        if step == 0:
            firsts.append(batch["x"][0, 0].item())
        sched.step(train_step(model, opt, batch))
    assert len(firsts) == 3 and len(set(firsts)) == 1  # 0.1x, 10x, then 1x from batch 0


def test_containers_are_copied_and_rebuilt():
    Pair = namedtuple("Pair", "x y")
    x = torch.arange(4.0)
    source = [[Pair(x, {"ids": torch.ones(2, dtype=torch.long), "name": "a"})]]
    loader = RewindableLoader(source)
    model, opt = model_and_opt()
    sched = AdaLRSScheduler(
        opt,
        ScriptedController({0: ("snapshot", 1.0), 1: ("restore", 1.0)}, mode="rewind"),
        None,
        model=model,
        data=loader,
    )
    it = iter(loader)
    first = next(it)
    sched.step(1.0)
    next(it)
    sched.step(1.0)  # back to after step 0
    again = next(it)  # the batch of step 1 again
    assert isinstance(again, list) and isinstance(again[0], Pair)
    assert again[0].y["name"] == "a" and torch.equal(again[0].x, x)
    again[0].y["ids"].add_(5)  # a step that mutates its batch does not change the kept copy
    sched.step(1.0)
    assert first[0].x is x  # fresh batches are handed out as they are


def test_bad_input_is_refused_with_the_rule():
    with pytest.raises(ValueError, match="iterable of batches"):
        RewindableLoader(3)
    with pytest.raises(ValueError, match="re-iterable"):
        RewindableLoader(iter([1, 2]))
    with pytest.raises(ValueError, match="`offload` is 1"):
        RewindableLoader([1], offload=1)
    model, opt = model_and_opt()
    with pytest.raises(ValueError, match="must be a RewindableLoader"):
        AdaLRSScheduler(opt, ScriptedController(mode="rewind"), None, data=[1])
    loader = RewindableLoader([1])
    AdaLRSScheduler(opt, ScriptedController(mode="rewind"), None, data=loader)
    with pytest.raises(ValueError, match="already drives"):
        AdaLRSScheduler(opt, ScriptedController(mode="rewind"), None, data=loader)
    empty = iter(RewindableLoader([]))
    with pytest.raises(ValueError, match="yielded no batch"):
        next(empty)


def test_a_checkpoint_without_a_loader_position_is_refused():
    model, opt = model_and_opt()
    plain = AdaLRSScheduler(opt, ScriptedController(mode="rewind"), None, model=model)
    state = plain.state_dict()
    plain.close()
    sched = AdaLRSScheduler(
        opt, ScriptedController(mode="rewind"), None, model=model, data=RewindableLoader([1])
    )
    with pytest.raises(ValueError, match="holds no loader position"):
        sched.load_state_dict(state)
    bad = sched.state_dict()
    bad["data"]["cursor"] = 7
    with pytest.raises(ValueError, match="`cursor` is 7"):
        sched.load_state_dict(bad)


def test_a_plain_loaders_sampler_gets_set_epoch_and_a_length_is_only_what_is_given():
    data = torch.utils.data.TensorDataset(torch.arange(12.0))
    sampler = torch.utils.data.DistributedSampler(data, num_replicas=1, rank=0, seed=2)
    stream = iter(
        RewindableLoader(torch.utils.data.DataLoader(data, batch_size=3, sampler=sampler))
    )
    passes = [[next(stream)[0].tolist() for _ in range(4)] for _ in range(3)]
    assert sampler.epoch == 2  # set_epoch(pass) before each pass, through the loader's sampler
    assert passes[0] != passes[1] != passes[2]
    assert all(sorted(sum(p, [])) == list(range(12)) for p in passes)

    again = iter(RewindableLoader(torch.utils.data.DataLoader(data, batch_size=3, sampler=sampler)))
    assert [next(again)[0].tolist() for _ in range(4)] == passes[0]  # pass 0 repeats

    unsized = RewindableLoader([1, 2])
    assert unsized  # truth needs no length
    with pytest.raises(TypeError, match="without a length"):
        len(unsized)
    assert len(RewindableLoader([1, 2], length=5)) == 5
    with pytest.raises(ValueError, match="`length` is 0"):
        RewindableLoader([1], length=0)


def test_in_continue_mode_the_loader_only_streams_and_checkpoints_its_position():
    model, opt = model_and_opt()
    script = {1: ("snapshot", 1.0), 3: ("restore", 0.5)}
    loader = RewindableLoader(Passes())
    sched = AdaLRSScheduler(opt, ScriptedController(script), None, model=model, data=loader)
    it = iter(loader)
    seen = []
    for _ in range(7):
        batch = next(it)
        seen.append(batch["x"][0, 0].item())
        sched.step(train_step(model, opt, batch))
    assert loader.kept == 0  # a restore in continue mode: the data moves on
    data = batches()
    assert seen == [timeline_batch(data, i)["x"][0, 0].item() for i in range(7)]
    state = sched.state_dict()
    resumed = RewindableLoader(Passes())
    sched2 = AdaLRSScheduler(opt, ScriptedController(script), None, data=resumed)
    sched2.load_state_dict(state)
    assert next(iter(resumed))["x"][0, 0].item() == timeline_batch(data, 7)["x"][0, 0].item()


def test_once_the_search_has_ended_no_batch_is_kept():
    """After search_end no rewind can come: the loader drops what it kept and keeps nothing
    more (else it would hold every batch of the rest of the run)."""
    cfg = AdaLRSConfig(total_steps=60, window=3, start_ratio=0.1, end_ratio=0.5).resolved(
        rewinds=True
    )
    model, opt = model_and_opt()
    loader = RewindableLoader(Passes())
    sched = AdaLRSScheduler(opt, AdaLRS(cfg), None, model=model, data=loader)
    it = iter(loader)
    kept = []
    while sched.last_step + 1 < 60:
        step = sched.last_step + 1
        sched.step(train_step(model, opt, next(it)))
        kept.append((step, sched.controller.phase, loader.kept))
    assert any(k > 0 for _, phase, k in kept if phase != "frozen")
    assert [k for _, phase, k in kept if phase == "frozen"] == [0] * sum(
        phase == "frozen" for _, phase, _ in kept
    )
    assert kept[-1][1] == "frozen" and loader.nbytes == 0
