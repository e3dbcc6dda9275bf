"""The tiny-LM test config shared by the LM test modules (tests/test_lm_*.py,
test_cli_train.py, test_lrfree_arms.py): the ``tiny`` preset on 4 x 32 tokens per step, on the
CPU, quiet, seed 1. Each module passes what it needs on top."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from train_loops.lm import LMConfig


def tiny_lm_config(corpus: Path | str, cache: Path | str, **kw: Any) -> LMConfig:
    """``LMConfig`` for ``corpus`` with its token cache in ``cache``; ``kw`` overrides."""
    base: dict[str, Any] = dict(
        preset="tiny",
        data=str(corpus),
        cache_dir=str(cache),
        seq_len=32,
        batch_size=4,
        eval_batches=2,
        steps=40,
        device="cpu",
        log_every=1000,
        seed=1,
    )
    base.update(kw)
    return LMConfig(**base)
