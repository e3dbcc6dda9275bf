"""``adalrs-ray compare`` / ``adalrs-ray report`` end to end on the session Ray cluster, and their
input errors (exit code 2, one line)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from adalrs_ray import cli
from adalrs_ray.experiments.presets import PRESETS, adalrs_label, build_arms, get_preset

REPORT_FILES = (
    "report.md",
    "report.html",
    "results.parquet",
    "summary.parquet",
    "trials.parquet",
    "report_meta.json",
    "best_so_far.png",
    "adalrs_lr.png",
    "val_curves.png",
)

# a small simulator comparison: 1 + 2 + 2 + 2 trials of 2 reports
SIM_ARGS = [
    "compare",
    "--task",
    "sim",
    "--steps",
    "2000",
    "--report-every",
    "1000",
    "--window",
    "50",
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


@pytest.fixture(scope="module")
def sim_run(ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "sim"
    code = cli.main([*SIM_ARGS, "--out", str(out)])
    return code, out


@pytest.mark.ray
def test_compare_sim_writes_the_report(sim_run, capsys):
    code, out = sim_run
    assert code == 0
    for name in REPORT_FILES:
        assert (out / name).is_file(), name
    assert (out / "tune" / "adalrs_compute_log.jsonl").is_file()
    assert not list((out / "tune").glob("*/checkpoint_*"))  # removed after the run
    summary = pd.read_parquet(out / "summary.parquet")
    assert sorted(summary["arm"]) == ["adalrs_x0.1", "grid", "hyperband", "pbt"]
    trials = pd.read_parquet(out / "trials.parquet")
    assert trials.groupby("arm").size().to_dict() == {
        "adalrs_x0.1": 1,
        "grid": 2,
        "hyperband": 2,
        "pbt": 2,
    }
    settings = json.loads((out / "compare_config.json").read_text())
    assert settings["preset"]["total_steps"] == 2000
    assert json.loads((out / "report_meta.json").read_text())["baseline_steps"] == 2000


@pytest.mark.ray
def test_compare_refuses_to_overwrite_a_run(sim_run, capsys):
    _, out = sim_run
    assert cli.main([*SIM_ARGS, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exists" in err


@pytest.mark.ray
def test_report_rebuilds_the_files(sim_run, tmp_path):
    _, out = sim_run
    assert cli.main(["report", str(out), "--out", str(tmp_path)]) == 0
    for name in REPORT_FILES:
        assert (tmp_path / name).is_file(), name
    before = pd.read_parquet(out / "summary.parquet")
    after = pd.read_parquet(tmp_path / "summary.parquet")
    pd.testing.assert_frame_equal(before, after)
    assert (tmp_path / "report.md").read_text() == (out / "report.md").read_text()


@pytest.mark.ray
def test_report_of_an_interrupted_run_reads_the_tune_log(sim_run, tmp_path):
    # no report yet: only the Tune experiment directory and the compare settings
    _, out = sim_run
    shutil.copytree(out / "tune", tmp_path / "tune")
    shutil.copy(out / "compare_config.json", tmp_path)
    assert cli.main(["report", str(tmp_path)]) == 0
    summary = pd.read_parquet(tmp_path / "summary.parquet")
    assert sorted(summary["arm"]) == ["adalrs_x0.1", "grid", "hyperband", "pbt"]
    assert (tmp_path / "adalrs_lr.png").is_file()


def _split_run(out, tmp_path):
    """Two compare directories holding the arms of the run ``out``: grid alone, and the rest."""
    from adalrs_ray import report as rep

    df = rep.load_results(out)
    meta = rep.read_meta(out)
    dirs = {}
    for name, keep in (("rest", df["arm"] != "grid"), ("grid", df["arm"] == "grid")):
        d = tmp_path / name
        rep.write_report(df[keep], d, **{**meta, "grid_arm": None})
        shutil.copy(out / "compare_config.json", d)
        dirs[name] = d
    return dirs


@pytest.mark.ray
def test_report_add_arms_merges_two_runs_into_the_one_run_report(sim_run, tmp_path, capsys):
    _, out = sim_run
    dirs = _split_run(out, tmp_path)
    merged = tmp_path / "merged"
    argv = ["report", str(dirs["rest"]), "--add-arms", f"{dirs['grid']}:grid", "--out", str(merged)]
    assert cli.main(argv) == 0
    one = pd.read_parquet(out / "summary.parquet").set_index("arm").sort_index()
    two = pd.read_parquet(merged / "summary.parquet").set_index("arm").sort_index()
    pd.testing.assert_frame_equal(one, two)  # the grid's best LR is back in the ratios too
    meta = json.loads((merged / "report_meta.json").read_text())
    assert meta["grid_arm"] == "grid" and meta["adalrs_arms"] == ["adalrs_x0.1"]
    assert any(k.startswith("arms grid from") for k in meta["extra"])
    assert "arms grid from" in (merged / "report.md").read_text()
    # the merged directory rebuilds like any report directory
    assert cli.main(["report", str(merged), "--out", str(tmp_path / "again")]) == 0


@pytest.mark.ray
def test_report_add_arms_errors(sim_run, tmp_path, capsys):
    _, out = sim_run
    dirs = _split_run(out, tmp_path)
    cfg = dirs["grid"] / "compare_config.json"
    rest, grid, new = str(dirs["rest"]), str(dirs["grid"]), str(tmp_path / "new")
    cases = [
        ([rest, "--add-arms", f"{grid}:grid"], "--add-arms needs --out"),
        ([rest, "--add-arms", f"{grid}:grid", "--out", rest], "is one of the merged directories"),
        ([rest, "--add-arms", grid, "--out", new], "must look like DIR:ARM"),
        ([rest, "--add-arms", f"{grid}:pbt", "--out", new], "['pbt'] not in"),
        ([rest, "--add-arms", f"{rest}:pbt", "--out", new], "already in the report"),
        ([rest, "--add-arms", f"{tmp_path}/nope:grid", "--out", new], "does not exist"),
    ]
    for args, message in cases:
        assert cli.main(["report", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (args, err)
    settings = json.loads(cfg.read_text())
    settings["preset"]["total_steps"] = 4000
    cfg.write_text(json.dumps(settings))
    assert cli.main(["report", rest, "--add-arms", f"{grid}:grid", "--out", new]) == 2
    assert "ran with total_steps = 4000" in capsys.readouterr().err
    cfg.unlink()
    assert cli.main(["report", rest, "--add-arms", f"{grid}:grid", "--out", new]) == 2
    assert "has no compare_config.json" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.mark.ray
def test_compare_random_search_against_the_grid(ray_cluster, tmp_path, capsys):
    # random is not a default arm: --arms names it; 2 + 2 simulator trials of 2 reports
    out = tmp_path / "random"
    argv = ["compare", "--task", "sim", "--arms", "random,grid", "--steps", "2000"]
    argv += ["--report-every", "1000", "--grid-points", "2", "--random-trials", "2"]
    argv += ["--seed", "3", "--quiet", "--out", str(out)]
    assert cli.main(argv) == 0
    trials = pd.read_parquet(out / "trials.parquet")
    assert trials.groupby("arm").size().to_dict() == {"grid": 2, "random": 2}
    results = pd.read_parquet(out / "results.parquet")
    assert (results.groupby("trial_id")["steps_done"].sum() == 2000).all()  # full budget
    preset = get_preset("sim").with_overrides(
        total_steps=2000, report_every=1000, random_trials=2, trial_config={"seed": 3}
    )
    (arm,) = build_arms(preset, ["random"])
    assert arm.seed == 3
    drawn = sorted(results.loc[results["arm"] == "random", "lr0"].unique())
    assert drawn == pytest.approx(sorted(arm.starting_lrs(2000, 1000)), rel=1e-12)
    settings = json.loads((out / "compare_config.json").read_text())
    assert settings["arms"] == ["random", "grid"]
    assert "random" in capsys.readouterr().out  # the headline table


@pytest.mark.ray
@pytest.mark.slow
def test_compare_tiny_lm(ray_cluster, tmp_path):
    out = tmp_path / "lm"
    code = cli.main(
        ["compare", "--preset", "smoke", "--arms", "adalrs,grid", "--out", str(out), "--quiet"]
    )
    assert code == 0
    results = pd.read_parquet(out / "results.parquet")
    assert set(results["arm"]) == {"adalrs_x0.1", "grid"}
    assert (results["tokens_done"] > 0).all()
    # every trial ran its whole budget of 40 steps; the AdaLRS trial's default opening (the LM
    # loop rewinds) ran the steps its restores discarded again, counted as compute
    done = results.groupby("trial_id")[["steps_done", "backtracked_steps"]].sum()
    assert (done["steps_done"] - done["backtracked_steps"]).tolist() == [40, 40, 40]
    adalrs = results.loc[results["arm"] == "adalrs_x0.1", "trial_id"].iloc[0]
    assert done.loc[adalrs, "backtracked_steps"] >= 4 * 4  # four multipliers of 4 steps
    kinds = {
        e["kind"]
        for cell in results.loc[results["arm"] == "adalrs_x0.1", "adalrs_events"]
        for e in json.loads(cell)
    }
    assert "opening" in kinds


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "--arms", "adalrs,bogus"], "unknown arm(s) ['bogus']"),
        (["compare", "--arms", "grid,grid"], "name an arm twice"),
        (["compare", "--task", "sim", "--workers", "2"], "only the lm task"),
        (["compare", "--workers", "0"], "--workers is 0"),
        (["compare", "--task", "sim", "--seq-len", "64"], "--seq-len only apply to the lm task"),
        (["compare", "--data", "/nonexistent/corpus"], "does not exist"),
        (["compare", "--steps", "10", "--report-every", "20"], "report_every=20 exceeds"),
        (["compare", "--adalrs-starts", "0"], "adalrs_starts"),
        (["compare", "--adalrs-opt", "lam"], "KEY=VALUE"),
        (["compare", "--adalrs-opt", "alpha=0.5"], "alpha"),
        (["compare", "--window", "500"], "window"),
        (["compare", "--max-concurrent", "0"], "max_concurrent is 0"),
        (["compare", "--random-trials", "0"], "random_trials is 0"),
        (["compare", "--grid-points", "0"], "grid_points is 0"),
        (["report", "/nonexistent/dir"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, capsys, tmp_path):
    code = cli.main([*argv, "--out", str(tmp_path / "o")] if argv[0] == "compare" else argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert message in err


def test_report_of_a_directory_without_results_exits_2(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no results" in err


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_their_arms(name):
    preset = get_preset(name)
    arms = build_arms(preset)
    keys = [a.key for a in arms]
    assert keys[: len(preset.adalrs_starts)] == [adalrs_label(s) for s in preset.adalrs_starts]
    grid = next(a for a in arms if a.key == "grid")
    lrs = grid.starting_lrs(preset.total_steps, preset.report_every)
    assert len(lrs) == preset.grid_points
    assert lrs[0] == pytest.approx(preset.lr_min) and lrs[-1] == pytest.approx(preset.lr_max)
    for start, arm in zip(preset.adalrs_starts, arms):
        assert arm.lrs == (pytest.approx(preset.lr_ref * start),)


def test_quick_grid_contains_the_reference_lr():
    preset = get_preset("quick")
    grid = next(a for a in build_arms(preset) if a.key == "grid")
    lrs = grid.starting_lrs(preset.total_steps, preset.report_every)
    assert min(abs(lr / preset.lr_ref - 1) for lr in lrs) < 1e-5


def test_overrides_merge_mappings_and_ignore_none():
    p = get_preset("quick").with_overrides(adalrs={"lam": 0.95}, total_steps=None, grid_points=3)
    assert p.adalrs == {**get_preset("quick").adalrs, "lam": 0.95}
    assert p.total_steps == get_preset("quick").total_steps and p.grid_points == 3


def test_unknown_preset_is_a_value_error():
    with pytest.raises(ValueError, match="valid presets"):
        get_preset("huge")


def test_headline_says_never_and_dash_without_a_grid():
    from adalrs_ray.experiments.compare import headline

    summary = pd.DataFrame(
        {
            "arm": ["adalrs_x0.1", "pbt"],
            "best_final_val_loss": [2.0, 2.1],
            "steps_to_within_2pct": [600.0, float("nan")],
            "full_runs_to_within_2pct": [1.0, float("nan")],
            "grid_frac_to_within_2pct": [float("nan"), float("nan")],
            "total_full_runs": [1.0, 4.0],
        }
    )
    lines = headline(summary).splitlines()
    assert lines[1].split() == ["adalrs_x0.1", "2.0000", "600", "1.00", "-", "1.00"]
    assert lines[2].split() == ["pbt", "2.1000", "never", "never", "-", "4.00"]


@pytest.mark.parametrize("cpus", [2.0, 8.0, 64.0])
@pytest.mark.parametrize("max_concurrent", [1, 2, 4, 7])
@pytest.mark.parametrize("workers", [2, 4])
def test_train_trial_cpus_cap_trials_and_fit_their_workers(cpus, max_concurrent, workers):
    from adalrs_ray.experiments.compare import train_trial_cpus

    driver, per_worker = train_trial_cpus(cpus, max_concurrent, workers)
    assert driver > 0 and per_worker > 0
    assert (max_concurrent + 1) * driver > cpus  # Tune cannot admit one trial more
    # the admitted trials' processes and all their workers fit in the cluster
    assert max_concurrent * (driver + workers * per_worker) <= cpus * (1 + 1e-12)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_sizes_the_random_arm_and_seeds_it(name):
    preset = get_preset(name)
    assert "random" not in preset.arms  # not a default arm
    (arm,) = build_arms(preset, ["random"])
    assert arm.num_trials == preset.random_trials == (2 if name == "smoke" else 7)
    assert (arm.lr_min, arm.lr_max) == (preset.lr_min, preset.lr_max)
    (seeded,) = build_arms(preset.with_overrides(trial_config={"seed": 5}), ["random"])
    assert seeded.seed == 5 and seeded.starting_lrs(10, 1) != arm.starting_lrs(10, 1)


def test_size_options_reach_the_preset():
    from adalrs_ray.cli import build_parser
    from adalrs_ray.cli.compare import preset_from_args

    args = build_parser().parse_args(
        ["compare", "--random-trials", "3", "--pbt-trials", "6", "--arms", "random,pbt"]
    )
    preset = preset_from_args(args)
    assert (preset.random_trials, preset.pbt_trials, preset.grid_points) == (3, 6, 7)
    assert preset.arm_settings["pbt"] == {"num_trials": 6}
    assert [a.num_trials for a in build_arms(preset)] == [3, 6]
