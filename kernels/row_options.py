"""The kernels' inputs, each one frozen object from `Denoiser.prepare` down to the kernels (the
dispatcher, the PyTorch path and the Triton launchers all take them as they are):

- `RowOptions`: the per-row options of the row pass;
- `CommitPlan`: per sequence, which of its rows the selection pass commits, and where to.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RowOptions:
    """One entry per masked row `(R,)`, except the two id lists, which all rows share.
    The field order is the positional order of `torch_kernels.row_chunk`."""

    temperature: torch.Tensor  # float32: 0 = argmax; > 0 scales the Gumbel noise
    seed: torch.Tensor  # int64: noise key (the request's seed)
    pos: torch.Tensor  # int64: noise key (answer position)
    step: torch.Tensor  # int64: noise key (step within the block)
    bias_token: torch.Tensor  # int64: token that gets bias_value (-1: none); the </think> bias
    bias_value: torch.Tensor  # float32
    suppress_ids: torch.Tensor  # (S,) int64: ids set to -inf on suppress_row rows (EOS)
    suppress_row: torch.Tensor  # bool
    conf_block_ids: torch.Tensor  # (C,) int64: a candidate among these gets confidence -inf ...
    conf_block_row: torch.Tensor  # bool: ... on these rows (EOS/EOT confidence suppression)
    random_conf: torch.Tensor  # bool: the random-remasking score instead of the confidence

    SHARED = ("suppress_ids", "conf_block_ids")  # not per row

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    def take(self, rows: slice | torch.Tensor) -> RowOptions:
        """The options of `rows` (a slice or an index tensor); the shared id lists unchanged."""
        return RowOptions(**{f.name: getattr(self, f.name) if f.name in self.SHARED
                             else getattr(self, f.name)[rows] for f in dataclasses.fields(self)})

    def to(self, device: torch.device | str) -> RowOptions:
        return RowOptions(*(t.to(device) for t in self.tensors()))


@dataclass(frozen=True)
class CommitPlan:
    """What `select_commit` needs besides the rows' candidates and confidences. Rows of sequence b
    are offsets[b]:offsets[b+1]; per sequence, the first rule that applies: `threshold` >= 0, else
    `factor` > 0, else the top `k`; then at most `max_commits`. Committed tokens are written into
    `canvas` (the one tensor a kernel writes, in place) at `canvas_index`."""

    offsets: torch.Tensor  # (B + 1,) int64, non-decreasing, offsets[0] = 0, offsets[B] = R
    k: torch.Tensor  # (B,) int64: rows to commit under the schedule
    threshold: torch.Tensor  # (B,) float32: confidence threshold, < 0 = none
    canvas: torch.Tensor  # (L,) int64: the current blocks of all sequences, concatenated
    canvas_index: torch.Tensor  # (R,) int64: each row's position in `canvas`
    factor: torch.Tensor | None = None  # (B,) float32: Fast-dLLM's factor rule, <= 0 = none
    max_commits: torch.Tensor | None = None  # (B,) int64: cap on rows committed per step
