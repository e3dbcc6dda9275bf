"""A data stream that an AdaLRS rewind takes back: the batches since the held snapshot, replayed.

In ``backtrack_mode="rewind"`` a backtrack takes model, optimizer, base schedule, RNG states *and
the data* back to the snapshot, so a failed LR trial costs compute but no steps of the run, and
the opening tries every multiplier on the same batches. A loop that indexes its data by step
rewinds by itself (``batch = data[step]``); a loop that iterates a ``DataLoader`` (the
transformers ``Trainer``, Lightning, most own loops) cannot. :class:`RewindableLoader` wraps such
a loader so that it can:

* it yields one continuous stream: pass after pass over the loader (``set_epoch(pass)`` before
  each, so a seeded shuffle differs per pass and repeats on resume), never ending by itself: the
  loop ends by its step count;
* while the binding holds a snapshot, every batch the loop takes is kept (a copy, on the host by
  default), tagged with the step it was taken for: the held snapshot's step + the batches of
  every step after it;
* when the binding rewinds to the snapshot, the next batches are the kept ones again, in order,
  then fresh ones from where the loader stood;
* a new snapshot drops the batches of the steps up to it; once the search has ended (no
  rewind can follow) it keeps none.

:class:`~adalrs_ray.torch_binding.AdaLRSScheduler` drives it (``data=``): build the loader,
give it to the binding, and take every batch of step ``t`` after step ``t - 1``'s
``scheduler.step(loss)`` (a loop that takes a batch ahead, before the previous step's decision,
would hand the rewound steps one stale batch). Memory: the kept batches, from the held
snapshot on (with the default ``snapshot_policy="windows"``, at most a trial and a few
windows' batches); :attr:`nbytes` says how much. The state (position in the loader and the
kept batches) goes into the binding's ``state_dict``, so a resumed run replays the same
batches; a resumed pass is reached again by skipping the batches already taken, which needs a
loader whose order in a pass depends only on the pass (a seeded sampler, as the transformers
``Trainer`` and Lightning use).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["RewindableLoader"]

_STATE_KEYS = ("passes", "taken", "in_pass", "next_step", "base_step", "cursor", "buffer")


def _map_batch(batch: Any, on_tensor: Callable[[torch.Tensor], Any], plain: bool = False) -> Any:
    """A copy of ``batch`` with ``on_tensor`` applied to every tensor; containers are rebuilt
    (a training step may pop keys from the dict it is given). ``plain``: mappings become dicts
    and named tuples tuples (what ``torch.load(weights_only=True)`` reads back)."""
    if isinstance(batch, torch.Tensor):
        return on_tensor(batch)
    if isinstance(batch, Mapping):
        items = {k: _map_batch(v, on_tensor, plain) for k, v in batch.items()}
        if plain or type(batch) is dict:
            return items
        try:
            return type(batch)(items)
        except TypeError:
            return items
    if isinstance(batch, tuple):
        items = [_map_batch(v, on_tensor, plain) for v in batch]
        if hasattr(batch, "_fields") and not plain:  # a named tuple
            return type(batch)(*items)
        return tuple(items)
    if isinstance(batch, list):
        return [_map_batch(v, on_tensor, plain) for v in batch]
    return copy.deepcopy(batch)


def _find_set_epoch(loader: Any) -> Callable[[int], Any] | None:
    """The ``set_epoch`` of the loader, its sampler, its batch sampler or the batch sampler's
    sampler: what makes a seeded shuffle differ per pass and repeat on resume."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    for owner in (
        loader,
        getattr(loader, "sampler", None),
        batch_sampler,
        getattr(batch_sampler, "sampler", None),
    ):
        method = getattr(owner, "set_epoch", None)
        if callable(method):
            return method
    return None


class RewindableLoader:
    """Wraps an iterable of batches so that an AdaLRS rewind replays the batches since the
    held snapshot (see the module docstring).

    Args:
        loader: any re-iterable of batches (a ``DataLoader``, a list, an ``IterableDataset``
            loader). A batch is a tensor or a (nested) dict, list or tuple of tensors and plain
            values.
        offload: keep the replay copies in host memory (``True``, default) and move them back
            to each tensor's device when replayed; ``False`` keeps them where they are.
        set_epoch: called with the pass number before each pass over ``loader``; default
            the ``set_epoch`` of the loader, else of its sampler or batch sampler (as the
            transformers ``Trainer`` and Lightning call it), if one has it.
        length: what ``len()`` says (``None``, default: it raises ``TypeError``, the stream has
            no length). A trainer that counts an epoch's batches by ``len()`` (Lightning, which
            otherwise takes a batch ahead) then iterates that many before its next epoch; the
            stream itself goes on across its epochs.
    """

    def __init__(
        self,
        loader: Iterable,
        *,
        offload: bool = True,
        set_epoch: Callable[[int], Any] | None = None,
        length: int | None = None,
    ) -> None:
        if isinstance(loader, RewindableLoader) or not isinstance(loader, Iterable):
            raise ValueError(
                f"`loader` must be an iterable of batches (a DataLoader, a list); got "
                f"{type(loader).__name__}"
            )
        if isinstance(loader, Iterator):
            raise ValueError(
                f"`loader` must be re-iterable (a DataLoader, a list), not a one-shot iterator; "
                f"got {type(loader).__name__}, whose iter() returns itself"
            )
        if not isinstance(offload, bool):
            raise ValueError(f"The value of `offload` is {offload!r}, but must be a bool")
        if length is not None and (
            isinstance(length, bool) or not isinstance(length, int) or length < 1
        ):
            raise ValueError(
                f"The value of `length` is {length!r}, but must be None or an int >= 1"
            )
        if set_epoch is None:
            set_epoch = _find_set_epoch(loader)
        if set_epoch is not None and not callable(set_epoch):
            raise ValueError(f"`set_epoch` must be callable; got {type(set_epoch).__name__}")
        self._loader = loader
        self._length = length
        self._offload = offload
        self._set_epoch = set_epoch
        self._it: Iterator | None = None
        self._passes = 0  # passes over the loader started
        self._taken = 0  # fresh batches taken from the current pass
        self._skip = 0  # after a resume: batches of the current pass to skip first
        self._next_step = 0  # the step the next batch is taken for
        self._base_step: int | None = None  # the held snapshot's step (None: no snapshot)
        self._buffer: list[tuple[int, Any, list]] = []  # (step, host copy, devices)
        self._cursor = 0  # the next kept batch to hand out; len(buffer): fresh batches
        self._bound = False
        self._keeps = True

    # ------------------------------------------------------------------ what users read
    @property
    def passes(self) -> int:
        """Passes over the wrapped loader started so far."""
        return self._passes

    @property
    def kept(self) -> int:
        """Batches kept for a rewind (those of the steps after the held snapshot)."""
        return len(self._buffer)

    @property
    def replaying(self) -> int:
        """Kept batches still to be handed out again after a rewind (0: fresh batches)."""
        return len(self._buffer) - self._cursor

    @property
    def nbytes(self) -> int:
        """Bytes held by the kept batches' tensors."""
        total = 0

        def count(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        for _, batch, _ in self._buffer:
            _map_batch(batch, count)
        return total

    def __repr__(self) -> str:
        return (
            f"RewindableLoader(passes={self._passes}, next_step={self._next_step}, "
            f"kept={self.kept}, replaying={self.replaying})"
        )

    # ------------------------------------------------------------------ the stream
    def __bool__(self) -> bool:  # truth does not depend on a length it may not have
        return True

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError(
                "a RewindableLoader is one stream without a length (give it `length=` for a "
                "trainer that needs one)"
            )
        return self._length

    def __iter__(self) -> Iterator:
        while True:
            yield self._next_batch()

    def _next_batch(self) -> Any:
        if self._cursor < len(self._buffer):
            _, batch, devices = self._buffer[self._cursor]
            self._cursor += 1
            where = iter(devices)
            return _map_batch(batch, lambda t: t.to(next(where), copy=True))
        batch = self._fresh()
        if self._base_step is not None:
            devices: list = []

            def keep(t: torch.Tensor) -> torch.Tensor:
                devices.append(t.device)
                t = t.detach()
                return t.to("cpu", copy=True) if self._offload else t.clone()

            self._buffer.append((self._next_step, _map_batch(batch, keep), devices))
            self._cursor = len(self._buffer)
        return batch

    def _fresh(self) -> Any:
        while True:
            if self._it is None:
                if self._set_epoch is not None:
                    self._set_epoch(self._passes)
                self._it = iter(self._loader)
                self._passes += 1
                self._taken = 0
                for _ in range(self._skip):  # a resumed pass: the batches already taken
                    try:
                        next(self._it)
                    except StopIteration:
                        raise ValueError(
                            f"resuming pass {self._passes - 1} of the loader needs "
                            f"{self._skip} batches to skip, but the pass ended after "
                            f"{self._taken}: the loader is not the one checkpointed"
                        ) from None
                    self._taken += 1
                self._skip = 0
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = None
                if self._taken == 0:
                    raise ValueError(
                        f"pass {self._passes - 1} over the loader yielded no batch; a "
                        "RewindableLoader needs a loader with at least one batch"
                    ) from None
                continue
            self._taken += 1
            return batch

    # ------------------------------------------------------------------ driven by the binding
    def bind(self, last_step: int, snapshot_step: int | None, *, keeps: bool = True) -> None:
        """Called by :class:`~adalrs_ray.torch_binding.AdaLRSScheduler` when it takes this
        loader: the last finished step and the held snapshot's step (``None``: none).
        ``keeps=False`` (a binding in ``"continue"`` mode, which never rewinds): no batch is
        kept; the loader only streams and checkpoints its position."""
        if self._bound:
            raise ValueError(
                "this RewindableLoader already drives an AdaLRSScheduler; give each binding "
                "its own loader"
            )
        self._bound = True
        self._keeps = keeps
        self._next_step = last_step + 1
        self._base_step = snapshot_step if keeps else None

    def unbind(self) -> None:
        """Called when the binding closes; the loader may then be given to a new binding."""
        self._bound = False

    def after_step(self, step: int, *, snapshot: bool, restore_to: int | None) -> None:
        """Called after each ``scheduler.step``: step ``step`` finished; ``snapshot``: the
        binding took a snapshot after it; ``restore_to``: it rewound to the snapshot of that
        step (the next batches are the kept ones)."""
        if restore_to is not None:
            if self._base_step != restore_to:
                raise ValueError(
                    f"the binding rewound to the snapshot of step {restore_to}, but this "
                    f"RewindableLoader kept the batches after step {self._base_step}: it was "
                    "not given to the binding before that snapshot"
                )
            self._cursor = 0
            self._next_step = restore_to + 1
            logger.debug("rewound to step %d: %d kept batches replay", restore_to, self.kept)
            return
        self._next_step = step + 1
        if snapshot and self._keeps:
            keep = [entry for entry in self._buffer if entry[0] > step]
            self._cursor = max(0, self._cursor - (len(self._buffer) - len(keep)))
            self._buffer = keep
            self._base_step = step

    def release(self) -> None:
        """Called when no rewind can come any more (the search has ended): drop the kept
        batches and keep none from now on."""
        if self._buffer:
            logger.debug("search over: %d kept batches released", len(self._buffer))
        self._buffer, self._cursor = [], 0
        self._base_step = None
        self._keeps = False

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The position in the loader and the kept batches (plain containers, host tensors)."""
        buffer = []
        for step, batch, devices in self._buffer:
            host = _map_batch(batch, lambda t: t.to("cpu", copy=True), plain=True)
            buffer.append([step, host, [str(d) for d in devices]])
        return {
            "passes": self._passes,
            "taken": self._taken,
            "in_pass": self._it is not None or self._skip > 0,
            "next_step": self._next_step,
            "base_step": self._base_step,
            "cursor": self._cursor,
            "buffer": buffer,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`: the next batch is the one the checkpointed loader
        would have handed out next (a resumed pass skips the batches it had taken)."""
        if not isinstance(state_dict, Mapping):
            raise ValueError(f"`state_dict` must be a dict; got {type(state_dict).__name__}")
        missing = [k for k in _STATE_KEYS if k not in state_dict]
        if missing:
            raise ValueError(f"RewindableLoader state_dict is missing keys {missing}")
        buffer = state_dict["buffer"]
        cursor = state_dict["cursor"]
        if not isinstance(cursor, int) or not 0 <= cursor <= len(buffer):
            raise ValueError(
                f"The value of `cursor` is {cursor!r}, but must be an int in [0, {len(buffer)}] "
                "(the number of kept batches)"
            )
        for key in ("passes", "taken"):
            value = state_dict[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"The value of `{key}` is {value!r}, but must be an int >= 0")
        in_pass = bool(state_dict["in_pass"])
        self._it = None
        self._passes = state_dict["passes"] - (1 if in_pass else 0)
        self._skip = state_dict["taken"] if in_pass else 0
        self._taken = 0
        self._next_step = int(state_dict["next_step"])
        base = state_dict["base_step"]
        self._base_step = None if base is None else int(base)
        here = (lambda t: t.to("cpu")) if self._offload else (lambda t: t)
        self._buffer = [
            (int(step), _map_batch(batch, here), [torch.device(d) for d in devices])
            for step, batch, devices in buffer
        ]
        self._cursor = cursor
        if in_pass and self._skip and self._set_epoch is None:
            logger.warning(
                "resuming pass %d of the loader by skipping %d batches, but neither the loader "
                "nor its sampler has set_epoch: a shuffled loader may not repeat that pass's "
                "order (use a sampler with set_epoch, or give set_epoch=)",
                self._passes,
                self._skip,
            )
