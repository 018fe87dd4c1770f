"""Checkpoint tensor names per family -> parameter names of `BidirectionalLM`.

The model's own names are `embed`, `layers.{i}.{attn_norm,q_proj,...}`, `norm`
and `lm_head`; each family's table says what the published checkpoint calls them.
"""

from __future__ import annotations

from ..config import ModelConfig

# LLaDA (OLMo naming). `ff_proj` is the SwiGLU gate, `ff_out` inside a block is
# the down projection, and the top-level `ff_out` is the LM head.
_LLADA_LAYER = {
    "attn_norm": "attn_norm",
    "q_proj": "q_proj",
    "k_proj": "k_proj",
    "v_proj": "v_proj",
    "o_proj": "attn_out",
    "mlp_norm": "ff_norm",
    "gate_proj": "ff_proj",
    "up_proj": "up_proj",
    "down_proj": "ff_out",
}

# iLLaDA and Dream (Llama / Qwen2 naming).
_LLAMA_LAYER = {
    "attn_norm": "input_layernorm",
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "o_proj": "self_attn.o_proj",
    "mlp_norm": "post_attention_layernorm",
    "gate_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "down_proj": "mlp.down_proj",
}

# Buffers some exporters write that carry no weights we need.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def checkpoint_names(cfg: ModelConfig, param_names: list[str]) -> dict[str, str]:
    """Map every model parameter name to the tensor name in the checkpoint."""
    if cfg.family == "llada":
        top = {
            "embed.weight": "model.transformer.wte.weight",
            "norm.weight": "model.transformer.ln_f.weight",
            "lm_head.weight": "model.transformer.ff_out.weight",
        }
        layer_prefix, layer_map = "model.transformer.blocks", _LLADA_LAYER
    else:
        top = {
            "embed.weight": "model.embed_tokens.weight",
            "norm.weight": "model.norm.weight",
            "lm_head.weight": "lm_head.weight",
        }
        layer_prefix, layer_map = "model.layers", _LLAMA_LAYER
    out: dict[str, str] = {}
    for name in param_names:
        if name in top:
            out[name] = top[name]
            continue
        # layers.{i}.{module}.{weight|bias}
        _, idx, module, kind = name.split(".")
        out[name] = f"{layer_prefix}.{idx}.{layer_map[module]}.{kind}"
    return out


def optional_names(cfg: ModelConfig) -> set[str]:
    """Checkpoint tensors that may be present or absent without error."""
    if not cfg.tie_embeddings:
        return set()
    # Tied checkpoints sometimes also store the (identical) LM head.
    return {"model.transformer.ff_out.weight" if cfg.family == "llada" else "lm_head.weight"}
