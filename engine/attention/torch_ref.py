"""PyTorch reference backend (CPU and GPU): pad each group to a rectangle and run one SDPA.

Every index tensor is built once per step in `prepare`; `attend` only gathers, so the step has
no host syncs. Padded query rows are computed and never copied out; padded keys are masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import AttentionBackend, Segment, split_groups, to_device, write_slots


@dataclass
class _Group:
    row_start: int  # first flat row of the group
    q_index: torch.Tensor  # (B, Tq) flat row (relative to row_start) of each padded query
    k_index: torch.Tensor  # (B, Tk) pool slot (paged) or relative flat row (dense) of each key
    key_mask: torch.Tensor  # (B, 1, 1, Tk) True where a key is real
    out_src: torch.Tensor  # (rows,) index into (B * Tq) of each real query, in flat order


def _group(segments: list[Segment], row_start: int, key_ids: list[list[int]], device) -> _Group | None:
    if not segments:
        return None
    tq = max(s.n_query for s in segments)
    tk = max(len(k) for k in key_ids)
    q_index, k_index, mask, out_src = [], [], [], []
    row = 0
    for b, (seg, keys) in enumerate(zip(segments, key_ids, strict=True)):
        # Padding repeats the segment's own first row / key, so a non-finite value in one
        # request can never leak into another request's rectangle.
        q_index.append(list(range(row, row + seg.n_query)) + [row] * (tq - seg.n_query))
        k_index.append(keys + [keys[0]] * (tk - len(keys)))
        mask.append([True] * len(keys) + [False] * (tk - len(keys)))
        out_src.extend(range(b * tq, b * tq + seg.n_query))
        row += seg.n_query

    def t(x, dtype=torch.long):
        return to_device(x, dtype, device)

    return _Group(row_start, t(q_index), t(k_index), t(mask, torch.bool)[:, None, None, :], t(out_src))


class TorchAttention(AttentionBackend):
    name = "torch"

    def prepare(self, segments: list[Segment], device: torch.device) -> None:
        paged, dense, n_paged = split_groups(segments)
        ps = self.kv.page_size
        paged_keys = [
            [seg.pages[t // ps] * ps + t % ps for t in range(seg.n_keys)] for seg in paged
        ]
        dense_keys, row = [], 0
        for seg in dense:
            dense_keys.append(list(range(row, row + seg.n_query)))
            row += seg.n_query
        self.slots = to_device(write_slots(segments, ps), torch.long, device)
        self.paged = _group(paged, 0, paged_keys, device)
        self.dense = _group(dense, n_paged, dense_keys, device)
        self.n_paged = n_paged

    @staticmethod
    def _sdpa(g: _Group, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q `(rows, H, D)` of the group; k, v `(keys, KV, D)` indexed by g.k_index -> `(rows, H, D)`."""
        qp = q[g.q_index].transpose(1, 2)  # (B, H, Tq, D)
        kp = k[g.k_index].transpose(1, 2)  # (B, KV, Tk, D)
        vp = v[g.k_index].transpose(1, 2)
        out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=g.key_mask,
                                             enable_gqa=qp.shape[1] != kp.shape[1])
        b, h, tq, d = out.shape
        return out.transpose(1, 2).reshape(b * tq, h, d).index_select(0, g.out_src)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        outs = []
        if self.paged is not None:
            kf, vf = self.kv.layer_flat(layer)  # (slots, KV, D)
            np_ = self.n_paged
            kf.index_copy_(0, self.slots, k[:np_].to(kf.dtype))
            vf.index_copy_(0, self.slots, v[:np_].to(vf.dtype))
            outs.append(self._sdpa(self.paged, q[:np_], kf, vf))
        if self.dense is not None:
            s = self.dense.row_start
            outs.append(self._sdpa(self.dense, q[s:], k[s:], v[s:]))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)
