"""``adalrs-ray train`` and ``adalrs-ray sweep``, and the sweep's velocity analysis."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from adalrs_ray.cli import main
from adalrs_ray.experiments import sweep as cli_train
from tests.opening_events import assert_default_opening


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for i in range(120):
        (root / f"f{i:03d}.txt").write_text("".join(f"item {i} {j} = {j * i}\n" for j in range(30)))
    return root


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _common(corpus, tmp_path):
    return ["--data", str(corpus), "--cache-dir", str(tmp_path / "cache"), "--seq-len", "32"]
    # (batch size and eval batches are set per test)


def test_train_writes_metrics_and_summary(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", *_common(corpus, tmp_path), "--batch-size", "4", "--eval-batches", "2"]
    argv += [
        "--steps",
        "12",
        "--lr",
        "3e-3",
        "--schedule",
        "wsd",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    df = pd.read_parquet(out / "metrics.parquet")
    assert {"step", "lr", "scale", "loss", "tokens", "wall_s", "event"} <= set(df.columns)
    assert len(df) == 12
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["config"]["schedule"] == "wsd"
    assert "completed: 12 steps" in capsys.readouterr().out


def test_train_with_adalrs_and_options_then_resume(corpus, tmp_path):
    out = tmp_path / "run"
    argv = ["train", *_common(corpus, tmp_path), "--batch-size", "4", "--eval-batches", "1"]
    # 60 steps: the default's opening (two windows of steps) and the search fit in [6, 24)
    argv += ["--steps", "60", "--adalrs", "--window", "3", "--adalrs-opt", "lam=0.95"]
    argv += ["--device", "cpu", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["adalrs_options"] == {"lam": 0.95}
    # the LM loop rewinds its data, so the default opens with the range test over 1/10 .. 10x
    assert_default_opening(summary["adalrs_events"])
    assert "search_start" in [e["kind"] for e in summary["adalrs_events"]]
    assert summary["adalrs_config"]["backtrack_mode"] == "rewind"
    # resuming a finished run is a no-op that reproduces the summary
    assert main([*argv, "--resume", str(out), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["val_loss"] == summary["val_loss"] and again["steps"] == 60


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--workers", "0"], "The value of `workers` is 0"),
        (["--lr", "-1"], "lr is -1.0"),
        (["--adalrs-opt", "lam"], "KEY=VALUE"),
        (["--data", "/nonexistent/corpus"], "does not exist"),
        # an opening asked for that does not fit a 40-step run at window 3 (the default's
        # own opening is then left out: the regression rule runs)
        (
            ["--adalrs", "--steps", "40", "--window", "3", "--adalrs-opt", "opening_steps=20"]
            + ["--adalrs-opt", "opening_factors=[0.1, 10]"],
            "use fewer opening_factors, fewer opening_steps",
        ),
    ],
)
def test_train_bad_input_exits_2_with_a_clear_message(tmp_path, capsys, extra, match):
    assert main(["train", "--quiet", "--out", str(tmp_path / "r"), *extra]) == 2
    assert match in capsys.readouterr().err


def test_sweep_writes_table_and_plot(corpus, tmp_path):
    out = tmp_path / "sweep"
    argv = ["sweep", *_common(corpus, tmp_path), "--batch-size", "4", "--eval-batches", "1"]
    argv += ["--steps", "30", "--points", "3", "--lr-min", "1e-3", "--lr-max", "1e-1"]
    argv += ["--slope-window", "5", "--out", str(out), "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    df = pd.read_parquet(out / "sweep.parquet")
    assert df["lr"].tolist() == pytest.approx([1e-3, 1e-2, 1e-1])
    assert any(c.startswith("v@") for c in df.columns)
    assert (out / "sweep.png").stat().st_size > 10_000
    md = (out / "sweep.md").read_text()
    assert "best LR by final loss" in md and "--points 3" in md
    best = json.loads((out / "sweep.json").read_text())
    assert best["lr_by_loss"] in df["lr"].tolist()
    # a second call reuses the finished runs (same config) and gives the same table
    mtime = (out / "runs" / "lr00_0.001" / "metrics.parquet").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "runs" / "lr00_0.001" / "metrics.parquet").stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(pd.read_parquet(out / "sweep.parquet"), df)


def test_sweep_procs_trains_runs_in_parallel_with_the_same_results(corpus, tmp_path, capsys):
    argv = ["sweep", *_common(corpus, tmp_path), "--batch-size", "4", "--eval-batches", "1"]
    argv += ["--steps", "20", "--points", "2", "--lr-min", "1e-3", "--lr-max", "1e-2"]
    argv += ["--slope-window", "5", "--device", "cpu", "--quiet", "--threads", "1"]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    assert main([*argv, "--out", str(tmp_path / "two"), "--procs", "2"]) == 0
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "two" / "sweep.parquet"),
        pd.read_parquet(tmp_path / "one" / "sweep.parquet"),
    )
    assert main([*argv, "--out", str(tmp_path / "bad"), "--procs", "0"]) == 2
    assert "--procs is 0, but must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "lo, hi, n, match",
    [(1e-2, 1e-3, 3, "must be <"), (0.0, 1e-3, 3, "lr-min is 0.0"), (1e-3, 1e-2, 1, "points is 1")],
)
def test_lr_grid_rejects_bad_ranges(lo, hi, n, match):
    with pytest.raises(ValueError, match=match):
        cli_train.lr_grid(lo, hi, n)


def test_lr_grid_is_log_spaced():
    assert cli_train.lr_grid(1e-4, 1e-1, 4) == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])


def test_velocity_at_level_on_a_known_curve():
    # loss falls 0.1 per step from 10 for 50 steps, then stays flat
    losses = np.concatenate([10 - 0.1 * np.arange(50), np.full(50, 5.0)])
    v, t = cli_train.velocity_at_level(losses, level=8.0, window=10)
    assert v == pytest.approx(0.1) and t == 25  # mean of steps 15..24 is 8.05, of 16..25 7.95
    v_never, t_never = cli_train.velocity_at_level(losses, level=1.0, window=10)
    assert math.isnan(v_never) and math.isnan(t_never)


def test_matched_levels_lie_inside_every_curve_start_and_the_median_minimum():
    curves = [10 - k * np.linspace(0, 5, 100) for k in (0.5, 1.0, 1.5)]
    levels = cli_train.matched_levels(curves, window=5, n=3)
    assert len(levels) == 3 and levels == sorted(levels, reverse=True)
    assert levels[0] < min(c[:5].mean() for c in curves)
    assert levels[-1] > np.median([c[-5:].mean() for c in curves])


def test_optima_flags_a_shared_optimum_and_ignores_diverged_runs():
    steps = np.arange(200)
    runs = []
    for lr, rate, status in [
        (1e-3, 0.005, "completed"),
        (1e-2, 0.02, "completed"),
        (1e-1, 0.01, "completed"),
    ]:
        runs.append(
            {"lr": lr, "losses": 5 * np.exp(-rate * steps) + 1, "status": status, "val_loss": 1.0}
        )
    runs.append(
        {
            "lr": 1.0,
            "losses": np.r_[np.full(20, 5.0), np.nan],
            "status": "diverged",
            "val_loss": 9.0,
        }
    )
    df = cli_train.analyse_sweep(runs, window=10, n_levels=2)
    best = cli_train.optima(df)
    assert best["lr_by_loss"] == 1e-2
    assert set(best["lr_by_velocity"].values()) == {1e-2}
    assert best["shared_optimum"] is True
    assert math.isnan(df.loc[df["lr"] == 1.0, "final_loss"].item())


@pytest.mark.parametrize(
    "use_gpu, cpus, gpus, expected",
    [
        (False, 0.5, None, {"CPU": 0.5}),
        (True, 4.0, None, {"CPU": 4.0, "GPU": 1.0}),
        (True, 8.0, 0.5, {"CPU": 8.0, "GPU": 0.5}),
        (True, 2.0, 2.0, {"CPU": 2.0, "GPU": 2.0}),
    ],
)
def test_worker_scaling_config_gets_the_per_worker_resources(use_gpu, cpus, gpus, expected):
    from train_loops.lm_ray_train import worker_scaling_config

    sc = worker_scaling_config(3, use_gpu, cpus, gpus)
    assert sc.num_workers == 3 and sc.use_gpu is use_gpu
    assert sc.resources_per_worker == expected


def test_train_passes_the_per_worker_resources_to_run_lm_trainer(monkeypatch, tmp_path):
    import train_loops.lm_ray_train as lrt

    seen = {}

    def fake(cfg, workers, address, **kw):
        seen.update(kw, workers=workers, address=address)
        return {"status": "completed"}

    monkeypatch.setattr(lrt, "run_lm_trainer", fake)
    argv = ["train", "--quiet", "--out", str(tmp_path / "r"), "--workers", "4"]
    argv += ["--cpus-per-worker", "6", "--gpus-per-worker", "1"]
    assert main(argv) == 0
    assert seen == {"workers": 4, "address": None, "cpus_per_worker": 6.0, "gpus_per_worker": 1.0}


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"gpus_per_worker": -1.0}, "gpus_per_worker is -1.0"),
        ({"cpus_per_worker": 0.0}, "cpus_per_worker is 0.0"),
        ({"gpus_per_worker": 1.0, "use_gpu": False}, "use_gpu is False and gpus_per_worker"),
        ({"gpus_per_worker": 0.0, "use_gpu": True}, "use_gpu is True and gpus_per_worker"),
    ],
)
def test_run_lm_trainer_rejects_bad_worker_resources(kw, match):
    from train_loops.lm import LMConfig
    from train_loops.lm_ray_train import run_lm_trainer

    with pytest.raises(ValueError, match=match):  # before any Ray starts
        run_lm_trainer(LMConfig(steps=2), 2, **kw)


def test_train_refuses_worker_resources_without_ray_train(tmp_path, capsys):
    argv = ["train", "--quiet", "--out", str(tmp_path / "r"), "--gpus-per-worker", "1"]
    assert main(argv) == 2
    assert "--gpus-per-worker are resources of Ray Train workers" in capsys.readouterr().err


@pytest.mark.parametrize(
    "keys, use_gpu, gpus",
    [({}, None, None), ({"gpus_per_worker": 0.5}, True, 0.5), ({"gpus_per_worker": 0}, False, 0)],
)
def test_torchtrainer_trial_settings_take_gpus_per_worker(keys, use_gpu, gpus):
    from train_loops.lm_ray_train import worker_scaling_config
    from train_loops.trainables.lm_torchtrainer import check_train_config

    settings, _ = check_train_config(
        {
            "workers": 2,
            "lr": 1e-3,
            "total_steps": 8,
            "report_every": 4,
            "resources_per_worker": {"NPU": 1},
            **keys,
        }
    )
    assert settings["use_gpu"] is use_gpu and settings["gpus_per_worker"] == gpus
    sc = worker_scaling_config(
        2, bool(use_gpu), 1.0, settings["gpus_per_worker"], extra=settings["resources_per_worker"]
    )
    assert sc.resources_per_worker == {"NPU": 1, "CPU": 1.0, **({"GPU": gpus} if use_gpu else {})}


@pytest.mark.parametrize(
    "keys, match",
    [
        ({"gpus_per_worker": -0.5}, "gpus_per_worker is -0.5"),
        ({"gpus_per_worker": 1, "use_gpu": False}, "use_gpu is False and gpus_per_worker is 1"),
    ],
)
def test_torchtrainer_trial_settings_reject_bad_gpus_per_worker(keys, match):
    from train_loops.trainables.lm_torchtrainer import check_train_config

    with pytest.raises(ValueError, match=match):
        check_train_config({"workers": 2, "lr": 1e-3, "total_steps": 8, "report_every": 4, **keys})
