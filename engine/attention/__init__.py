"""Attention backends for the engine's varlen forward (see base.py for the semantics).

`select_backend` picks one at engine start and logs the choice: the PyTorch reference on CPU;
on CUDA flash-attn when installed and the page size suits it (its paged kernel needs pages of a
multiple of 256 tokens), else `torch.nn.attention.varlen` when this torch has it, else the
reference. `EngineConfig.attention_backend` overrides the choice.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

from ..kv_cache import KVCache
from .base import AttentionBackend, Segment
from .torch_ref import TorchAttention

log = logging.getLogger(__name__)

__all__ = ["AttentionBackend", "Segment", "TorchAttention", "select_backend"]

FLASH_PAGE_MULTIPLE = 256


def _has_torch_varlen() -> bool:
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def select_backend(name: str, kv: KVCache, device: torch.device) -> AttentionBackend:
    if name == "auto":
        if device.type != "cuda":
            name = "torch"
        elif importlib.util.find_spec("flash_attn") and kv.page_size % FLASH_PAGE_MULTIPLE == 0:
            name = "flash_attn"
        elif _has_torch_varlen():
            name = "torch_varlen"
        else:
            name = "torch"
    if name != "torch" and device.type != "cuda":
        raise ValueError(f"attention backend {name!r} needs a CUDA device, the engine runs on {device}")
    if name == "torch":
        backend: AttentionBackend = TorchAttention(kv)
    elif name == "flash_attn":
        from .cuda_varlen import FlashAttnBackend

        backend = FlashAttnBackend(kv)
    elif name == "torch_varlen":
        from .cuda_varlen import TorchVarlenBackend

        backend = TorchVarlenBackend(kv)
    else:
        raise ValueError(f"unknown attention backend {name!r}")
    log.info("attention backend: %s (%s, page size %d)", backend.name, device, kv.page_size)
    return backend
