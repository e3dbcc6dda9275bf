"""Randomly initialised Qwen2 causal LMs (the architecture of the paper's Qwen2.5 runs).

Presets, with the parameter count at the byte tokenizer's vocab of 257 (embeddings tied, as in
Qwen2.5-0.5B; the count grows by ``hidden * (vocab - 257)`` for a larger vocab):

========  ======  ============  ======  =====  ========  ===========
preset    hidden  intermediate  layers  heads  kv heads  parameters
========  ======  ============  ======  =====  ========  ===========
tiny          64           256       2      2         2      148,224
small        256          1024       4      4         2    4,002,304
base         512          2048       8      8         2   30,555,136
qwen2.5-0.5b 896          4864      24     14         2  358,128,384
========  ======  ============  ======  =====  ========  ===========

``qwen2.5-0.5b`` has the shape of Qwen2.5-0.5B (494M parameters at its 151,936-token vocab).
Weights are never downloaded: every model starts from a seeded random initialisation.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch

logger = logging.getLogger(__name__)

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
    ),
    "small": dict(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    "base": dict(
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
    ),
    "qwen2.5-0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        rope_theta=1_000_000.0,
    ),
}

DEVICES = ("auto", "cpu", "cuda", "npu", "mps")
DTYPES = ("float32", "bfloat16")


def model_config(preset: str, vocab_size: int, max_seq_len: int) -> Any:
    """The ``Qwen2Config`` of a preset for a tokenizer of ``vocab_size`` tokens."""
    from transformers import Qwen2Config

    if preset not in PRESETS:
        raise ValueError(f"preset is {preset!r}, but must be one of {sorted(PRESETS)}")
    if vocab_size < 2:
        raise ValueError(f"vocab_size is {vocab_size}, but must be >= 2")
    if max_seq_len < 1:
        raise ValueError(f"max_seq_len is {max_seq_len}, but must be >= 1")
    return Qwen2Config(
        vocab_size=vocab_size,
        max_position_embeddings=max(max_seq_len, 128),
        tie_word_embeddings=True,
        attention_dropout=0.0,
        use_cache=False,
        **PRESETS[preset],
    )


def build_model(preset: str, vocab_size: int, max_seq_len: int, seed: int = 0) -> torch.nn.Module:
    """A ``Qwen2ForCausalLM`` with seeded random weights; the global RNG is left untouched."""
    from transformers import Qwen2ForCausalLM

    config = model_config(preset, vocab_size, max_seq_len)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    logger.info("model %s: %s parameters", preset, f"{count_parameters(model):,}")
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def _npu_available() -> bool:
    try:
        import torch_npu  # noqa: F401
    except ImportError:
        return False
    return bool(getattr(torch, "npu", None) and torch.npu.is_available())


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then npu (``torch_npu``), then mps, then cpu; others are checked."""
    kind = name.split(":")[0]
    if kind not in DEVICES or (kind == "auto" and name != "auto"):
        raise ValueError(f"device is {name!r}, but must be one of {DEVICES} (optionally ':index')")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _npu_available():
            return torch.device("npu")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "npu": kind == "npu" and _npu_available(),
        "mps": torch.backends.mps.is_available(),
    }[kind]
    if not available:
        raise ValueError(f"device {name!r} was requested, but it is not available here")
    return torch.device(name)


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device``'s type when ``dtype == "bfloat16"``, else a null context."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype is {dtype!r}, but must be one of {DTYPES}")
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
