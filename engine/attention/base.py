"""What every attention backend sees: the step's segments, and the one `attend` call per layer.

A segment is one sequence's query tokens in the flat batch. Paged segments (prefix cache) come
first in the batch, dense segments (exact mode, and the unconditional pass of cfg) after them,
so each group's rows are one contiguous range.

Paged segment semantics, per layer: first write the K/V of all its query tokens into the pool at
slots `[num_cached, num_cached + n_query)` of its page table (tokens that will not stay cached
are scratch, rewritten next step), then attend every query to slots
`[0, num_cached + n_query + extra_keys)`, bidirectionally (`extra_keys`: the dual cache's masked
suffix, written by an earlier step). Dense segment: queries attend to the segment's own tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..kv_cache import KVCache


@dataclass
class Segment:
    n_query: int
    paged: bool
    num_cached: int = 0
    pages: list[int] = field(default_factory=list)
    extra_keys: int = 0  # paged: keys already in the pool after the queries (dual cache), not written

    @property
    def n_keys(self) -> int:
        return self.num_cached + self.n_query + self.extra_keys if self.paged else self.n_query


class AttentionBackend:
    """Subclasses implement `prepare` (tensors once per step) and `attend` (once per layer)."""

    name = "base"

    def __init__(self, kv: KVCache):
        self.kv = kv

    def prepare(self, segments: list[Segment], device: torch.device) -> None:
        raise NotImplementedError

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q `(N, H, D)`, k and v `(N, KV, D)` for the step's flat tokens -> `(N, H, D)`."""
        raise NotImplementedError


def write_slots(segments: list[Segment], page_size: int) -> list[int]:
    """Pool slot of every query token of the paged segments, in flat row order."""
    slots: list[int] = []
    for seg in segments:
        if not seg.paged:
            continue
        for t in range(seg.num_cached, seg.num_cached + seg.n_query):
            slots.append(seg.pages[t // page_size] * page_size + t % page_size)
    return slots


def split_groups(segments: list[Segment]) -> tuple[list[Segment], list[Segment], int]:
    """(paged segments, dense segments, number of paged rows); checks paged come first."""
    paged = [s for s in segments if s.paged]
    dense = [s for s in segments if not s.paged]
    if segments[: len(paged)] != paged:
        raise ValueError("paged segments must precede dense segments in the batch")
    return paged, dense, sum(s.n_query for s in paged)

