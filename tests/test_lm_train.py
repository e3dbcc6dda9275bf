"""The LM pretraining loop: learning, exact resume, NaN handling, hooks, checkpoints, config."""

from __future__ import annotations

import json
import logging
import math

import pandas as pd
import pytest
import torch
from lm_configs import tiny_lm_config

from tests.opening_events import assert_default_opening
from train_loops.lm import METRIC_COLUMNS, LMConfig, LMTrainer, LoopHooks, find_checkpoint, run

COMPARED = ["step", "lr", "scale", "loss", "grad_norm", "tokens", "val_loss", "action", "event"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(corpus, cache, **kw) -> LMConfig:
    return tiny_lm_config(corpus, cache, **{"lr": 3e-3, **kw})


def test_tiny_preset_loss_falls_on_the_stdlib_corpus(tmp_path):
    summary = run(
        LMConfig(
            preset="tiny",
            steps=100,
            lr=3e-3,
            seq_len=64,
            batch_size=8,
            schedule="constant",
            device="cpu",
            eval_batches=4,
            cache_dir=str(tmp_path / "cache"),
            out_dir=str(tmp_path / "run"),
        )
    )
    df = pd.read_parquet(tmp_path / "run" / "metrics.parquet")
    assert summary["status"] == "completed" and len(df) == 100
    first, last = df["loss"].iloc[0], df["loss"].iloc[-10:].mean()
    assert first > 5.0  # ~ln(257) at random init
    assert last < first - 1.5
    assert summary["val_loss"] < first - 1.5


def test_metrics_and_summary_files(corpus, cache, tmp_path):
    summary = run(_cfg(corpus, cache, steps=12, out_dir=str(tmp_path), report_every=5))
    df = pd.read_parquet(tmp_path / "metrics.parquet")
    assert list(df.columns) == list(METRIC_COLUMNS)
    assert df["step"].tolist() == list(range(12))
    assert df["tokens"].iloc[-1] == 12 * 4 * 32
    assert df["val_loss"].notna().sum() == 3  # reports after steps 4, 9 and the final one
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("train_loss", "val_loss", "test_loss", "val_ppl", "test_ppl", "final_lr"):
        assert math.isfinite(on_disk[key]) and on_disk[key] == pytest.approx(summary[key])
    assert on_disk["val_ppl"] == pytest.approx(math.exp(on_disk["val_loss"]))
    assert on_disk["status"] == "completed" and on_disk["steps"] == 12
    assert on_disk["config"]["steps"] == 12
    assert (find_checkpoint(tmp_path) / "model.safetensors").is_file()


def _interrupted_then_resumed(corpus, cache, tmp_path, stop_at, **kw):
    full = run(_cfg(corpus, cache, out_dir=str(tmp_path / "full"), **kw))
    trainer_box = {}
    hooks = LoopHooks(should_stop=lambda: trainer_box["t"].step >= stop_at)
    trainer = trainer_box["t"] = LMTrainer(
        _cfg(corpus, cache, out_dir=str(tmp_path / "cut"), **kw), hooks
    )
    trainer.setup()
    stopped = trainer.train()
    trainer.cleanup()
    assert stopped["status"] == "stopped" and stopped["steps"] == stop_at
    resumed = run(
        _cfg(corpus, cache, out_dir=str(tmp_path / "resumed"), resume=str(tmp_path / "cut"), **kw)
    )
    a = pd.read_parquet(tmp_path / "full" / "metrics.parquet")
    b = pd.read_parquet(tmp_path / "resumed" / "metrics.parquet")
    return full, resumed, a, b


_ADALRS = dict(schedule="wsd", adalrs=True, window=4, steps=80, lr=1e-2)
_REWIND = {"backtrack_mode": "rewind", "decay_basis": "adjustments"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "kw",
    [
        dict(schedule="cosine", warmup_steps=5, report_every=7, checkpoint_every=10),
        # the paper's rule: its trial at step 35 fails and restores after the resume
        dict(_ADALRS, adalrs_options={"end_ratio": 0.6, "rule": "paper"}),
        dict(_ADALRS, adalrs_options={"end_ratio": 0.6, "rule": "paper", **_REWIND}),
        # the regression rule: two-sided trials, the same run resumed in the middle of one
        dict(_ADALRS, adalrs_options={"end_ratio": 0.6, "rule": "regression"}),
        # the default: the LM loop rewinds, so the opening rule in rewind mode
        dict(_ADALRS, adalrs_options={"end_ratio": 0.6}),
    ],
    ids=["cosine", "adalrs-paper", "adalrs-paper-rewind", "adalrs-regression", "adalrs"],
)
def test_resume_reproduces_the_uninterrupted_run_exactly(corpus, cache, tmp_path, kw):
    # stop at step 38: mid report window; with AdaLRS (search [8, 48)) inside an upscale trial
    # whose snapshot (step 35) must travel in the checkpoint to be restored after the resume
    full, resumed, a, b = _interrupted_then_resumed(corpus, cache, tmp_path, 38, **kw)
    pd.testing.assert_frame_equal(a[COMPARED], b[COMPARED])
    for key in ("val_loss", "test_loss", "train_loss", "final_lr", "final_scale", "tokens"):
        assert resumed[key] == full[key], key
    assert full["adalrs_events"] == resumed["adalrs_events"]
    if kw.get("adalrs") and kw["adalrs_options"].get("rule") == "paper":
        assert "restore" in set(a["action"][a["step"] > 38])
    elif kw.get("adalrs") and kw["adalrs_options"].get("rule") == "regression":
        kinds = {e["kind"] for e in full["adalrs_events"]}
        assert {"trial_start"} <= kinds and kinds & {"keep", "inconclusive", "backtrack"}
    elif kw.get("adalrs"):
        assert_default_opening(full["adalrs_events"])
        assert full["steps_executed"] > full["steps"] == 80  # the opening's rewound steps


def test_rewind_mode_moves_the_step_counter_back_to_the_snapshot(corpus, cache):
    t = LMTrainer(
        _cfg(
            corpus,
            cache,
            **dict(_ADALRS, adalrs_options={"end_ratio": 0.6, "rule": "paper", **_REWIND}),
        )
    )
    t.setup()
    summary = t.train()
    steps = t.metrics["step"]
    back = [i for i in range(1, len(steps)) if steps[i] <= steps[i - 1]]
    assert back, "no restore happened"
    for i in back:
        assert t.metrics["action"][i - 1] == "restore"
        assert steps[i] - 1 in [s for s, a in zip(steps, t.metrics["action"]) if a == "snapshot"]
    assert summary["steps"] == 80 and summary["steps_executed"] > 80


def test_resume_logs_which_config_value_wins(corpus, cache, tmp_path, caplog):
    run(_cfg(corpus, cache, steps=6, out_dir=str(tmp_path / "a")))
    with caplog.at_level(logging.INFO, logger="train_loops.lm"):
        t = LMTrainer(
            _cfg(corpus, cache, steps=6, lr=1e-2, log_every=3, resume=str(tmp_path / "a"))
        )
        t.setup()
    assert t.cfg.lr == 3e-3 and t.cfg.log_every == 3 and t.step == 6
    text = caplog.text
    assert "lr=0.01 differs from the checkpoint's 0.003; the checkpoint's value wins" in text
    assert "log_every=3 differs from the checkpoint's 1000; the given value wins" in text


def test_nan_loss_without_adalrs_stops_cleanly_as_diverged(corpus, cache, tmp_path):
    calls = {"n": 0}

    def reduce_mean(t):  # the 5th training loss is NaN (no evaluation before it)
        calls["n"] += 1
        return float("nan") if calls["n"] == 5 else float(t)

    summary = run(
        _cfg(corpus, cache, steps=20, report_every=20, out_dir=str(tmp_path)),
        LoopHooks(reduce_mean=reduce_mean),
    )
    assert summary["status"] == "diverged" and summary["steps"] == 5
    df = pd.read_parquet(tmp_path / "metrics.parquet")
    assert len(df) == 5 and math.isnan(df["loss"].iloc[-1])
    assert math.isfinite(summary["val_loss"])  # the NaN step did not update the weights
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"


def _adalrs_run_with_losses(corpus, cache, reduce_mean, **kw) -> dict:
    """A 60-step AdaLRS run at window 4 whose all-reduced losses pass through ``reduce_mean``."""
    cfg = _cfg(corpus, cache, steps=60, adalrs=True, window=4, report_every=60, **kw)
    return run(cfg, LoopHooks(reduce_mean=reduce_mean))


def _nan_at_call(n: int):
    """A ``reduce_mean`` hook that returns NaN at its ``n``-th call (1-based)."""
    calls = {"n": 0}

    def reduce_mean(t):
        calls["n"] += 1
        return float("nan") if calls["n"] == n else float(t)

    return reduce_mean


def test_nan_loss_with_adalrs_is_handled_by_the_controller(corpus, cache):
    # NaN at the 13th call: step 12, inside the search window [6, 24); continue mode has no
    # opening, so the search sees it
    summary = _adalrs_run_with_losses(
        corpus, cache, _nan_at_call(13), adalrs_options={"backtrack_mode": "continue"}
    )
    assert summary["status"] == "completed"
    kinds = [e["kind"] for e in summary["adalrs_events"]]
    assert "nonfinite_loss" in kinds


def test_nan_loss_in_the_default_opening_scores_its_multiplier_inf(corpus, cache):
    # NaN at the 25th call: the first step of the fourth multiplier (10), each multiplier
    # training two windows of 4 steps
    summary = _adalrs_run_with_losses(corpus, cache, _nan_at_call(25))
    assert summary["status"] == "completed"
    (opening,) = [e for e in summary["adalrs_events"] if e["kind"] == "opening"]
    assert opening["factors"][3] == 10.0 and opening["scores"][3] == "inf"
    assert opening["factor"] != 10.0


@pytest.mark.parametrize("mode", ["continue", "auto"])
def test_persistent_nan_with_adalrs_stops_after_nan_patience(corpus, cache, mode):
    summary = _adalrs_run_with_losses(
        corpus,
        cache,
        lambda t: float("nan"),
        nan_patience=3,
        adalrs_options={"backtrack_mode": mode},
    )
    assert summary["status"] == "diverged" and summary["steps_executed"] == 3
    # "auto" rewinds in the LM loop: each NaN ends an opening multiplier and rewinds to step 0
    assert summary["steps"] == (3 if mode == "continue" else 0)


def test_report_hook_gets_design_keys_per_window_and_sums_compute(corpus, cache, tmp_path):
    reports = []
    summary = run(
        _cfg(corpus, cache, steps=10, report_every=4, out_dir=str(tmp_path)),
        LoopHooks(report=lambda m, c: reports.append((m, c)), checkpoint_on_report=True),
    )
    keys = {"step", "loss", "val_loss", "lr", "scale", "steps_done", "tokens_done"}
    keys |= {"worker_s_done", "adalrs_events"}
    assert all(set(m) == keys for m, _ in reports)
    assert [m["step"] for m, _ in reports] == [3, 7, 9]
    assert sum(m["steps_done"] for m, _ in reports) == 10
    assert sum(m["tokens_done"] for m, _ in reports) == summary["tokens"]
    assert all((tmp_path / "checkpoints").exists() and c is not None for _, c in reports)
    assert json.loads(reports[0][0]["adalrs_events"]) == []


def test_should_stop_ends_the_run_as_stopped(corpus, cache):
    summary = run(_cfg(corpus, cache, steps=50), LoopHooks(should_stop=lambda: True))
    assert summary["status"] == "stopped" and summary["steps"] == 0


def test_init_from_loads_weights_only(corpus, cache, tmp_path):
    first = run(_cfg(corpus, cache, steps=30, out_dir=str(tmp_path / "a")))
    t = LMTrainer(_cfg(corpus, cache, steps=5, init_from=str(tmp_path / "a")))
    t.setup()
    assert t.step == 0 and t.optimizer.state == {}
    assert t.evaluate("validation")["loss"] == pytest.approx(first["val_loss"], rel=1e-6)


def test_init_from_a_different_preset_is_a_clear_error(corpus, cache, tmp_path):
    run(_cfg(corpus, cache, steps=2, out_dir=str(tmp_path / "a")))
    t = LMTrainer(_cfg(corpus, cache, preset="small", init_from=str(tmp_path / "a")))
    with pytest.raises(ValueError, match="do not fit preset 'small'"):
        t.setup()


def test_resume_from_a_path_without_checkpoints_is_a_clear_error(corpus, cache, tmp_path):
    with pytest.raises(ValueError, match="neither a checkpoint directory"):
        LMTrainer(_cfg(corpus, cache, resume=str(tmp_path))).setup()


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(lr=0.0), "lr is 0.0"),
        (dict(lr=float("nan")), "lr is nan"),
        (dict(steps=0), "steps is 0"),
        (dict(schedule="linear"), "schedule is 'linear'"),
        (dict(warmup_steps=50, steps=40), "warmup_steps is 50"),
        (dict(preset="huge"), "preset is 'huge'"),
        (dict(tokenizer="sentencepiece"), "tokenizer is 'sentencepiece'"),
        (dict(dtype="float16"), "dtype is 'float16'"),
        (dict(beta2=1.0), "beta2 is 1.0"),
        (dict(resume="a", init_from="b"), "pick one"),
        (dict(adalrs=True, window=40), "window=40 is too long"),
        (dict(adalrs=True, adalrs_options={"total_steps": 5}), "comes from LMConfig"),
        (dict(adalrs=True, adalrs_options={"gamma": 5}), "unknown AdaLRSConfig fields"),
    ],
)
def test_bad_config_raises_value_error(corpus, cache, kw, match):
    with pytest.raises(ValueError, match=match):
        _cfg(corpus, cache, **kw)


def test_data_too_small_for_seq_len_is_a_clear_error(cache, tmp_path):
    f = tmp_path / "small.txt"
    f.write_text("x" * 2000)
    t = LMTrainer(LMConfig(data=str(f), cache_dir=str(cache), seq_len=512, device="cpu"))
    with pytest.raises(ValueError, match="'validation' split .* fewer than one sequence"):
        t.setup()


def test_bfloat16_autocast_trains(corpus, cache):
    summary = run(_cfg(corpus, cache, steps=4, dtype="bfloat16"))
    assert summary["status"] == "completed" and math.isfinite(summary["val_loss"])


@pytest.mark.parametrize("preset, n", [("tiny", 148_224), ("small", 4_002_304)])
def test_preset_parameter_counts_match_the_docs(preset, n):
    from train_loops.model import build_model, count_parameters

    assert count_parameters(build_model(preset, vocab_size=257, max_seq_len=128)) == n


def test_model_init_is_seeded_and_leaves_the_global_rng_alone():
    from train_loops.model import build_model

    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b, c = (build_model("tiny", 257, 64, seed=s) for s in (0, 0, 1))
    assert torch.equal(torch.get_rng_state(), before)
    wa, wb, wc = (m.model.embed_tokens.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


@pytest.mark.parametrize(
    "device, match",
    [("gpu", "device is 'gpu'"), ("auto:0", "device is 'auto:0'"), ("cuda", "not available")],
)
def test_bad_or_missing_device_is_a_clear_error(device, match):
    from train_loops.model import resolve_device

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ValueError, match=match):
        resolve_device(device)


def test_set_base_lr_rescales_schedule_and_groups_of_a_resumed_run(corpus, cache, tmp_path):
    first = LMTrainer(_cfg(corpus, cache, steps=20, schedule="cosine", out_dir=str(tmp_path)))
    first.setup()
    first.save_checkpoint()
    expected_lr = first.optimizer.param_groups[0]["lr"] * 2.5
    t = LMTrainer(_cfg(corpus, cache, steps=20, schedule="cosine", resume=str(tmp_path)))
    with pytest.raises(RuntimeError, match="setup"):
        t.set_base_lr(1e-3)
    t.setup()
    t.set_base_lr(3e-3)  # unchanged: a no-op
    t.set_base_lr(7.5e-3)
    assert t.cfg.lr == 7.5e-3
    assert t.scheduler.base_lrs == [pytest.approx(7.5e-3)] * len(t.scheduler.base_lrs)
    for group in t.optimizer.param_groups:
        assert group["initial_lr"] == pytest.approx(7.5e-3)
        assert group["lr"] == pytest.approx(expected_lr)
    for bad in (0, -1.0, float("nan"), float("inf"), True, "1e-3"):
        with pytest.raises(ValueError, match="finite number > 0"):
            t.set_base_lr(bad)


def test_set_base_lr_refuses_to_change_an_adalrs_run(corpus, cache):
    t = LMTrainer(_cfg(corpus, cache, **_ADALRS))
    t.setup()
    t.set_base_lr(t.cfg.lr)  # unchanged is fine
    with pytest.raises(ValueError, match="AdaLRS on"):
        t.set_base_lr(t.cfg.lr * 2)
