"""Tune's own per-trial logs after ``adalrs-ray compare`` (issue 14 item 4): TensorBoard event
files, progress.csv and result.json in every trial directory, with the report's keys; none with
``--no-loggers``. (tests/conftest.py sets TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1 for the session:
the loggers here come from the runner itself.)"""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from adalrs_ray import cli
from adalrs_ray.comparison import explicit_loggers, tune_loggers
from adalrs_ray.comparison.loggers import AUTO_LOGGERS_ENV

# a tiny simulator comparison: adalrs 1 + grid 2 + hyperband 2 + pbt 2 trials of 2 reports
ARGS = [
    "compare",
    "--task",
    "sim",
    "--steps",
    "400",
    "--report-every",
    "200",
    "--window",
    "10",
    "--grid-points",
    "2",
    "--hyperband-trials",
    "2",
    "--pbt-trials",
    "2",
    "--adalrs-starts",
    "0.1",
    "--quiet",
]
LOGGED = ("loss", "val_loss", "lr", "scale", "adalrs_events", "steps_done")


def trial_dirs(out):
    dirs = sorted(p for p in (out / "tune").iterdir() if p.is_dir())
    assert dirs, "no trial directory"
    return dirs


@pytest.mark.ray
def test_compare_writes_tensorboard_csv_and_json_per_trial(ray_cluster, tmp_path):
    out = tmp_path / "logs"
    assert cli.main([*ARGS, "--out", str(out)]) == 0
    dirs = trial_dirs(out)
    assert len(dirs) == 7
    for d in dirs:
        assert list(d.glob("events.out.tfevents*")), d.name
        progress = pd.read_csv(d / "progress.csv")
        assert set(LOGGED) <= set(progress.columns), d.name
        assert len(progress) >= 1
        rows = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
        assert all(set(LOGGED) <= set(r) for r in rows)
    # the AdaLRS trial's events reach the CSV as the JSON string of each report
    ada = [d for d in dirs if json.loads((d / "params.json").read_text())["adalrs"] is not None]
    assert len(ada) == 1
    events = pd.read_csv(ada[0] / "progress.csv")["adalrs_events"]
    assert any(json.loads(e) for e in events)
    assert json.loads((out / "compare_config.json").read_text())["loggers"] is True
    assert os.environ.get(AUTO_LOGGERS_ENV) == "1"  # conftest's value, restored after the run


@pytest.mark.ray
def test_no_loggers_writes_none(ray_cluster, tmp_path):
    out = tmp_path / "quiet"
    args = [*ARGS[: ARGS.index("--grid-points")], "--arms", "grid", "--grid-points", "2"]
    assert cli.main([*args, "--quiet", "--no-loggers", "--out", str(out)]) == 0
    dirs = trial_dirs(out)
    assert len(dirs) == 2
    for d in dirs:
        for pattern in ("events.out.tfevents*", "progress.csv", "result.json"):
            assert not list(d.glob(pattern)), (d.name, pattern)
    assert (out / "report.md").is_file()


@pytest.mark.ray
def test_tunes_own_logger_callbacks_join_by_argument_or_environment(
    ray_cluster, tmp_path, monkeypatch
):
    """The documented ways to add Tune's MLflow or W&B logger: ``run_compare(callbacks=...)``
    and Tune's ``RAY_TUNE_CALLBACKS`` (class paths, built without arguments) for the CLI;
    exercised with Tune's JSON and CSV loggers (MLflow and W&B are not installed here)."""
    from ray.tune.logger import CSVLoggerCallback

    from adalrs_ray.experiments.compare import resolve_preset, run_compare

    monkeypatch.setenv("RAY_TUNE_CALLBACKS", "ray.tune.logger.JsonLoggerCallback")
    preset = resolve_preset("sim", total_steps=400, report_every=200, arms=("grid",), grid_points=1)
    out = tmp_path / "extra"
    result = run_compare(
        preset, out, progress=False, loggers=False, callbacks=[CSVLoggerCallback()]
    )
    assert result["errors"] == []
    (trial,) = trial_dirs(out)
    assert (trial / "result.json").is_file() and (trial / "progress.csv").is_file()
    assert not list(trial.glob("events.out.tfevents*"))
    with pytest.raises(ValueError, match="loggers is 1, but must be True or False"):
        run_compare(preset, tmp_path / "bad", loggers=1)


def test_tune_loggers_and_the_environment(monkeypatch):
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    kinds = [type(c) for c in tune_loggers()]
    assert kinds == [CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback]
    assert tune_loggers(False) == []
    with pytest.raises(ValueError, match="loggers is 'yes', but must be True or False"):
        tune_loggers("yes")
    monkeypatch.setenv(AUTO_LOGGERS_ENV, "0")
    with explicit_loggers():
        assert os.environ[AUTO_LOGGERS_ENV] == "1"
    assert os.environ[AUTO_LOGGERS_ENV] == "0"
    monkeypatch.delenv(AUTO_LOGGERS_ENV)
    with explicit_loggers():
        assert os.environ[AUTO_LOGGERS_ENV] == "1"
    assert AUTO_LOGGERS_ENV not in os.environ
