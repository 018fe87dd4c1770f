"""Per-request diffusion sampling parameters, validated before they reach the engine."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from .config import ModelConfig


class ParamError(ValueError):
    """A request parameter out of range; `param` names the field for API error bodies."""

    def __init__(self, param: str, message: str, code: str = "invalid_value"):
        super().__init__(message)
        self.param = param
        self.code = code


@dataclass(frozen=True)
class DiffusionParams:
    max_tokens: int = 128  # variable canvas: cap on the answer; fixed canvas: gen_length
    canvas: Literal["variable", "fixed"] = "variable"
    block_length: int = 32
    steps: int | None = None  # denoising steps per block; None -> block_length (one token a step)
    threshold: float | None = None  # parallel decoding: commit all with confidence >= threshold
    remasking: Literal["low_confidence", "random"] = "low_confidence"
    temperature: float = 0.0
    seed: int | None = None
    cfg_scale: float = 0.0
    think_boost: float = 0.0  # growing </think> bias; 0 disables it
    think_power: float = 3.0
    suppress_eos: bool = False  # LLaDA logits_eos_inf: EOS logit -> -inf
    suppress_eos_confidence: bool = False  # LLaDA confidence_eos_eot_inf
    stop_token_ids: tuple[int, ...] = ()  # in addition to the model's stop ids
    stop: tuple[str, ...] = ()
    cache: Literal["prefix", "none"] = "prefix"
    # Prefix mode: when a block finishes, the next block's first step may recompute the K/V of
    # every committed token (Fast-dLLM's block-boundary refresh). N >= 1: after every N finished
    # blocks; 0: never; "auto": once the denoising work since the last refresh has reached a
    # refresh's own cost (the sequence length), so refreshes never take more than half the compute.
    cache_refresh: int | Literal["auto"] = "auto"
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def steps_per_block(self) -> int:
        return self.block_length if self.steps is None else self.steps

    @property
    def effective_seed(self) -> int:
        return 0 if self.seed is None else self.seed

    def validate(self, model: ModelConfig, prompt_len: int) -> DiffusionParams:
        """Raise ParamError naming the first bad field; return self when all is well."""
        if self.max_tokens < 1:
            raise ParamError("max_tokens", f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.canvas not in ("variable", "fixed"):
            raise ParamError("canvas", f"canvas must be 'variable' or 'fixed', got {self.canvas!r}")
        if self.block_length < 1:
            raise ParamError("block_length", f"block_length must be >= 1, got {self.block_length}")
        if self.canvas == "fixed" and self.max_tokens % self.block_length:
            raise ParamError(
                "block_length",
                f"fixed canvas: max_tokens (gen_length) {self.max_tokens} is not divisible by "
                f"block_length {self.block_length}",
            )
        if self.steps is not None and not 1 <= self.steps <= self.block_length:
            raise ParamError(
                "steps", f"steps per block must be in [1, block_length={self.block_length}], "
                f"got {self.steps}"
            )
        if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
            raise ParamError("threshold", f"threshold must be in (0, 1], got {self.threshold}")
        if self.remasking not in ("low_confidence", "random"):
            raise ParamError(
                "remasking", f"remasking must be 'low_confidence' or 'random', got {self.remasking!r}"
            )
        if not 0.0 <= self.temperature <= 10.0:
            raise ParamError("temperature", f"temperature must be in [0, 10], got {self.temperature}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ParamError("seed", f"seed must be in [0, 2**63), got {self.seed}")
        if not 0.0 <= self.cfg_scale <= 20.0:
            raise ParamError("cfg_scale", f"cfg_scale must be in [0, 20], got {self.cfg_scale}")
        if self.cfg_scale > 0 and self.cache != "none":
            raise ParamError(
                "cfg_scale", "cfg_scale > 0 needs cache='none' (exact mode); prefix cache "
                "does not run the unconditional pass", code="unsupported_value"
            )
        if not 0.0 <= self.think_boost <= 1e4:
            raise ParamError("think_boost", f"think_boost must be in [0, 1e4], got {self.think_boost}")
        if not 0.0 < self.think_power <= 16.0:
            raise ParamError("think_power", f"think_power must be in (0, 16], got {self.think_power}")
        if self.cache not in ("prefix", "none"):
            raise ParamError("cache", f"cache must be 'prefix' or 'none', got {self.cache!r}")
        if self.cache_refresh != "auto" and not (
            isinstance(self.cache_refresh, int) and 0 <= self.cache_refresh <= 1_000_000
        ):
            raise ParamError("cache_refresh", f"cache_refresh must be 'auto' or a block count >= 0 "
                             f"(0 = never), got {self.cache_refresh!r}")
        for t in self.stop_token_ids:
            if not 0 <= t < model.vocab_size:
                raise ParamError("stop_token_ids", f"stop token id {t} is outside the vocabulary")
        if any(not s for s in self.stop):
            raise ParamError("stop", "stop strings must be non-empty")
        if len(self.stop) > 16:
            raise ParamError("stop", f"at most 16 stop strings, got {len(self.stop)}")
        # A variable canvas may end with a shorter last block, so its worst case is
        # max_tokens; a fixed canvas is exactly max_tokens.
        if prompt_len < 1:
            raise ParamError("prompt", "the prompt is empty")
        if prompt_len + self.max_tokens > model.max_length:
            raise ParamError(
                "max_tokens",
                f"prompt ({prompt_len} tokens) + max_tokens ({self.max_tokens}) exceeds the "
                f"model's context length {model.max_length}",
                code="context_length_exceeded",
            )
        return self

    def stop_ids(self, model: ModelConfig) -> tuple[int, ...]:
        return tuple(dict.fromkeys(model.stop_token_ids + self.stop_token_ids))

    def replace(self, **changes) -> DiffusionParams:
        return replace(self, **changes)


def parse_cache_refresh(text: str) -> int | str:
    """'auto' or a block count >= 0, from a command-line flag (ValueError otherwise)."""
    if text.strip().lower() == "auto":
        return "auto"
    value = int(text)
    if value < 0:
        raise ValueError(f"cache_refresh must be 'auto' or a block count >= 0, got {text!r}")
    return value


def transfer_schedule(num_masked: int, steps: int) -> list[int]:
    """Tokens committed at each step of a block: n // s each, one more for the first n % s steps."""
    base, extra = divmod(num_masked, steps)
    return [base + (1 if i < extra else 0) for i in range(steps)]
