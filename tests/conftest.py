"""Shared fixtures. One session-scoped local Ray cluster for every test that needs Ray."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


@pytest.fixture(scope="session")
def ray_cluster():
    """A local 2-CPU Ray cluster shared by the whole session; shut down at the end.

    The dashboard stays on: Train runs stopped or paused by Tune leak their placement groups
    without it (see shared RAY_NOTES).
    """
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=True,
            log_to_driver=False,
            logging_level="ERROR",
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
        )
    yield ray
    ray.shutdown()


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (the tiny LM tests: two threads of a 2-core machine
    only contend), the previous count restored after it. Modules take it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A small directory corpus with learnable structure (fast to tokenize), shared by the LM
    tests; a test module with a corpus of its own defines its own ``corpus`` fixture."""
    root = tmp_path_factory.mktemp("corpus")
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    for i in range(160):
        lines = [f"def f{i}_{j}(x):\n    return x + {words[(i + j) % 8]}\n" for j in range(12)]
        (root / f"m{i:03d}.py").write_text("".join(lines))
    return root
