"""The trial side of the comparison contract: :class:`TuneReporter` reports one window of
training to Tune with the compute increments :class:`~adalrs_ray.comparison.AdaLRSComparison`
sums (docs/design.md, "Metrics a trial reports to Tune")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adalrs_ray.core.checks import check, is_number
from adalrs_ray.core.compute import ComputeCounter

__all__ = ["TuneReporter"]


class TuneReporter:
    """Reports one window of training to Tune with the compute increments the comparison sums.

    Call :meth:`count` after every optimizer step and :meth:`report` every ``report_every``
    steps. ``steps_done`` / ``tokens_done`` are the steps and tokens counted since the previous
    report of this process, ``worker_s_done`` the wall seconds since then (since construction for
    the first report, so checkpoint loading counts) times ``num_workers``. Metrics that already
    carry these keys (a loop that measures them itself) are reported unchanged.

    Args:
        tokens_per_step: tokens of one optimizer step (global batch), used when :meth:`count`
            is given no token count.
        num_workers: workers (devices) busy during the steps: worker-seconds = wall * workers.
    """

    def __init__(self, *, tokens_per_step: float = 0.0, num_workers: int = 1) -> None:
        check(
            is_number(tokens_per_step) and tokens_per_step >= 0,
            f"tokens_per_step is {tokens_per_step!r}, but must be a number >= 0",
        )
        self.tokens_per_step = float(tokens_per_step)
        self._counter = ComputeCounter(num_workers)  # checks num_workers

    @property
    def num_workers(self) -> int:
        return self._counter.num_workers

    def count(self, steps: int = 1, tokens: float | None = None) -> None:
        """Record ``steps`` optimizer steps (and their tokens) done since the last call."""
        self._counter.count(
            steps, self.tokens_per_step * steps if tokens is None else float(tokens)
        )

    def increments(self) -> dict[str, float]:
        """The compute since the previous call, and restart the count."""
        out = self._counter.take()
        out["tokens_done"] = float(out["tokens_done"])  # 0.0, not 0, before any count
        return out

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: str | None = None) -> None:
        """``tune.report`` the metrics plus the increments, with ``checkpoint_dir`` (copied into
        the trial's storage before this returns) as the trial's checkpoint."""
        from ray import tune

        out = dict(metrics)
        for key, value in self.increments().items():
            out.setdefault(key, value)
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(out, checkpoint=checkpoint)
