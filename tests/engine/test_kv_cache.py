"""Paged KV pool: sizing by KV heads, allocator bookkeeping, slot mapping."""

from __future__ import annotations

import pytest
import torch
from diffuserve.engine.attention.base import Segment, write_slots
from diffuserve.engine.engine_config import EngineConfig, parse_bytes
from diffuserve.engine.kv_cache import KVCache, OutOfPages, PageAllocator, kv_pool_pages, pages_for
from engine_cases import tiny_config


def test_allocator_hands_out_and_takes_back():
    alloc = PageAllocator(5)
    a = alloc.allocate(3)
    assert len(set(a)) == 3 and alloc.num_free == 2 and alloc.num_used == 3
    with pytest.raises(OutOfPages):
        alloc.allocate(3)
    b = alloc.allocate(2)
    assert not set(a) & set(b)
    alloc.free(a)
    alloc.free(b)
    assert alloc.num_free == 5 and sorted(alloc.allocate(5)) == list(range(5))


def test_pool_is_sized_by_kv_heads():
    gqa = tiny_config("illada")  # 2 KV heads of 4
    mha = tiny_config("llada")  # 4 KV heads
    budget = EngineConfig(kv_cache_memory=1 << 20, kv_page_size=8)
    n_gqa = kv_pool_pages(gqa, budget, torch.float32, torch.device("cpu"))
    n_mha = kv_pool_pages(mha, budget, torch.float32, torch.device("cpu"))
    per_page = 2 * gqa.num_layers * gqa.num_kv_heads * gqa.head_dim * 4 * 8
    assert n_gqa == (1 << 20) // per_page
    assert n_gqa == 2 * n_mha
    kv = KVCache(gqa, n_gqa, 8, torch.float32, torch.device("cpu"))
    assert kv.k.shape == (gqa.num_layers, n_gqa, 8, gqa.num_kv_heads, gqa.head_dim)
    assert 2 * kv.k.numel() * 4 <= 1 << 20


def test_ensure_pages_and_release():
    cfg = tiny_config("illada")
    kv = KVCache(cfg, 10, 4, torch.float32, torch.device("cpu"))
    pages: list[int] = []
    kv.ensure_pages(pages, 9)
    assert len(pages) == pages_for(9, 4) == 3
    kv.ensure_pages(pages, 12)
    assert len(pages) == 3
    kv.ensure_pages(pages, 13)
    assert len(pages) == 4 and kv.allocator.num_used == 4
    with pytest.raises(OutOfPages):
        kv.ensure_pages(pages, 100)
    kv.release(pages)
    assert pages == [] and kv.allocator.num_used == 0


def test_write_slots_follow_the_page_table():
    segs = [Segment(3, True, num_cached=5, pages=[7, 2, 9]), Segment(2, False), Segment(2, True, 0, [4])]
    # token t of a sequence -> pages[t // 4] * 4 + t % 4; dense segments write nothing
    assert write_slots(segs, 4) == [2 * 4 + 1, 2 * 4 + 2, 2 * 4 + 3, 4 * 4 + 0, 4 * 4 + 1]


def test_engine_config_checks_and_bytes():
    with pytest.raises(ValueError, match="max_num_seqs"):
        EngineConfig(max_num_seqs=0)
    with pytest.raises(ValueError, match="attention_backend"):
        EngineConfig(attention_backend="magic")
    assert parse_bytes("512MiB") == 512 << 20 and parse_bytes("2GB") == 2 * 10**9
    assert parse_bytes("1e6") == 10**6
