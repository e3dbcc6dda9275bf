"""The opening range test in the LM loop (issue 13): the controller snapshots the model as
initialised, each multiplier trains from it, and in ``rewind`` mode the loop goes back to step 0
with its data; the checkpoints written after a rewind (smaller step numbers) are the ones kept."""

from __future__ import annotations

import json

import pytest
import torch
from lm_configs import tiny_lm_config

from train_loops.lm import LMConfig, LMTrainer, find_checkpoint

OPENING = {
    "start_ratio": 0.1,
    "end_ratio": 0.9,
    "opening_factors": [0.1, 10.0],
    "opening_steps": 6,
    "opening_tail": 2,
    "opening_extends": 0,  # the grid alone; the rounds past its edge: test_controller_extends.py
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(corpus, tmp_path, loop=None, **options) -> LMConfig:
    return tiny_lm_config(
        corpus,
        tmp_path / "cache",
        **(loop or {}),
        eval_batches=1,
        lr=3e-3,
        steps=60,
        window=5,
        adalrs=True,
        adalrs_options={**OPENING, **options},
        save_final=False,
    )


def _events(tr: LMTrainer) -> list[dict]:
    return [e for row in tr.metrics["event"] if row for e in json.loads(row)]


def test_rewind_opening_goes_back_to_step_0_and_trains_the_whole_run(corpus, tmp_path):
    cfg = _cfg(corpus, tmp_path, backtrack_mode="rewind", decay_basis="adjustments")
    tr = LMTrainer(cfg)
    tr.setup()
    assert tr.scheduler.lr[0] == pytest.approx(3e-4)  # 0.1 x lr from step 0
    summary = tr.train()
    steps = tr.metrics["step"]
    assert steps[:6] == list(range(6)) and steps[6:12] == list(range(6))  # 0.1, then 10
    opening = [e for e in _events(tr) if e["kind"] == "opening"][0]
    assert (
        opening["factors"] == [0.1, 10.0, 1.0] and opening["step"] == 5
    )  # steps 0-5 once more, at 1
    assert summary["steps"] == 60
    assert summary["steps_executed"] >= 60 + 12


def test_continue_opening_discards_the_steps_of_the_multipliers_it_did_not_keep(corpus, tmp_path):
    tr = LMTrainer(_cfg(corpus, tmp_path, backtrack_mode="continue"))
    tr.setup()
    tr.train()
    steps = tr.metrics["step"]
    assert steps == list(range(60))  # the loop's steps go on
    ev = _events(tr)
    assert [e["step"] for e in ev if e["kind"] == "opening_candidate"] == [5, 11]
    assert tr.scheduler.controller.state_dict()["discarded_steps"] >= 12


def test_checkpoints_after_a_rewind_are_kept_and_found(corpus, tmp_path):
    loop = {"out_dir": str(tmp_path / "run"), "checkpoint_every": 4, "keep_checkpoints": 2}
    cfg = _cfg(corpus, tmp_path, loop, backtrack_mode="rewind", decay_basis="adjustments")
    tr = LMTrainer(cfg)
    tr.setup()
    tr.train()
    kept = list((tmp_path / "run" / "checkpoints").glob("step-*"))
    assert len(kept) == 2
    executed = {
        c: torch.load(c / "trainer_state.pt", weights_only=False)["steps_executed"] for c in kept
    }
    latest = find_checkpoint(tmp_path / "run")
    assert executed[latest] == max(executed.values()) == tr.steps_executed
