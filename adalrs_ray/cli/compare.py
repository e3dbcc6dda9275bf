"""``adalrs-ray compare`` and ``adalrs-ray report``: the head-to-head LR-search comparison.

``compare`` runs AdaLRS (Dong et al., "AdaLRS", NeurIPS 2025, arXiv 2506.13274), started 10x off
the best LR, against a grid, HyperBand (or ASHA), PBT or random search in ONE ``tune.Tuner`` and
writes the cost report (``report.md``, ``report.html``, ``results.parquet``, PNGs) into
``--out``. Budgets come from a preset (:mod:`adalrs_ray.experiments.presets`); every option given
on the command line overrides the preset. The arms ``--arms`` accepts and their size options
(``--grid-points``, ``--hyperband-trials``, ...) come from the arm registry
(:mod:`search_algos`).

``report DIR`` rebuilds the report from a saved directory (``results.parquet``, or the Tune
compute log under ``DIR/tune`` when the run stopped before its report).

This module parses arguments; the work is done by :mod:`adalrs_ray.experiments.compare`
(:func:`~adalrs_ray.experiments.compare.run_compare` and friends, Ray included), imported when
a command runs so that ``adalrs-ray --help`` stays fast.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from adalrs_ray.cli.train import parse_adalrs_opts
from adalrs_ray.report.contract import CONFIG_FILE


# ------------------------------------------------------------------------------ arguments
def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} must be comma-separated numbers, e.g. 0.1,10"
        ) from None
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def register(subparsers: Any) -> None:
    """Add the ``compare`` and ``report`` sub-commands (see :mod:`adalrs_ray.cli`)."""
    from adalrs_ray.experiments.presets import ARM_NAMES, PRESETS
    from search_algos import DEFAULT_ARMS, size_options

    presets = ", ".join(f"{p.name}: {p.description}" for p in PRESETS.values())
    p = subparsers.add_parser(
        "compare",
        help="AdaLRS vs grid, HyperBand/ASHA and PBT in one Tune run, then the cost report",
        description="Run LR-search arms side by side in one Ray Tune experiment (AdaLRS started "
        "10x off the reference LR, a grid, HyperBand or ASHA, PBT) and write the cost report "
        f"(report.md, report.html, results.parquet, PNGs) into --out. Presets: {presets}.",
    )
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS), help="budgets and arms")
    p.add_argument(
        "--arms",
        type=_names,
        help=f"comma-separated arms from {', '.join(ARM_NAMES)} (default: the preset's, "
        f"{','.join(DEFAULT_ARMS)})",
    )
    p.add_argument("--out", help="output directory (default runs/compare-<preset>-<time>)")
    p.add_argument("--task", choices=("lm", "sim"), help="lm: the LM; sim: the loss simulator")
    g = p.add_argument_group("budget (overrides the preset)")
    g.add_argument("--steps", type=int, help="optimizer steps of one full trial (T)")
    g.add_argument("--report-every", type=int, help="steps between two reports")
    g.add_argument("--lr-ref", type=float, help="reference LR (the best LR of a sweep)")
    g.add_argument("--lr-span", type=float, help="arms search [lr_ref/span, lr_ref*span]")
    g.add_argument(
        "--adalrs-starts",
        type=_floats,
        help="AdaLRS starting LRs as multiples of --lr-ref, one arm each (default 0.1,10)",
    )
    g.add_argument("--window", type=int, help="AdaLRS window k in steps")
    g.add_argument(
        "--adalrs-opt",
        action="append",
        metavar="KEY=VALUE",
        help="another AdaLRSConfig field for the AdaLRS arms, e.g. lam=0.95 (repeatable)",
    )
    for option in size_options().values():  # the arms' sizes: --grid-points, --pbt-trials, ...
        g.add_argument(option.flag, dest=option.name, type=int, help=option.help)
    g = p.add_argument_group("task (overrides the preset; lm task only)")
    g.add_argument("--data", help="corpus: directory, text file or .parquet (default: stdlib)")
    g.add_argument("--model", help="model preset of train_loops.model (default tiny)")
    g.add_argument("--batch-size", type=int, help="sequences per step")
    g.add_argument("--seq-len", type=int, help="tokens per sequence")
    g.add_argument("--device", help="auto, cpu, cuda, npu, mps")
    g.add_argument("--seed", type=int, help="model init, data order and the arms' LR samples")
    g = p.add_argument_group("Ray")
    g.add_argument(
        "--workers",
        type=int,
        default=1,
        help="training workers per trial: 1 trains in-process inside the Tune trial; N > 1 "
        "launches a Ray Train TorchTrainer with N workers per trial (lm task)",
    )
    g.add_argument(
        "--address",
        help="Ray cluster to join ('auto' or host:port); default: start a local Ray",
    )
    g.add_argument("--cpus", type=float, help="CPUs of the local Ray it starts (default: all)")
    g.add_argument(
        "--max-concurrent",
        type=int,
        help="trials running at once (each reserves cpus/max-concurrent CPUs)",
    )
    g.add_argument("--keep-checkpoints", action="store_true", help="keep the trial checkpoints")
    g.add_argument(
        "--max-failures",
        type=int,
        default=1,
        help="retries of a failed trial from its last checkpoint (default 1; 0: none); each "
        "is counted as restart overhead and marked in the report",
    )
    g.add_argument(
        "--no-loggers",
        dest="loggers",
        action="store_false",
        help="no Tune logs per trial (default: TensorBoard event files, progress.csv and "
        "result.json in every trial directory under OUT/tune)",
    )
    g.add_argument(
        "--progress-every", type=float, default=10.0, help="seconds between progress lines"
    )
    g.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the interrupted compare run in DIR (its --out) with its own settings, "
        "then write its report; only the Ray options --address, --cpus, --keep-checkpoints, "
        "--progress-every and --quiet may be given with it",
    )
    p.set_defaults(func=cmd_compare)
    _COMPARE_DEFAULTS.update(vars(p.parse_args([])))

    r = subparsers.add_parser(
        "report",
        help="rebuild the cost report of a compare run from its saved results",
        description="Rebuild report.md, report.html, the Parquet tables and the PNGs of a "
        "compare directory (results.parquet, or the Tune compute log of an interrupted run).",
    )
    r.add_argument("directory", help="a compare --out directory")
    r.add_argument("--out", help="output directory (default: DIRECTORY)")
    r.add_argument(
        "--thresholds",
        type=_floats,
        help="p of 'within p%%' as fractions, comma-separated, e.g. 0.01,0.02,0.05",
    )
    r.add_argument("--title", help="the report's title (default: the saved one)")
    r.add_argument(
        "--baseline-steps",
        type=float,
        help="optimizer steps of one full-budget run (the unit of 'x full run'; default: saved)",
    )
    r.add_argument("--grid-arm", help="name of the grid arm (default: grid)")
    r.add_argument("--grid-best-lr", type=float, help="the grid's best LR, if known otherwise")
    r.add_argument("--reference-loss", type=float, help="the loss the thresholds refer to")
    r.add_argument(
        "--add-arms",
        action="append",
        metavar="DIR:ARM[,ARM...]",
        help="also report these arms of another compare directory trained on the same task "
        "with the same budget (its grid, say, run once); repeatable; needs --out",
    )
    r.set_defaults(func=cmd_report)


# ------------------------------------------------------------------------------ commands
def preset_from_args(args: argparse.Namespace):
    """The preset of ``args.preset`` with every command-line override applied
    (:func:`adalrs_ray.experiments.compare.resolve_preset`)."""
    from adalrs_ray.experiments.compare import resolve_preset
    from search_algos import size_options

    trial = {
        "data": args.data,
        "preset": args.model,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "device": args.device,
        "seed": args.seed,
    }
    trial = {k: v for k, v in trial.items() if v is not None}
    adalrs = parse_adalrs_opts(args.adalrs_opt)
    if args.window is not None:
        adalrs["window"] = args.window
    sizes = {o.name: getattr(args, o.name) for o in size_options().values()}
    return resolve_preset(
        args.preset,
        task=args.task,
        total_steps=args.steps,
        report_every=args.report_every,
        lr_ref=args.lr_ref,
        lr_span=args.lr_span,
        adalrs_starts=args.adalrs_starts,
        arms=args.arms,
        max_concurrent=args.max_concurrent,
        adalrs=adalrs or None,
        trial_config=trial or None,
        **sizes,
    )


# the compare options' defaults (filled by register); and those --resume allows
_COMPARE_DEFAULTS: dict[str, Any] = {}
_RESUME_OPTIONS = {"resume", "address", "cpus", "keep_checkpoints", "progress_every", "quiet"}


def resume_conflicts(args: argparse.Namespace) -> list[str]:
    """The options given with ``--resume`` that would change the run's saved settings."""
    flags = {"loggers": "--no-loggers"}
    return sorted(
        flags.get(key, "--" + key.replace("_", "-"))
        for key, default in _COMPARE_DEFAULTS.items()
        if key not in _RESUME_OPTIONS and key != "func" and getattr(args, key, default) != default
    )


def cmd_compare(args: argparse.Namespace) -> int:
    from adalrs_ray.experiments.compare import (
        default_out_dir,
        headline,
        resume_settings,
        run_compare,
    )

    if args.progress_every <= 0:
        raise ValueError(f"--progress-every is {args.progress_every}, but must be > 0")
    if args.cpus is not None and not args.cpus > 0:
        raise ValueError(f"--cpus is {args.cpus}, but must be > 0")
    if args.resume:
        conflicts = resume_conflicts(args)
        if conflicts:
            raise ValueError(
                f"--resume {args.resume} continues the run with its own settings "
                f"({Path(args.resume) / CONFIG_FILE}), but {', '.join(conflicts)} "
                "would change them; give only --address, --cpus, --keep-checkpoints, "
                "--progress-every or --quiet with --resume"
            )
        saved = resume_settings(args.resume)
        for key in ("workers", "loggers", "max_failures"):
            setattr(args, key, saved[key])
        preset, out = saved["preset"], args.resume
    else:
        preset = preset_from_args(args)
        out = args.out or default_out_dir(preset.name)
    if sys.argv[1:2] == ["compare"]:  # the console script: record its command line
        command = shlex.join(["adalrs-ray", *sys.argv[1:]])
    else:  # called in-process (tests, notebooks): the resolved settings are in CONFIG_FILE
        command = f"adalrs-ray compare --preset {preset.name} ... (in-process; see {CONFIG_FILE})"
    result = run_compare(
        preset,
        out,
        workers=args.workers,
        address=args.address,
        cpus=args.cpus,
        progress_every=args.progress_every,
        progress=not args.quiet,
        keep_checkpoints=args.keep_checkpoints,
        command=command,
        loggers=args.loggers,
        max_failures=args.max_failures,
        resume=bool(args.resume),
    )
    print(headline(result["summary"]))
    print(
        f"{len(result['errors'])} failed, {result['unfinished']} unfinished trial(s); "
        f"wall {result['wall_s']:.0f} s -> "
        f"{result['paths']['markdown']}, {result['paths']['html']}"
    )
    return 1 if result["errors"] or result["unfinished"] else 0


def _parse_add_arms(item: str) -> tuple[Path, list[str]]:
    folder, sep, names = item.rpartition(":")
    arms = [a.strip() for a in names.split(",") if a.strip()]
    if not sep or not folder or not arms:
        raise ValueError(f"--add-arms {item!r} must look like DIR:ARM[,ARM...], e.g. runs/a:grid")
    return Path(folder), arms


def cmd_report(args: argparse.Namespace) -> int:
    from adalrs_ray.experiments.compare import rebuild_report, write_merged_report

    d = Path(args.directory)
    if not d.is_dir():
        raise ValueError(f"{str(d)!r} does not exist or is not a directory")
    options: dict[str, Any] = {
        key: getattr(args, key)
        for key in ("thresholds", "title", "baseline_steps", "grid_arm", "grid_best_lr")
        + ("reference_loss",)
        if getattr(args, key) is not None
    }
    if args.add_arms:
        additions = [_parse_add_arms(item) for item in args.add_arms]
        if not args.out:
            raise ValueError("--add-arms needs --out: the merged report must not overwrite DIR")
        out = Path(args.out).resolve()
        if out in [d.resolve()] + [f.resolve() for f, _ in additions]:
            raise ValueError(f"--out {args.out!r} is one of the merged directories; pick a new one")
        paths = write_merged_report(d, additions, out, **options)
    else:
        paths = rebuild_report(d, args.out, **options)
    print(f"-> {paths['markdown']}, {paths['html']}")
    return 0
