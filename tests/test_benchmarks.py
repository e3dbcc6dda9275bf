"""The LM benchmark scripts run end to end at toy sizes (their figures come from full runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_lm_adalrs_recovery_writes_its_table_summary_and_plot(tmp_path):
    out = tmp_path / "recovery"
    # end_ratio 0.9: the default opening (two windows of steps in rewind mode) fits before the
    # search's 12 steps
    proc = _recovery("--adalrs-opt", "end_ratio=0.9", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["args"]["warmup"] == 2
    assert [r["start"] for r in summary["rows"]] == ["x1/10", "x10"]
    for row in summary["rows"]:
        assert row["found_lr"] == row["start_lr"] * row["final_scale"]
        assert row["better"] == (row["val_adalrs"] < row["val_fixed"])
    table = (out / "table.md").read_text()
    assert "warmup 2" in table and '"end_ratio": 0.9' in table and '"start_ratio": 0.05' in table
    assert (out / "lr_trajectories.png").stat().st_size > 0
    for name in ("x1_10_adalrs", "x1_10_fixed", "x10_adalrs", "x10_fixed"):
        assert (out / name / "metrics.parquet").is_file()

    # other AdaLRS options, reusing the runs without AdaLRS: copied (wall_s and all), not retrained
    again = tmp_path / "again"
    proc = _recovery(
        "--adalrs-opt", "end_ratio=1.0", "--side", "above", "--reuse-from", str(out),
        "--out", str(again),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # --side above: only the runs from 10x, the half below is not trained
    assert [r["start"] for r in json.loads((again / "summary.json").read_text())["rows"]] == ["x10"]
    assert sorted(p.name for p in again.iterdir() if p.is_dir()) == ["x10_adalrs", "x10_fixed"]
    a, b = (pd.read_parquet(d / "x10_fixed" / "metrics.parquet") for d in (out, again))
    pd.testing.assert_frame_equal(a, b)
    on = [
        json.loads((d / "x10_adalrs" / "summary.json").read_text())["config"] for d in (out, again)
    ]
    assert (
        on[0]["adalrs_options"]["end_ratio"] == 0.9 and on[1]["adalrs_options"]["end_ratio"] == 1.0
    )


def _recovery(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "lm_adalrs_recovery.py"),
            "--steps", "24", "--window", "3", "--warmup", "2", "--batch-size", "2",
            "--seq-len", "16", "--procs", "1", *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip


def test_hf_trainer_lm_runs_each_arm_through_the_trainer_and_writes_its_table(tmp_path):
    out = tmp_path / "hf"
    base = [
        sys.executable, str(ROOT / "benchmarks" / "hf_trainer_lm.py"), "--steps", "24",
        "--window", "3", "--batch-size", "2", "--seq-len", "16", "--procs", "2",
    ]  # fmt: skip
    proc = subprocess.run(
        [*base, "--adalrs-opt", "end_ratio=0.9", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "summary.json").read_text())["results"]
    assert len(results) == 9  # 3 starts x (fixed, rewind, continue)
    by = {(r["arm"], r["lr"]): r for r in results}
    for lr in {r["lr"] for r in results}:
        assert by[("fixed", lr)]["ran"] == 24 and by[("fixed", lr)]["mode"] is None
        assert by[("continue", lr)]["ran"] == 24 and by[("continue", lr)]["mode"] == "continue"
        rewind = by[("rewind", lr)]
        assert rewind["mode"] == "rewind" and rewind["ran"] > 24  # the opening's rewinds
        assert rewind["events"][0]["kind"] == "opening_candidate"
    table = (out / "table.md").read_text()
    assert table.count("| rewind | rewind |") == 3 and '"end_ratio": 0.9' in table
    bad = subprocess.run(
        [*base, "--arms", "grid", "--out", str(tmp_path / "bad")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "--arms is 'grid'" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()
    short = subprocess.run(
        [*base, "--out", str(tmp_path / "short")],  # window 3 does not fit [0.05, 0.5] of 24
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert short.returncode == 2 and "window" in short.stderr and "Traceback" not in short.stderr


def test_lm_weight_norms_prints_one_ratio_per_weight_matrix():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "lm_weight_norms.py"), "--steps", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| model.")]
    assert len(rows) == 15  # embeddings + 7 matrices in each of the 2 layers
    assert "ratio range:" in proc.stdout


def test_lm_adalrs_recovery_rejects_a_search_window_too_short_before_training(tmp_path):
    proc = _recovery("--out", str(tmp_path / "r"))  # window 3: [0.05, 0.5] of 24 steps is too short
    assert proc.returncode == 2
    assert "window=3 is too long for the search window" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r" / "x10_adalrs").exists()


def test_bench_load_smoke_drives_every_trial_to_the_end_and_times_the_report(tmp_path):
    out = tmp_path / "load.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_load.py"), "--smoke", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    figures = json.loads(out.read_text())
    # every stub trial finished (the driver raises otherwise); each reported at least once
    for row in figures["scheduler"]:
        assert row["results"] >= row["trials"] and row["median_us"] > 0
    assert [r["rows"] for r in figures["report"]] == [1000, 2000]
    assert all(0 < r["load_s"] < r["seconds"] for r in figures["report"])


@pytest.mark.slow
def test_bench_load_times_the_scheduler_inside_a_real_tuner(tmp_path):
    out = tmp_path / "load.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_load.py"), "--trials", "--rows"]
    cmd += ["--tune-trials", "4", "--reports", "3", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    (row,) = json.loads(out.read_text())["tune"]
    # the default four arms sized to 4 trials: adalrs 2, grid 1, hyperband 1, pbt 2
    assert row["trials"] == 6 and row["results"] >= 6 and row["median_us"] > 0
    assert row["rss_peak_mib"] >= row["rss_start_mib"] > 0


def test_lm_probe_signal_writes_its_table(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "lm_probe_signal.py"), "--steps", "60"]
    cmd += ["--window", "5", "--seeds", "0", "1", "--probe-sizes", "2", "--batch-size", "2"]
    cmd += ["--seq-len", "16", "--procs", "1", "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    rows = json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert [r["signal"] for r in rows] == ["train", "probe 2"]
    assert rows[1]["cost_measured"] > 0 and (tmp_path / "table.md").is_file()


def test_lm_signal_autocorrelation_tells_a_smooth_signal_from_independent_noise(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    smooth = np.cumsum(rng.standard_normal(n)) * 0.01  # a random walk: rho near 1
    flat = rng.standard_normal(n) * 0.01  # independent noise: rho <= 0
    pd.DataFrame({"step": np.arange(n), "probe_loss": 2.0 + smooth, "loss": 2.0 + flat}).to_parquet(
        tmp_path / "metrics.parquet"
    )
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "lm_signal_autocorrelation.py"),
            str(tmp_path / "metrics.parquet"),
            "--window",
            "20",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in proc.stdout.splitlines()
        if line.startswith("| probe_loss") or line.startswith("| loss")
    }
    assert float(rows["probe_loss"][1]) > 0.5 and float(rows["probe_loss"][2]) > 1.7
    assert float(rows["loss"][2]) == 1.0  # rho <= 0: no correction
    assert rows["probe_loss"][0] == rows["loss"][0] == "20"  # windows


def _sim_trial_keeps(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sim_trial_keeps.py"), *args],
        cwd=ROOT / "benchmarks",
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sim_trial_keeps_counts_fewer_trials_once_the_search_stops_at_a_bracket(tmp_path):
    out = tmp_path / "keeps.md"
    args = [
        "--seeds",
        "4",
        "--modes",
        "lm",
        "--horizons",
        "8",
        "--starts",
        "0.1",
        "--out",
        str(out),
    ]
    proc = _sim_trial_keeps(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {
        cells[1]: cells
        for cells in (
            [c.strip() for c in line.split("|")[1:-1]] for line in out.read_text().splitlines()
        )
        if len(cells) == 9 and cells[0] == "lm x8"
    }
    stopped, going_on = rows["default"], rows["default_before_bracket"]
    assert stopped[2] == going_on[2] == "4"  # runs
    trials = [float(r[3]) + float(r[6]) for r in (stopped, going_on)]  # up + down per run
    assert trials[0] <= 2 < 5 < trials[1]
    bad = _sim_trial_keeps("--configs", "default,nonsense", "--seeds", "1")
    assert bad.returncode != 0 and "names ['nonsense']" in bad.stderr
