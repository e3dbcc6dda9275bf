"""AdaLRS in transformers' ``Trainer``: a callback, and a mixin that hands it the loss.

AdaLRS (Dong et al., NeurIPS 2025, arXiv 2506.13274) multiplies the Trainer's own LR schedule
by ``scale`` and backtracks failed LR trials to a snapshot of model and optimizer.
:class:`AdaLRSTrainerCallback` does it through :class:`~adalrs_ray.torch_binding.AdaLRSScheduler`;
:class:`AdaLRSTrainerMixin` (or the ready-made :class:`AdaLRSTrainer`) is the small hook it needs:

* **the loss**: ``on_step_end`` is not given the loss (transformers issue #12108), so the mixin
  overrides the public ``Trainer.training_step`` and hands each micro-batch's returned loss to
  the callback. The Trainer returns it already divided by the number of micro-batches of the
  step (or normalised by ``num_items_in_batch``), as it does for its own logged loss, so the sum
  over a step's micro-batches is the step's mean: one observation per optimizer step under
  gradient accumulation. Under DDP the callback averages it over the ranks (one all-reduce).
* **the schedule**: the mixin overrides ``create_scheduler`` and gives the Trainer a stand-in
  whose ``step()`` does nothing (the binding steps the real scheduler after each observation,
  so the Trainer's ``lr_scheduler_type`` and warmup are the base schedule) and whose
  ``get_last_lr()`` is the effective LR, which the Trainer then logs.
* **the data** (``rewind=True``, the default): the mixin's ``get_train_dataloader`` wraps the
  Trainer's loader in a :class:`~adalrs_ray.torch_binding.RewindableLoader`, so a backtrack
  rewinds model, optimizer, schedule, RNG *and* data to the snapshot (``backtrack_mode="auto"``
  runs as ``"rewind"``, with the rewinding default: a failed trial costs compute, not steps of
  the run, and the opening tries every multiplier on the same first batches). The Trainer's
  ``global_step`` keeps counting the optimizer steps it ran (logs, evaluations and
  checkpoints stay monotonic); ``state.max_steps`` grows by the steps each rewind took back, so
  the run still ends when the schedule has run ``max_steps`` steps (``adalrs_step`` in the
  logs is the schedule's step). The wrapped loader is one continuous stream over the data
  (pass after pass, each with ``set_epoch``), so the Trainer sees it without a length: set
  ``max_steps``. ``rewind=False`` keeps the Trainer's loader and runs ``"continue"``.
* **checkpoints**: ``on_save`` writes the binding's state (controller, step, base schedule, the
  held snapshot, the loader's position and kept batches) as ``adalrs_state.pt`` into the
  checkpoint the Trainer just wrote
  (``<output_dir>/checkpoint-<global_step>``, process zero only); the mixin's ``train`` notes
  ``resume_from_checkpoint`` and ``on_train_begin`` loads it after the Trainer has loaded model,
  optimizer and schedule, so a resumed run makes the same decisions as an uninterrupted one.

Example:
    >>> from transformers import TrainingArguments
    >>> from adalrs_ray import AdaLRSConfig
    >>> from adalrs_ray.integrations.hf_trainer import AdaLRSTrainer, AdaLRSTrainerCallback
    >>> cb = AdaLRSTrainerCallback(AdaLRSConfig(total_steps=1000, window=50))
    >>> trainer = AdaLRSTrainer(model=model, args=TrainingArguments("out", max_steps=1000),
    ...                         train_dataset=ds, callbacks=[cb])  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP

Limits: with ``rewind=False``, ``backtrack_mode="rewind"`` is refused; DeepSpeed's own
scheduler and hyperparameter-search runs (other checkpoint folders) are not supported; a step the
Trainer skips (AMP overflow) is still observed, as the Trainer still counts it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from adalrs_ray.integrations.common import (
    BindingSteppedSchedule,
    LossAccumulator,
    controller_rewinds,
    make_controller,
    reduce_mean_across_ranks,
    unwrap_optimizer,
)
from adalrs_ray.torch_binding import AdaLRSScheduler, RewindableLoader, SnapshotStore

logger = logging.getLogger(__name__)

__all__ = [
    "DATA_FILE",
    "STATE_FILE",
    "AdaLRSTrainer",
    "AdaLRSTrainerCallback",
    "AdaLRSTrainerMixin",
]

#: the file in each Trainer checkpoint that holds the binding's state (process zero's)
STATE_FILE = "adalrs_state.pt"
#: under several processes, each one's RewindableLoader state (its own shard of the data)
DATA_FILE = "adalrs_data_{rank}.pt"


class AdaLRSTrainerCallback(TrainerCallback):
    """AdaLRS on a transformers ``Trainer`` that mixes in :class:`AdaLRSTrainerMixin`.

    Args:
        controller: an :class:`adalrs_ray.AdaLRS`, or an :class:`adalrs_ray.AdaLRSConfig` to
            build one. ``total_steps`` should be the Trainer's ``max_steps`` (optimizer steps).
        store: where the snapshot lives (default: in host memory).
        rewind: take the batches from a :class:`~adalrs_ray.torch_binding.RewindableLoader`
            (default), so that a backtrack rewinds the data too and ``backtrack_mode="auto"``
            runs as ``"rewind"``; ``False``: the Trainer's own loader, ``"continue"`` mode.

    After training, :attr:`scheduler` is the binding (``scale``, ``lr``, ``controller.events``).
    """

    def __init__(
        self, controller: Any, *, store: SnapshotStore | None = None, rewind: bool = True
    ) -> None:
        self.controller = make_controller(controller, rewinds=rewind)
        #: whether the Trainer's loader is wrapped (the controller rewinds)
        self.rewinds = controller_rewinds(self.controller)
        if store is not None and not isinstance(store, SnapshotStore):
            raise ValueError(f"`store` must be a SnapshotStore; got {type(store).__name__}")
        self._store = store
        self._loss = LossAccumulator()
        self._resume_dir: str | None = None
        self.scheduler: AdaLRSScheduler | None = None

    # -------------------------------------------------------------- fed by the mixin
    def add_loss(self, loss: torch.Tensor) -> None:
        """One micro-batch's loss as ``Trainer.training_step`` returns it."""
        self._loss.add(loss)

    def set_resume_dir(self, path: str | None) -> None:
        """The checkpoint ``train`` resumes from (``None``: a fresh run)."""
        self._resume_dir = path

    # -------------------------------------------------------------- Trainer events
    def on_train_begin(
        self,
        args,
        state,
        control,
        model=None,
        optimizer=None,
        lr_scheduler=None,
        train_dataloader=None,
        **kwargs,
    ):
        if not isinstance(lr_scheduler, BindingSteppedSchedule):
            raise ValueError(
                "AdaLRSTrainerCallback needs a Trainer that mixes in AdaLRSTrainerMixin (or "
                f"AdaLRSTrainer); the Trainer's lr_scheduler is a {type(lr_scheduler).__name__}"
            )
        data = None
        if self.rewinds:
            if not isinstance(train_dataloader, RewindableLoader):
                raise ValueError(
                    "AdaLRSTrainerCallback rewinds its data, but the Trainer's train data "
                    f"loader is a {type(train_dataloader).__name__}, not the RewindableLoader "
                    "that AdaLRSTrainerMixin.get_train_dataloader returns (an override of "
                    "get_train_dataloader must call super()); or pass rewind=False"
                )
            data = train_dataloader
        if self.scheduler is not None:  # a second train() on the same Trainer
            self.scheduler.close()
        total = getattr(getattr(self.controller, "config", None), "total_steps", None)
        if total is not None and total != state.max_steps:
            logger.warning(
                "AdaLRSConfig.total_steps is %s but the Trainer runs %s optimizer steps",
                total,
                state.max_steps,
            )
        self.scheduler = AdaLRSScheduler(
            unwrap_optimizer(optimizer),
            self.controller,
            lr_scheduler.base,
            model=model,
            store=self._store,
            rng=self.rewinds,  # RNG states matter only in "rewind" mode
            data=data,
        )
        if self._resume_dir is not None:
            path = os.path.join(self._resume_dir, STATE_FILE)
            if not os.path.isfile(path):
                raise ValueError(
                    f"resume_from_checkpoint {self._resume_dir!r} holds no {STATE_FILE}: it was "
                    "not written by a Trainer with AdaLRSTrainerCallback"
                )
            sd = self._read_state(path, args)
            saved = sd.pop("global_step", sd["last_step"] + 1)  # older files: no rewinds
            if saved != state.global_step:
                raise ValueError(
                    f"{path} was saved at the Trainer's global_step {saved} but the Trainer "
                    f"resumes at global_step {state.global_step}"
                )
            self.scheduler.load_state_dict(sd)
            state.max_steps += state.global_step - (self.scheduler.last_step + 1)
            logger.info("AdaLRS state loaded from %s (scale %g)", path, self.scheduler.scale)
        self._loss = LossAccumulator()
        lr_scheduler.bind(self.scheduler)
        return control

    def _own_data_file(self, folder: str, args: Any) -> str | None:
        """This process's file of loader state in the checkpoint ``folder`` when several
        processes each stream their own shard of the data and this is not process zero (whose
        loader state is in :data:`STATE_FILE`); else ``None``."""
        if self.rewinds and args.world_size > 1 and args.process_index != 0:
            return os.path.join(folder, DATA_FILE.format(rank=args.process_index))
        return None

    def _read_state(self, path: str, args: Any) -> dict[str, Any]:
        """The binding's state from ``path``, with this process's own loader state when
        several processes each stream their shard of the data."""
        sd = torch.load(path, map_location="cpu", weights_only=True)
        own = self._own_data_file(os.path.dirname(path), args)
        if own is not None:
            if not os.path.isfile(own):
                raise ValueError(
                    f"{os.path.dirname(path)!r} holds no {os.path.basename(own)}: the "
                    f"checkpoint was not written by {args.world_size} processes rewinding their "
                    "data; resume with the same number of processes"
                )
            sd["data"] = torch.load(own, map_location="cpu", weights_only=True)
        return sd

    def on_step_end(self, args, state, control, **kwargs):
        loss = reduce_mean_across_ranks(self._loss.pop())
        step = self.scheduler.last_step + 1
        self.scheduler.step(loss)
        # a rewind took the schedule back: the Trainer runs the steps it took back again
        state.max_steps += step - self.scheduler.last_step
        return control

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        own = self._own_data_file(folder, args)
        if own is not None:  # its loader's position and kept batches
            os.makedirs(folder, exist_ok=True)
            torch.save(self.scheduler.data.state_dict(), own)
        if not state.is_world_process_zero:
            return control
        if not os.path.isdir(folder):
            raise ValueError(
                f"the Trainer's checkpoint {folder!r} does not exist: AdaLRSTrainerCallback "
                "supports the Trainer's own checkpoint folders only (no hyperparameter search)"
            )
        sd = self.scheduler.state_dict()
        sd["global_step"] = state.global_step
        torch.save(sd, os.path.join(folder, STATE_FILE))
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and self.scheduler is not None:
            logs["adalrs_scale"] = self.scheduler.scale
            logs["adalrs_step"] = self.scheduler.last_step + 1
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.scheduler is not None:
            self.scheduler.close()
        return control


class AdaLRSTrainerMixin:
    """The hooks :class:`AdaLRSTrainerCallback` needs; mix in before ``Trainer``::

        class MyTrainer(AdaLRSTrainerMixin, Trainer): ...

    Exactly one :class:`AdaLRSTrainerCallback` must be among the Trainer's callbacks.
    """

    def _adalrs_callback(self) -> AdaLRSTrainerCallback:
        found = [
            cb for cb in self.callback_handler.callbacks if isinstance(cb, AdaLRSTrainerCallback)
        ]
        if len(found) != 1:
            raise ValueError(
                f"a Trainer with AdaLRSTrainerMixin needs exactly one AdaLRSTrainerCallback in "
                f"`callbacks`; it has {len(found)}"
            )
        return found[0]

    def get_train_dataloader(self):
        """The Trainer's loader, wrapped in a :class:`RewindableLoader` when AdaLRS rewinds."""
        loader = super().get_train_dataloader()
        if not self._adalrs_callback().rewinds or isinstance(loader, RewindableLoader):
            return loader

        def set_epoch(epoch: int) -> None:  # as Trainer's epoch loop does for its own loader
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            inner = getattr(getattr(loader, "batch_sampler", None), "batch_sampler", None)
            if hasattr(inner, "set_epoch"):
                inner.set_epoch(epoch)

        return RewindableLoader(loader, set_epoch=set_epoch)

    def get_resumed_dataloader(self, dataloader, num_batches: int):
        """A :class:`RewindableLoader` resumes at its own position (the AdaLRS state); the
        Trainer's skip of ``num_batches`` would count the replayed batches twice."""
        if isinstance(dataloader, RewindableLoader):
            return dataloader
        return super().get_resumed_dataloader(dataloader, num_batches)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        current = getattr(self, "lr_scheduler", None)
        if isinstance(current, BindingSteppedSchedule):
            return current
        base = super().create_scheduler(num_training_steps, optimizer)
        self.lr_scheduler = BindingSteppedSchedule(base)
        return self.lr_scheduler

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._adalrs_callback().add_loss(loss)
        return loss

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        callback = self._adalrs_callback()
        path = resume_from_checkpoint
        if isinstance(path, bool):
            path = get_last_checkpoint(self.args.output_dir) if path else None
            if resume_from_checkpoint and path is None:
                raise ValueError(
                    f"resume_from_checkpoint=True but {self.args.output_dir!r} holds no checkpoint"
                )
        if callback.rewinds and self.args.max_steps <= 0:
            raise ValueError(
                f"The value of `max_steps` is {self.args.max_steps}, but must be > 0 when "
                "AdaLRS rewinds its data: the rewindable loader is one stream over the data "
                "without epochs; set TrainingArguments(max_steps=AdaLRSConfig.total_steps) (or "
                "AdaLRSTrainerCallback(..., rewind=False))"
            )
        if callback.rewinds and path is not None and not hasattr(Trainer, "get_resumed_dataloader"):
            raise ValueError(
                "resuming a rewinding AdaLRS run needs a transformers Trainer with "
                "get_resumed_dataloader (transformers >= 5); upgrade, or pass rewind=False"
            )
        callback.set_resume_dir(None if path is None else os.fspath(path))
        return super().train(path, *args, **kwargs)


class AdaLRSTrainer(AdaLRSTrainerMixin, Trainer):
    """transformers' ``Trainer`` with the hooks of :class:`AdaLRSTrainerMixin`."""
