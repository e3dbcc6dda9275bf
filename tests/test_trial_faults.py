"""Faults in trials (issue 15 item 6): a trial whose process dies is retried by Tune from its
last checkpoint, counted as restart overhead and marked in the report; a corrupt checkpoint is
a clear error naming the file, never a hung run."""

from __future__ import annotations

import json
import os
import time

import pandas as pd
import pytest
import torch
from ray.tune import Callback

from adalrs_ray import cli
from adalrs_ray.experiments.compare import run_compare
from adalrs_ray.experiments.presets import get_preset
from adalrs_ray.report.document import Doc
from adalrs_ray.report.sections import _retried_trials
from train_loops.lm import LMConfig, LMTrainer
from train_loops.trainables import check_synthetic_config
from train_loops.trainables.synthetic import STATE_FILE, _load_state


# ---------------------------------------------------------------- corrupt checkpoints
@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "is unreadable"),
        ('{"version": 1, "step": 3}', "missing \\['sim', 'snapshot', 'adalrs'\\]"),
        ("[1, 2]", "is not a synthetic trial state"),
        ('{"version": 9, "step": 3, "sim": {}, "snapshot": null, "adalrs": null}', "version 9"),
    ],
)
def test_a_corrupt_synthetic_checkpoint_names_the_file(tmp_path, content, match):
    (tmp_path / STATE_FILE).write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        _load_state(str(tmp_path))
    assert str(tmp_path / STATE_FILE) in str(err.value)


def test_a_missing_synthetic_checkpoint_file_names_it(tmp_path):
    with pytest.raises(ValueError, match="is unreadable"):
        _load_state(str(tmp_path))


@pytest.fixture
def lm_checkpoint(tmp_path):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    kw = dict(preset="tiny", seq_len=32, batch_size=2, eval_batches=1, steps=4, device="cpu")
    kw.update(log_every=1000, out_dir=str(tmp_path / "run"), checkpoint_every=2)
    trainer = LMTrainer(LMConfig(**kw))
    trainer.setup()
    trainer.train()
    ckpt = trainer.save_checkpoint()
    yield kw, ckpt
    torch.set_num_threads(old)


@pytest.mark.parametrize(
    ("name", "payload", "match"),
    [
        ("trainer_state.pt", b"garbage", "trainer_state.pt' is unreadable"),
        ("trainer_state.pt", None, "trainer_state.pt' is unreadable"),  # truncated
        ("model.safetensors", b"\x00" * 16, "model.safetensors is unreadable"),
    ],
)
def test_a_corrupt_lm_checkpoint_is_a_clear_error(lm_checkpoint, name, payload, match):
    kw, ckpt = lm_checkpoint
    path = ckpt / name
    data = path.read_bytes()
    path.write_bytes(payload if payload is not None else data[: len(data) // 2])
    trainer = LMTrainer(LMConfig(**{**kw, "resume": str(ckpt), "out_dir": None}))
    with pytest.raises(ValueError, match=match):
        trainer.setup()


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"fault_at_step": 5}, "go together"),
        ({"fault_at_step": 0, "fault_marker_dir": "/tmp"}, "fault_at_step is 0"),
        ({"fault_at_step": 400, "fault_marker_dir": "/tmp"}, "fault_at_step is 400"),
    ],
)
def test_fault_injection_settings_are_checked(extra, match):
    base = {"lr": 1e-3, "total_steps": 400, "report_every": 200, "adalrs": None}
    with pytest.raises(ValueError, match=match):
        check_synthetic_config({**base, **extra})


# ---------------------------------------------------------------- the retry setting
def test_a_negative_max_failures_exits_2_with_one_line(capsys, tmp_path):
    code = cli.main(
        ["compare", "--task", "sim", "--max-failures", "-1", "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "max-failures" in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", [-1, 1.5, True, "1"])
def test_run_compare_checks_max_failures_before_ray(value, tmp_path):
    with pytest.raises(ValueError, match="--max-failures is .*, but must be an integer >= 0"):
        run_compare(get_preset("sim"), tmp_path / "o", progress=False, max_failures=value)
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- the report's section
def test_the_report_lists_retries_per_trial_and_per_arm():
    df = pd.DataFrame(
        {
            "arm": ["a", "a", "a", "b", "b"],
            "trial_id": ["t1", "t1", "t2", "t3", "t3"],
            "step": [199, 399, 399, 199, 399],
            "restart_kind": [None, "retry", "retry", None, "pause"],
            "restart_overhead_s": [0.0, 2.5, 1.25, 0.0, 9.0],
        }
    )
    doc = Doc()
    _retried_trials(doc, df)
    md = doc.markdown()
    assert "## Retried trials" in md and "2 retries of 2 trial(s)" in md
    assert "Per arm: a 2 retries of 2 trial(s), 3.8 s overhead." in md  # b's pause is no retry
    assert "trial t1 of arm a: retried before its report at step 399, restart overhead 2.5" in md
    empty = Doc()
    _retried_trials(empty, df[df["restart_kind"] != "retry"])
    assert empty.blocks == []


# ---------------------------------------------------------------- a process that dies
@pytest.mark.ray
@pytest.mark.slow
def test_a_dead_trial_process_is_retried_counted_and_reported(ray_cluster, tmp_path):
    markers = tmp_path / "faults"
    markers.mkdir()
    preset = get_preset("sim").with_overrides(
        total_steps=600,
        report_every=200,
        adalrs={"window": 10},
        adalrs_starts=(0.1,),
        arms=("adalrs", "grid"),
        grid_points=2,
        # every trial's process dies once after step 300, between its reports at 200 and 400
        trial_config={"fault_at_step": 300, "fault_marker_dir": str(markers)},
    )
    out = tmp_path / "cmp"
    result = run_compare(preset, out, progress=False, max_failures=1)
    assert result["errors"] == [] and result["unfinished"] == 0
    assert len(list(markers.iterdir())) == 3  # each of the 3 trials died once

    df = pd.read_parquet(out / "results.parquet")
    retries = df[df["restart_kind"] == "retry"]
    assert retries["trial_id"].nunique() == 3 and len(retries) == 3
    assert (retries["step"] == 399).all()  # the first report after the retry
    assert (retries["restart_overhead_s"] >= 0).all()
    # every trial reported its whole budget once: the 100 steps the dead process ran after its
    # checkpoint at step 200 were never reported, so nothing is counted twice
    per_trial = df.groupby("trial_id")["steps_done"].sum()
    assert (per_trial == 600).all()
    compute = result["compute"].set_index("arm")
    for arm, rows in df.groupby("arm"):
        assert compute.loc[arm, "steps"] == rows["steps_done"].sum()
        assert compute.loc[arm, "retries"] == rows["trial_id"].nunique()
        assert compute.loc[arm, "restart_overhead_s"] > 0
    report = (out / "report.md").read_text()
    assert "## Retried trials" in report and "3 retries of 3 trial(s)" in report
    assert "grid 2 retries of 2 trial(s)" in report
    meta = json.loads((out / "compare_config.json").read_text())
    assert meta["max_failures"] == 1


@pytest.mark.ray
@pytest.mark.slow
def test_without_retries_a_dead_trial_fails_and_the_run_still_reports(ray_cluster, tmp_path):
    markers = tmp_path / "faults"
    markers.mkdir()
    preset = get_preset("sim").with_overrides(
        total_steps=600,
        report_every=200,
        arms=("grid",),
        grid_points=1,
        trial_config={"fault_at_step": 300, "fault_marker_dir": str(markers)},
    )
    result = run_compare(preset, tmp_path / "cmp", progress=False, max_failures=0)
    assert len(result["errors"]) == 1
    assert "FAILED" in (tmp_path / "cmp" / "report.md").read_text()


class _CorruptOnRecover(Callback):
    """Before Tune restarts a failed trial, truncate its last checkpoint's state file."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def on_trial_recover(self, iteration, trials, trial, **info):
        path = os.path.join(trial.checkpoint.path, STATE_FILE)
        with open(path, "r+") as f:
            f.truncate(10)
        self.paths.append(path)


@pytest.mark.ray
@pytest.mark.slow
def test_a_corrupt_checkpoint_fails_the_trial_with_its_path_and_the_run_ends(ray_cluster, tmp_path):
    markers = tmp_path / "faults"
    markers.mkdir()
    preset = get_preset("sim").with_overrides(
        total_steps=600,
        report_every=200,
        arms=("grid",),
        grid_points=1,
        trial_config={"fault_at_step": 300, "fault_marker_dir": str(markers)},
    )
    corrupt = _CorruptOnRecover()
    t0 = time.monotonic()
    result = run_compare(
        preset, tmp_path / "cmp", progress=False, max_failures=1, callbacks=[corrupt]
    )
    assert time.monotonic() - t0 < 120  # the retry failed at once: no hang, no retry loop
    assert len(corrupt.paths) == 1  # one retry, from the checkpoint at step 200
    (error,) = result["errors"]
    assert f"checkpoint file {corrupt.paths[0]!r} is unreadable" in error
    assert "FAILED" in (tmp_path / "cmp" / "report.md").read_text()
    compute = result["compute"].set_index("arm")
    assert compute.loc["grid", "errors"] == 1 and compute.loc["grid", "retries"] == 0
