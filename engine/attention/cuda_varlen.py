"""CUDA backends: flash-attn's varlen kernel, or `torch.nn.attention.varlen`, reading the paged
pool through a block table. Both run paged segments in one call and dense segments in another.

Only imported and selected on CUDA (see `attention.select_backend`); the CPU build never loads
them. They were written against the documented signatures and have not run on a GPU in CI.
"""

from __future__ import annotations

import torch

from ..device import to_device
from .base import AttentionBackend, Segment, split_groups, write_slots


class _VarlenBase(AttentionBackend):
    def prepare(self, segments: list[Segment], device: torch.device) -> None:
        paged, dense, n_paged = split_groups(segments)
        self.n_paged = n_paged
        self.slots = to_device(write_slots(segments, self.kv.page_size), torch.long, device)

        def cu(lengths: list[int]) -> torch.Tensor:
            out = [0]
            for n in lengths:
                out.append(out[-1] + n)
            return to_device(out, torch.int32, device)

        self.p_cu_q = cu([s.n_query for s in paged])
        self.p_cu_k = cu([s.n_keys for s in paged])
        self.p_used_k = to_device([s.n_keys for s in paged], torch.int32, device)
        self.p_max_q = max((s.n_query for s in paged), default=0)
        self.p_max_k = max((s.n_keys for s in paged), default=0)
        width = max((len(s.pages) for s in paged), default=1)
        table = [s.pages + [0] * (width - len(s.pages)) for s in paged]
        self.block_table = to_device(table or [[0]], torch.int32, device)
        self.d_cu = cu([s.n_query for s in dense])
        self.d_max = max((s.n_query for s in dense), default=0)
        self.has_paged, self.has_dense = bool(paged), bool(dense)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        outs = []
        np_ = self.n_paged
        if self.has_paged:
            kc, vc = self.kv.k[layer], self.kv.v[layer]  # (pages, page_size, KV, D)
            kc.view(-1, *kc.shape[2:]).index_copy_(0, self.slots, k[:np_].to(kc.dtype))
            vc.view(-1, *vc.shape[2:]).index_copy_(0, self.slots, v[:np_].to(vc.dtype))
            outs.append(self._paged(q[:np_], kc, vc))
        if self.has_dense:
            outs.append(self._dense(q[np_:], k[np_:], v[np_:]))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)


class FlashAttnBackend(_VarlenBase):
    name = "flash_attn"

    def __init__(self, kv):
        super().__init__(kv)
        from flash_attn import flash_attn_varlen_func

        self._fn = flash_attn_varlen_func

    def _paged(self, q, kc, vc):
        return self._fn(q, kc, vc, self.p_cu_q, self.p_cu_k, self.p_max_q, self.p_max_k,
                        causal=False, block_table=self.block_table)

    def _dense(self, q, k, v):
        return self._fn(q, k, v, self.d_cu, self.d_cu, self.d_max, self.d_max, causal=False)


class TorchVarlenBackend(_VarlenBase):
    name = "torch_varlen"

    def __init__(self, kv):
        super().__init__(kv)
        from torch.nn.attention.varlen import varlen_attn

        self._fn = varlen_attn

    def _paged(self, q, kc, vc):
        return self._fn(q, kc, vc, self.p_cu_q, None, self.p_max_q, self.p_max_k, enable_gqa=True,
                        seqused_k=self.p_used_k, block_table=self.block_table)

    def _dense(self, q, k, v):
        return self._fn(q, k, v, self.d_cu, self.d_cu, self.d_max, self.d_max,
                        enable_gqa=q.shape[1] != k.shape[1])
