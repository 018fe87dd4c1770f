"""The masked diffusion objective (LLaDA / iLLaDA Eq. 1) on packed token rows.

For a clean row x of T tokens: draw t ~ U(t_min, 1], replace each token by the
mask token with probability t, and score the model's prediction of every masked
token with cross-entropy weighted by 1/t. The sum is divided by the number of
tokens in the batch (not the number of masks), as in LLaDA's pretraining loss,
which makes it an upper bound on the per-token negative log-likelihood.

Prompt-visible rows: `visible` marks tokens that are never masked. The trainer
keeps the prompt visible in a share of the rows (LLaDA's SFT masking; every row for the
shipped model) beside rows masked over the whole sequence (iLLaDA's recipe): on a few
CPU-hours, whole-sequence masking spends most of its signal predicting the random operands
of a prompt, which no model can learn, and learns the answer many times slower.

Random-length training: a share of the rows is cut at a random point into two
segments that cannot attend to each other and whose positions restart at 0, so
the model also sees sequences shorter than T (iLLaDA splits 8192-token rows in two).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..engine.models.bidir_llama import BidirectionalLM


@dataclass(frozen=True)
class RowLayout:
    """Which segment each token belongs to, and its RoPE position inside that segment."""

    segment_ids: torch.Tensor  # (B, T) long, 0 or 1
    positions: torch.Tensor  # (B, T) long


def plain_layout(batch: int, length: int, device: torch.device | str = "cpu") -> RowLayout:
    pos = torch.arange(length, device=device).expand(batch, length)
    return RowLayout(torch.zeros(batch, length, dtype=torch.long, device=device), pos)


def random_split_layout(batch: int, length: int, split_prob: float, gen: torch.Generator) -> RowLayout:
    """Cut each row with probability `split_prob` at a uniform point in [1, T-1]."""
    split = torch.rand(batch, generator=gen) < split_prob  # (B,)
    cut = torch.randint(1, length, (batch,), generator=gen)  # (B,)
    cut = torch.where(split, cut, torch.full_like(cut, length))  # unsplit rows: cut past the end
    idx = torch.arange(length).expand(batch, length)
    second = idx >= cut[:, None]  # (B, T)
    positions = torch.where(second, idx - cut[:, None], idx)
    return RowLayout(second.long(), positions)


def mask_tokens(
    tokens: torch.Tensor, mask_id: int, gen: torch.Generator, t_min: float = 1e-3,
    visible: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward process: (noisy (B, T), masked (B, T) bool, t (B,)); one t per row.

    `visible` (B, T) bool: tokens kept as they are whatever t is.
    """
    b, n = tokens.shape
    t = t_min + (1.0 - t_min) * torch.rand(b, generator=gen)  # (B,) in (t_min, 1]
    masked = torch.rand(b, n, generator=gen) < t[:, None]
    if visible is not None:
        masked &= ~visible
    noisy = torch.where(masked, torch.full_like(tokens, mask_id), tokens)
    return noisy, masked, t


def masked_logits(
    model: BidirectionalLM, noisy: torch.Tensor, layout: RowLayout, masked: torch.Tensor
) -> torch.Tensor:
    """Logits `(M, V)` at the M masked positions only (the LM head is the costly part at small sizes)."""
    b, n = noisy.shape
    same_segment = layout.segment_ids[:, None, :, None] == layout.segment_ids[:, None, None, :]  # (B,1,T,T)

    def attend(_: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q4 = q.view(b, n, *q.shape[1:]).transpose(1, 2)  # (B, H, T, D)
        k4 = k.view(b, n, *k.shape[1:]).transpose(1, 2)  # (B, KV, T, D)
        v4 = v.view(b, n, *v.shape[1:]).transpose(1, 2)
        out = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=same_segment, enable_gqa=True)
        return out.transpose(1, 2).reshape(b * n, *q.shape[1:])

    hidden = model.forward_flat(noisy.reshape(-1), layout.positions.reshape(-1), attend)  # (B*T, d)
    return model.logits(hidden[masked.reshape(-1)])


def diffusion_loss(
    model: BidirectionalLM,
    tokens: torch.Tensor,
    layout: RowLayout,
    mask_id: int,
    gen: torch.Generator,
    t_min: float = 1e-3,
    visible: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 1 estimate for a batch of clean rows `(B, T)`; returns (loss, stats for the log)."""
    noisy, masked, t = mask_tokens(tokens, mask_id, gen, t_min, visible)
    if not masked.any():  # all rows drew tiny t: no term, but keep the graph valid
        masked[:, 0] = True
    logits = masked_logits(model, noisy, layout, masked)  # (M, V)
    targets = tokens[masked]  # (M,)
    ce = F.cross_entropy(logits.float(), targets, reduction="none")  # (M,)
    weight = (1.0 / t)[:, None].expand_as(masked)[masked]  # (M,)
    loss = (ce * weight).sum() / tokens.numel()
    with torch.no_grad():
        acc = (logits.argmax(-1) == targets).float().mean().item()
    return loss, {"masked_ce": ce.mean().item(), "masked_acc": acc, "mask_frac": masked.float().mean().item()}
