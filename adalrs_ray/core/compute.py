"""The compute a trial reports as increments since its previous report (stdlib only).

Every report of a trial carries :data:`INCREMENT_KEYS`: ``steps_done`` and ``tokens_done`` (the
optimizer steps and tokens counted since the previous report) and ``worker_s_done`` (the wall
seconds since then times the workers busy during them). The comparison sums them per trial and
per arm (docs/design.md, "Metrics a trial reports to Tune"). :class:`ComputeCounter` counts them;
the Tune reporter, the Ray Train context and the LM loop all use it.

Example::

    counter = ComputeCounter(num_workers=2)
    for batch in batches:
        train_step(batch)
        counter.count(1, tokens=len(batch) * seq_len)
    metrics.update(counter.take())   # steps_done, tokens_done, worker_s_done; count restarts
"""

from __future__ import annotations

import time
from typing import Any

from adalrs_ray.core.checks import check, check_int, is_integer, is_number

__all__ = ["INCREMENT_KEYS", "ComputeCounter"]

#: Compute a trial reports as increments since its previous report (the scheduler sums them).
INCREMENT_KEYS: tuple[str, ...] = ("steps_done", "tokens_done", "worker_s_done")


class ComputeCounter:
    """Steps, tokens and worker-seconds since the previous report.

    The clock starts at construction (or :meth:`restart_clock`): wall time spent between two
    reports counts whatever it was spent on (steps, evaluations, checkpoints, loading).
    ``worker_s_done`` is that wall time times ``num_workers``. Tokens are summed as given (ints
    stay ints).

    Args:
        num_workers: workers (devices) busy during the steps: worker-seconds = wall * workers.
    """

    def __init__(self, num_workers: int = 1) -> None:
        check_int("num_workers", num_workers, 1)
        self.num_workers = num_workers
        self.steps = 0
        self.tokens: float = 0
        self.since = time.perf_counter()

    def count(self, steps: int = 1, tokens: float = 0) -> None:
        """Record ``steps`` optimizer steps and their ``tokens``."""
        self.steps += steps
        self.tokens += tokens

    def restart_clock(self, now: float | None = None) -> None:
        """Measure wall time from ``now`` (default: now), keeping the counts."""
        self.since = time.perf_counter() if now is None else now

    def reset(self, now: float | None = None) -> None:
        """Zero the counts and restart the clock."""
        self.steps = 0
        self.tokens = 0
        self.restart_clock(now)

    def worker_s(self, now: float | None = None) -> float:
        """Wall seconds since the clock started, times ``num_workers``."""
        return ((time.perf_counter() if now is None else now) - self.since) * self.num_workers

    def increments(self, now: float | None = None) -> dict[str, Any]:
        """The :data:`INCREMENT_KEYS` so far, without restarting the count."""
        return {
            "steps_done": self.steps,
            "tokens_done": self.tokens,
            "worker_s_done": self.worker_s(now),
        }

    def take(self) -> dict[str, Any]:
        """The :data:`INCREMENT_KEYS` so far, then :meth:`reset` (one clock reading for both)."""
        now = time.perf_counter()
        out = self.increments(now)
        self.reset(now)
        return out

    def state_dict(self) -> dict[str, Any]:
        """The counts (the clock is per process: a resumed run restarts it)."""
        return {"steps": self.steps, "tokens": self.tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [k for k in ("steps", "tokens") if k not in state]
        check(not missing, f"ComputeCounter state is missing keys {missing}")
        check(is_integer(state["steps"]), f"steps is {state['steps']!r}, but must be an integer")
        check(is_number(state["tokens"]), f"tokens is {state['tokens']!r}, but must be a number")
        self.steps = state["steps"]
        self.tokens = state["tokens"]
