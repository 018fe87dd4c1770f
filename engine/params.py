"""Per-request diffusion sampling parameters, validated when they are built.

Two kinds of checks, each run once:
- model-independent ranges (temperature, block_length, ...) run in `DiffusionParams.__post_init__`,
  so an instance that exists is in range. The ranges are the `BOUNDS` below: the HTTP schema
  (`server/openai/protocol.py`) builds its field limits from the same objects, so the API, its
  OpenAPI document and the engine cannot disagree;
- model-dependent checks (prompt length against the context, stop ids against the vocabulary)
  are `validate(model, prompt_len)`; the engine adds the vocabulary and KV-capacity checks
  (`LLMEngine.limits`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .model_config import ModelConfig


class ParamError(ValueError):
    """A request parameter out of range; `param` names the field for API error bodies."""

    def __init__(self, param: str, message: str, code: str = "invalid_value"):
        super().__init__(message)
        self.param = param
        self.code = code


@dataclass(frozen=True)
class Range:
    """A numeric interval, closed unless `low_open` / `high_open`; None = unbounded on that side."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def text(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        return (f"{'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}"
                f"{')' if self.high_open else ']'}")

    def schema(self) -> dict[str, Any]:
        """pydantic `Field` keyword arguments (ge/gt/le/lt) for the same interval."""
        out: dict[str, Any] = {}
        if self.low is not None:
            out["gt" if self.low_open else "ge"] = self.low
        if self.high is not None:
            out["lt" if self.high_open else "le"] = self.high
        return out


def _num(x: float | None) -> str:
    if x == 2**63:
        return "2**63"
    return f"{x:g}" if isinstance(x, float) else str(x)


# The one definition of every numeric bound of a request (engine and HTTP schema alike).
BOUNDS: dict[str, Range] = {
    "max_tokens": Range(1),
    "block_length": Range(1, 1024),
    "steps": Range(1, 1024),  # and <= block_length, checked below
    "threshold": Range(0.0, 1.0, low_open=True),
    "threshold_factor": Range(0.0, 1024.0, low_open=True),
    "max_commits_per_step": Range(1, 1024),
    "temperature": Range(0.0, 10.0),
    "seed": Range(0, 2**63, high_open=True),
    "cfg_scale": Range(0.0, 20.0),
    "think_boost": Range(0.0, 1e4),
    "think_power": Range(0.0, 16.0, low_open=True),
    "cache_refresh": Range(0, 1_000_000),
}
# The parallel-decoding threshold a server applies to requests that choose no rule (`serve
# --threshold`): the fastest threshold that loses no accuracy beyond what the prefix cache itself
# costs, on the built-in model's task suite (BENCHMARKS.md, built-in model v4, "Every decoding
# mode": exact 69.2%, prefix cache one token a step 66.8%, threshold 0.95 66.8% at 6-8x its
# tokens/s, 0.9 65.6%, 0.8 62.4%). A request that sets any of RULE_FIELDS keeps its own rule,
# and exact mode (cache "none") keeps the reference's schedule.
SERVED_THRESHOLD = 0.95
RULE_FIELDS = ("threshold", "threshold_factor", "steps")
MAX_STOP_STRINGS = 16
MAX_STOP_TOKEN_IDS = 64
CANVASES = ("variable", "fixed")
REMASKINGS = ("low_confidence", "random")
CACHE_MODES = ("prefix", "dual", "none")


@dataclass(frozen=True)
class DiffusionParams:
    max_tokens: int = 128  # variable canvas: cap on the answer; fixed canvas: gen_length
    canvas: Literal["variable", "fixed"] = "variable"
    block_length: int = 32
    steps: int | None = None  # denoising steps per block; None -> block_length (one token a step)
    threshold: float | None = None  # parallel decoding: commit all with confidence >= threshold
    # Parallel decoding, Fast-dLLM's factor rule (exclusive with threshold): commit the n most
    # confident tokens for the largest n with (n + 1) * (1 - c_n) < threshold_factor, c_n the
    # n-th highest confidence; at least one.
    threshold_factor: float | None = None
    max_commits_per_step: int | None = None  # threshold / factor rules: at most this many a step
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
    # "dual" (fixed canvas): also keep the masked suffix's K/V from the block's first step and
    # reuse it at the block's later steps (Fast-dLLM's DualCache); "none": exact mode.
    cache: Literal["prefix", "dual", "none"] = "prefix"
    # Prefix mode: when a block finishes, the next block's first step may recompute the K/V of
    # every committed token (Fast-dLLM's block-boundary refresh). N >= 1: after every N finished
    # blocks; 0: never; "auto": once the denoising work since the last refresh has reached a
    # refresh's own cost (the sequence length), so refreshes never take more than half the compute.
    cache_refresh: int | Literal["auto"] = "auto"
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        """The model-independent checks: raise ParamError naming the first bad field."""
        _check_int("max_tokens", self.max_tokens)
        _check_choice("canvas", self.canvas, CANVASES)
        _check_int("block_length", self.block_length)
        if self.canvas == "fixed" and self.max_tokens % self.block_length:
            raise ParamError(
                "block_length",
                f"fixed canvas: max_tokens (gen_length) {self.max_tokens} is not divisible by "
                f"block_length {self.block_length}",
            )
        if self.steps is not None and not (_is_int(self.steps) and 1 <= self.steps <= self.block_length):
            raise ParamError(
                "steps", f"steps per block must be in [1, block_length={self.block_length}], "
                f"got {self.steps}"
            )
        if self.threshold is not None:
            _check_real("threshold", self.threshold)
        if self.threshold_factor is not None:
            _check_real("threshold_factor", self.threshold_factor)
            if self.threshold is not None:
                raise ParamError("threshold_factor", "threshold and threshold_factor are two "
                                 "parallel decoding rules: set one of them, not both")
        if self.max_commits_per_step is not None:
            _check_int("max_commits_per_step", self.max_commits_per_step)
            if self.threshold is None and self.threshold_factor is None:
                raise ParamError("max_commits_per_step", "max_commits_per_step caps parallel "
                                 "decoding: it needs threshold or threshold_factor (the steps "
                                 "schedule already fixes the tokens per step)")
        _check_choice("remasking", self.remasking, REMASKINGS)
        _check_real("temperature", self.temperature)
        if self.seed is not None:
            _check_int("seed", self.seed)
        _check_real("cfg_scale", self.cfg_scale)
        _check_choice("cache", self.cache, CACHE_MODES)
        if self.cache == "dual" and self.canvas != "fixed":
            raise ParamError("cache", "cache='dual' caches the masked suffix of a fixed canvas: "
                             "it needs canvas='fixed' (a variable canvas has no suffix)")
        _check_real("think_boost", self.think_boost)
        _check_real("think_power", self.think_power)
        if self.cache_refresh != "auto" and not (
            _is_int(self.cache_refresh) and self.cache_refresh in BOUNDS["cache_refresh"]
        ):
            raise ParamError("cache_refresh", f"cache_refresh must be 'auto' or a block count >= 0 "
                             f"(0 = never), got {self.cache_refresh!r}")
        if len(self.stop_token_ids) > MAX_STOP_TOKEN_IDS:
            raise ParamError("stop_token_ids", f"at most {MAX_STOP_TOKEN_IDS} stop token ids, "
                             f"got {len(self.stop_token_ids)}")
        if any(not _is_int(t) for t in self.stop_token_ids):
            raise ParamError("stop_token_ids", "stop token ids must be integers")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ParamError("stop", "stop strings must be non-empty")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise ParamError("stop", f"at most {MAX_STOP_STRINGS} stop strings, got {len(self.stop)}")

    @property
    def steps_per_block(self) -> int:
        return self.block_length if self.steps is None else self.steps

    @property
    def effective_seed(self) -> int:
        return 0 if self.seed is None else self.seed

    def validate(self, model: ModelConfig, prompt_len: int) -> DiffusionParams:
        """The model-dependent checks (the ranges ran when self was built): raise ParamError
        naming the first bad field; return self when all is well. Also what the engine cannot
        run (the oracle samplers can: they ignore `cache`)."""
        if self.cfg_scale > 0 and self.cache != "none":
            raise ParamError(
                "cfg_scale", "cfg_scale > 0 needs cache='none' (exact mode); prefix cache "
                "does not run the unconditional pass", code="unsupported_value"
            )
        for t in self.stop_token_ids:
            if not 0 <= t < model.vocab_size:
                raise ParamError("stop_token_ids", f"stop token id {t} is outside the vocabulary")
        if prompt_len < 1:
            raise ParamError("prompt", "the prompt is empty")
        # A variable canvas may end with a shorter last block, so its worst case is
        # max_tokens; a fixed canvas is exactly max_tokens.
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(name: str, value: Any) -> None:
    bounds = BOUNDS[name]
    if not _is_int(value):
        raise ParamError(name, f"{name} must be an integer, got {value!r}")
    if value not in bounds:
        # "block_length must be >= 1": name the violated side when it is the lower one.
        text = f">= {bounds.low}" if bounds.low is not None and value < bounds.low else f"in {bounds.text()}"
        raise ParamError(name, f"{name} must be {text}, got {value}")


def _check_real(name: str, value: Any) -> None:
    bounds = BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParamError(name, f"{name} must be a number, got {value!r}")
    if value not in bounds:
        raise ParamError(name, f"{name} must be in {bounds.text()}, got {value}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        allowed = " or ".join(repr(c) for c in choices)
        raise ParamError(name, f"{name} must be {allowed}, got {value!r}")


def parse_cache_refresh(text: str) -> int | str:
    """'auto' or a block count >= 0, from a command-line flag (ValueError otherwise)."""
    if text.strip().lower() == "auto":
        return "auto"
    value = int(text)
    if value < 0:
        raise ValueError(f"cache_refresh must be 'auto' or a block count >= 0, got {text!r}")
    return value


def with_served_rule(fields: dict[str, Any], threshold: float | None) -> dict[str, Any]:
    """`fields` (a request's diffusion fields) with the server's default threshold added when the
    request chose no decoding rule of its own (see SERVED_THRESHOLD); None: no default rule."""
    if threshold is None or fields.get("cache") == "none" or any(k in fields for k in RULE_FIELDS):
        return fields
    return {**fields, "threshold": threshold}


def number_in(text: str, bounds: Range) -> float | None:
    """`text` as a number when it is one and lies in `bounds`, else None (command-line flags)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value in bounds else None


def parse_threshold(text: str) -> float | None:
    """A threshold in (0, 1] or 'none', from a command-line flag (ValueError otherwise)."""
    if text.strip().lower() == "none":
        return None
    value = number_in(text, BOUNDS["threshold"])
    if value is None:
        raise ValueError(f"threshold must be in {BOUNDS['threshold'].text()} or 'none', got {text!r}")
    return value


def transfer_schedule(num_masked: int, steps: int) -> list[int]:
    """Tokens committed at each step of a block: n // s each, one more for the first n % s steps."""
    base, extra = divmod(num_masked, steps)
    return [base + (1 if i < extra else 0) for i in range(steps)]
