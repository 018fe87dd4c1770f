"""Attention backends: the paged torch backend against plain per-sequence attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffuserve.engine.attention import select_backend
from diffuserve.engine.attention.base import Segment
from diffuserve.engine.attention.cuda_varlen import TorchVarlenBackend
from diffuserve.engine.kv_cache import KVCache
from engine_cases import tiny_config


def dense_attention(q, k, v):
    """q `(T, H, D)`, k/v `(S, KV, D)` -> `(T, H, D)`, bidirectional, GQA by repetition."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    out = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1))
    return out.transpose(0, 1)


def test_paged_and_dense_segments_match_plain_attention():
    cfg = tiny_config("illada")  # 4 heads, 2 KV heads, head_dim 16
    h, kvh, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    kv = KVCache(cfg, 32, 4, torch.float32, torch.device("cpu"))
    backend = select_backend("auto", kv, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    # Two paged sequences with history already in scattered pages, and one dense segment.
    history = {0: (7, [9, 3, 17]), 1: (0, [5, 30])}  # seq -> (num_cached, pages)
    cached_k, cached_v = {}, {}
    for s, (n, pages) in history.items():
        ck, cv = torch.randn(n, kvh, d, generator=g), torch.randn(n, kvh, d, generator=g)
        for t in range(n):
            slot = pages[t // 4] * 4 + t % 4
            kv.k[0].view(-1, kvh, d)[slot] = ck[t]
            kv.v[0].view(-1, kvh, d)[slot] = cv[t]
        cached_k[s], cached_v[s] = ck, cv
    segs = [Segment(5, True, 7, [9, 3, 17]), Segment(6, True, 0, [5, 30]), Segment(4, False)]
    n = sum(s.n_query for s in segs)
    q = torch.randn(n, h, d, generator=g)
    k = torch.randn(n, kvh, d, generator=g)
    v = torch.randn(n, kvh, d, generator=g)
    backend.prepare(segs, torch.device("cpu"))
    out = backend.attend(0, q, k, v)
    rows = [(0, 5), (5, 11), (11, 15)]
    for s, (a, b) in enumerate(rows):
        if s in cached_k:
            keys, vals = torch.cat([cached_k[s], k[a:b]]), torch.cat([cached_v[s], v[a:b]])
        else:
            keys, vals = k[a:b], v[a:b]
        torch.testing.assert_close(out[a:b], dense_attention(q[a:b], keys, vals))
    # The paged queries' K/V now sit in the pool at the slots after the history.
    torch.testing.assert_close(kv.k[0].view(-1, kvh, d)[17 * 4 + 3], k[4])
    torch.testing.assert_close(kv.v[0].view(-1, kvh, d)[30 * 4 + 1], v[10])


def test_gpu_backends_refused_on_cpu_and_varlen_metadata():
    cfg = tiny_config("illada")
    kv = KVCache(cfg, 8, 4, torch.float32, torch.device("cpu"))
    with pytest.raises(ValueError, match="CUDA"):
        select_backend("flash_attn", kv, torch.device("cpu"))
    varlen = TorchVarlenBackend(kv)  # metadata only: the kernel itself needs CUDA
    varlen.prepare([Segment(3, True, 5, [2, 6]), Segment(2, True, 0, [1]), Segment(4, False)],
                   torch.device("cpu"))
    assert varlen.p_cu_q.tolist() == [0, 3, 5] and varlen.p_cu_k.tolist() == [0, 8, 10]
    assert varlen.p_used_k.tolist() == [8, 2] and varlen.block_table.tolist() == [[2, 6], [1, 0]]
    assert varlen.d_cu.tolist() == [0, 4] and varlen.n_paged == 5
    assert varlen.slots.tolist() == [6 * 4 + 1, 6 * 4 + 2, 6 * 4 + 3, 4, 5]
