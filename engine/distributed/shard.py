"""Megatron split of a loaded `BidirectionalLM` across the ranks of a process group.

Per layer: the fused QKV projection is column-parallel by heads (each rank keeps its query heads
and the KV heads they read; KV heads are replicated when there are more ranks than KV heads),
o_proj is row-parallel (its partial sums are all-reduced), gate/up is column-parallel by FFN
columns and down_proj row-parallel (all-reduced). The embedding and the LM head are split by
vocabulary: the embedding all-reduces (each rank embeds only its own ids), the LM head gives
each rank the logits of its vocabulary slice and nothing gathers them for the denoising rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..model_config import ModelConfig
from ..models.bidir_llama import BidirectionalLM, Block


class TensorParallelError(ValueError):
    """The model cannot be split this way (checked before anything loads)."""


@dataclass(frozen=True)
class Shard:
    """What rank `rank` of `world` holds."""

    rank: int
    world: int
    q_heads: tuple[int, int]  # [first, end) query heads
    kv_heads: tuple[int, int]  # [first, end) KV heads (one replicated head when world > KV heads)
    ffn: tuple[int, int]  # [first, end) FFN columns
    vocab: tuple[int, int]  # [first, end) vocabulary ids


def check_split(cfg: ModelConfig, world: int) -> None:
    """TensorParallelError unless `world` ranks split the heads, KV heads, FFN and vocabulary evenly."""
    if world < 1:
        raise TensorParallelError(f"--tensor-parallel-size must be >= 1, got {world}")
    problems = []
    if cfg.num_heads % world:
        problems.append(f"attention heads ({cfg.num_heads})")
    kv = cfg.num_kv_heads
    if kv % world and world % kv:
        problems.append(f"KV heads ({kv}), or be a multiple of them to replicate them")
    if cfg.intermediate_size % world:
        problems.append(f"FFN columns ({cfg.intermediate_size})")
    if cfg.vocab_size % world:
        problems.append(f"vocabulary size ({cfg.vocab_size})")
    if problems:
        raise TensorParallelError(f"--tensor-parallel-size {world} must divide the model's "
                                  + "; ".join(problems))


def shard_of(cfg: ModelConfig, rank: int, world: int) -> Shard:
    check_split(cfg, world)
    hq = cfg.num_heads // world
    kv = cfg.num_kv_heads
    if kv % world == 0:
        kv_first, kv_n = rank * (kv // world), kv // world
    else:  # more ranks than KV heads: ranks world/kv apart share one KV head
        kv_first, kv_n = rank // (world // kv), 1
    f, v = cfg.intermediate_size // world, cfg.vocab_size // world
    return Shard(rank, world, (rank * hq, (rank + 1) * hq), (kv_first, kv_first + kv_n),
                 (rank * f, (rank + 1) * f), (rank * v, (rank + 1) * v))


def local_config(cfg: ModelConfig, shard: Shard) -> ModelConfig:
    """The config the rank's KV cache and attention see: its own heads; the vocabulary stays whole
    (requests are checked against it)."""
    from dataclasses import replace

    return replace(cfg, num_heads=shard.q_heads[1] - shard.q_heads[0],
                   num_kv_heads=shard.kv_heads[1] - shard.kv_heads[0])


def checkpoint_slices(cfg: ModelConfig, shard: Shard):
    """The loader's selector (`models.loader.Selector`) for this shard: which slice of each
    checkpoint tensor the rank's parameters hold, so a rank reads about 1/N of the checkpoint."""
    d = cfg.head_dim
    q = slice(shard.q_heads[0] * d, shard.q_heads[1] * d)
    kv = slice(shard.kv_heads[0] * d, shard.kv_heads[1] * d)
    f, v = slice(*shard.ffn), slice(*shard.vocab)
    every = slice(None)

    def n(s: slice) -> int:
        return s.stop - s.start

    def select(pname: str, parts: list[tuple[str, int]]) -> list[tuple[str, tuple, int]]:
        names = [c for c, _ in parts]
        module = pname.split(".")[-2]
        if module == "qkv_proj":
            return [(names[0], (q,), n(q)), (names[1], (kv,), n(kv)), (names[2], (kv,), n(kv))]
        if module == "gate_up_proj":
            return [(names[0], (f,), n(f)), (names[1], (f,), n(f))]
        if module == "o_proj":
            return [(names[0], (every, q), cfg.hidden_size)]
        if module == "down_proj":
            return [(names[0], (every, f), cfg.hidden_size)]
        if module in ("embed", "lm_head"):
            return [(names[0], (v,), n(v))]
        return [(names[0], (every,), cfg.hidden_size)]  # norms: whole

    return select


def _rows(t: torch.Tensor, first: int, end: int, unit: int) -> torch.Tensor:
    return t[first * unit : end * unit]


class VocabParallelEmbedding(nn.Module):
    """Rows `[start, start + n)` of the embedding; ids outside embed to zero, and the all-reduce
    adds the rank that owns each id."""

    def __init__(self, weight: torch.Tensor, start: int, group):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.start, self.group = start, group

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        local = ids - self.start
        outside = (local < 0) | (local >= self.weight.shape[0])
        out = F.embedding(local.clamp(0, self.weight.shape[0] - 1), self.weight)
        out = out.masked_fill(outside[:, None], 0.0)
        dist.all_reduce(out, group=self.group)
        return out


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    lin.weight = nn.Parameter(weight.contiguous(), requires_grad=False)
    if bias is not None:
        lin.bias = nn.Parameter(bias.contiguous(), requires_grad=False)
    return lin


def _shard_block(block: Block, cfg: ModelConfig, shard: Shard, group) -> None:
    d = cfg.head_dim
    q_w, k_w, v_w = block.qkv_proj.weight.split(block.qkv_split)
    parts_w = [_rows(q_w, *shard.q_heads, d), _rows(k_w, *shard.kv_heads, d), _rows(v_w, *shard.kv_heads, d)]
    bias = None
    if block.qkv_proj.bias is not None:
        q_b, k_b, v_b = block.qkv_proj.bias.split(block.qkv_split)
        bias = torch.cat([_rows(q_b, *shard.q_heads, d), _rows(k_b, *shard.kv_heads, d),
                          _rows(v_b, *shard.kv_heads, d)])
    block.qkv_proj = _linear(torch.cat(parts_w), bias)
    block.num_heads = shard.q_heads[1] - shard.q_heads[0]
    block.num_kv_heads = shard.kv_heads[1] - shard.kv_heads[0]
    block.qkv_split = [block.num_heads * d, block.num_kv_heads * d, block.num_kv_heads * d]
    block.o_proj = _linear(block.o_proj.weight[:, shard.q_heads[0] * d : shard.q_heads[1] * d], None)
    gate, up = block.gate_up_proj.weight.split(block.ffn)
    f0, f1 = shard.ffn
    block.gate_up_proj = _linear(torch.cat([gate[f0:f1], up[f0:f1]]), None)
    block.ffn = f1 - f0
    block.down_proj = _linear(block.down_proj.weight[:, f0:f1], None)

    def reduce(t: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(t, group=group)
        return t

    block.reduce = reduce


class _GatheredLogits:
    """`full_logits` of a vocabulary-parallel model: every rank's slice, concatenated."""

    def __init__(self, model: BidirectionalLM, group, world: int):
        self.model, self.group, self.world = model, group, world

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        local = self.model.logits(hidden).contiguous()
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local, group=self.group)
        return torch.cat(parts, dim=1)


@torch.no_grad()
def shard_model(model: BidirectionalLM, rank: int, world: int, group=None) -> Shard:
    """Cut the full model down, in place, to rank `rank`'s part; returns what it kept."""
    cfg = model.cfg
    shard = shard_of(cfg, rank, world)
    for block in model.layers:
        _shard_block(block, cfg, shard, group)
    v0, v1 = shard.vocab
    if model.lm_head is not None:
        model.lm_head = _linear(model.lm_head.weight[v0:v1], None)
    # Tied models read the LM head from the embedding: slicing it slices both.
    model.embed = VocabParallelEmbedding(model.embed.weight[v0:v1].contiguous(), v0, group)
    model.full_logits = _GatheredLogits(model, group, world)
    model.tp_shard = shard
    return shard
