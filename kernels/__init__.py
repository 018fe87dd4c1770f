"""Denoising kernels: per masked row, candidate token + confidence (`row_pass`); per sequence,
the rows to commit, written into the canvas (`select_commit`).

Dispatch: the Triton kernels for CUDA tensors when `triton` imports, the PyTorch path
otherwise. `DIFFUSERVE_KERNELS=torch|triton` forces one (triton on CPU tensors needs
`TRITON_INTERPRET=1` set before triton is first imported). Triton is imported lazily, so the
CPU path never loads it.
"""

from __future__ import annotations

import functools
import os

import torch

from .checks import KernelArgError, check_out, check_row_pass, check_select
from .row_options import CommitPlan, RowOptions
from .torch_kernels import row_pass_torch, select_commit_torch, softmax_at

__all__ = [
    "CommitPlan",
    "KernelArgError",
    "RowOptions",
    "backend_for",
    "row_pass",
    "row_pass_torch",
    "select_commit",
    "select_commit_torch",
    "softmax_at",
]


@functools.cache
def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # ImportError, or a broken install raising something else at import
        return False
    return True


def backend_for(device: torch.device) -> str:
    """'triton' or 'torch' for tensors on `device`, following DIFFUSERVE_KERNELS."""
    forced = os.environ.get("DIFFUSERVE_KERNELS", "").strip().lower()
    if forced not in ("", "auto", "torch", "triton"):
        raise ValueError(f"DIFFUSERVE_KERNELS must be torch, triton or auto, got {forced!r}")
    if forced == "torch":
        return "torch"
    if forced == "triton":
        if not _triton_available():
            raise RuntimeError("DIFFUSERVE_KERNELS=triton but triton does not import")
        return "triton"
    return "triton" if device.type == "cuda" and _triton_available() else "torch"


def row_pass(
    logits: torch.Tensor,
    opts: RowOptions,
    *,
    out_token: torch.Tensor | None = None,
    out_conf: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate token `(R,)` int64 and confidence `(R,)` float32 per row of logits `(R, V)`.

    See `torch_kernels.row_pass_torch` for the exact semantics.
    """
    check_row_pass(logits, opts)
    check_out("out_token", out_token, torch.int64, logits.shape[0], logits.device)
    check_out("out_conf", out_conf, torch.float32, logits.shape[0], logits.device)
    if backend_for(logits.device) == "triton":
        from .triton_row import row_pass_triton

        return row_pass_triton(logits, opts, out_token=out_token, out_conf=out_conf)
    return row_pass_torch(logits, opts, out_token=out_token, out_conf=out_conf)


def select_commit(
    confidence: torch.Tensor,
    tokens: torch.Tensor,
    plan: CommitPlan,
    out_committed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Committed mask `(R,)` bool; commits the chosen rows' tokens into `canvas` in place.

    Per sequence: the `threshold` rule, else the `factor` rule, else the top `k`; then at most
    `max_commits`; always at least one row of a sequence that has rows. See
    `torch_kernels.select_commit_torch` for the exact semantics.
    """
    check_select(confidence, tokens, plan)
    check_out("out_committed", out_committed, torch.bool, confidence.shape[0], confidence.device)
    if backend_for(confidence.device) == "triton":
        from .triton_select import select_commit_triton

        return select_commit_triton(confidence, tokens, plan, out_committed)
    return select_commit_torch(confidence, tokens, plan, out_committed)
