"""Argument checks shared by the kernel launchers: dtype, shape, device, stride, with messages
that name the argument, so a caller's mistake fails before a kernel reads out of bounds."""

from __future__ import annotations

import torch

from .row_options import CommitPlan, RowOptions

LOGIT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


class KernelArgError(ValueError):
    """A kernel argument has the wrong dtype, shape, device or layout."""


def check_vector(
    name: str, t: torch.Tensor, dtype: torch.dtype, length: int | None, device: torch.device
) -> None:
    """`t` must be a contiguous 1-D tensor of `dtype` on `device`, of `length` when given."""
    if not isinstance(t, torch.Tensor):
        raise KernelArgError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise KernelArgError(f"{name} must be {dtype}, got {t.dtype}")
    if t.dim() != 1:
        raise KernelArgError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if length is not None and t.shape[0] != length:
        raise KernelArgError(f"{name} must have {length} entries, got {t.shape[0]}")
    if t.device != device:
        raise KernelArgError(f"{name} is on {t.device}, expected {device} (the device of the logits)")
    if t.numel() > 1 and t.stride(0) != 1:
        raise KernelArgError(f"{name} must be contiguous (stride 1), got stride {t.stride(0)}")


def check_row_pass(logits: torch.Tensor, opts) -> None:
    """Checks the row pass arguments: the logits and the `RowOptions` tensors."""
    if not isinstance(opts, RowOptions):
        raise KernelArgError(f"row options must be a RowOptions, got {type(opts).__name__}")
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise KernelArgError(f"logits must be a 2-D (rows, vocab) tensor, got {shape}")
    if logits.dtype not in LOGIT_DTYPES:
        raise KernelArgError(f"logits must be bfloat16, float16 or float32, got {logits.dtype}")
    n_rows, vocab = logits.shape
    if vocab == 0:
        raise KernelArgError("logits has an empty vocabulary dimension")
    if vocab > 1 and logits.stride(1) != 1:
        raise KernelArgError(
            f"logits must have unit stride along the vocabulary (strides {tuple(logits.stride())}); "
            "rows may be strided, call .contiguous() otherwise"
        )
    dev = logits.device
    per_row = {
        "temperature": torch.float32,
        "seed": torch.int64,
        "pos": torch.int64,
        "step": torch.int64,
        "bias_token": torch.int64,
        "bias_value": torch.float32,
        "suppress_row": torch.bool,
        "conf_block_row": torch.bool,
        "random_conf": torch.bool,
    }
    for name, dtype in per_row.items():
        check_vector(name, getattr(opts, name), dtype, n_rows, dev)
    check_vector("suppress_ids", opts.suppress_ids, torch.int64, None, dev)
    check_vector("conf_block_ids", opts.conf_block_ids, torch.int64, None, dev)


def check_out(
    name: str, out: torch.Tensor | None, dtype: torch.dtype, length: int, dev: torch.device
) -> None:
    if out is not None:
        check_vector(name, out, dtype, length, dev)


def check_select(
    confidence: torch.Tensor, tokens: torch.Tensor, plan: CommitPlan) -> None:
    """Checks the selection pass arguments: confidences and candidates per row, and the plan."""
    if not isinstance(plan, CommitPlan):
        raise KernelArgError(f"the commit plan must be a CommitPlan, got {type(plan).__name__}")
    offsets, k, threshold, canvas, canvas_index = (plan.offsets, plan.k, plan.threshold, plan.canvas,
                                                   plan.canvas_index)
    factor, max_commits = plan.factor, plan.max_commits
    if not isinstance(confidence, torch.Tensor):
        raise KernelArgError(f"confidence must be a torch.Tensor, got {type(confidence).__name__}")
    dev = confidence.device
    check_vector("confidence", confidence, torch.float32, None, dev)
    n_rows = confidence.shape[0]
    check_vector("offsets", offsets, torch.int64, None, dev)
    if offsets.shape[0] < 1:
        raise KernelArgError("offsets must have B+1 >= 1 entries (offsets[0] = 0, offsets[B] = rows)")
    n_seqs = offsets.shape[0] - 1
    check_vector("k", k, torch.int64, n_seqs, dev)
    check_vector("threshold", threshold, torch.float32, n_seqs, dev)
    check_vector("tokens", tokens, torch.int64, n_rows, dev)
    check_vector("canvas", canvas, torch.int64, None, dev)
    check_vector("canvas_index", canvas_index, torch.int64, n_rows, dev)
    if factor is not None:
        check_vector("factor", factor, torch.float32, n_seqs, dev)
    if max_commits is not None:
        check_vector("max_commits", max_commits, torch.int64, n_seqs, dev)
