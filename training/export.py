"""Build the built-in model's config and write it in the iLLaDA checkpoint format.

config.json uses iLLaDA's Llama field names and no `mask_token_id` (the loader
gives the family id 5, like the real checkpoint). Weight names come from
`weight_maps.checkpoint_names`, so export and loading can never disagree.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..engine.models.bidir_llama import BidirectionalLM
from ..engine.models.weight_maps import checkpoint_tensors
from .tokenizer import BOS_ID, EOS_ID, PAD_ID

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int = 128
    num_layers: int = 6
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    vocab_size: int = 512
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5


def hf_config(shape: ModelShape) -> dict[str, Any]:
    return {
        "model_type": "illada",
        "architectures": ["ILLaDAForCausalLM"],
        "hidden_size": shape.hidden_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "num_key_value_heads": shape.num_kv_heads,
        "head_dim": shape.hidden_size // shape.num_heads,
        "intermediate_size": shape.intermediate_size,
        "hidden_act": "silu",
        "vocab_size": shape.vocab_size,
        "tie_word_embeddings": True,
        "attention_bias": False,
        "rms_norm_eps": shape.rms_norm_eps,
        "rope_theta": shape.rope_theta,
        "max_position_embeddings": shape.max_position_embeddings,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "torch_dtype": "bfloat16",
    }


def init_weights(model: BidirectionalLM, std: float = 0.1) -> None:
    """N(0, std), residual output projections scaled by 1/sqrt(2 * layers) (GPT-2 style).

    std 0.1 rather than GPT-2's 0.02: at width 256 the smaller init left even a trivial
    copy task (predict a row's repeated token from its unmasked copies) unlearned after
    300 steps, while 0.1 learned it in about 100. A masked position's input is the mask
    embedding, so everything it predicts must come through attention, which a tiny init
    starves of signal.
    """
    residual_std = std / (2 * model.cfg.num_layers) ** 0.5
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.fill_(1.0)  # norm weights
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                p.normal_(0.0, residual_std)
            else:
                p.normal_(0.0, std)


def save_checkpoint(
    model: BidirectionalLM, config: dict[str, Any], tokenizer_dir: Path, out_dir: Path,
    extra_files: dict[str, Any] | None = None,
) -> None:
    """Write config.json, model.safetensors (bfloat16, checkpoint names) and the tokenizer files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # Fused projections (qkv, gate/up) are split back into the checkpoint's separate tensors.
    named = checkpoint_tensors(model.cfg, dict(model.named_parameters()))
    tensors = {n: p.detach().to(torch.bfloat16).contiguous().clone() for n, p in named.items()}
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "model.safetensors").chmod(0o644)  # safetensors writes 0600; package data must be readable
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if tokenizer_dir.resolve() != out_dir.resolve():
        for fname in TOKENIZER_FILES:
            shutil.copyfile(tokenizer_dir / fname, out_dir / fname)
    for fname, obj in (extra_files or {}).items():
        (out_dir / fname).write_text(json.dumps(obj, indent=2) + "\n")


def count_parameters(model: BidirectionalLM) -> int:
    return sum(p.numel() for p in model.parameters())
