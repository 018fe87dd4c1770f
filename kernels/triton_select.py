"""Triton selection pass: per sequence, the rows to commit, written into the canvas.

One program per sequence. A row's rank is the number of rows of its sequence that beat it
(higher confidence, or equal confidence and a lower row index); ranks are counted tile by
tile, BLOCK x BLOCK comparisons at a time, so no sort and no host sync is needed and a
sequence of any length works. Confidences must not be NaN.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .checks import KernelArgError, check_out, check_select
from .row_options import CommitPlan
from .triton_row import _INTERPRET

BLOCK = 32  # rows per tile (a block of 32 masks is one tile)


@triton.jit
def _select_kernel(
    conf_ptr, offsets_ptr, k_ptr, thr_ptr, factor_ptr, cap_ptr, tokens_ptr, canvas_ptr,
    canvas_index_ptr, committed_ptr, BLOCK: tl.constexpr,
):  # fmt: skip
    seq = tl.program_id(0)
    lo = tl.load(offsets_ptr + seq)
    hi = tl.load(offsets_ptr + seq + 1)
    k = tl.load(k_ptr + seq)
    thr = tl.load(thr_ptr + seq)
    factor = tl.load(factor_ptr + seq)
    cap = tl.maximum(tl.load(cap_ptr + seq), 1)
    lanes = tl.arange(0, BLOCK)
    for i0 in range(lo, hi, BLOCK):
        i = i0 + lanes  # (BLOCK,) rows being ranked
        in_i = i < hi
        ci = tl.load(conf_ptr + i, mask=in_i, other=0.0)
        rank = tl.zeros([BLOCK], tl.int64)
        for j0 in range(lo, hi, BLOCK):
            j = j0 + lanes  # (BLOCK,) rows they are compared with
            cj = tl.load(conf_ptr + j, mask=j < hi, other=0.0)
            beats = (cj[None, :] > ci[:, None]) | ((cj[None, :] == ci[:, None]) & (j[None, :] < i[:, None]))
            beats = beats & (j < hi)[None, :]  # (BLOCK, BLOCK)
            rank += tl.sum(beats.to(tl.int64), axis=1)
        by_factor = ((rank + 2).to(tl.float32) * (1.0 - ci) < factor) | (rank == 0)
        commit = tl.where(factor > 0, by_factor, rank < k)
        commit = tl.where(thr >= 0, (ci >= thr) | (rank == 0), commit)
        commit = commit & (rank < cap)
        tl.store(committed_ptr + i, commit.to(tl.int8), mask=in_i)
        tok = tl.load(tokens_ptr + i, mask=in_i, other=0)
        dest = tl.load(canvas_index_ptr + i, mask=in_i, other=0)
        tl.store(canvas_ptr + dest, tok, mask=in_i & commit)


def select_commit_triton(
    confidence: torch.Tensor,
    tokens: torch.Tensor,
    plan: CommitPlan,
    out_committed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triton version of `torch_kernels.select_commit_torch` (same arguments, same results).

    offsets must be non-decreasing with offsets[0] = 0 and offsets[-1] = rows, and canvas_index
    must point inside the canvas: not checked here, since checking would sync with the GPU.
    """
    check_select(confidence, tokens, plan)
    offsets, k, threshold, canvas, canvas_index = (plan.offsets, plan.k, plan.threshold, plan.canvas,
                                                   plan.canvas_index)
    factor, max_commits = plan.factor, plan.max_commits
    n_rows = confidence.shape[0]
    dev = confidence.device
    check_out("out_committed", out_committed, torch.bool, n_rows, dev)
    if dev.type != "cuda" and not _INTERPRET:
        raise KernelArgError(f"Triton kernels need CUDA tensors (got {dev}) or TRITON_INTERPRET=1")
    committed = (
        out_committed if out_committed is not None else torch.empty(n_rows, dtype=torch.bool, device=dev)
    )
    n_seqs = offsets.shape[0] - 1
    if n_rows == 0 or n_seqs == 0:
        return committed
    if factor is None:  # no factor rule: every sequence falls through to its k
        factor = torch.full((n_seqs,), -1.0, dtype=torch.float32, device=dev)
    if max_commits is None:  # no cap: a rank never reaches the row count
        max_commits = torch.full((n_seqs,), n_rows, dtype=torch.int64, device=dev)
    extra = {} if _INTERPRET else {"num_warps": 4}
    _select_kernel[(n_seqs,)](
        confidence, offsets, k, threshold, factor, max_commits, tokens, canvas, canvas_index,
        committed.view(torch.int8), BLOCK=BLOCK, **extra,
    )  # fmt: skip
    return committed
