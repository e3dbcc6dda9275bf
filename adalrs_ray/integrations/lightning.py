"""AdaLRS in Lightning: a ``Callback`` on the LightningModule's own LR schedule.

AdaLRS (Dong et al., NeurIPS 2025, arXiv 2506.13274) multiplies the base LR schedule by
``scale`` and backtracks failed LR trials to a snapshot of model and optimizer.
:class:`AdaLRSLightningCallback` does it through
:class:`~adalrs_ray.torch_binding.AdaLRSScheduler`:

* **the loss** comes from ``on_train_batch_end``'s ``outputs["loss"]``, which Lightning has
  already divided by ``accumulate_grad_batches``; the callback sums it over the micro-batches
  until ``trainer.global_step`` (optimizer steps) moves, so there is one observation per
  optimizer step, the mean over its micro-batches (an epoch's short last step, which Lightning
  also divides by ``accumulate_grad_batches``, is rescaled to its own mean). Under DDP it is averaged over the ranks (one
  all-reduce), so every rank takes the same decisions.
* **the schedule**: the one ``configure_optimizers`` returns (``interval="step"``,
  ``frequency=1``; or none, a constant LR) is the base. In ``on_train_start`` the callback puts
  a stand-in into ``trainer.lr_scheduler_configs`` whose ``step()`` does nothing; the binding
  steps the real scheduler after each observation, and the stand-in's ``state_dict`` is the real
  scheduler's, so Lightning's checkpoint of the schedule is unchanged.
* **the data** (``rewind=True``, the default): the loader given to ``fit`` is
  ``cb.wrap(loader)``, a :class:`~adalrs_ray.torch_binding.RewindableLoader` with the loader's
  length as Lightning's epoch, so a backtrack rewinds model, optimizer, schedule, RNG *and*
  data (``backtrack_mode="auto"`` runs as ``"rewind"``, with the rewinding default).
  ``trainer.global_step`` keeps counting the optimizer steps run; the epoch loop's
  ``max_steps`` grows by the steps each rewind took back, so the run ends when the schedule has
  run ``max_steps`` steps. ``rewind=False`` takes any loader and runs ``"continue"``.
* **checkpoints**: the binding's state (controller, step, base schedule, the held snapshot, the
  loader's position and kept batches) is the callback's ``state_dict``, saved in every Lightning checkpoint and loaded by
  ``trainer.fit(..., ckpt_path=...)`` before ``on_train_start``, which applies it after Lightning
  has restored model, optimizer and schedule: a resumed run makes the same decisions. Under DDP
  Lightning saves rank 0's callback state only, so when rewinding, every rank's loader state
  (its own shard's position and kept batches) is gathered into it (``data_by_rank``) and each
  rank resumes its own; a resume with another number of ranks is a ``ValueError``.

Example:
    >>> import lightning as L
    >>> from adalrs_ray import AdaLRSConfig
    >>> from adalrs_ray.integrations.lightning import AdaLRSLightningCallback
    >>> cb = AdaLRSLightningCallback(AdaLRSConfig(total_steps=1000, window=50))
    >>> L.Trainer(max_steps=1000, callbacks=[cb]).fit(module, cb.wrap(loader))  # doctest: +SKIP

Limits: automatic optimization with one optimizer; with ``rewind=True`` a sized loader (or a
:class:`RewindableLoader` with ``length``) given to ``fit`` wrapped, which Lightning does not
give a distributed sampler (under DDP, build the loader with one); with ``rewind=False``,
``backtrack_mode="rewind"`` is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lightning.pytorch.callbacks import Callback

from adalrs_ray.integrations.common import (
    BindingSteppedSchedule,
    LossAccumulator,
    controller_rewinds,
    gather_to_rank_zero,
    make_controller,
    reduce_mean_across_ranks,
    unwrap_optimizer,
)
from adalrs_ray.torch_binding import AdaLRSScheduler, RewindableLoader, SnapshotStore

logger = logging.getLogger(__name__)

__all__ = ["STATE_VERSION", "AdaLRSLightningCallback"]

STATE_VERSION = 1


class AdaLRSLightningCallback(Callback):
    """AdaLRS on a Lightning ``Trainer``.

    Args:
        controller: an :class:`adalrs_ray.AdaLRS`, or an :class:`adalrs_ray.AdaLRSConfig` to
            build one. ``total_steps`` should be the Trainer's ``max_steps`` (optimizer steps).
        store: where the snapshot lives (default: in host memory).
        rewind: the Trainer takes its batches from :meth:`wrap` (default), so that a backtrack
            rewinds the data too and ``backtrack_mode="auto"`` runs as ``"rewind"``;
            ``False``: any loader, ``"continue"`` mode.

    After ``on_train_start``, :attr:`scheduler` is the binding (``scale``, ``lr``,
    ``controller.events``).
    """

    def __init__(
        self, controller: Any, *, store: SnapshotStore | None = None, rewind: bool = True
    ) -> None:
        self.controller = make_controller(controller, rewinds=rewind)
        #: whether the Trainer must take its batches from :meth:`wrap` (the controller rewinds)
        self.rewinds = controller_rewinds(self.controller)
        if store is not None and not isinstance(store, SnapshotStore):
            raise ValueError(f"`store` must be a SnapshotStore; got {type(store).__name__}")
        self._store = store
        self._loss = LossAccumulator()
        self._pending: dict[str, Any] | None = None
        self._steps_before = 0
        self._trainer: Any = None
        self.scheduler: AdaLRSScheduler | None = None

    @staticmethod
    def wrap(loader: Any, *, offload: bool = True) -> RewindableLoader:
        """``loader`` as the stream ``fit`` needs when AdaLRS rewinds: a
        :class:`RewindableLoader` whose length (Lightning's epoch) is the loader's."""
        try:
            length = len(loader)
        except TypeError:
            raise ValueError(
                f"`loader` ({type(loader).__name__}) has no length; Lightning would take a "
                "batch ahead of the step it trains. Give fit() "
                "RewindableLoader(loader, length=<batches per Lightning epoch>)"
            ) from None
        if length < 1:
            raise ValueError(f"`loader` has {length} batches, but must have at least one")
        return RewindableLoader(loader, offload=offload, length=length)

    def on_train_start(self, trainer, pl_module) -> None:
        self._trainer = trainer
        if not pl_module.automatic_optimization:
            raise ValueError(
                "AdaLRSLightningCallback supports automatic optimization only "
                "(`automatic_optimization` is False)"
            )
        if len(trainer.optimizers) != 1:
            raise ValueError(
                f"AdaLRSLightningCallback needs exactly one optimizer; configure_optimizers "
                f"returned {len(trainer.optimizers)}"
            )
        optimizer = unwrap_optimizer(trainer.optimizers[0])
        configs = trainer.lr_scheduler_configs
        if len(configs) > 1:
            raise ValueError(
                f"AdaLRSLightningCallback supports one LR scheduler; got {len(configs)}"
            )
        base = None
        if configs:
            config = configs[0]
            if config.interval != "step" or config.frequency != 1:
                raise ValueError(
                    f"the LR scheduler must step every optimizer step (interval='step', "
                    f"frequency=1); got interval={config.interval!r}, "
                    f"frequency={config.frequency!r}"
                )
            if config.reduce_on_plateau:
                raise ValueError(
                    "the LR scheduler is a ReduceLROnPlateau: a loss-driven schedule would "
                    "fight AdaLRS; use a step-driven schedule"
                )
            if not isinstance(config.scheduler, BindingSteppedSchedule):
                config.scheduler = BindingSteppedSchedule(config.scheduler)
            base = config.scheduler.base
        total = getattr(getattr(self.controller, "config", None), "total_steps", None)
        if total is not None and trainer.max_steps not in (-1, None) and total != trainer.max_steps:
            logger.warning(
                "AdaLRSConfig.total_steps is %s but the Trainer runs max_steps=%s",
                total,
                trainer.max_steps,
            )
        data = None
        if self.rewinds:
            data = trainer.train_dataloader
            if not isinstance(data, RewindableLoader):
                raise ValueError(
                    "AdaLRSLightningCallback rewinds its data, but fit() was given a "
                    f"{type(data).__name__}: give it cb.wrap(loader) (or pass rewind=False)"
                )
            if trainer.max_steps in (-1, None) or trainer.max_steps <= 0:
                raise ValueError(
                    f"The value of `max_steps` is {trainer.max_steps}, but must be > 0 when "
                    "AdaLRS rewinds its data: set Trainer(max_steps=AdaLRSConfig.total_steps)"
                )
        if self.scheduler is not None:  # a second fit() with the same callback
            self.scheduler.close()
        self.scheduler = AdaLRSScheduler(
            optimizer,
            self.controller,
            base,
            model=pl_module,
            store=self._store,
            rng=self.rewinds,  # RNG states matter only in "rewind" mode
            data=data,
        )
        if self._pending is None and trainer.ckpt_path is not None:
            raise ValueError(
                f"the checkpoint {trainer.ckpt_path!r} holds no AdaLRSLightningCallback state: "
                "it was not written by a Trainer with this callback"
            )
        if self._pending is not None:
            saved = self._pending.get("global_step", self._pending["adalrs"]["last_step"] + 1)
            sd, by_rank = self._pending["adalrs"], self._pending.get("data_by_rank")
            self._pending = None
            if self.rewinds and by_rank is not None:  # each rank's own shard of the data
                if len(by_rank) != trainer.world_size:
                    raise ValueError(
                        f"the checkpoint holds the loader states of {len(by_rank)} ranks, but "
                        f"the Trainer runs {trainer.world_size}: resume with as many ranks"
                    )
                sd = {**sd, "data": by_rank[trainer.global_rank]}
            if saved != trainer.global_step:
                raise ValueError(
                    f"the checkpoint's AdaLRS state was saved at global_step {saved} but the "
                    f"Trainer resumes at global_step {trainer.global_step}"
                )
            self.scheduler.load_state_dict(sd)
            trainer.fit_loop.epoch_loop.max_steps += trainer.global_step - (
                self.scheduler.last_step + 1
            )
            logger.info("AdaLRS state loaded from the checkpoint (scale %g)", self.scheduler.scale)
        if configs:
            configs[0].scheduler.bind(self.scheduler)
        self._loss = LossAccumulator()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._steps_before = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if loss is None:  # training_step returned None: Lightning skipped this batch
            return
        self._loss.add(loss)
        if trainer.global_step > self._steps_before:  # the optimizer stepped on this batch
            count, accum = self._loss.count, trainer.accumulate_grad_batches
            loss = self._loss.pop()
            if count != accum:  # an epoch's short last step: Lightning still divided by accum
                loss = loss * (accum / count)
            step = self.scheduler.last_step + 1
            self.scheduler.step(reduce_mean_across_ranks(loss))
            # a rewind took the schedule back: the Trainer runs the steps it took back again
            trainer.fit_loop.epoch_loop.max_steps += step - self.scheduler.last_step

    def on_train_end(self, trainer, pl_module) -> None:
        if self.scheduler is not None:
            self.scheduler.close()

    def state_dict(self) -> dict[str, Any]:
        if self.scheduler is None:
            return {}
        sd = self.scheduler.state_dict()
        state = {
            "version": STATE_VERSION,
            "adalrs": sd,
            "global_step": self._trainer.global_step,  # the optimizer steps run
        }
        if self.rewinds and self._trainer.world_size > 1:
            # Lightning writes rank 0's callback state only, and every rank streams its own
            # shard: gather each rank's loader state into it (every rank saves a checkpoint:
            # Trainer.save_checkpoint runs on all of them)
            state["data_by_rank"] = gather_to_rank_zero(sd["data"])
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if state_dict.get("version") != STATE_VERSION or "adalrs" not in state_dict:
            raise ValueError(
                f"AdaLRSLightningCallback state has version {state_dict.get('version')!r} and "
                f"keys {sorted(state_dict)}; this callback reads version {STATE_VERSION} with "
                "key 'adalrs'"
            )
        self._pending = dict(state_dict)
