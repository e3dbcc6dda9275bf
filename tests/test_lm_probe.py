"""The probe-batch signal of the LM loop (issue 13 item 2): AdaLRS observes the loss of a fixed
held-out batch instead of the training loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lm_configs import tiny_lm_config

from adalrs_ray.core.controller import replay
from train_loops import data as lmdata
from train_loops.lm import LMConfig, LMTrainer, LoopHooks

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(corpus, tmp_path, **kw) -> LMConfig:
    return tiny_lm_config(
        corpus, tmp_path / "cache", **{"lr": 3e-3, "steps": 60, "save_final": False, **kw}
    )


def test_the_probe_batch_is_the_tail_of_validation_disjoint_from_evaluation(corpus, tmp_path):
    tr = LMTrainer(_cfg(corpus, tmp_path, probe_sequences=6))
    tr.setup()
    n = len(tr.seqs["validation"])
    evaluated = {int(i) for b in lmdata.eval_batches(n, 4, 2) for i in b}
    assert list(tr._probe_idx) == list(range(n - 6, n))
    assert not evaluated & set(tr._probe_idx.tolist())


def test_probe_shares_split_across_ranks(corpus, tmp_path):
    shares = []
    for rank in range(2):
        tr = LMTrainer(
            _cfg(corpus, tmp_path, probe_sequences=6), LoopHooks(rank=rank, world_size=2)
        )
        tr.setup()
        shares.append(set(tr._probe_idx.tolist()))
    n = len(tr.seqs["validation"])
    assert shares[0] | shares[1] == set(range(n - 6, n)) and not shares[0] & shares[1]


def test_adalrs_observes_the_probe_loss_and_the_log_keeps_both(corpus, tmp_path):
    cfg = _cfg(corpus, tmp_path, adalrs=True, window=3, adalrs_signal="probe", probe_sequences=4)
    tr = LMTrainer(cfg)
    tr.setup()
    tr.train()
    df = tr.metrics_frame()
    assert df["probe_loss"].notna().all()
    assert not np.allclose(df["probe_loss"], df["loss"])
    # the controller's decisions are those of the probe stream, not of the training stream
    kinds = [e["kind"] for e in tr.scheduler_events()]
    assert kinds == [e["kind"] for e in replay(cfg.adalrs_config(), df["probe_loss"]).events]
    # the probe loss is the loss of those sequences on the model after the step
    with torch.no_grad():
        tr.model.eval()
        again = float(tr._loss(tr._batch(tr.seqs["validation"], tr._probe_idx)))
    assert again == pytest.approx(df["probe_loss"].iloc[-1], rel=1e-6)


def test_without_a_probe_the_column_is_nan_and_nothing_changes(corpus, tmp_path):
    a = LMTrainer(_cfg(corpus, tmp_path, steps=12))
    a.setup()
    a.train()
    b = LMTrainer(_cfg(corpus, tmp_path, steps=12, probe_sequences=4))
    b.setup()
    b.train()
    assert a.metrics_frame()["probe_loss"].isna().all()
    # probing reads the model without changing it: the training losses are identical
    assert a.metrics["loss"] == b.metrics["loss"]


def test_a_non_finite_training_loss_reaches_the_controller_not_the_probe(corpus, tmp_path):
    cfg = _cfg(corpus, tmp_path, adalrs=True, window=3, adalrs_signal="probe", probe_sequences=6)
    tr = LMTrainer(cfg)
    tr.setup()
    seen = []
    real = tr.scheduler.step
    tr.scheduler.step = lambda loss: (seen.append(loss), real(loss))[1]
    original = tr._loss
    # NaN in the training forward of step 30 only (training batches have 4 rows, the probe 6)
    tr._loss = lambda batch: (
        original(batch) * (float("nan") if len(seen) == 30 and batch.shape[0] == 4 else 1.0)
    )
    tr.train()
    assert math.isnan(seen[30]) and all(math.isfinite(x) for x in seen[:30])


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"adalrs_signal": "probe"}, "probe_sequences is 0"),
        ({"adalrs_signal": "eval"}, "adalrs_signal is 'eval'"),
        ({"probe_sequences": -1}, "probe_sequences is -1"),
    ],
)
def test_bad_probe_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        LMConfig(**kw)


def test_a_probe_larger_than_the_free_validation_tail_is_refused(corpus, tmp_path):
    tr = LMTrainer(_cfg(corpus, tmp_path, probe_sequences=10**6))
    with pytest.raises(ValueError, match="probe_sequences is 1000000, but the validation split"):
        tr.setup()


def test_an_odd_probe_on_two_ranks_is_refused(corpus, tmp_path):
    tr = LMTrainer(_cfg(corpus, tmp_path, probe_sequences=5), LoopHooks(rank=0, world_size=2))
    with pytest.raises(ValueError, match="multiple of the 2 workers"):
        tr.setup()


def test_a_checkpoint_from_before_the_probe_resumes(corpus, tmp_path):
    cfg = _cfg(corpus, tmp_path, steps=8, out_dir=str(tmp_path / "run"))
    tr = LMTrainer(cfg)
    tr.setup()
    tr.train()
    ckpt = tr.save_checkpoint()
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
    del state["metrics"]["probe_loss"]  # the format before the probe column
    torch.save(state, ckpt / "trainer_state.pt")
    again = LMTrainer(_cfg(corpus, tmp_path, steps=8, resume=str(ckpt)))
    again.setup()
    assert len(again.metrics["probe_loss"]) == 8
    assert all(math.isnan(x) for x in again.metrics["probe_loss"])


def test_train_cli_signal_probe_defaults_to_one_batch(corpus, tmp_path):
    import pandas as pd

    from adalrs_ray.cli import main

    out = tmp_path / "run"
    argv = ["train", "--data", str(corpus), "--cache-dir", str(tmp_path / "cache")]
    argv += ["--seq-len", "32", "--batch-size", "4", "--eval-batches", "1", "--steps", "40"]
    argv += ["--adalrs", "--window", "3", "--signal", "probe", "--device", "cpu", "--quiet"]
    argv += ["--adalrs-opt", "rule=regression"]  # 40 steps: no room for the default's opening
    assert main([*argv, "--out", str(out)]) == 0
    summary = pd.read_json(out / "summary.json", typ="series")
    assert summary["config"]["adalrs_signal"] == "probe"
    assert summary["config"]["probe_sequences"] == 4
    assert pd.read_parquet(out / "metrics.parquet")["probe_loss"].notna().all()


def test_in_a_comparison_only_the_adalrs_trials_probe():
    from train_loops.trainables import lm_config_from_trial

    shared = {"lr": 2e-3, "total_steps": 200, "report_every": 20, "preset": "tiny"}
    shared.update(adalrs_signal="probe", probe_sequences=16)
    on = lm_config_from_trial({**shared, "adalrs": {"window": 10}}, out_dir="/tmp/o")
    off = lm_config_from_trial({**shared, "adalrs": None}, out_dir="/tmp/o")
    assert (on.adalrs_signal, on.probe_sequences) == ("probe", 16)
    assert (off.adalrs_signal, off.probe_sequences) == ("train", 0)
