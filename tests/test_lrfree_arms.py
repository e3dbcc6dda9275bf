"""The single-run LR-free arms (issue 14 item 5): Prodigy and Schedule-Free AdamW in the LM loop
(build, effective LR, exact resume, Schedule-Free's eval mode around evaluation), their arms
(one full-budget trial with the optimizer key) and a tiny Tune comparison with both."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from lm_configs import tiny_lm_config

from adalrs_ray.experiments.presets import build_arms
from search_algos import ARMS, get_arm
from train_loops.lm import LMConfig, LMTrainer, LoopHooks, run
from train_loops.trainables import lm_config_from_trial

pytest.importorskip("prodigyopt")
pytest.importorskip("schedulefree")

COMPARED = ["step", "lr", "loss", "grad_norm", "tokens", "val_loss"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    for i in range(120):
        lines = [f"def f{i}_{j}(x):\n    return x + {words[(i + j) % 8]}\n" for j in range(12)]
        (root / f"m{i:03d}.py").write_text("".join(lines))
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(corpus, cache, **kw) -> LMConfig:
    return tiny_lm_config(corpus, cache, **{"steps": 24, **kw})


_OPT = {
    "prodigy": dict(optimizer="prodigy", lr=1.0, schedule="cosine", warmup_steps=3),
    "schedulefree": dict(optimizer="schedulefree", lr=3e-3, warmup_steps=5),
}


@pytest.mark.parametrize("name", ["prodigy", "schedulefree"])
def test_each_optimizer_builds_and_trains_in_the_lm_loop(corpus, cache, name):
    t = LMTrainer(_cfg(corpus, cache, **_OPT[name]))
    t.setup()
    assert (
        type(t.optimizer).__name__
        == {"prodigy": "Prodigy", "schedulefree": "AdamWScheduleFree"}[name]
    )
    summary = t.train()
    assert summary["status"] == "completed" and math.isfinite(summary["val_loss"])
    lrs = t.metrics["lr"]
    group = t.optimizer.param_groups[0]
    if name == "prodigy":
        # d * lr: d starts at d0 = 1e-6 and grows; the base cosine schedule decays lr
        assert lrs[0] == 0.0  # the base schedule's warmup starts at 0
        assert lrs[1] == pytest.approx(1e-6 / 3, rel=0.5)  # d still near d0 at warmup step 1
        assert max(lrs) > 2 * lrs[1] and group["d"] > 1e-6  # d grows from d0
    else:
        # its own linear warmup over 5 steps, then constant: no base schedule decay
        assert lrs[:5] == pytest.approx([3e-3 * (k + 1) / 5 for k in range(5)])
        assert lrs[5:] == pytest.approx([3e-3] * (len(lrs) - 5))
        assert group["scheduled_lr"] == pytest.approx(lrs[-1])
    t.cleanup()


def test_schedulefree_evaluates_its_averaged_weights_and_goes_back_to_train_mode(corpus, cache):
    t = LMTrainer(_cfg(corpus, cache, **_OPT["schedulefree"], steps=8))
    t.setup()
    t.train()
    opt = t.optimizer
    assert opt.param_groups[0]["train_mode"]
    y = [p.detach().clone() for p in t.raw_model.parameters()]
    seen = {}
    original = t._loss

    def spy(batch):
        seen["mode"] = opt.param_groups[0]["train_mode"]
        seen["w"] = [p.detach().clone() for p in t.raw_model.parameters()]
        return original(batch)

    t._loss = spy
    t.evaluate("validation")
    assert seen["mode"] is False  # evaluated in eval mode ...
    moved = [not torch.equal(a, b) for a, b in zip(seen["w"], y, strict=True)]
    assert any(moved)  # ... on other (the averaged) weights
    assert opt.param_groups[0]["train_mode"]  # and back in train mode after
    for a, b in zip(t.raw_model.parameters(), y, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    t.cleanup()


@pytest.mark.parametrize("name", ["prodigy", "schedulefree"])
def test_resume_reproduces_the_uninterrupted_run_exactly(corpus, cache, tmp_path, name):
    kw = dict(_OPT[name], report_every=5)
    full = run(_cfg(corpus, cache, out_dir=str(tmp_path / "full"), **kw))
    box = {}
    hooks = LoopHooks(should_stop=lambda: box["t"].step >= 13)  # mid report window
    t = box["t"] = LMTrainer(_cfg(corpus, cache, out_dir=str(tmp_path / "cut"), **kw), hooks)
    t.setup()
    assert t.train()["status"] == "stopped"
    if name == "prodigy":
        d_cut = t.optimizer.param_groups[0]["d"]
    t.cleanup()
    r = LMTrainer(
        _cfg(corpus, cache, out_dir=str(tmp_path / "res"), resume=str(tmp_path / "cut"), **kw)
    )
    r.setup()
    if name == "prodigy":  # its step-size estimate travels in the checkpoint
        assert r.optimizer.param_groups[0]["d"] == d_cut and d_cut > 1e-6
    else:
        assert r.optimizer.param_groups[0]["train_mode"] and r.optimizer.param_groups[0]["k"] == 13
    resumed = r.train()
    r.cleanup()
    a = pd.read_parquet(tmp_path / "full" / "metrics.parquet")
    b = pd.read_parquet(tmp_path / "res" / "metrics.parquet")
    pd.testing.assert_frame_equal(a[COMPARED], b[COMPARED])
    for key in ("val_loss", "test_loss", "train_loss", "final_lr", "tokens"):
        assert resumed[key] == full[key], key


def test_optimizer_setting_is_validated():
    with pytest.raises(ValueError, match=r"optimizer is 'sgd', but must be one of"):
        LMConfig(optimizer="sgd")
    with pytest.raises(ValueError, match=r"optimizer is 'prodigy' and adalrs is on"):
        LMConfig(optimizer="prodigy", lr=1.0, adalrs=True)


def test_missing_package_names_the_extra(monkeypatch):
    import sys

    from search_algos import prodigy

    monkeypatch.setitem(sys.modules, "prodigyopt", None)  # import fails
    with pytest.raises(ValueError, match=r"adalrs-ray\[lrfree\]"):
        prodigy.ProdigyArm()
    from train_loops.lm import import_lrfree

    with pytest.raises(ValueError, match=r"'prodigyopt'.*adalrs-ray\[lrfree\]"):
        import_lrfree("prodigy")


@pytest.mark.parametrize("name", ["prodigy", "schedulefree"])
def test_arm_registers_and_makes_one_full_budget_trial(name):
    assert name in ARMS
    arm = get_arm(name, lr_min=3e-4, lr_max=3e-2)
    slots = arm.slots(total_steps=600, report_every=50)
    assert len(slots) == 1
    (slot,) = slots
    assert set(slot) == {"arm", "lr", "total_steps", "report_every", "adalrs", "optimizer"}
    assert slot["optimizer"] == name and slot["arm"] == name and slot["adalrs"] is None
    assert (slot["total_steps"], slot["report_every"]) == (600, 50)
    # Prodigy's lr multiplies its estimate d (1.0); Schedule-Free starts at the range's middle
    assert slot["lr"] == pytest.approx(1.0 if name == "prodigy" else 3e-3)
    cfg = lm_config_from_trial({"preset": "tiny", **slot}, out_dir="unused")
    assert cfg.optimizer == name and cfg.steps == 600 and not cfg.adalrs
    with pytest.raises(ValueError, match="num_trials"):
        get_arm(name, num_trials=2)


def test_other_trials_keep_adamw_when_the_optimizer_key_is_none():
    cfg = lm_config_from_trial(
        {"lr": 1e-3, "total_steps": 10, "report_every": 5, "adalrs": None, "optimizer": None},
        out_dir="unused",
    )
    assert cfg.optimizer == "adamw"


@pytest.mark.parametrize("name", ["prodigy", "schedulefree"])
def test_sim_task_refuses_the_lrfree_arms_before_any_trial(name):
    from adalrs_ray.experiments.compare import resolve_preset

    preset = resolve_preset("sim", arms=("adalrs", name))
    with pytest.raises(ValueError, match=rf"arm '{name}'.*task 'sim'"):
        build_arms(preset)


@pytest.mark.ray
@pytest.mark.slow
def test_tiny_comparison_with_both_lrfree_arms_reports_them(ray_cluster, tmp_path):
    from adalrs_ray import cli

    out = tmp_path / "lm"
    argv = ["compare", "--preset", "smoke", "--arms", "adalrs,prodigy,schedulefree"]
    assert cli.main([*argv, "--out", str(out), "--quiet", "--no-loggers"]) == 0
    trials = pd.read_parquet(out / "trials.parquet")
    assert trials.groupby("arm").size().to_dict() == {
        "adalrs_x0.1": 1,
        "prodigy": 1,
        "schedulefree": 1,
    }
    results = pd.read_parquet(out / "results.parquet")
    # each LR-free arm ran one trial of the whole budget (smoke: 40 steps), its LR logged
    steps = results.groupby("arm")["steps_done"].sum().to_dict()
    assert steps["prodigy"] == steps["schedulefree"] == 40
    sf = results[results["arm"] == "schedulefree"]
    assert (sf["lr"] == 3e-3).all()  # constant, no warmup in the preset
    prodigy = results[results["arm"] == "prodigy"]
    assert (prodigy["lr"] > 0).all() and (prodigy["lr"] < 1.0).all()  # d x lr, not lr = 1.0
    summary = pd.read_parquet(out / "summary.parquet").set_index("arm")
    for arm in ("prodigy", "schedulefree"):
        assert summary.loc[arm, "total_steps"] == 40
        assert math.isfinite(summary.loc[arm, "best_final_val_loss"])
    report = (out / "report.md").read_text()
    assert "prodigy" in report and "schedulefree" in report
    # the LR trajectory plot draws their effective LR beside AdaLRS's (report_meta says which)
    meta = json.loads((out / "report_meta.json").read_text())
    assert meta["lr_arms"] == ["prodigy", "schedulefree"]
    assert (out / "adalrs_lr.png").is_file()


def test_cli_refuses_an_lrfree_arm_on_the_sim_task_in_one_line(capsys, tmp_path):
    from adalrs_ray import cli

    argv = ["compare", "--task", "sim", "--arms", "adalrs,schedulefree"]
    assert cli.main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "arm 'schedulefree'" in err and "'sim'" in err
    assert not (tmp_path / "o").exists()  # refused before anything ran
