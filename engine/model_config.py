"""Frozen model configuration, derived once from a checkpoint's config.json.

Model sizes are never copied by hand: `ModelConfig.from_hf` reads them from the
checkpoint's own field names (OLMo style for LLaDA, Llama/Qwen2 style for iLLaDA
and Dream) and fills in the per-family facts the configs leave out (docs/design.md, section 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


class CheckpointError(ValueError):
    """A checkpoint folder or config that diffuserve cannot load as asked."""


@dataclass(frozen=True)
class FamilyDefaults:
    mask_token_id: int | None
    stop_token_ids: tuple[int, ...]
    shift_logits: bool
    qkv_bias: bool
    max_length: int


# model_type (lower-cased) -> family name. Keys are what real config.json files say.
MODEL_TYPES = {"llada": "llada", "illada": "illada", "dream": "dream"}

FAMILY_DEFAULTS = {
    "llada": FamilyDefaults(126336, (126081, 126348), False, False, 4096),
    # iLLaDA's mask id is not in its config; stop ids come from the tokenizer.
    "illada": FamilyDefaults(5, (), False, False, 8192),
    "dream": FamilyDefaults(151666, (151643,), True, True, 32768),
}


@dataclass(frozen=True)
class ModelConfig:
    family: str  # "llada" | "illada" | "dream"
    vocab_size: int  # rows of the embedding / LM head (LLaDA: padded embedding_size)
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    norm_eps: float
    norm_type: str  # "rms" | "layer"
    rope_theta: float
    tie_embeddings: bool
    qkv_bias: bool
    shift_logits: bool  # Dream: logit at i-1 predicts token i
    max_length: int
    mask_token_id: int
    stop_token_ids: tuple[int, ...] = ()
    think_end_text: str = "</think>"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of K and V per token across all layers, per element byte (multiply by dtype size)."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim

    def with_overrides(
        self,
        mask_token_id: int | None = None,
        stop_token_ids: tuple[int, ...] | list[int] | None = None,
        think_end_text: str | None = None,
    ) -> ModelConfig:
        changes: dict[str, Any] = {}
        if mask_token_id is not None:
            if not 0 <= mask_token_id < self.vocab_size:
                raise CheckpointError(
                    f"mask_token_id={mask_token_id} is outside the vocabulary [0, {self.vocab_size})"
                )
            changes["mask_token_id"] = int(mask_token_id)
        if stop_token_ids is not None:
            changes["stop_token_ids"] = tuple(int(t) for t in stop_token_ids)
        if think_end_text is not None:
            changes["think_end_text"] = think_end_text
        return replace(self, **changes)

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> ModelConfig:
        model_type = str(cfg.get("model_type", "")).lower()
        family = MODEL_TYPES.get(model_type)
        if family is None:
            raise CheckpointError(
                f"unknown model_type {cfg.get('model_type')!r}; supported: "
                f"{sorted(set(MODEL_TYPES))} (LLaDA, iLLaDA, Dream checkpoints)"
            )
        d = FAMILY_DEFAULTS[family]
        if family == "llada":
            hidden, heads = _req(cfg, "d_model"), _req(cfg, "n_heads")
            kv_heads = cfg.get("n_kv_heads") or heads
            layers = _req(cfg, "n_layers")
            ffn = cfg.get("mlp_hidden_size") or int(cfg.get("mlp_ratio", 4) * hidden)
            vocab = cfg.get("embedding_size") or _req(cfg, "vocab_size")
            tie = bool(cfg.get("weight_tying", False))
            eps = float(cfg.get("rms_norm_eps", 1e-5))
            norm_type = "rms"
            max_len = int(cfg.get("max_sequence_length", d.max_length))
            qkv_bias = bool(cfg.get("include_qkv_bias", cfg.get("include_bias", d.qkv_bias)))
        else:
            hidden, heads = _req(cfg, "hidden_size"), _req(cfg, "num_attention_heads")
            kv_heads = cfg.get("num_key_value_heads") or heads
            layers = _req(cfg, "num_hidden_layers")
            ffn = _req(cfg, "intermediate_size")
            vocab = _req(cfg, "vocab_size")
            tie = bool(cfg.get("tie_word_embeddings", family == "illada"))
            # iLLaDA's modeling code switches to LayerNorm when layer_norm_eps is set.
            if family == "illada" and cfg.get("layer_norm_eps") is not None:
                norm_type, eps = "layer", float(cfg["layer_norm_eps"])
            else:
                norm_type, eps = "rms", float(cfg.get("rms_norm_eps", 1e-6))
            max_len = int(cfg.get("max_position_embeddings", d.max_length))
            qkv_bias = bool(cfg.get("attention_bias", d.qkv_bias))
        if hidden % heads or heads % kv_heads:
            raise CheckpointError(
                f"heads do not divide: hidden={hidden}, heads={heads}, kv_heads={kv_heads}"
            )
        mask_id = cfg.get("mask_token_id", d.mask_token_id)
        return cls(
            family=family,
            vocab_size=int(vocab),
            hidden_size=int(hidden),
            num_layers=int(layers),
            num_heads=int(heads),
            num_kv_heads=int(kv_heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate_size=int(ffn),
            norm_eps=eps,
            norm_type=norm_type,
            rope_theta=float(cfg.get("rope_theta", 10000.0)),
            tie_embeddings=tie,
            qkv_bias=qkv_bias,
            shift_logits=d.shift_logits,
            max_length=max_len,
            mask_token_id=int(mask_id),
            stop_token_ids=_stop_ids(cfg, d.stop_token_ids),
            think_end_text=str(cfg.get("think_end_text", "</think>")),
            extra={"model_type": cfg.get("model_type")},
        )


@dataclass(frozen=True)
class ModelOverrides:
    """Checkpoint facts a user may replace when loading (the model flags of serve and generate,
    built from these fields by engine/cli_args.py). None keeps the checkpoint's value."""

    mask_token_id: int | None = field(default=None, metadata={
        "help": "override the checkpoint's mask token id"})
    stop_token_ids: tuple[int, ...] | None = field(default=None, metadata={
        "help": "comma-separated stop token ids, replacing the model's ('' for none)", "int_list": True})
    think_end_text: str | None = field(default=None, metadata={
        "help": "override the '</think>' text of the think bias"})

    def given(self) -> dict[str, Any]:
        """The overrides set, as keyword arguments of `load_model` / `ModelConfig.with_overrides`."""
        return {k: v for k, v in vars(self).items() if v is not None}


def _req(cfg: dict[str, Any], key: str) -> Any:
    if key not in cfg:
        raise CheckpointError(f"config.json for model_type {cfg.get('model_type')!r} lacks {key!r}")
    return cfg[key]


def _stop_ids(cfg: dict[str, Any], defaults: tuple[int, ...]) -> tuple[int, ...]:
    ids: list[int] = list(defaults)
    eos = cfg.get("eos_token_id")
    for t in eos if isinstance(eos, list) else [eos]:
        if t is not None and int(t) not in ids:
            ids.append(int(t))
    return tuple(ids)
