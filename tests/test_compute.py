"""adalrs_ray.core.compute: the steps/tokens/worker-seconds a trial reports since its last report."""

from __future__ import annotations

import pytest

from adalrs_ray.core import compute
from adalrs_ray.core.compute import INCREMENT_KEYS, ComputeCounter
from adalrs_ray.report import contract


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(compute.time, "perf_counter", fake)
    return fake


def test_the_contract_uses_the_core_keys():
    assert contract.INCREMENT_KEYS is INCREMENT_KEYS
    assert INCREMENT_KEYS == ("steps_done", "tokens_done", "worker_s_done")


def test_take_returns_the_counts_and_worker_seconds_then_restarts(clock):
    c = ComputeCounter(num_workers=3)
    c.count(1, 64)
    c.count(2, 128)
    clock.now += 2.0
    assert c.take() == {"steps_done": 3, "tokens_done": 192, "worker_s_done": 6.0}
    clock.now += 0.5
    assert c.take() == {"steps_done": 0, "tokens_done": 0, "worker_s_done": 1.5}


def test_increments_does_not_restart(clock):
    c = ComputeCounter()
    c.count()
    clock.now += 1.0
    assert (
        c.increments()
        == c.increments()
        == {
            "steps_done": 1,
            "tokens_done": 0,
            "worker_s_done": 1.0,
        }
    )
    assert list(c.increments()) == list(INCREMENT_KEYS)


def test_restart_clock_keeps_the_counts(clock):
    c = ComputeCounter(2)
    c.count(4, 10)
    clock.now += 5.0
    c.restart_clock()
    clock.now += 1.0
    assert c.take() == {"steps_done": 4, "tokens_done": 10, "worker_s_done": 2.0}


@pytest.mark.parametrize("tokens, expected_type", [(7, int), (7.0, float)])
def test_tokens_keep_their_type(tokens, expected_type):
    c = ComputeCounter()
    c.count(1, tokens)
    assert type(c.take()["tokens_done"]) is expected_type


def test_state_dict_round_trip():
    a = ComputeCounter()
    a.count(5, 320)
    b = ComputeCounter()
    b.load_state_dict(a.state_dict())
    assert (b.steps, b.tokens) == (5, 320)


@pytest.mark.parametrize(
    "state, match",
    [
        ({"steps": 1}, r"missing keys \['tokens'\]"),
        ({"steps": 1.5, "tokens": 0}, "steps is 1.5"),
        ({"steps": 1, "tokens": float("nan")}, "tokens is nan"),
    ],
)
def test_load_state_dict_rejects_bad_states(state, match):
    with pytest.raises(ValueError, match=match):
        ComputeCounter().load_state_dict(state)


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, None])
def test_num_workers_must_be_a_positive_integer(workers):
    with pytest.raises(ValueError, match=f"num_workers is {workers!r}"):
        ComputeCounter(workers)


def test_core_compute_imports_no_heavy_module():
    import subprocess
    import sys

    code = (
        "import sys, adalrs_ray.core.compute; "
        "assert not {'torch', 'ray', 'numpy'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
