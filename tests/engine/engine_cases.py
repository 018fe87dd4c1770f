"""Tiny random models and a toy tokenizer for the engine tests (float32, CPU, fast)."""

from __future__ import annotations

import torch
from diffuserve.engine.engine_config import EngineConfig
from diffuserve.engine.llm_engine import LLMEngine
from diffuserve.engine.model_config import ModelConfig
from diffuserve.engine.models.bidir_llama import BidirectionalLM

VOCAB = 97
EOS = 3
MASK = 96


def tiny_config(family: str = "illada", max_len: int = 512) -> ModelConfig:
    if family == "llada":
        hf = dict(model_type="llada", d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden_size=128,
                  embedding_size=VOCAB, vocab_size=VOCAB, max_sequence_length=max_len, eos_token_id=EOS)
    else:
        hf = dict(model_type="Dream" if family == "dream" else "illada", hidden_size=64,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                  vocab_size=VOCAB, max_position_embeddings=max_len, eos_token_id=EOS)
    cfg = ModelConfig.from_hf(hf)
    return cfg.with_overrides(mask_token_id=MASK, stop_token_ids=[EOS, 4])


def tiny_model(family: str = "illada", seed: int = 0, std: float = 0.5
               ) -> tuple[BidirectionalLM, ModelConfig]:
    """Random weights with a large std, so logits are peaked (confidences are rarely near-tied)."""
    cfg = tiny_config(family)
    torch.manual_seed(seed)
    model = BidirectionalLM(cfg).eval().requires_grad_(False)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model, cfg


def prompts(lengths: tuple[int, ...], seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(6, 90, (n,), generator=g).tolist() for n in lengths]


def engine(model, cfg, tokenizer=None, **econf) -> LLMEngine:
    defaults = dict(kv_cache_memory=1 << 20, kv_page_size=4)
    defaults.update(econf)
    return LLMEngine(model, cfg, tokenizer, EngineConfig(**defaults))


class ToyTokenizer:
    """Token t <-> the word 'w<t>'; special ids (EOS, stop, mask) decode to nothing when skipped."""

    def __init__(self, think_ids: tuple[int, ...] = (7, 8)):
        self.think_ids = list(think_ids)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if text == "</think>":
            return list(self.think_ids)
        return [int(w[1:]) for w in text.split()]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        special = {EOS, 4, MASK}
        return "".join(f" w{t}" for t in ids if not (skip_special_tokens and t in special))
