"""benchmarks/scale_model.py: the cost model's arithmetic, its input checks, and docs/scale.md
quoting its output as printed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from adalrs_ray import AdaLRSConfig

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("scale_model", ROOT / "benchmarks/scale_model.py")
scale_model = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scale_model)


def _model(*argv: str) -> dict:
    return scale_model.model(scale_model.parser().parse_args(list(argv)))


def test_bytes_and_times_follow_from_the_parameters():
    m = _model("--params", "8e9", "--gpus", "16", "--gpus-per-node", "4", "--d2h-gbps", "20")
    fp32 = m["layouts"]["fp32 params + fp32 moments"]
    bf16 = m["layouts"]["bf16 params + fp32 moments"]
    assert fp32["rank_gb"] == pytest.approx(8e9 * 12 / 16 / 1e9)  # 6 GB
    assert bf16["rank_gb"] == pytest.approx(8e9 * 10 / 16 / 1e9)
    assert fp32["node_gb"] == pytest.approx(4 * 6.0)
    assert fp32["snapshot_s"] == pytest.approx(6.0 / 20)  # PCIe-bound: 400 / 4 > 20
    assert fp32["ckpt_load_s"] == pytest.approx(24.0 / 5.0)  # 4 shards at 5 GB/s per node
    # host memory bandwidth shared by the node's ranks caps the per-rank copy
    m = _model("--node-host-gbps", "80", "--gpus-per-node", "8", "--d2h-gbps", "25")
    assert m["rank_gbps"] == pytest.approx(10.0)


def test_window_search_and_trial_match_the_controller_defaults():
    m = _model("--total-steps", "50000")
    cfg = AdaLRSConfig(total_steps=50_000)
    assert m["window"] == cfg.window
    assert m["search_steps"] == cfg.search_end - cfg.search_start
    assert m["trial_steps"] == cfg.ramp_len + cfg.window
    assert _model("--window", "500", "--ramp-steps", "100")["trial_steps"] == 600


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--gpus", "60"], "--gpus=60 --gpus-per-node=8"),
        (["--mfu", "1.5"], "--mfu=1.5"),
        (["--storage-gbps", "0"], "--storage-gbps=0.0"),
        (["--window", "5000"], "--window=5000"),
        (["--start-ratio", "0.5", "--end-ratio", "0.4"], "--start-ratio=0.5"),
    ],
)
def test_bad_parameters_are_a_value_error_naming_them(argv, words):
    with pytest.raises(ValueError, match=words):
        _model(*argv)


def test_docs_scale_quotes_the_scripts_output():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/scale_model.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out in (ROOT / "docs/scale.md").read_text()
