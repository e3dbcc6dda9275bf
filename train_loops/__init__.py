"""The language-model pretraining task of adalrs-ray (docs/lm_task.md).

* :mod:`train_loops.data`: corpora (the standard library by default, text, Parquet), byte or BPE
  tokenizers, token caches, packed sequences, a resumable rank-sharded sampler.
* :mod:`train_loops.model`: randomly initialised Qwen2 presets, device and autocast helpers.
* :mod:`train_loops.lm`: :class:`LMConfig`, :class:`LoopHooks`, :class:`LMTrainer`, :func:`run`.

* :mod:`train_loops.lm_ray_train`: the LM task on Ray Train V2 workers.
* :mod:`train_loops.trainables`: the comparison's Tune trainables (synthetic, LM in-process, LM on
  a TorchTrainer per trial) and their registry.

Names are imported lazily so ``import train_loops.data`` does not import torch.

May import: :mod:`adalrs_ray` below the experiments layer (core, torch binding, Ray Train
utility, report contract, comparison), torch, transformers and ray. Never
:mod:`adalrs_ray.experiments` or :mod:`adalrs_ray.cli`.
"""

from __future__ import annotations

from adalrs_ray.core.lazy import lazy_exports

_LAZY = {
    "LMConfig": "train_loops.lm",
    "LMTrainer": "train_loops.lm",
    "LoopHooks": "train_loops.lm",
    "run": "train_loops.lm",
    "load_lm_data": "train_loops.data",
    "PackedSequences": "train_loops.data",
    "ShardedBatchSampler": "train_loops.data",
    "build_model": "train_loops.model",
    "PRESETS": "train_loops.model",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
