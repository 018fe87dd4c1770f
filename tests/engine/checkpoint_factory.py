"""Write tiny random checkpoints in each family's real on-disk format (config names, tensor names)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN, VOCAB = 32, 2, 4, 2, 48, 97


def family_config(family: str) -> dict:
    if family == "llada":
        return {
            "model_type": "llada", "architectures": ["LLaDAModelLM"], "d_model": HIDDEN,
            "n_layers": LAYERS, "n_heads": HEADS, "n_kv_heads": HEADS, "mlp_hidden_size": FFN,
            "embedding_size": VOCAB, "vocab_size": VOCAB, "weight_tying": False, "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0, "mask_token_id": 96, "max_sequence_length": 256,
        }
    base = {
        "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "intermediate_size": FFN, "vocab_size": VOCAB,
        "rms_norm_eps": 1e-6, "max_position_embeddings": 256,
    }
    if family == "illada":
        return {**base, "model_type": "illada", "architectures": ["ILLaDAForCausalLM"],
                "tie_word_embeddings": True, "rope_theta": 10000.0}
    return {**base, "model_type": "Dream", "architectures": ["DreamModel"], "tie_word_embeddings": False,
            "rope_theta": 1000000.0, "mask_token_id": 95, "eos_token_id": 94}


def family_tensors(family: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the checkpoint's own names (scaled so logits are not degenerate)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    def norm() -> torch.Tensor:
        return 1.0 + r(HIDDEN, scale=0.1)

    hd = HIDDEN // HEADS
    kv = (HEADS if family == "llada" else KV_HEADS) * hd
    t: dict[str, torch.Tensor] = {}
    if family == "llada":
        pre = "model.transformer"
        t[f"{pre}.wte.weight"] = r(VOCAB, HIDDEN, scale=1.0)
        t[f"{pre}.ln_f.weight"] = norm()
        t[f"{pre}.ff_out.weight"] = r(VOCAB, HIDDEN)
        for i in range(LAYERS):
            b = f"{pre}.blocks.{i}"
            t[f"{b}.attn_norm.weight"], t[f"{b}.ff_norm.weight"] = norm(), norm()
            t[f"{b}.q_proj.weight"], t[f"{b}.k_proj.weight"] = r(HIDDEN, HIDDEN), r(kv, HIDDEN)
            t[f"{b}.v_proj.weight"], t[f"{b}.attn_out.weight"] = r(kv, HIDDEN), r(HIDDEN, HIDDEN)
            t[f"{b}.ff_proj.weight"], t[f"{b}.up_proj.weight"] = r(FFN, HIDDEN), r(FFN, HIDDEN)
            t[f"{b}.ff_out.weight"] = r(HIDDEN, FFN)
        return t
    t["model.embed_tokens.weight"] = r(VOCAB, HIDDEN, scale=1.0)
    t["model.norm.weight"] = norm()
    if family == "dream":
        t["lm_head.weight"] = r(VOCAB, HIDDEN)
    for i in range(LAYERS):
        b = f"model.layers.{i}"
        t[f"{b}.input_layernorm.weight"], t[f"{b}.post_attention_layernorm.weight"] = norm(), norm()
        t[f"{b}.self_attn.q_proj.weight"] = r(HIDDEN, HIDDEN)
        t[f"{b}.self_attn.k_proj.weight"] = r(kv, HIDDEN)
        t[f"{b}.self_attn.v_proj.weight"] = r(kv, HIDDEN)
        t[f"{b}.self_attn.o_proj.weight"] = r(HIDDEN, HIDDEN)
        if family == "dream":
            for p, n in (("q", HIDDEN), ("k", kv), ("v", kv)):
                t[f"{b}.self_attn.{p}_proj.bias"] = r(n)
        t[f"{b}.mlp.gate_proj.weight"], t[f"{b}.mlp.up_proj.weight"] = r(FFN, HIDDEN), r(FFN, HIDDEN)
        t[f"{b}.mlp.down_proj.weight"] = r(HIDDEN, FFN)
    return t


def write_checkpoint(folder: Path, family: str, shards: int = 1, tensors: dict | None = None,
                     config: dict | None = None) -> dict[str, torch.Tensor]:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = family_tensors(family) if tensors is None else tensors
    (folder / "config.json").write_text(json.dumps(config or family_config(family)))
    if shards == 1:
        save_file(tensors, str(folder / "model.safetensors"))
        return tensors
    names = sorted(tensors)
    weight_map = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n].contiguous() for n in names[s::shards]}
        save_file(part, str(folder / fname))
        weight_map.update(dict.fromkeys(part, fname))
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return tensors
