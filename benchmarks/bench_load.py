"""Load: the comparison scheduler's cost per result and memory against the number of trials,
and the report's build time against the number of result rows (issue 15, item 5).

(a) Scheduler. ``AdaLRSComparison`` is driven hook by hook in this process, as Tune's controller
drives it (``on_trial_add``, ``choose_trial_to_run``, ``on_trial_result``,
``on_trial_complete``), over stub trials and synthetic results, so the time measured is the
scheduler's own: no Ray, no trainable. The arms are the default four (AdaLRS, grid, HyperBand,
PBT) sized to 10, 100 and 400 trials in all; every trial reports ``--reports`` times unless its
arm stops or pauses it (paused trials are resumed when their arm chooses them). Reported: the
median time inside ``on_trial_result`` per result, as a ratio to the 10-trial case (goal: flat,
within 2x at 400 trials), the scheduler's memory (tracemalloc peak while it runs), and the time
Tune takes to resolve the comparison's ``param_space`` into the trial configs.

(a') The same arms in a real ``tune.Tuner`` on a local Ray (2 CPUs, 0.25 CPU per trial,
``reuse_actors``) with the synthetic trainable of ``adalrs-ray compare --task sim`` and no sleep
per step, at 10 and 100 trials by default (400 real trials take too long on 2 shared cores: the
400-trial figure is (a)'s). Reported: the median time inside the real scheduler's
``on_trial_result`` as Tune's controller calls it, as a ratio to the smallest run, and the
driver process's resident memory (psutil; the whole driver, Tune's controller included).

(b) Report. ``adalrs_ray.report`` builds its tables and Markdown from a results frame of
10^4, 10^5 and 10^6 rows (the 230 rows of the committed quick run, docs/runs/quick, repeated
as new trials of the same five arms whose compute goes on growing: 10^6 rows are 91,000
trials), timed per row as a ratio to the 10^4 case (goal:
linear, i.e. the ratio near 1, and 10^6 rows under a minute here). The path is that of
``adalrs-ray report DIR`` on a compare run's directory: ``load_results`` reads the directory's
``results.parquet``, then the tables and the Markdown; ``--jsonl`` also times loading the same
rows from a JSON-lines compute log (the report's other input). Plots are not timed: their cost
depends on the number of trials drawn, not on rows.

    python benchmarks/bench_load.py                 # 10/100/400 trials (10/100 in Tune); rows
    python benchmarks/bench_load.py --trials --tune-trials --jsonl   # the report only
    python benchmarks/bench_load.py --smoke         # 4/8 trials, 1e3/2e3 rows (the test)
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


# ------------------------------------------------------------------ (a) the scheduler
class _Controller:
    """The parts of Tune's controller the schedulers use, over a list of stub trials."""

    search_alg = None

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler
        self.trials = []

    def get_trials(self):
        return list(self.trials)

    def get_live_trials(self):
        return {t for t in self.trials if not t.is_finished()}

    def pause_trial(self, trial, should_checkpoint=True):
        from ray.tune.experiment import Trial

        trial.set_status(Trial.PAUSED)

    def stop_trial(self, trial):
        from ray.tune.experiment import Trial

        if trial.status in (Trial.PENDING, Trial.PAUSED):
            self.scheduler.on_trial_remove(self, trial)
        elif trial.status == Trial.RUNNING:
            self.scheduler.on_trial_complete(self, trial, {})
        trial.set_status(Trial.TERMINATED)

    def _set_trial_status(self, trial, status):
        trial.set_status(status)

    def _schedule_trial_save(self, trial, result=None):
        from ray import tune

        return tune.Checkpoint("/nonexistent/bench-checkpoint")


def _arms(n: int, total_steps: int):
    """The default arms sized to ``n`` trials in all (AdaLRS 2, the rest split 3:3:2)."""
    from search_algos import get_arm

    rest = max(3, n - 2)
    grid = max(1, rest * 3 // 8)
    hb = max(1, rest * 3 // 8)
    pbt = max(2, rest - grid - hb)
    return [
        get_arm(
            "adalrs",
            lrs=(1e-4, 1e-2),
            adalrs={"window": max(2, total_steps // 60), "start_ratio": 0.05, "end_ratio": 0.5},
        ),
        get_arm("grid", num_trials=grid),
        get_arm("hyperband", num_trials=hb, reduction_factor=3),
        get_arm("pbt", num_trials=pbt),
    ]


def _result(step: int, it: int, lr: float, every: int) -> dict:
    loss = 2.0 + abs(math.log10(lr / 1e-3)) + 5.0 / (1 + step / 100)
    return {
        "training_iteration": it,
        "step": step,
        "loss": loss,
        "val_loss": loss,
        "lr": lr,
        "scale": 1.0,
        "steps_done": every,
        "tokens_done": every * 100,
        "worker_s_done": every * 0.01,
        "adalrs_events": "[]",
    }


def drive_scheduler(n_trials: int, reports: int, every: int = 50) -> dict:
    """Run a whole comparison of ``n_trials`` stub trials through the scheduler's hooks."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search.variant_generator import generate_variants

    from adalrs_ray.comparison import AdaLRSComparison

    total = reports * every
    sched = AdaLRSComparison(_arms(n_trials, total), total_steps=total, report_every=every)
    ctl = _Controller(sched)
    gc.collect()
    tracemalloc.start()
    t_resolve = time.perf_counter()
    configs = [dict(cfg) for _, cfg in generate_variants(sched.param_space())]
    t_resolve = time.perf_counter() - t_resolve  # Tune's variant generation over the slots
    for cfg in configs:
        trial = Trial("__bench", config=cfg, stub=True)
        ctl.trials.append(trial)
        sched.on_trial_add(ctl, trial)
    its = {t.trial_id: 0 for t in ctl.trials}
    times: list[float] = []
    while True:
        while (nxt := sched.choose_trial_to_run(ctl)) is not None:
            nxt.set_status(Trial.RUNNING)
        running = [t for t in ctl.trials if t.status == Trial.RUNNING]
        if not running:
            break
        for trial in running:
            if trial.status != Trial.RUNNING:  # paused by another trial's exploit or rung
                continue
            its[trial.trial_id] += 1
            it = its[trial.trial_id]
            result = _result(it * every - 1, it, float(trial.config["lr"]), every)
            t0 = time.perf_counter()
            decision = sched.on_trial_result(ctl, trial, result)
            times.append(time.perf_counter() - t0)
            if decision == TrialScheduler.STOP or it >= reports:
                sched.on_trial_complete(ctl, trial, result)
                trial.set_status(Trial.TERMINATED)
            elif decision == TrialScheduler.PAUSE:
                trial.set_status(Trial.PAUSED)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    unfinished = [t.trial_id for t in ctl.trials if t.status != Trial.TERMINATED]
    if unfinished:
        raise RuntimeError(f"{len(unfinished)} trials never finished: the driver is wrong")
    return {
        "trials": len(ctl.trials),
        "results": len(times),
        "median_us": statistics.median(times) * 1e6,
        "mean_us": statistics.fmean(times) * 1e6,
        "peak_mib": peak / 2**20,
        "resolve_s": t_resolve,
    }


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _timed_comparison(*args, **kwargs):
    """An ``AdaLRSComparison`` that times its own ``on_trial_result`` (Tune pickles the
    scheduler with the experiment state, so the timer lives in a picklable subclass)."""
    from adalrs_ray.comparison import AdaLRSComparison

    class _Timed(AdaLRSComparison):
        def on_trial_result(self, tune_controller, trial, result):
            t0 = time.perf_counter()
            decision = super().on_trial_result(tune_controller, trial, result)
            self.bench_times.append(time.perf_counter() - t0)
            if len(self.bench_times) % 10 == 0:
                self.bench_rss.append(_rss())
            return decision

    sched = _Timed(*args, **kwargs)
    sched.bench_times, sched.bench_rss = [], [_rss()]
    return sched


def tune_run(n_trials: int, reports: int, storage: str, every: int = 50) -> dict:
    """The same arms in a real ``tune.Tuner`` on the local Ray, with the synthetic trainable of
    ``adalrs-ray compare --task sim`` (no sleep per step: the trials are tiny, so the driver's
    work shows). Timed: each call of the real scheduler's ``on_trial_result`` inside Tune's
    controller; the driver's resident memory sampled between calls (psutil)."""
    from ray import tune

    from train_loops.trainables import get_trainable

    total = reports * every
    sched = _timed_comparison(_arms(n_trials, total), total_steps=total, report_every=every)
    times, rss = sched.bench_times, sched.bench_rss
    t0 = time.perf_counter()
    results = tune.Tuner(
        get_trainable("synthetic", cpu=0.25),
        param_space=sched.param_space({"seconds_per_step": 0.0}),
        tune_config=tune.TuneConfig(scheduler=sched, reuse_actors=True),
        run_config=tune.RunConfig(
            storage_path=storage,
            name=f"load_{n_trials}",
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        ),
    ).fit()
    wall = time.perf_counter() - t0
    rss.append(_rss())
    errors = [r.error for r in results if r.error]
    if errors:
        raise RuntimeError(f"{len(errors)} trials failed; first: {errors[0]}")
    return {
        "trials": len(results),
        "results": len(times),
        "median_us": statistics.median(times) * 1e6,
        "mean_us": statistics.fmean(times) * 1e6,
        "rss_start_mib": rss[0] / 2**20,
        "rss_peak_mib": max(rss) / 2**20,
        "fit_s": wall,
    }


# ------------------------------------------------------------------ (b) the report
def synthetic_results(rows: int):
    """The committed quick run's results repeated over renamed trials up to ``rows`` rows."""
    import pandas as pd

    from adalrs_ray.report.contract import ARM_CUM_COLUMNS
    from adalrs_ray.report.results import load_results

    base = load_results(ROOT / "docs" / "runs" / "quick")
    copies = max(1, -(-rows // len(base)))
    arm_total = {c: base.groupby("arm")[c].transform("max") for c in ARM_CUM_COLUMNS}
    parts = []
    for i in range(copies):  # each copy: new trials of the same arms, arriving after the last
        part = base.copy()
        part["trial_id"] = part["trial_id"].astype(str) + f"_{i}"
        for c in ARM_CUM_COLUMNS:  # an arm's cumulative compute goes on growing
            part[c] = part[c] + i * arm_total[c]
        parts.append(part)
    return pd.concat(parts, ignore_index=True).iloc[:rows]


def time_report(rows: int, jsonl: bool = False) -> dict:
    """What ``adalrs-ray report DIR`` does but the plots: load the results table from a
    directory (``results.parquet``, as a compare run writes it; with ``jsonl`` also a JSON-lines
    compute log, one report per line, timed separately), validate, summarize, the trial table
    and the Markdown document."""
    from adalrs_ray.report.results import load_results
    from adalrs_ray.report.sections import build_doc
    from adalrs_ray.report.tables import reference_point, summarize, trial_table

    raw = synthetic_results(rows)
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "table").mkdir()
        raw.to_parquet(Path(tmp) / "table" / "results.parquet")
        if jsonl:
            log = Path(tmp) / "log" / "comparison_log.jsonl"
            log.parent.mkdir()
            raw.to_json(log, orient="records", lines=True)
            t0 = time.perf_counter()
            load_results(log.parent)
            out["jsonl_load_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        df = load_results(Path(tmp) / "table")
        out["load_s"] = time.perf_counter() - t0
    summary = summarize(df, baseline_steps=600)
    trials = trial_table(df)
    doc = build_doc(df, summary, trials, {}, "load", None, 600, "grid", reference_point(df), False)
    doc.markdown()
    out.update(rows=len(df), trials=int(df["trial_id"].nunique()), seconds=time.perf_counter() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, nargs="*", default=[10, 100, 400])
    p.add_argument("--reports", type=int, default=12, help="reports per full trial")
    p.add_argument("--rows", type=int, nargs="*", default=[10**4, 10**5, 10**6])
    p.add_argument(
        "--jsonl",
        action="store_true",
        help="also time loading the rows from a JSON-lines compute log instead of results.parquet",
    )
    p.add_argument(
        "--tune-trials",
        type=int,
        nargs="*",
        default=None,
        help="trial counts also run in a real tune.Tuner on a local Ray (default 10 100; "
        "none with --smoke)",
    )
    p.add_argument("--smoke", action="store_true", help="4 and 8 trials, 1e3 and 2e3 rows")
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args()
    if args.smoke:
        args.trials, args.reports, args.rows = [4, 8], 4, [1000, 2000]
    if args.tune_trials is None:
        args.tune_trials = [] if args.smoke else [10, 100]

    sched_rows = [drive_scheduler(n, args.reports) for n in args.trials]
    lines = []
    if sched_rows:
        base = sched_rows[0]["median_us"]
        lines += [
            "(a) AdaLRSComparison, hooks driven in-process (stub trials, no Ray)",
            "",
            "| trials | results | median us per on_trial_result | x the smallest | peak MiB | "
            "param_space resolved (s) |",
            "|---|---|---|---|---|---|",
        ]
    for r in sched_rows:
        lines.append(
            f"| {r['trials']} | {r['results']} | {r['median_us']:.0f} | "
            f"{r['median_us'] / base:.2f} | {r['peak_mib']:.1f} | {r['resolve_s']:.2f} |"
        )
    tune_rows = []
    if args.tune_trials:
        from _local_ray import init_local_ray

        ray = init_local_ray()
        try:
            with tempfile.TemporaryDirectory() as storage:
                tune_rows = [tune_run(n, args.reports, storage) for n in args.tune_trials]
        finally:
            ray.shutdown()
        base = tune_rows[0]["median_us"]
        lines += [
            "",
            "(a') the same arms in a real tune.Tuner (local Ray, 2 CPUs, synthetic trainable)",
            "",
            "| trials | results | median us per on_trial_result | x the smallest | "
            "mean us | driver RSS MiB (start / peak) | fit (s) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in tune_rows:
            lines.append(
                f"| {r['trials']} | {r['results']} | {r['median_us']:.0f} | "
                f"{r['median_us'] / base:.2f} | {r['mean_us']:.0f} | "
                f"{r['rss_start_mib']:.0f} / {r['rss_peak_mib']:.0f} | {r['fit_s']:.0f} |"
            )
    report_rows = [time_report(n, args.jsonl) for n in args.rows]
    if report_rows:
        per_row0 = report_rows[0]["seconds"] / report_rows[0]["rows"]
        jsonl = " JSON-lines load (s) |" if args.jsonl else ""
        lines += [
            "",
            "(b) adalrs-ray report DIR but the plots: load results.parquet, tables, Markdown",
            "",
            f"| rows | trials | seconds | of which load (s) | us per row | x the smallest per row "
            f"|{jsonl}",
            "|---|---|---|---|---|---|" + ("---|" if args.jsonl else ""),
        ]
    for r in report_rows:
        per_row = r["seconds"] / r["rows"]
        lines.append(
            f"| {r['rows']:,} | {r['trials']:,} | {r['seconds']:.2f} | {r['load_s']:.2f} | "
            f"{per_row * 1e6:.1f} | {per_row / per_row0:.2f} |"
            + (f" {r['jsonl_load_s']:.2f} |" if args.jsonl else "")
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {"scheduler": sched_rows, "tune": tune_rows, "report": report_rows}, indent=1
            )
        )


if __name__ == "__main__":
    main()
