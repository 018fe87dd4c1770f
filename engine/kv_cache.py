"""Paged KV cache: one pool of fixed-size pages per layer, and the allocator that hands them out.

Pool layout per layer: `(num_pages, page_size, n_kv_heads, head_dim)`, the layout flash-attn and
`torch.nn.attention.varlen` read through a block table. Sized by `n_kv_heads` (GQA), so iLLaDA
(8 KV heads of 32) holds 4x the tokens of an MHA model in the same bytes.

Invariant: a sequence's page table maps its token index t to slot
`pages[t // page_size] * page_size + t % page_size`. Slots `[0, num_cached)` hold committed
tokens' K/V; slots past that are scratch, rewritten by every step before it attends.
"""

from __future__ import annotations

import logging
import math

import torch

from .engine_config import EngineConfig
from .model_config import ModelConfig

log = logging.getLogger(__name__)


class OutOfPages(RuntimeError):
    pass


class PageAllocator:
    """Free list of page ids; O(1) allocate and free."""

    def __init__(self, num_pages: int):
        self.num_pages = num_pages
        self._free: list[int] = list(range(num_pages - 1, -1, -1))  # pop() hands out low ids first

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_pages - len(self._free)

    def allocate(self, n: int) -> list[int]:
        if n > len(self._free):
            raise OutOfPages(f"asked for {n} pages, {len(self._free)} free")
        return [self._free.pop() for _ in range(n)]

    def free(self, pages: list[int]) -> None:
        self._free.extend(reversed(pages))


def pages_for(num_tokens: int, page_size: int) -> int:
    return math.ceil(num_tokens / page_size)


def kv_pool_pages(cfg: ModelConfig, engine_config: EngineConfig, dtype: torch.dtype,
                  device: torch.device) -> int:
    """Pages that fit the configured memory budget (at least one)."""
    elem = torch.empty((), dtype=dtype).element_size()
    bytes_per_page = cfg.kv_bytes_per_token * elem * engine_config.kv_page_size
    if engine_config.kv_cache_memory is not None:
        budget = engine_config.kv_cache_memory
    elif device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        budget = int(free * engine_config.gpu_memory_fraction)
    else:
        budget = engine_config.cpu_kv_cache_memory
    return max(1, budget // bytes_per_page)


class KVCache:
    """The K and V pools: `(num_layers, num_pages, page_size, n_kv_heads, head_dim)` each."""

    def __init__(self, cfg: ModelConfig, num_pages: int, page_size: int, dtype: torch.dtype,
                 device: torch.device):
        shape = (cfg.num_layers, num_pages, page_size, cfg.num_kv_heads, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.page_size = page_size
        self.num_pages = num_pages
        self.allocator = PageAllocator(num_pages)
        log.info("KV cache: %d pages x %d tokens (%d tokens, %.1f MiB, %s)", num_pages, page_size,
                 num_pages * page_size, 2 * self.k.numel() * self.k.element_size() / 2**20, dtype)

    def layer_flat(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of one layer as `(num_pages * page_size, n_kv_heads, head_dim)` slot views."""
        k, v = self.k[layer], self.v[layer]
        return k.view(-1, *k.shape[2:]), v.view(-1, *v.shape[2:])

    def ensure_pages(self, pages: list[int], num_tokens: int) -> None:
        """Grow a sequence's page list in place to hold `num_tokens`; raises OutOfPages."""
        need = pages_for(num_tokens, self.page_size) - len(pages)
        if need > 0:
            pages.extend(self.allocator.allocate(need))

    def release(self, pages: list[int]) -> None:
        self.allocator.free(pages)
        pages.clear()
