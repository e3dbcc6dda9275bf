"""The examples run: each ``examples/*.py`` with ``--smoke-test``, in-process on the session Ray
cluster (an example uses an already initialised Ray and leaves it running)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.ray
def test_compare_arms_smoke_test(ray_cluster, tmp_path, capsys):
    example = load_example("compare_arms")
    out = tmp_path / "example"
    result = example.main(["--smoke-test", "--out", str(out)])
    assert result["errors"] == 0
    assert ray_cluster.is_initialized()  # the session cluster is left running
    compute = result["compute"].set_index("arm")
    assert compute.index.tolist() == ["adalrs_x0.1", "grid", "hyperband", "pbt"]
    assert compute.loc["adalrs_x0.1", "steps"] == 2000  # one full-budget run
    assert compute.loc["grid", "steps"] == 3 * 2000
    for name in ("report.md", "report.html", "results.parquet", "adalrs_lr.png"):
        assert (out / name).is_file(), name
    assert "report:" in capsys.readouterr().out


def test_compare_arms_refuses_an_existing_run(tmp_path):
    example = load_example("compare_arms")
    (tmp_path / "tune").mkdir()
    with pytest.raises(SystemExit):
        example.main(["--smoke-test", "--out", str(tmp_path)])
