"""Pydantic models of the OpenAI-compatible API, plus diffusion extras as extra body fields.

Requests allow unknown fields (`extra="allow"`): they are logged and ignored, as OpenAI SDKs
add new fields over time. Fields that OpenAI defines but diffuserve cannot honour are
refused with a 400 naming the field (`unsupported_fields`), never silently dropped.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from diffuserve.engine.params import BOUNDS, MAX_STOP_STRINGS, MAX_STOP_TOKEN_IDS
from pydantic import BaseModel, ConfigDict, Field


def bounded(name: str, **kwargs: Any) -> Any:
    """An optional field limited by the engine's own bound of `name` (engine/params.py BOUNDS),
    so the schema shows exactly the range the engine enforces."""
    return Field(None, **BOUNDS[name].schema(), **kwargs)


# ----------------------------------------------------------------------------- requests


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class DiffusionFields(BaseModel):
    """Diffusion sampling extras (extra_body in the openai client); None = engine default."""

    block_length: int | None = bounded("block_length", description="tokens per denoised block")
    steps: int | None = bounded("steps", description="denoising steps per block (<= block_length)")
    threshold: float | None = bounded(
        "threshold", description="parallel decoding: commit every token with confidence >= threshold"
    )
    threshold_factor: float | None = bounded(
        "threshold_factor", description="parallel decoding, Fast-dLLM's factor rule (not with threshold): "
        "commit the n most confident tokens for the largest n with (n + 1) * (1 - c_n) < factor"
    )
    max_commits_per_step: int | None = bounded(
        "max_commits_per_step", description="threshold / threshold_factor: at most this many tokens a step"
    )
    remasking: Literal["low_confidence", "random"] | None = None
    cache: Literal["prefix", "none"] | None = Field(None, description="'none' = exact mode (no KV reuse)")
    cache_refresh: Annotated[int, Field(**BOUNDS["cache_refresh"].schema())] | Literal["auto"] | None = Field(
        None, description="prefix mode: recompute the cached K/V every N finished blocks; 0 = never; "
        "'auto' (default) = once the denoising work since the last refresh reaches its cost",
    )
    canvas: Literal["variable", "fixed"] | None = Field(
        None, description="'variable' grows one block at a time (iLLaDA); 'fixed' = LLaDA gen_length canvas"
    )
    cfg_scale: float | None = bounded("cfg_scale", description="classifier-free guidance (cache='none')")
    think_boost: float | None = bounded("think_boost", description="growing </think> logit bias; 0 = off")
    think_power: float | None = bounded("think_power")
    stop_token_ids: list[int] | None = Field(
        None, max_length=MAX_STOP_TOKEN_IDS, description="extra stop token ids"
    )
    ignore_eos: bool | None = Field(None, description="EOS logit -> -inf (LLaDA logits_eos_inf), as in vLLM")


StopString = Annotated[str, Field(min_length=1)]


class SamplingRequest(DiffusionFields):
    """Fields common to chat and completions."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, description="served model name; the only model when omitted")
    max_tokens: int | None = bounded("max_tokens")
    temperature: float | None = bounded("temperature")
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP_STRINGS)] | None = Field(
        None, description=f"up to {MAX_STOP_STRINGS} stop strings"
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = bounded("seed")
    n: int = Field(1, ge=1, le=16, description="choices; choice i uses seed + i")
    user: str | None = None
    # OpenAI fields accepted only at their neutral value (see unsupported_fields).
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: Any = None
    top_logprobs: int | None = None
    best_of: int | None = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = bounded("max_tokens")
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="extra arguments of tokenizer.apply_chat_template (e.g. enable_thinking)"
    )


PromptType = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(SamplingRequest):
    prompt: PromptType
    echo: bool = False
    suffix: str | None = None


# What each refused OpenAI field must equal (or be falsy) to be accepted.
_NEUTRAL: dict[str, Any] = {
    "top_p": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
    "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0,
}
_MUST_BE_EMPTY = (
    "logprobs", "top_logprobs", "logit_bias", "tools", "functions", "function_call", "echo",
    "suffix", "prediction", "audio", "guided_json", "guided_regex", "guided_choice",
)


def unsupported_fields(req: SamplingRequest) -> tuple[str, str] | None:
    """(field, reason) of the first field this server cannot honour, or None."""
    data = dict(req.__dict__)
    data.update(req.model_extra or {})
    for name, neutral in _NEUTRAL.items():
        value = data.get(name)
        if value is not None and value != neutral and not (name == "top_k" and value == 0):
            return name, f"'{name}' is not supported by diffusion sampling (only {neutral} is accepted)"
    for name in _MUST_BE_EMPTY:
        if data.get(name):
            return name, f"'{name}' is not supported by this server"
    if data.get("tool_choice") not in (None, "none"):
        return "tool_choice", "'tool_choice' is not supported by this server (tools are not)"
    fmt = data.get("response_format")
    if fmt and fmt.get("type", "text") != "text":
        return "response_format", "only response_format {'type': 'text'} is supported"
    best_of = data.get("best_of")
    if best_of is not None and best_of != req.n:
        return "best_of", "'best_of' is not supported (use n)"
    modalities = data.get("modalities")
    if modalities and list(modalities) != ["text"]:
        return "modalities", "only the 'text' modality is supported"
    if req.stream_options is not None and not req.stream:
        return "stream_options", "'stream_options' is only allowed when 'stream' is true"
    return None


# ---------------------------------------------------------------------------- responses


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class DiffusionInfo(BaseModel):
    """How the answer was denoised (summed over choices)."""

    steps: int = 0  # denoising forward passes the request took part in
    tokens_per_step: float = 0.0  # completion_tokens / steps; > 1 when parallel decoding paid off
    blocks: int = 0


def _now() -> int:
    return int(time.time())


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: None = None
    finish_reason: str | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo
    diffusion: DiffusionInfo


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: str | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo
    diffusion: DiffusionInfo


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=_now)
    owned_by: str = "diffuserve"
    root: str | None = None
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo
