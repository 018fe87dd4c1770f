"""One bidirectional Llama-family Transformer for LLaDA, iLLaDA and Dream.

The model works on a flat list of tokens `(N,)` with explicit positions, and
delegates attention to a callable. That one core serves both callers:
- the dense path (`forward`): a `(B, T)` batch with a key padding mask, used by
  the reference samplers and tests;
- the engine's varlen path (`forward_flat`): the query tokens of many sequences
  in one pass, with an attention backend that reads and writes the paged KV cache.

There is no causal mask anywhere: every token attends to every visible key.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..model_config import ModelConfig

# attend(layer_idx, q (N, H, D), k (N, KV, D), v (N, KV, D)) -> (N, H, D)
AttendFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 as the reference implementations do, then cast back.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class LayerNormNoBias(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), x.shape[-1:], eps=self.eps).to(x.dtype) * self.weight


def make_norm(cfg: ModelConfig) -> nn.Module:
    return RMSNorm(cfg.hidden_size, cfg.norm_eps) if cfg.norm_type == "rms" else LayerNormNoBias(
        cfg.hidden_size, cfg.norm_eps
    )


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate-half RoPE tables for the given positions: two `(N, 1, D)` tensors."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    )
    angles = positions.float()[:, None] * inv_freq[None, :]  # (N, D/2)
    emb = torch.cat([angles, angles], dim=-1)[:, None, :]  # (N, 1, D)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Block(nn.Module):
    """One layer with fused projections: q/k/v in one GEMM (`qkv_proj`, rows q then k then v) and
    the SwiGLU gate/up in one (`gate_up_proj`, rows gate then up). Checkpoints store them apart;
    `weight_maps` concatenates them at load time and splits them again for export."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h, d = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, d
        self.qkv_split = [cfg.num_heads * d, cfg.num_kv_heads * d, cfg.num_kv_heads * d]
        self.ffn = cfg.intermediate_size
        self.attn_norm = make_norm(cfg)
        self.qkv_proj = nn.Linear(h, sum(self.qkv_split), bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.num_heads * d, h, bias=False)
        self.mlp_norm = make_norm(cfg)
        self.gate_up_proj = nn.Linear(h, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, h, bias=False)
        # Tensor parallelism (engine/distributed): this rank holds a slice of the heads and FFN
        # columns, so o_proj and down_proj give partial sums that `reduce` adds across ranks.
        self.reduce: Callable[[torch.Tensor], torch.Tensor] | None = None

    def _reduced(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.reduce is None else self.reduce(t)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layer_idx: int, attend: AttendFn,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`keep`: only these rows of the output are wanted (all rows' K/V are still computed)."""
        n = x.shape[0]
        hn = self.attn_norm(x)  # (N, hidden)
        q, k, v = self.qkv_proj(hn).split(self.qkv_split, dim=-1)
        q = q.view(n, self.num_heads, self.head_dim)
        k = k.view(n, self.num_kv_heads, self.head_dim)
        # v is a strided view of the fused output; attention kernels want dense rows.
        v = v.contiguous().view(n, self.num_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        attn = attend(layer_idx, q, k, v).reshape(n, -1)  # (N, H * D)
        if keep is not None:
            x, attn = x[keep], attn[keep]
        x = x + self._reduced(self.o_proj(attn))
        gate, up = self.gate_up_proj(self.mlp_norm(x)).split(self.ffn, dim=-1)
        return x + self._reduced(self.down_proj(F.silu(gate) * up))


class BidirectionalLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = make_norm(cfg)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(
            cfg.hidden_size, cfg.vocab_size, bias=False
        )

    def lm_head_weight(self) -> torch.Tensor:
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """`(R, V)`; under tensor parallelism this rank's vocabulary slice `(R, V / N)`."""
        return F.linear(self.norm(hidden), self.lm_head_weight())

    def full_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """`(R, V)` on every rank (tensor parallelism gathers the slices); for the few rows that
        need every logit (scoring), never for the denoising rows."""
        return self.logits(hidden)

    def forward_flat(
        self, input_ids: torch.Tensor, positions: torch.Tensor, attend: AttendFn,
        out_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states before the final norm, `(N, hidden)`, for flat tokens `(N,)`; with
        `out_rows`, only those rows `(len(out_rows), hidden)`, in that order.

        Rows nobody reads (a prompt being cached, committed tokens) still need their K/V in every
        layer, but not the last layer's attention projection and MLP: `out_rows` skips those.
        """
        x = self.embed(input_ids)
        cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, i, attend, out_rows if i == last else None)
        return x

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits `(B, T, V)`; logit at i predicts token i for every family.

        `attention_mask` `(B, T)` marks real tokens (1) and padding (0); padding is
        never attended to. Without `position_ids`, positions count real tokens only,
        so a left-padded prompt gets the same RoPE positions as an unpadded one.
        """
        if getattr(self, "tp_shard", None) is not None:
            # The ranks meet in collectives inside every layer: only the engine's steps, which
            # every rank runs, can drive a split model (engine/distributed).
            raise RuntimeError("a tensor-parallel model runs engine steps only, not the dense forward "
                               "(the reference sampler needs --tensor-parallel-size 1)")
        b, t = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        attention_mask = attention_mask.bool()
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        key_mask = attention_mask[:, None, None, :]  # (B, 1, 1, T)

        def attend(_: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            q4 = q.view(b, t, *q.shape[1:]).transpose(1, 2)  # (B, H, T, D)
            k4 = k.view(b, t, *k.shape[1:]).transpose(1, 2)  # (B, KV, T, D)
            v4 = v.view(b, t, *v.shape[1:]).transpose(1, 2)
            rep = q4.shape[1] // k4.shape[1]
            if rep > 1:
                k4, v4 = k4.repeat_interleave(rep, 1), v4.repeat_interleave(rep, 1)
            out = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=key_mask)
            return out.transpose(1, 2).reshape(b * t, *q.shape[1:])

        hidden = self.forward_flat(input_ids.reshape(-1), position_ids.reshape(-1), attend)
        logits = self.logits(hidden).view(b, t, -1)
        if self.cfg.shift_logits:
            # Dream predicts token i at position i-1; position 0 keeps its own row.
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits
