"""examples/own_model.py --smoke-test: a model and data made in the script, AdaLRSTrial as the
glue, every default arm in one Tuner, the report built; in-process on the session Ray cluster."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_examples import load_example

from search_algos import DEFAULT_ARMS
from tests.opening_events import assert_default_opening


@pytest.fixture(scope="module")
def example():
    # not in sys.modules, so the trial processes get its functions by value (cloudpickle)
    return load_example("own_model")


@pytest.mark.ray
def test_own_model_smoke_test_runs_every_default_arm(ray_cluster, example, tmp_path, capsys):
    out = tmp_path / "own"
    result = example.main(["--smoke-test", "--out", str(out)])
    assert result["errors"] == 0
    assert ray_cluster.is_initialized()  # the session cluster is left running
    compute = result["compute"].set_index("arm")
    assert sorted(compute.index) == sorted(DEFAULT_ARMS)
    assert (compute["trials"] >= 1).all()
    # one full-budget run, plus the steps its rewinds ran again (the opening's multipliers)
    assert 200 < compute.loc["adalrs", "steps"] <= 2 * 200
    assert compute.loc["grid", "steps"] == 2 * 200
    for name in ("report.md", "report.html", "results.parquet", "adalrs_lr.png"):
        assert (out / name).is_file(), name
    results = pd.read_parquet(out / "results.parquet")
    assert set(results["arm"]) == set(DEFAULT_ARMS)
    assert results["val_loss"].notna().all() and results["steps_done"].gt(0).all()
    ada = results[results["arm"] == "adalrs"]
    events = [e for s in ada["adalrs_events"] for e in json.loads(s)]
    # AdaLRS searched in the user's loop, which rewinds (rewinds=True): the opening tried
    # other LRs from the initial model, then the search ran within its window
    assert_default_opening(events)
    assert {"search_start", "search_end"} <= {e["kind"] for e in events}
    # the trial's best val_loss beats the untrained model's (the user's loop really trains)
    assert results["val_loss"].min() < 0.5 * results.groupby("trial_id")["val_loss"].first().max()
    # Tune's own logs in every trial directory
    trials = [p for p in result["tune_dir"].iterdir() if p.is_dir()]
    assert len(trials) == results["trial_id"].nunique()
    for d in trials:
        assert list(d.glob("events.out.tfevents*")) and (d / "progress.csv").is_file(), d.name
    assert "report:" in capsys.readouterr().out


def test_own_model_refuses_an_existing_run(example, tmp_path):
    (tmp_path / "tune").mkdir()
    with pytest.raises(SystemExit):
        example.main(["--smoke-test", "--out", str(tmp_path)])
