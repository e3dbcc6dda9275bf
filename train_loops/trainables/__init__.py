"""Tune function trainables for the LR-search comparison (:mod:`adalrs_ray.comparison`).

Every comparison trainable follows one contract (docs/tune.md):

* it reads ``lr`` (the base LR, which PBT may change between restarts), ``total_steps``,
  ``report_every`` and ``adalrs`` (``None``: AdaLRS off; else keyword arguments of
  :class:`adalrs_ray.AdaLRSConfig` without ``total_steps``) from its config;
* it reports once every ``report_every`` steps, never per step, the metric keys of
  docs/design.md: ``step, loss, val_loss, lr, scale, steps_done, tokens_done, worker_s_done,
  adalrs_events``, with a ``tune.Checkpoint`` at each report (PBT exploits and HyperBand pauses
  restore from it);
* on start it restores from ``tune.get_checkpoint()`` when there is one.

:class:`adalrs_ray.comparison.TuneReporter` does the reporting part for any training loop.
This package holds the trainables and their registry (:data:`TRAINABLES`,
:func:`get_trainable`); it may import :mod:`adalrs_ray` below the experiments layer and
:mod:`train_loops`' task modules. Trainables here:

* :func:`~train_loops.trainables.synthetic.synthetic_trainable` -- the :class:`~adalrs_ray.core.simulator.LossSimulator`, optionally
  with AdaLRS inside; milliseconds per report, for tests and examples.
* :func:`~train_loops.trainables.lm.lm_trainable` -- the LM task of :mod:`train_loops.lm`, trained in-process inside the
  Tune trial (single worker: restarts cost seconds, see RAY_NOTES).
* :func:`~train_loops.trainables.lm_torchtrainer.lm_torchtrainer_trainable` -- the same LM task on
  a Ray Train ``TorchTrainer`` launched per trial (several workers per trial).
* Extension point: any other trainable plugs in through :func:`register_trainable`; see the "Adding a trainable" section of
  docs/tune.md for what it must do (forward rank 0's reports and checkpoints with
  :class:`~adalrs_ray.comparison.TuneReporter`, restore from ``tune.get_checkpoint()``, new Train run name per start).

Resources: a Tune trial reserves 1 CPU by default; give comparison trials a fraction
(:func:`get_trainable` with ``cpu=0.25``) so several run at once on a small machine.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

from train_loops.trainables.lm import lm_config_from_trial, lm_trainable
from train_loops.trainables.synthetic import check_synthetic_config, synthetic_trainable

__all__ = [
    "TRAINABLES",
    "TrainableRegistry",
    "check_synthetic_config",
    "get_trainable",
    "lm_config_from_trial",
    "lm_trainable",
    "register_trainable",
    "synthetic_trainable",
]


# ---------------------------------------------------------------------- registry
class TrainableRegistry(MutableMapping):
    """Name -> Tune function trainable. An entry is a callable, or ``"module:attribute"``
    imported on first lookup (and then cached), so that the registry stays light to import
    (``ray.train`` is imported only when a trial that needs it runs). Membership tests and
    iteration never import anything."""

    def __init__(self, entries: Mapping[str, Callable[[dict[str, Any]], None] | str]) -> None:
        self._entries: dict[str, Callable[[dict[str, Any]], None] | str] = dict(entries)

    def __getitem__(self, name: str) -> Callable[[dict[str, Any]], None]:
        entry = self._entries[name]
        if isinstance(entry, str):
            module, attribute = entry.split(":")
            entry = getattr(importlib.import_module(module), attribute)
            self._entries[name] = entry
        return entry

    def __setitem__(self, name: str, fn: Callable[[dict[str, Any]], None] | str) -> None:
        self._entries[name] = fn

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


TRAINABLES = TrainableRegistry(
    {
        "synthetic": synthetic_trainable,
        "lm": lm_trainable,
        "lm_torchtrainer": "train_loops.trainables.lm_torchtrainer:lm_torchtrainer_trainable",
    }
)


def register_trainable(name: str, fn: Callable[[dict[str, Any]], None]) -> None:
    """Make ``fn`` (a Tune function trainable following the contract above) available to
    :func:`get_trainable` and the ``compare`` CLI under ``name``."""
    if not (isinstance(name, str) and name):
        raise ValueError(f"name is {name!r}, but must be a non-empty string")
    if not callable(fn):
        raise ValueError(f"fn is {fn!r}, but must be a callable taking the trial config")
    TRAINABLES[name] = fn


def get_trainable(name: str, *, cpu: float | None = 0.25):
    """The trainable registered as ``name``, wrapped with ``tune.with_resources({"cpu": cpu})``
    (``cpu=None``: Tune's default of 1 CPU per trial)."""
    fn = TRAINABLES.get(name) if isinstance(name, str) else None
    if fn is None:
        raise ValueError(f"unknown trainable {name!r}; valid: {sorted(TRAINABLES)}")
    if cpu is None:
        return fn
    if not (isinstance(cpu, (int, float)) and not isinstance(cpu, bool) and 0 < cpu <= 1024):
        raise ValueError(f"cpu is {cpu!r}, but must be None or a number of CPUs > 0")
    from ray import tune

    return tune.with_resources(fn, {"cpu": cpu})
