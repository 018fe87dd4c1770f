"""Checkpoint tensor names per family <-> parameter names of `BidirectionalLM`.

The model's own names are `embed`, `layers.{i}.{attn_norm,qkv_proj,...}`, `norm`
and `lm_head`; each family's table says what the published checkpoint calls them.
Checkpoints store q/k/v and gate/up apart while the model fuses each group into one
parameter (`FUSED`): loading concatenates the parts (`checkpoint_parts`), export
splits them again (`checkpoint_tensors`), so exported files keep the family's format.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..model_config import ModelConfig

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

# Fused model module -> the checkpoint modules it concatenates along dim 0, in this order.
FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}

# Buffers some exporters write that carry no weights we need.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def fused_sizes(cfg: ModelConfig, module: str) -> list[int]:
    """Rows of each part of a fused module, in `FUSED` order."""
    if module == "qkv_proj":
        return [cfg.num_heads * cfg.head_dim] + [cfg.num_kv_heads * cfg.head_dim] * 2
    if module == "gate_up_proj":
        return [cfg.intermediate_size] * 2
    raise KeyError(module)


def _unfused(cfg: ModelConfig, name: str) -> list[tuple[str, int]] | None:
    """`layers.{i}.qkv_proj.weight` -> [(`layers.{i}.q_proj.weight`, rows), ...]; None if not fused."""
    parts = name.split(".")
    if len(parts) != 4 or parts[2] not in FUSED:
        return None
    _, idx, module, kind = parts
    sizes = fused_sizes(cfg, module)
    return [(f"layers.{idx}.{p}.{kind}", n) for p, n in zip(FUSED[module], sizes, strict=True)]


def checkpoint_names(cfg: ModelConfig, param_names: list[str]) -> dict[str, str]:
    """Map unfused parameter names (`layers.{i}.q_proj.weight`, ...) to checkpoint tensor names.

    A fused name has no single checkpoint tensor: use `checkpoint_parts` (load) or
    `checkpoint_tensors` (export) for the model's own parameters.
    """
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
        if module in FUSED:
            raise ValueError(f"{name!r} is a fused parameter with no single checkpoint tensor; "
                             "export with weight_maps.checkpoint_tensors")
        out[name] = f"{layer_prefix}.{idx}.{layer_map[module]}.{kind}"
    return out


def checkpoint_parts(cfg: ModelConfig, param_names: list[str]) -> dict[str, list[tuple[str, int]]]:
    """Every model parameter -> its checkpoint tensors `(name, rows)`, concatenated along dim 0."""
    out: dict[str, list[tuple[str, int]]] = {}
    for name in param_names:
        parts = _unfused(cfg, name)
        if parts is None:
            out[name] = [(checkpoint_names(cfg, [name])[name], -1)]  # -1: the whole parameter
        else:
            names = checkpoint_names(cfg, [p for p, _ in parts])
            out[name] = [(names[p], rows) for p, rows in parts]
    return out


def checkpoint_tensors(cfg: ModelConfig, params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Model parameters (e.g. `dict(model.named_parameters())`) under the checkpoint's tensor names,
    fused projections split back into q/k/v and gate/up: what an exporter writes. The values are
    views of the parameters; detach/cast/clone them before saving."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in params.items():
        parts = checkpoint_parts(cfg, [name])[name]
        if len(parts) == 1 and parts[0][1] == -1:
            out[parts[0][0]] = tensor
            continue
        for (cname, _), piece in zip(parts, tensor.split([rows for _, rows in parts], dim=0), strict=True):
            out[cname] = piece
    return out


def optional_names(cfg: ModelConfig) -> set[str]:
    """Checkpoint tensors that may be present or absent without error."""
    if not cfg.tie_embeddings:
        return set()
    # Tied checkpoints sometimes also store the (identical) LM head.
    return {"model.transformer.ff_out.weight" if cfg.family == "llada" else "lm_head.weight"}
