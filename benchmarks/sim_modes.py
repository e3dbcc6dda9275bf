"""AdaLRS configurations on both simulator modes: final LR / optimum and final loss against the
constant run from the same start, over seeds and starting LRs (issue 13's goals).

Modes (each with its own same-start constant runs, so every figure is a ratio within one run):

* ``basic``: ``LossSimulator`` (the paper's Hypothesis 1 only), constant base LR, 8,000 steps,
  window 100, search [0.1, 0.4].
* ``lm``: ``LMLossSimulator`` (lagged LR noise term, stable-but-slow large LRs, weight growth;
  calibrated to the tiny LM by ``benchmarks/sim_calibrate.py``), WSD base schedule, 2,000
  steps, window 64, search [0.05, 0.4] (the tiny LM's Tune setting, docs/compare.md).

Losses are the simulators' noise-free levels at the last step. Goals (issue 13): from 1x, final
loss within 0.5% of the constant run and final LR within [2/3, 3/2] x; from 1/10 and 10x,
final LR within 2x of the optimum and final loss below the constant run; each on >= 90% of seeds.

    python benchmarks/sim_modes.py [--seeds 40] [--configs paper,default] [--modes basic,lm]
        [--config name=field:value,field:value ...] [--horizons 1,2,4] [--out table.md]

``--horizons`` runs each mode that many times as long (same window): how a rule's cost in
steps (an opening in continue mode discards its multipliers' steps) shrinks with the run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from adalrs_ray.core.controller import AdaLRSConfig
from adalrs_ray.core.lm_simulator import LMLossSimulator, wsd_schedule
from adalrs_ray.core.simulator import LossSimulator, simulate

STARTS = (0.1, 1 / 3, 1.0, 3.0, 10.0)

# named configurations: the fields they set on top of the paper's rule
CONFIGS: dict[str, dict[str, Any]] = {
    "paper": {},
    # AdaLRSConfig's own defaults: simulate() runs them as a loop that rewinds (the opening
    # rule in rewind mode); "rule_regression" is the default of a loop that cannot rewind,
    # and the default before backtrack_mode="auto"
    "default": "default",
    "rule_regression": {"rule": "regression"},
    "two_sided": {"two_sided": True, "factor_shrink": 0.5},
    "restore_regressed": {"restore": "regressed"},
    "settle": {"settle_steps": "window/2"},
    "regression": {"reference": "regression"},
    "two_sided+regression": {"two_sided": True, "factor_shrink": 0.5, "reference": "regression"},
    "two_sided+settle": {"two_sided": True, "factor_shrink": 0.5, "settle_steps": "window/2"},
    "two_sided+restore": {"two_sided": True, "factor_shrink": 0.5, "restore": "regressed"},
    "all": {
        "two_sided": True,
        "factor_shrink": 0.5,
        "restore": "regressed",
        "settle_steps": "window/2",
        "reference": "regression",
    },
    "trajectory": {"two_sided": True, "factor_shrink": 0.5, "reference": "trajectory"},
    # the regression rule with the regression line read only inside H's range of levels
    "in_range": {
        "two_sided": True,
        "factor_shrink": 0.5,
        "restore": "regressed",
        "reference": "regression_in_range",
    },
    # the regression rule, but an inconclusive trial keeps its direction
    "keep_direction": {
        "two_sided": True,
        "factor_shrink": 0.5,
        "restore": "regressed",
        "reference": "regression",
        "inconclusive_turns": False,
    },
    # the regression rule, but an inconclusive trial shrinks its direction's factor too
    "shrink_inconclusive": {
        "two_sided": True,
        "factor_shrink": 0.5,
        "restore": "regressed",
        "reference": "regression",
        "inconclusive_shrinks": True,
    },
    # the regression rule with the opening range test at the search start: 1/10, 1/sqrt(10),
    # sqrt(10), 10 and 1, each for one window from the same snapshot
    "opening": {"base": "regression", "opening_factors": (0.1, 0.316, 3.16, 10.0)},
    # the same with a narrower field (1/sqrt(10), sqrt(10) and 1): fewer steps spent
    "opening3": {"base": "regression", "opening_factors": (0.316, 3.16)},
    # the opening, then trial factors of at most sqrt(3.16) = 1.78 (the bracket's half)
    "opening_narrow": {
        "base": "regression",
        "opening_factors": (0.1, 0.316, 3.16, 10.0),
        "opening_narrows": True,
    },
    # the opening rule with one refinement round (1.78 around the choice)
    "opening_refine": {
        "base": "regression",
        "opening_factors": (0.1, 0.316, 3.16, 10.0),
        "opening_narrows": True,
        "opening_refine": 1,
    },
    # the opening rule in backtrack_mode="rewind": a restore takes the step counter and the
    # noise stream back too (a loop that rewinds its data), so failed trials and the opening's
    # discarded multipliers cost compute, not steps of the run
    "opening_rw": {
        "base": "regression",
        "opening_factors": (0.1, 0.316, 3.16, 10.0),
        "opening_narrows": True,
        "backtrack_mode": "rewind",
        "decay_basis": "adjustments",
    },
    "trajectory+restore_regressed": {
        "two_sided": True,
        "factor_shrink": 0.5,
        "restore": "regressed",
        "reference": "trajectory",
    },
    "trajectory-two_sided": {"reference": "trajectory"},
    "trajectory+counter": {
        "two_sided": True,
        "counter_trial": True,
        "factor_shrink": 0.5,
        "reference": "trajectory",
    },
    "trajectory+settle": {
        "two_sided": True,
        "factor_shrink": 0.5,
        "reference": "trajectory",
        "settle_steps": "window/2",
    },
}
# the opening rule in rewind mode, an inconclusive trial restoring its snapshot too; then also
# shrinking its factor, and no trial below 1.3 (after 1.78 both ways: 1.33, then none)
CONFIGS["opening_rw_ir"] = {**CONFIGS["opening_rw"], "inconclusive_restores": True}
CONFIGS["opening_rw_irs"] = {
    **CONFIGS["opening_rw_ir"],
    "inconclusive_shrinks": True,
    "min_trial_factor": 1.3,
}
CONFIGS["opening_rw_irs_settle"] = {**CONFIGS["opening_rw_irs"], "settle_steps": "window/2"}
CONFIGS["opening_rw_irs_settle1"] = {**CONFIGS["opening_rw_irs"], "settle_steps": "window"}
# the named rule "opening" as it stands, in both backtrack modes ("auto": simulate() rewinds)
CONFIGS["rule_opening"] = {"rule": "opening"}
CONFIGS["rule_opening_continue"] = {"rule": "opening", "backtrack_mode": "continue"}
CONFIGS["rule_opening_rw"] = {
    "rule": "opening",
    "backtrack_mode": "rewind",
    "decay_basis": "adjustments",
}
# the opening alone (no trial after it: no factor exceeds 100), rewind mode
CONFIGS["opening_only_rw"] = {**CONFIGS["opening_rw"], "min_trial_factor": 100.0}
# ... and with the boundary rule firing only on significant rises
for _name in ("opening_rw", "opening_rw_irs", "opening_only_rw"):
    CONFIGS[_name + "_bt"] = {**CONFIGS[_name], "boundary_tested": True}
# (with opening_trials="edge" added, opening_rw_bt is rule_opening_rw, and opening_narrow
# with boundary_tested and "edge" is rule_opening)
CONFIGS["opening_narrow_bt"] = {**CONFIGS["opening_narrow"], "boundary_tested": True}
CONFIGS["default_bt"] = {"base": "regression", "boundary_tested": True}
CONFIGS["opening_rw_s"] = {
    **CONFIGS["opening_rw"],
    "inconclusive_shrinks": True,
    "min_trial_factor": 1.3,
}
# "all" without one field at a time: what each adds to the others
for _field in ("two_sided", "restore", "settle_steps", "reference"):
    CONFIGS[f"all-{_field}"] = {
        k: v
        for k, v in CONFIGS["all"].items()
        if k != _field and not (_field == "two_sided" and k == "factor_shrink")
    }

# every opening above was measured at one window per multiplier, the default until
# opening_steps=None meant two windows; "default" and the two below take the default
for _fields in CONFIGS.values():
    _opens = isinstance(_fields, dict) and (
        _fields.get("opening_factors") or _fields.get("rule") == "opening"
    )
    if _opens and "opening_steps" not in _fields:
        _fields["opening_steps"] = "window"
CONFIGS["opening_2w"] = {"rule": "opening", "opening_steps": "2*window"}
CONFIGS["rule_opening_2w"] = {"rule": "opening"}  # the rule's own opening_steps: 2 x window
# ... and in continue mode (a loop that cannot rewind: the opening's steps are the run's)
CONFIGS["rule_opening_continue_2w"] = {"rule": "opening", "backtrack_mode": "continue"}
# every config on the "opening" rule above was measured before error_ar1, boundary_rule,
# bracket_stops and the opening's extension existed: they keep the paper's values of them (the
# rule itself now takes the defaults), all but "rule_opening_2w", the rule as it stands (like
# "default")
for _name, _fields in CONFIGS.items():
    if (
        isinstance(_fields, dict)
        and _fields.get("rule") == "opening"
        and _name != "rule_opening_2w"
    ):
        _fields.update(
            error_ar1=False, boundary_rule="downscale", bracket_stops=False, opening_extends=0
        )
# the default as a loop that cannot rewind resolves it (simulate() on a LossSimulator rewinds)
CONFIGS["default_continue"] = {"base": "default", "backtrack_mode": "continue"}
# the default before the opening's extension past its edge (opening_extends=2 where the loop
# rewinds: session 10 of issue 13), and the configs below, all measured before it
CONFIGS["default_before_extends"] = {"base": "default", "opening_extends": 0}
# the default before error_ar1 and boundary_rule, and with error_ar1 alone (both measured
# before bracket_stops existed)
CONFIGS["default_before_noise"] = {
    "base": "default",
    "error_ar1": False,
    "boundary_rule": "downscale",
    "bracket_stops": False,
    "opening_extends": 0,
}
CONFIGS["default_ar1"] = {
    "base": "default",
    "boundary_rule": "downscale",
    "bracket_stops": False,
    "opening_extends": 0,
}
# the default before bracket_stops, in both kinds of loop
CONFIGS["default_before_bracket"] = {
    "base": "default",
    "bracket_stops": False,
    "opening_extends": 0,
}
CONFIGS["default_continue_before_bracket"] = {
    "base": "default",
    "backtrack_mode": "continue",
    "bracket_stops": False,
}
# the default with two extension rounds of the opening past its edge: the default itself since
# session 10 (kept so that docs/runs/sim_modes_extends.md's first command reruns)
CONFIGS["default_extends"] = {"base": "default", "opening_extends": 2}
CONFIGS["rule_regression_ar1"] = {"rule": "regression", "error_ar1": True}
CONFIGS["rule_opening_continue_2w_ar1"] = {**CONFIGS["rule_opening_continue_2w"], "error_ar1": True}


class Mode:
    def __init__(self, name, make, schedule, total, window, start_ratio, end_ratio, final):
        self.name, self.make, self.schedule = name, make, schedule
        self.total, self.window = total, window
        self.start_ratio, self.end_ratio = start_ratio, end_ratio
        self.final: Callable[[Any], float] = final


MODES = {
    "basic": Mode(
        "basic",
        lambda seed: LossSimulator(seed=seed),
        lambda lr, total: lr,
        8000,
        100,
        0.1,
        0.4,
        lambda sim: sim.loss,
    ),
    "lm": Mode(
        "lm",
        lambda seed: LMLossSimulator(seed=seed),
        wsd_schedule,
        2000,
        64,
        0.05,
        0.4,
        lambda sim: sim.expected_loss,
    ),
}


def _longer(mode: Mode, horizon: float) -> Mode:
    """``mode`` run ``horizon`` times as long (same window, same search ratios)."""
    if not horizon > 0:
        raise SystemExit(f"--horizons holds {horizon!r}, but every horizon must be > 0")
    total = int(round(mode.total * horizon))
    return Mode(
        mode.name,
        mode.make,
        mode.schedule,
        total,
        mode.window,
        mode.start_ratio,
        mode.end_ratio,
        mode.final,
    )


def make_config(mode: Mode, fields: dict[str, Any] | str) -> AdaLRSConfig:
    base = {
        "total_steps": mode.total,
        "window": mode.window,
        "start_ratio": mode.start_ratio,
        "end_ratio": mode.end_ratio,
    }
    if fields == "default":
        return AdaLRSConfig(**base)
    fields = {k: _per_window(v, mode.window) for k, v in fields.items()}
    if "rule" in fields:  # a named rule (adalrs_ray.core.controller.RULES) + fields
        return AdaLRSConfig.from_dict({**base, **fields})
    if fields.get("base") == "default":  # AdaLRSConfig's own defaults + fields
        rest = {k: v for k, v in fields.items() if k != "base"}
        return AdaLRSConfig(**base, **rest)
    if fields.get("base") == "regression":  # the regression rule (continue mode) + fields
        rest = {k: v for k, v in fields.items() if k != "base"}
        return AdaLRSConfig.from_dict({"rule": "regression", **base, **rest})
    return AdaLRSConfig.paper(**base) if not fields else _beyond(base, fields)


def _per_window(value: Any, window: int) -> Any:
    """A field value given as "window" or "window/2" in that mode's steps; others as given."""
    if isinstance(value, str):
        return {"window/2": window // 2, "window": window, "2*window": 2 * window}.get(value, value)
    return value


def _beyond(base: dict[str, Any], fields: dict[str, Any]) -> AdaLRSConfig:
    paper = AdaLRSConfig.paper(**base).to_dict()
    return AdaLRSConfig(**{**paper, **fields})


def parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def run_cell(mode: Mode, cfg: AdaLRSConfig, start: float, seeds: range, fixed: dict) -> dict:
    ratios, rel, compute = [], [], []
    for seed in seeds:
        sim = mode.make(seed)
        lr = mode.schedule(sim.lr_opt * start, mode.total)
        res = simulate(sim, lr, cfg)
        compute.append(res.compute_steps / mode.total)
        ratios.append(res.final_scale * start)
        rel.append(mode.final(sim) / fixed[(start, seed)] - 1.0)
    if start == 1.0:
        ok = [abs(d) <= 0.005 and 2 / 3 <= r <= 1.5 for r, d in zip(ratios, rel)]
    else:
        ok = [0.5 <= r <= 2 and d < 0 for r, d in zip(ratios, rel)]
    return {
        "lr_median": statistics.median(ratios),
        "lr_lo": min(ratios),
        "lr_hi": max(ratios),
        "rel_median": statistics.median(rel),
        "better": sum(d < 0 for d in rel) / len(rel),
        "goal": sum(ok) / len(ok),
        "compute": statistics.median(compute),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=40)
    p.add_argument("--configs", default="paper,default")
    p.add_argument("--modes", default="basic,lm")
    p.add_argument("--starts", default=",".join(f"{s:g}" for s in STARTS))
    p.add_argument(
        "--horizons",
        default="1",
        help="run lengths as multiples of each mode's total_steps (same window), e.g. 1,2,4",
    )
    p.add_argument("--config", action="append", default=[], help="name=field:value,...")
    p.add_argument("--out", default=None, help="also write the Markdown table here")
    args = p.parse_args()
    configs = dict(CONFIGS)
    for spec in args.config:
        name, _, body = spec.partition("=")
        fields = {}
        for item in filter(None, body.split(",")):
            key, _, value = item.partition(":")
            fields[key] = parse_value(value)
        configs[name] = fields
    names = args.configs.split(",")
    unknown = [n for n in names if n not in configs]
    if unknown:
        raise SystemExit(f"unknown configs {unknown}; known: {sorted(configs)}")
    starts = [
        float(s) if "/" not in s else 1 / float(s.split("/")[1]) for s in args.starts.split(",")
    ]
    seeds = range(args.seeds)
    lines = [
        "| mode | config | start | final LR / opt: median [min, max] | final loss vs constant: "
        "median | below constant | goal met | compute (runs): median |",
        "|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    t0 = time.time()
    runs = [(m, float(h)) for m in args.modes.split(",") for h in args.horizons.split(",")]
    for mname, horizon in runs:
        mode = _longer(MODES[mname], horizon)
        if horizon != 1:
            mname = f"{mname} x{horizon:g}"
        fixed = {}
        for start in starts:
            for seed in seeds:
                sim = mode.make(seed)
                simulate(sim, mode.schedule(sim.lr_opt * start, mode.total), None, mode.total)
                fixed[(start, seed)] = mode.final(sim)
        for name in names:
            try:
                cfg = make_config(mode, configs[name])
            except ValueError as exc:  # an opening that does not fit this run, say
                line = f"| {mname} | {name} | all | does not fit: {exc} | | | | |"
                lines.append(line)
                print(line, flush=True)
                continue
            for start in starts:
                c = run_cell(mode, cfg, start, seeds, fixed)
                line = (
                    f"| {mname} | {name} | {start:.3g} | {c['lr_median']:.2f} "
                    f"[{c['lr_lo']:.2f}, {c['lr_hi']:.2f}] | {c['rel_median']:+.2%} | "
                    f"{c['better']:.0%} | {c['goal']:.0%} | {c['compute']:.2f} |"
                )
                lines.append(line)
                print(line, flush=True)
    print(f"({args.seeds} seeds, {time.time() - t0:.0f} s)")
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
