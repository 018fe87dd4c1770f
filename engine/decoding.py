"""Decoding rules the engine and the oracle sampler share: how many steps a block gets and the
growing </think> bias. Production code imports them from here; the oracle (engine/oracle.py)
imports them too, so both decode by the same rules and the oracle stays a test of the engine."""

from __future__ import annotations

import math

from .model_config import ModelConfig
from .params import DiffusionParams


def block_steps(params: DiffusionParams, n: int) -> int:
    """Steps for a block of n tokens: a full block gets steps_per_block, a short one proportionally fewer."""
    return max(1, math.ceil(params.steps_per_block * n / params.block_length))


def think_token_ids(cfg: ModelConfig, tokenizer) -> list[int]:
    if tokenizer is None:
        return []
    return list(tokenizer.encode(cfg.think_end_text, add_special_tokens=False))


def think_bias(
    answer: list[int], first_masked: int, think_ids: list[int], params: DiffusionParams
) -> tuple[int, float] | None:
    """(token, bias) for the growing </think> boost at answer index `first_masked`, or None.

    `answer` is the answer canvas (masks included). Everything before `first_masked`
    is committed, since it is the first masked position. The boosted token is the
    next one of the </think> sequence given how much of it the answer already ends with.
    """
    if params.think_boost <= 0 or not think_ids or _contains(answer, think_ids):
        return None
    before = answer[:first_masked]
    j = max(k for k in range(len(think_ids)) if k == 0 or before[-k:] == think_ids[:k])
    progress = (first_masked + 1) / params.max_tokens
    return think_ids[j], params.think_boost * progress**params.think_power


def _contains(seq: list[int], sub: list[int]) -> bool:
    n = len(sub)
    return any(seq[i : i + n] == sub for i in range(len(seq) - n + 1))
