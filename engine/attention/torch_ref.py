"""PyTorch reference backend (CPU and GPU): segments bucketed by key count, each bucket padded to
a rectangle for one SDPA call.

Every index tensor is built once per step in `prepare`; `attend` only gathers, so the step has
no host syncs. Padded query rows are computed and never copied out; padded keys are masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..device import to_device
from .base import AttentionBackend, Segment, split_groups, write_slots

# A bucket holds segments whose query counts and key counts are each within this factor, so
# padding wastes little.
BUCKET_RATIO = 1.5


@dataclass
class _Bucket:
    q_index: torch.Tensor  # (B, Tq) flat row of each padded query
    k_index: torch.Tensor  # (B, Tk) pool slot (paged) or flat row (dense) of each padded key
    key_mask: torch.Tensor  # (B, 1, 1, Tk) True where a key is real
    out_src: torch.Tensor  # (rows,) index into (B * Tq) of each real query
    out_dst: torch.Tensor  # (rows,) its flat row


def _similar(items: list, size, ratio: float = BUCKET_RATIO) -> list[list]:
    """Greedy groups of items whose `size` is within `ratio` of the group's largest."""
    groups: list[list] = []
    for it in sorted(items, key=lambda it: -size(it)):
        if groups and size(groups[-1][0]) <= ratio * size(it):
            groups[-1].append(it)
        else:
            groups.append([it])
    return groups


def _buckets(items: list[tuple[list[int], list[int]]], device) -> list[_Bucket]:
    """items: (flat query rows, key ids) per segment -> rectangles of similar query and key counts.

    Grouping by query count too keeps one long query segment (a prefill chunk, a cache refresh)
    from padding every 32-query denoising segment of its bucket to its own length.
    """
    by_queries = _similar(items, lambda it: len(it[0]))
    groups = [kg for qg in by_queries for kg in _similar(qg, lambda it: len(it[1]))]
    out = []
    for group in groups:
        tq = max(len(rows) for rows, _ in group)
        tk = len(group[0][1])
        q_index, k_index, mask, src, dst = [], [], [], [], []
        for b, (rows, keys) in enumerate(group):
            # Padding repeats the segment's own first row / key, so a non-finite value in one
            # request can never leak into another request's rectangle.
            q_index.append(rows + [rows[0]] * (tq - len(rows)))
            k_index.append(keys + [keys[0]] * (tk - len(keys)))
            mask.append([True] * len(keys) + [False] * (tk - len(keys)))
            src.extend(range(b * tq, b * tq + len(rows)))
            dst.extend(rows)
        out.append(_Bucket(to_device(q_index, torch.long, device), to_device(k_index, torch.long, device),
                           to_device(mask, torch.bool, device)[:, None, None, :],
                           to_device(src, torch.long, device), to_device(dst, torch.long, device)))
    return out


class TorchAttention(AttentionBackend):
    name = "torch"

    def prepare(self, segments: list[Segment], device: torch.device) -> None:
        _paged, _dense, n_paged = split_groups(segments)
        ps = self.kv.page_size
        paged_items, dense_items, row = [], [], 0
        for seg in segments:
            rows = list(range(row, row + seg.n_query))
            if seg.paged:
                paged_items.append((rows, [seg.pages[t // ps] * ps + t % ps for t in range(seg.n_keys)]))
            else:
                dense_items.append((rows, rows))
            row += seg.n_query
        self.slots = to_device(write_slots(segments, ps), torch.long, device)
        self.paged = _buckets(paged_items, device)
        self.dense = _buckets(dense_items, device)
        self.n_paged = n_paged

    @staticmethod
    def _sdpa(b: _Bucket, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q `(N, H, D)`; k, v `(keys, KV, D)` indexed by b.k_index -> `(rows of b, H, D)`."""
        qp = q[b.q_index].transpose(1, 2)  # (B, H, Tq, D)
        kp = k[b.k_index].transpose(1, 2)  # (B, KV, Tk, D)
        vp = v[b.k_index].transpose(1, 2)
        out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=b.key_mask,
                                             enable_gqa=qp.shape[1] != kp.shape[1])
        n, h, tq, d = out.shape
        return out.transpose(1, 2).reshape(n * tq, h, d).index_select(0, b.out_src)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(q)  # every row is written by exactly one bucket
        if self.paged:
            kf, vf = self.kv.layer_flat(layer)  # (slots, KV, D)
            np_ = self.n_paged
            kf.index_copy_(0, self.slots, k[:np_].to(kf.dtype))
            vf.index_copy_(0, self.slots, v[:np_].to(vf.dtype))
            for b in self.paged:
                out.index_copy_(0, b.out_dst, self._sdpa(b, q, kf, vf))
        for b in self.dense:
            out.index_copy_(0, b.out_dst, self._sdpa(b, q, k, v))
        return out
