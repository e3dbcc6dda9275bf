"""Tune's own per-trial loggers for a comparison run: TensorBoard event files, ``progress.csv`` and
``result.json`` in every trial directory (no logger of this package's own).

Each report of a trial (docs/design.md: ``loss``, ``val_loss``, ``lr``, ``scale``, the compute
increments, ``adalrs_events``) becomes one row of ``progress.csv``, one line of ``result.json``
and, for its numeric values, one point of the TensorBoard scalars ``ray/tune/<key>`` (x axis:
``training_iteration``). ``adalrs_events`` is a JSON string: it is in the CSV and JSON files,
TensorBoard keeps numbers only.

The runners (:func:`adalrs_ray.experiments.compare.run_compare`, the examples) pass
:func:`tune_loggers` to ``tune.RunConfig(callbacks=...)`` and run ``Tuner.fit`` inside
:func:`explicit_loggers`, so the loggers written are exactly the ones asked for, whatever
``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS`` says outside. Further loggers are Tune's own callbacks
added to the same list, e.g. ``ray.air.integrations.mlflow.MLflowLoggerCallback`` or
``ray.air.integrations.wandb.WandbLoggerCallback`` (docs/tune.md, "Logs").
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["AUTO_LOGGERS_ENV", "LOGGER_FILES", "explicit_loggers", "tune_loggers"]

#: The environment variable with which Tune adds no CSV/JSON/TensorBoard logger by itself.
AUTO_LOGGERS_ENV = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
#: Glob patterns of the files :func:`tune_loggers` writes into every trial directory.
LOGGER_FILES: tuple[str, ...] = ("progress.csv", "result.json", "events.out.tfevents*")


def tune_loggers(enabled: bool = True) -> list[Any]:
    """Tune's CSV, JSON and TensorBoard (tensorboardX) logger callbacks; ``[]`` when not
    ``enabled``. ``ValueError`` when ``enabled`` is not a bool; ``ImportError`` naming the
    package when tensorboardX is missing (a dependency of ``ray[tune]``)."""
    if not isinstance(enabled, bool):
        raise ValueError(f"loggers is {enabled!r}, but must be True or False")
    if not enabled:
        return []
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    try:
        tbx = TBXLoggerCallback()
    except ImportError as exc:
        raise ImportError(
            "the TensorBoard logger needs tensorboardX (installed with ray[tune]): "
            "pip install tensorboardX"
        ) from exc
    return [CSVLoggerCallback(), JsonLoggerCallback(), tbx]


@contextlib.contextmanager
def explicit_loggers() -> Iterator[None]:
    """During the block, Tune adds no logger callback by itself (:data:`AUTO_LOGGERS_ENV` =
    ``1``): a ``Tuner.fit`` inside writes only the loggers in its ``RunConfig.callbacks``. The
    variable's previous value is restored afterwards."""
    old = os.environ.get(AUTO_LOGGERS_ENV)
    os.environ[AUTO_LOGGERS_ENV] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(AUTO_LOGGERS_ENV, None)
        else:
            os.environ[AUTO_LOGGERS_ENV] = old
