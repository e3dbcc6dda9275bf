"""Tests of the cost-comparison report on hand-made tidy tables (no Ray)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from adalrs_ray import report
from adalrs_ray.cli import main as cli_main
from adalrs_ray.report import (
    REQUIRED_COLUMNS,
    build_report_from_dir,
    load_results,
    summarize,
    trial_table,
    validate_results,
    write_report,
)

KEEP = {"step": 180, "kind": "keep", "scale_before": 1.0, "scale_after": 3.0}
BACKTRACK = {
    "step": 280,
    "kind": "backtrack",
    "scale_before": 3.0,
    "scale_after": 1.5,
    "tried_scale": 9.0,
}

# (arm, trial_id, final status, lr0, [(step, val_loss, scale, steps_done, events), ...]);
# rows are listed in order of arrival. Reference (best val_loss anywhere) = 2.0 (adalrs a1),
# targets: 1% -> 2.02, 2% -> 2.04, 5% -> 2.10.
_TRIALS = [
    ("grid", "g1", "TERMINATED", 1e-3, [(99, 3.0, 1.0, 100, []), (199, 2.5, 1.0, 100, [])]),
    ("grid", "g2", "TERMINATED", 1e-2, [(99, 2.08, 1.0, 100, []), (199, 2.03, 1.0, 100, [])]),
    (
        "adalrs",
        "a1",
        "TERMINATED",
        1e-3,
        [(99, 2.6, 1.0, 100, []), (199, 2.09, 3.0, 100, [KEEP]), (149, 2.0, 1.5, 100, [BACKTRACK])],
    ),
]
# asha: two parallel trials, interleaved; s2 diverges (NaN) and errors.
_ASHA = [
    ("s1", "TERMINATED", 3e-3, (49, 2.9)),
    ("s2", "ERROR", 3e-2, (49, 2.7)),
    ("s1", "TERMINATED", 3e-3, (99, 2.3)),
    ("s2", "ERROR", 3e-2, (99, math.nan)),
    ("s1", "TERMINATED", 3e-3, (149, 2.015)),
]
# bad: never within 5%; b2 is still running (unfinished).
_BAD = [
    ("b1", "TERMINATED", 0.1, (99, 3.5)),
    ("b2", "RUNNING", 0.2, (99, 3.3)),
    ("b1", "TERMINATED", 0.1, (199, 3.4)),
]


def _rows():
    rows = []
    for arm, tid, status, lr0, reports in _TRIALS:
        for step, vl, scale, n, events in reports:
            rows.append((arm, tid, status, lr0, step, vl, scale, n, events))
    for tid, status, lr0, (step, vl) in _ASHA:
        rows.append(("asha", tid, status, lr0, step, vl, 1.0, 50, []))
    for tid, status, lr0, (step, vl) in _BAD:
        rows.append(("bad", tid, status, lr0, step, vl, 1.0, 100, []))
    return rows


def make_table() -> pd.DataFrame:
    """The tidy table of docs/design.md for the trials above; cum columns by hand-rolled sums."""
    recs = []
    trial_cum: dict[str, float] = {}
    arm_cum: dict[str, float] = {}
    iters: dict[str, int] = {}
    for k, (arm, tid, status, lr0, step, vl, scale, n, events) in enumerate(_rows()):
        trial_cum[tid] = trial_cum.get(tid, 0) + n
        arm_cum[arm] = arm_cum.get(arm, 0) + n
        iters[tid] = iters.get(tid, 0) + 1
        recs.append(
            {
                "arm": arm,
                "trial_id": tid,
                "status": status,
                "lr0": lr0,
                "iteration": iters[tid],
                "step": step,
                "loss": vl + 0.1 if math.isfinite(vl) else vl,
                "val_loss": vl,
                "lr": lr0 * scale * 0.5,
                "scale": scale,
                "steps_done": float(n),
                "tokens_done": 10.0 * n,
                "worker_s_done": 0.5 * n,
                "cum_steps": float(trial_cum[tid]),
                "cum_tokens": 10.0 * trial_cum[tid],
                "cum_worker_s": 0.5 * trial_cum[tid],
                "arm_cum_steps": float(arm_cum[arm]),
                "arm_cum_tokens": 10.0 * arm_cum[arm],
                "arm_cum_worker_s": 0.5 * arm_cum[arm],
                "wall_s": float(k),
                "adalrs_events": json.dumps(events),
            }
        )
    return pd.DataFrame(recs, columns=list(REQUIRED_COLUMNS))


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return make_table()


@pytest.fixture(scope="module")
def summary(table) -> pd.DataFrame:
    return summarize(table, baseline_steps=200).set_index("arm")


@pytest.fixture(scope="module")
def written(table, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    paths = write_report(table, out, title="Test report", extra={"seed": 1}, baseline_steps=200)
    return out, paths


# ----------------------------------------------------------------------------- summary numbers
@pytest.mark.parametrize(
    "arm, label, steps",
    [
        ("adalrs", "within_1pct", 300.0),  # 2.0 at its 3rd report
        ("adalrs", "within_2pct", 300.0),
        ("adalrs", "within_5pct", 200.0),  # 2.09 <= 2.10 at its 2nd report
        ("grid", "within_1pct", math.nan),  # best 2.03 > 2.02: never
        ("grid", "within_2pct", 400.0),  # 2.03 <= 2.04 at the grid's 4th report
        ("grid", "within_5pct", 300.0),  # 2.08 <= 2.10 at its 3rd report
        ("asha", "within_1pct", 250.0),  # s1 reaches 2.015 at its own 150th step...
        ("asha", "within_5pct", 250.0),  # ...but s2 ran beside it: the arm had spent 250
        ("bad", "within_1pct", math.nan),
        ("bad", "within_5pct", math.nan),
    ],
)
def test_steps_to_threshold_exact(summary, arm, label, steps):
    got = summary.loc[arm, f"steps_to_{label}"]
    if math.isnan(steps):
        assert math.isnan(got)
    else:
        assert got == steps


def test_tokens_and_worker_s_to_threshold_use_the_same_report(summary):
    assert summary.loc["asha", "tokens_to_within_1pct"] == 2500.0
    assert summary.loc["asha", "worker_s_to_within_1pct"] == 125.0
    assert math.isnan(summary.loc["grid", "tokens_to_within_1pct"])


def test_reference_is_the_best_val_loss_of_any_arm(summary):
    assert (summary["reference_loss"] == 2.0).all()


def test_threshold_zero_is_reached_exactly_at_the_reference(table):
    s = summarize(table, thresholds=(0.0,)).set_index("arm")
    assert s.loc["adalrs", "steps_to_within_0pct"] == 300.0
    assert math.isnan(s.loc["grid", "steps_to_within_0pct"])


def test_reference_loss_override(table):
    s = summarize(table, reference_loss=2.5, thresholds=(0.0,)).set_index("arm")
    assert s.loc["grid", "steps_to_within_0pct"] == 200.0  # g1 reaches 2.5 at its 2nd report
    assert s.loc["bad", "reference_loss"] == 2.5


def test_best_final_val_loss_skips_failed_and_unfinished(summary):
    assert summary.loc["grid", "best_final_val_loss"] == 2.03
    assert summary.loc["asha", "best_final_val_loss"] == 2.015  # s2 ended NaN: failed
    assert summary.loc["bad", "best_final_val_loss"] == 3.4  # b2 (3.3) is still RUNNING
    assert summary.loc["bad", "best_trial"] == "b1"


def test_trial_counts(summary):
    assert summary.loc["asha", ["trials", "failed_trials", "unfinished_trials"]].tolist() == [
        2,
        1,
        0,
    ]
    assert summary.loc["bad", ["trials", "failed_trials", "unfinished_trials"]].tolist() == [
        2,
        0,
        1,
    ]


def test_totals_are_the_arm_cumulative_compute(summary):
    assert summary.loc["grid", "total_steps"] == 400.0
    assert summary.loc["asha", "total_tokens"] == 2500.0
    assert summary.loc["adalrs", "total_worker_s"] == 150.0


def test_ratios_to_full_run_and_grid(summary):
    assert summary.loc["adalrs", "full_runs_to_within_1pct"] == 1.5  # 300 / 200
    assert summary.loc["adalrs", "grid_frac_to_within_1pct"] == 0.75  # 300 / 400
    assert summary.loc["asha", "total_full_runs"] == 1.25
    assert summary.loc["grid", "total_grid_frac"] == 1.0
    assert math.isnan(summary.loc["bad", "full_runs_to_within_5pct"])


def test_ratios_without_baseline_or_grid_are_nan(table):
    s = summarize(table, grid_arm="no-such-arm").set_index("arm")
    assert s["total_full_runs"].isna().all()
    assert s["grid_frac_to_within_5pct"].isna().all()
    assert s["lr_ratio_to_grid_best"].isna().all()


def test_found_lr_against_grid_best(summary):
    assert summary.loc["adalrs", "found_lr"] == pytest.approx(1.5e-3)  # lr0 1e-3 x scale 1.5
    assert summary.loc["adalrs", "grid_best_lr"] == 1e-2  # g2 has the grid's best final loss
    assert summary.loc["adalrs", "lr_ratio_to_grid_best"] == pytest.approx(0.15)
    assert summary.loc["grid", "lr_ratio_to_grid_best"] == 1.0


def test_grid_best_lr_given(table):
    s = summarize(table, grid_best_lr=3e-3).set_index("arm")
    assert s.loc["asha", "lr_ratio_to_grid_best"] == pytest.approx(1.0)


def test_trial_table_marks_failed_and_unfinished(table):
    t = trial_table(table).set_index("trial_id")
    assert t.loc["s2", "outcome"] == "failed"
    assert "status ERROR" in t.loc["s2", "failure"] and "nan" in t.loc["s2", "failure"]
    assert t.loc["b2", "outcome"] == "unfinished"
    assert t.loc["a1", ["keep", "backtrack"]].tolist() == [1, 1]
    assert t.loc["s1", "steps"] == 150.0


def test_nan_final_val_loss_fails_a_terminated_trial(table):
    df = table.copy()
    df.loc[df.index[df["trial_id"] == "g2"][-1], "val_loss"] = math.nan
    t = trial_table(df).set_index("trial_id")
    assert t.loc["g2", "outcome"] == "failed"
    assert summarize(df).set_index("arm").loc["grid", "best_final_val_loss"] == 2.5


# ----------------------------------------------------------------------------- validation
def test_missing_columns_are_all_named(table):
    with pytest.raises(ValueError, match=r"'val_loss'.*'arm_cum_steps'"):
        validate_results(table.drop(columns=["val_loss", "arm_cum_steps"]))


def test_empty_table_is_rejected(table):
    with pytest.raises(ValueError, match="empty"):
        validate_results(table.iloc[:0])


@pytest.mark.parametrize(
    "column, value, match",
    [
        ("val_loss", "abc", "must be numeric"),
        ("step", 1.5, "must hold integers"),
        ("steps_done", -1.0, "finite and >= 0"),
        ("cum_tokens", math.nan, "finite and >= 0"),
        ("scale", -2.0, "> 0 where finite"),
        ("arm", None, "must not be null"),
        ("adalrs_events", "{not json", "not valid JSON"),
        ("adalrs_events", '[{"kind": "keep"}]', '"step" and "kind"'),
    ],
)
def test_bad_values_raise(table, column, value, match):
    df = table.copy()
    df[column] = df[column].astype(object)
    df.at[3, column] = value
    with pytest.raises(ValueError, match=match):
        validate_results(df)


def test_rows_out_of_arrival_order_raise(table):
    with pytest.raises(ValueError, match="decreases"):
        validate_results(table.iloc[::-1])


def test_trial_in_two_arms_raises(table):
    df = table.copy()
    df.loc[df["trial_id"] == "g1", "trial_id"] = "a1"
    with pytest.raises(ValueError, match="several arms"):
        validate_results(df)


def test_not_a_dataframe_raises():
    with pytest.raises(ValueError, match="DataFrame"):
        validate_results([{"arm": "x"}])


def test_events_as_lists_and_null_are_normalised(table):
    df = table.copy()
    df["adalrs_events"] = df["adalrs_events"].astype(object)
    df.at[0, "adalrs_events"] = None
    df.at[4, "adalrs_events"] = [KEEP]
    out = validate_results(df)
    assert out.at[0, "adalrs_events"] == "[]"
    assert json.loads(out.at[4, "adalrs_events"]) == [KEEP]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"thresholds": ()}, "must not be empty"),
        ({"thresholds": (0.01, -0.1)}, "finite and >= 0"),
        ({"thresholds": (0.01, 0.01)}, "distinct"),
        ({"baseline_steps": 0}, "baseline_steps"),
        ({"grid_best_lr": math.nan}, "grid_best_lr"),
        ({"reference_loss": math.inf}, "reference_loss"),
    ],
)
def test_bad_options_raise(table, kwargs, match):
    with pytest.raises(ValueError, match=match):
        summarize(table, **kwargs)


# ----------------------------------------------------------------------------- files
def test_all_files_are_written(written):
    out, paths = written
    for name in ("results.parquet", "summary.parquet", "trials.parquet", "report_meta.json",
                 "report.md", "report.html", "best_so_far.png", "adalrs_lr.png",
                 "val_curves.png"):  # fmt: skip
        assert (out / name).is_file(), name
    for key in ("best_so_far", "adalrs_lr", "val_curves"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_is_self_contained(written):
    text = (written[0] / "report.html").read_text()
    srcs = re.findall(r'src="([^"]*)"', text)
    assert len(srcs) == 3
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"<link|<script|url\(|https?://", text)


def test_report_names_never_reached_and_failed_trials(written):
    md = (written[0] / "report.md").read_text()
    assert "Arm bad never reached within 1%, 2%, 5% of the reference" in md
    assert "Arm grid never reached within 1% of the reference" in md
    assert "FAILED: trial s2 of arm asha" in md
    assert "UNFINISHED: trial b2 of arm bad" in md
    assert "| grid | 1% | 2.02 | never |" in md
    assert "![" in md and "(best_so_far.png)" in md


def test_results_parquet_round_trips(written, table):
    pd.testing.assert_frame_equal(pd.read_parquet(written[0] / "results.parquet"),
                                  validate_results(table))  # fmt: skip


def test_rebuild_from_saved_dir_equals_original_summary(written, table, tmp_path):
    out, _ = written
    paths = build_report_from_dir(out, tmp_path)
    original = summarize(table, baseline_steps=200)  # baseline from report_meta.json
    pd.testing.assert_frame_equal(pd.read_parquet(paths["summary"]), original)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "summary.parquet"), original)
    assert (tmp_path / "report.html").is_file()


def _write_jsonl(table: pd.DataFrame, path) -> None:
    """The compute log as the Tune side may write it: no cum columns, events as lists, the
    final status in a later status record."""
    lines = []
    for rec in table.drop(columns=[c for c in table if "cum_" in c]).to_dict("records"):
        rec["adalrs_events"] = json.loads(rec["adalrs_events"])
        rec["status"] = "RUNNING"
        lines.append(json.dumps(rec))
    for tid, status in table.groupby("trial_id", sort=False)["status"].last().items():
        lines.append(json.dumps({"record": "status", "trial_id": tid, "status": status}))
    path.write_text("\n".join(lines) + "\n\n")


def test_rebuild_from_jsonl_compute_log(table, tmp_path):
    _write_jsonl(table, tmp_path / "comparison_log.jsonl")
    paths = build_report_from_dir(tmp_path, baseline_steps=200)
    pd.testing.assert_frame_equal(
        pd.read_parquet(paths["summary"]), summarize(table, baseline_steps=200)
    )


def test_load_results_reads_a_parquet_compute_log(table, tmp_path):
    table.to_parquet(tmp_path / "comparison_log.parquet")
    pd.testing.assert_frame_equal(load_results(tmp_path), validate_results(table))


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "no results in directory"),
        ("", "holds no reports"),
        ('{"arm": "grid"}\nnot json\n{"arm": "grid"}\n', "line 2 is not valid JSON"),
        ('{"record": "status", "trial_id": "x", "status": "ERROR"}\n', "only status records"),
        ('{"arm": "grid", "trial_id": "g"}\n', "missing required column"),
    ],
)
def test_load_errors(tmp_path, content, match):
    if content is not None:
        (tmp_path / "comparison_log.jsonl").write_text(content)
    with pytest.raises(ValueError, match=match):
        load_results(tmp_path)


def test_report_builds_when_every_val_loss_is_nan(table, tmp_path):
    df = table.copy()
    df["val_loss"] = np.nan
    paths = write_report(df, tmp_path, adalrs_arms=[])
    md = paths["markdown"].read_text()
    assert "No report has a finite val_loss" in md
    assert "(b) not drawn" in md
    assert "adalrs_lr" not in paths
    assert summarize(df)["best_trial"].isna().all()


def test_cli_rebuilds_and_reports_errors(written, tmp_path):
    assert cli_main(["report", str(written[0]), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "report.html").is_file()
    assert cli_main(["report", str(tmp_path / "empty")]) == 2


def test_cli_report_options_reach_the_report(written, tmp_path):
    out = tmp_path / "o"
    argv = ["report", str(written[0]), "--out", str(out), "--title", "Rebuilt by the CLI"]
    argv += ["--baseline-steps", "400", "--grid-arm", "grid", "--reference-loss", "1.5"]
    assert cli_main(argv) == 0
    text = (out / "report.md").read_text()
    assert text.startswith("# Rebuilt by the CLI")
    assert "Reference loss (given): 1.5." in text
    assert cli_main(["report", str(written[0]), "--baseline-steps", "-1"]) == 2


def test_scale_path_jumps_at_events_and_breaks_at_rewinds(table):
    df = validate_results(table)
    rows = df[df["trial_id"] == "a1"]
    events = report.iter_events(df)
    x, y = report.scale_path(rows, events[events["trial_id"] == "a1"])
    # (99,1) | keep at 180: 1 -> 3 | (199,3) | backtrack at 280: 3 -> 1.5 | rewind | (149,1.5)
    expect_x = [99, 180, 180, 199, 280, 280, math.nan, 149]
    expect_y = [1, 1, 3, 3, 3, 1.5, math.nan, 1.5]
    np.testing.assert_array_equal(x, expect_x)
    np.testing.assert_array_equal(y, expect_y)


def test_lr_next_is_the_base_lr_when_logged(table):
    df = table.copy()
    df["lr_next"] = df["lr0"]
    df.loc[df.index[df["trial_id"] == "s1"][-1], "lr_next"] = 6e-3  # a PBT-like mutation
    t = trial_table(df).set_index("trial_id")
    assert t.loc["s1", "final_base_lr"] == 6e-3
    assert t.loc["a1", "final_base_lr"] == pytest.approx(1.5e-3)


def _write_tune_dir(table: pd.DataFrame, folder, cut_last_line: bool = False) -> None:
    """What AdaLRSComparison writes: adalrs_compute_log.jsonl (rows without status, with its
    extra columns) and adalrs_comparison.json (final statuses, lower case; total_steps)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = table.drop(columns=["status"]).assign(slot=0, decision="CONTINUE", lr_next=table["lr0"])
    lines = [json.dumps(r) for r in rows.to_dict("records")]
    if cut_last_line:
        lines.append(lines[0][:30])
    (folder / "adalrs_compute_log.jsonl").write_text("\n".join(lines) + "\n")
    final = table.groupby("trial_id", sort=False)["status"].last().str.lower()
    trials = [{"trial_id": tid, "status": st} for tid, st in final.items()]
    trials.append({"trial_id": "never_reported", "status": "error"})
    meta = {"version": 1, "total_steps": 200, "trials": trials}
    (folder / "adalrs_comparison.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("cut_last_line", [False, True])
def test_rebuild_from_the_tune_scheduler_files(table, tmp_path, cut_last_line):
    _write_tune_dir(table, tmp_path / "exp", cut_last_line)
    paths = build_report_from_dir(tmp_path, tmp_path / "out")  # the storage path above exp
    got = pd.read_parquet(paths["summary"])
    # baseline_steps from total_steps of adalrs_comparison.json
    pd.testing.assert_frame_equal(got, summarize(table, baseline_steps=200))
    t = pd.read_parquet(paths["trials"]).set_index("trial_id")
    assert t.loc["s2", "status"] == "ERROR" and t.loc["b2", "outcome"] == "unfinished"


def test_several_result_subdirectories_raise(table, tmp_path):
    _write_tune_dir(table, tmp_path / "exp1")
    _write_tune_dir(table, tmp_path / "exp2")
    with pytest.raises(ValueError, match="several subdirectories"):
        load_results(tmp_path)


def test_log_without_any_status_raises(table, tmp_path):
    rows = table.drop(columns=["status"]).to_dict("records")
    (tmp_path / "adalrs_compute_log.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ValueError, match="no 'status' column"):
        load_results(tmp_path)


def test_nan_scale_counts_as_no_multiplier(table):
    df = table.copy()
    df.loc[df["arm"] == "grid", "scale"] = math.nan  # a trainable that does not report scale
    s = summarize(df).set_index("arm")
    assert s.loc["grid", "found_lr"] == 1e-2
    assert s.loc["adalrs", "lr_ratio_to_grid_best"] == pytest.approx(0.15)


# ----------------------------------------------------------------------------- merge_arms
def test_merge_arms_gives_the_summary_of_one_run(table):
    # arms reported by two runs: every per-arm figure is what the one-run table gives
    base = table[table["arm"] != "asha"]
    merged = report.merge_arms(base, (table, ["asha"], "run b"))
    assert len(merged) == len(table)
    one = summarize(table, baseline_steps=200).set_index("arm").sort_index()
    two = summarize(merged, baseline_steps=200).set_index("arm").sort_index()
    pd.testing.assert_frame_equal(one, two)


@pytest.mark.parametrize(
    "arms, drop, match",
    [
        (["hyperband"], "asha", r"arm\(s\) \['hyperband'\] not in run b; its arms are"),
        (["grid"], "asha", r"arm\(s\) \['grid'\] from run b are already in the report"),
        ([], "asha", "no arms given to take from run b"),
    ],
)
def test_merge_arms_errors(table, arms, drop, match):
    with pytest.raises(ValueError, match=match):
        report.merge_arms(table[table["arm"] != drop], (table, arms, "run b"))


def test_merge_arms_refuses_a_trial_id_of_both_tables(table):
    other = table[table["arm"] == "asha"].assign(arm="asha2")
    with pytest.raises(ValueError, match=r"trial id\(s\) \['s1', 's2'\] of run b"):
        report.merge_arms(table, (other, ["asha2"], "run b"))


# ----------------------------------------------------------------------------- the package
@pytest.mark.parametrize("module", ["adalrs_ray.report.contract", "adalrs_ray.report"])
def test_importing_the_contract_or_the_package_does_not_import_pandas(module):
    code = f"import {module}, sys; assert 'pandas' not in sys.modules, 'pandas imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_every_public_name_loads_lazily():
    for name in report.__all__:
        assert getattr(report, name) is not None, name
    assert set(report.__all__) <= set(dir(report))
    with pytest.raises(AttributeError, match="no attribute 'main'"):
        report.main  # noqa: B018  (the CLI is `adalrs-ray report`)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"thresholds": None}, r"thresholds is None, but must be a sequence of numbers"),
        ({"thresholds": ("0.01",)}, r"thresholds\[0\] is '0.01', but must be a number"),
        ({"baseline_steps": True}, r"baseline_steps is True, but must be None or a finite number"),
        ({"grid_best_lr": "1e-3"}, r"grid_best_lr is '1e-3', but must be None or a finite number"),
    ],
)
def test_options_must_be_numbers(table, kwargs, match):
    with pytest.raises(ValueError, match=match):
        summarize(table, **kwargs)


def test_numpy_numbers_are_numbers(table):
    plain = summarize(table, baseline_steps=200, thresholds=(0.01, 0.05))
    numpy = summarize(table, baseline_steps=np.int64(200), thresholds=np.array([0.01, 0.05]))
    pd.testing.assert_frame_equal(plain, numpy)


# ----------------------------------------------------------------------------- trial table
def _trial_table_reference(df: pd.DataFrame) -> pd.DataFrame:
    """The readable per-trial loop that ``trial_table`` vectorises (its code before the load
    benchmark, issue 15 item 5), kept as the reference of the differential test below."""
    from adalrs_ray.report.contract import FAILED_STATUSES, UNFINISHED_STATUSES
    from adalrs_ray.report.results import iter_events, number_or_nan, validate_results

    kinds = ("keep", "backtrack", "inconclusive", "boundary_downscale", "nonfinite_loss")
    df = validate_results(df)
    events = iter_events(df)
    rows = []
    for tid, g in df.groupby("trial_id", sort=False):
        last = g.iloc[-1]
        final_vl = float(last["val_loss"])
        status = str(last["status"])
        reasons = []
        if status in FAILED_STATUSES:
            reasons.append(f"status {status}")
        if not math.isfinite(final_vl):
            reasons.append(f"final val_loss is {final_vl}")
        outcome = "failed" if reasons else "unfinished" if status in UNFINISHED_STATUSES else "ok"
        vl = g["val_loss"].to_numpy()
        finite = vl[np.isfinite(vl)]
        ev = events[events["trial_id"] == tid]["kind"].value_counts()
        nxt = number_or_nan(last.get("lr_next"))
        base = nxt if math.isfinite(nxt) and nxt > 0 else float(last["lr0"])
        sc = float(last["scale"])
        row = {
            "arm": last["arm"],
            "trial_id": tid,
            "lr0": float(g["lr0"].iloc[0]),
            "status": status,
            "outcome": outcome,
            "failure": "; ".join(reasons),
            "reports": len(g),
            "final_step": int(last["step"]),
            "final_val_loss": final_vl,
            "best_val_loss": float(finite.min()) if finite.size else math.nan,
            "final_scale": sc,
            "final_base_lr": base * (sc if math.isfinite(sc) else 1.0),
            "steps": float(last["cum_steps"]),
            "tokens": float(last["cum_tokens"]),
            "worker_s": float(last["cum_worker_s"]),
        }
        for kind in kinds:
            row[kind] = int(ev.get(kind, 0))
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("source", ["table", "quick_run", "lr_next"])
def test_trial_table_equals_the_per_trial_loop(source, table):
    from pathlib import Path

    if source == "table":
        df = table  # failed, unfinished, NaN scales, AdaLRS events
    else:
        df = report.load_results(Path(__file__).parents[1] / "docs" / "runs" / "quick")
        if source == "lr_next":  # PBT's changed LR, some rows without one
            df = df.assign(lr_next=np.where(np.arange(len(df)) % 3 == 0, np.nan, df["lr0"] * 2))
    fast, ref = trial_table(df), _trial_table_reference(df)
    assert list(fast.columns) == list(ref.columns)
    pd.testing.assert_frame_equal(fast, ref, check_dtype=False)
    assert (fast[["keep", "backtrack"]].dtypes == "int64").all()
