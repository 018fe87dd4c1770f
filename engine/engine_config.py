"""Frozen engine configuration: batch limits, KV cache sizing, attention backend, device."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

AttentionBackendName = Literal["auto", "torch", "flash_attn", "torch_varlen"]
ATTENTION_BACKENDS = ("auto", "torch", "flash_attn", "torch_varlen")


def _option(default, help: str, **meta):
    """A field with the text of its command-line flag (engine/cli_args.py builds the flags from these)."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class EngineConfig:
    """How the engine runs, whatever the model. Every field is also a command-line flag of
    `serve`, `generate` and the benchmarks (engine/cli_args.py), so the defaults live here only."""

    max_num_seqs: int = _option(32, "sequences denoised together (running sequences per step)")
    max_num_batched_tokens: int = _option(8192, "query tokens per engine step, all sequences together")
    # More uncached committed tokens than this (a long prompt, or a cache refresh of a long
    # sequence) are computed in chunks of this many tokens, one chunk per step. A chunk's K/V do not
    # see the tokens after it (bidirectional model: an approximation), so chunks are large.
    # Chunk boundaries depend on the request alone, so a seeded request is reproducible under load.
    prefill_chunk_size: int = _option(
        2048, "uncached tokens computed per step for one request (long prompts, cache refreshes)")
    kv_page_size: int = _option(16, "tokens per KV cache page", aliases=("--page-size",))
    # KV pool capacity: an explicit byte budget wins; otherwise a fraction of free GPU memory on
    # CUDA, or `cpu_kv_cache_memory` bytes on the CPU.
    kv_cache_memory: int | None = _option(
        None, "KV cache bytes, e.g. 512MiB or 4GiB", bytes=True,
        default_help="--gpu-memory-fraction of free GPU memory on CUDA, --cpu-kv-cache-memory on CPU")
    gpu_memory_fraction: float = _option(0.85, "share of free GPU memory the KV cache takes (CUDA)")
    cpu_kv_cache_memory: int = _option(256 << 20, "KV cache bytes on the CPU", bytes=True)
    attention_backend: AttentionBackendName = _option("auto", "attention implementation",
                                                      choices=ATTENTION_BACKENDS)
    dtype: str = _option("auto", "auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16 | float16")
    device: str = _option("auto", "auto (cuda when available, else cpu) | cpu | cuda | cuda:N")
    # Ranks the model is split across (Megatron tensor parallelism, one process per rank).
    tensor_parallel_size: int = _option(1, "processes (GPUs) the model is split across by tensor parallelism")

    def __post_init__(self) -> None:
        positive = {
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "prefill_chunk_size": self.prefill_chunk_size,
            "kv_page_size": self.kv_page_size,
            "tensor_parallel_size": self.tensor_parallel_size,
        }
        for name, value in positive.items():
            if int(value) < 1:
                raise ValueError(f"EngineConfig.{name} must be >= 1, got {value}")
        if self.kv_cache_memory is not None and self.kv_cache_memory < 1:
            raise ValueError(f"EngineConfig.kv_cache_memory must be a positive byte count, got "
                             f"{self.kv_cache_memory}")
        if not 0.0 < self.gpu_memory_fraction <= 1.0:
            raise ValueError(f"EngineConfig.gpu_memory_fraction must be in (0, 1], got "
                             f"{self.gpu_memory_fraction}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"EngineConfig.attention_backend must be auto, torch, flash_attn or "
                             f"torch_varlen, got {self.attention_backend!r}")

    def replace(self, **changes) -> EngineConfig:
        return replace(self, **changes)


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device):
    import torch

    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}; use float32, bfloat16 or float16")
    return dtype


def parse_bytes(text: str) -> int:
    """'512MiB', '2GiB', '1e9' -> bytes (for --kv-cache-memory)."""
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9, "b": 1}
    t = text.strip().lower()
    for unit, factor in units.items():
        if t.endswith(unit):
            return int(float(t[: -len(unit)]) * factor)
    return int(float(t))
