"""Pydantic models of the OpenAI-compatible API, plus diffusion extras as extra body fields.

Requests allow unknown fields (`extra="allow"`): they are logged and ignored, as OpenAI SDKs
add new fields over time. Fields that OpenAI defines but diffuserve cannot honour are
refused with a 400 naming the field (`unsupported_fields`), never silently dropped; the
OpenAPI schema shows them with the only values accepted (`accepts_only`).

Types are strict, as in OpenAI's own API: no booleans for numbers, no strings for numbers
or booleans. An integer may be written 3.0, as JSON Schema's "integer" allows; 3.5 is refused.
Limits that depend on the served model (vocabulary, context length) are marked
with `MODEL_LIMIT` and filled into the OpenAPI document once the model is loaded (server/openai/schema.py).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from diffuserve.engine.params import BOUNDS, MAX_STOP_STRINGS, MAX_STOP_TOKEN_IDS
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator


def bounded(name: str, **kwargs: Any) -> Any:
    """An optional field limited by the engine's own bound of `name` (engine/params.py BOUNDS),
    so the schema shows exactly the range the engine enforces."""
    return Field(None, **BOUNDS[name].schema(), **kwargs)


# OpenAPI extension key: "vocab" (a token id: < vocab_size) or "context" (a token count:
# < the context length); server/app.py writes the served model's number as `maximum`.
MODEL_LIMIT = "x-model-limit"
REQUEST_CONFIG = ConfigDict(extra="allow", strict=True)

TokenId = Annotated[int, Field(ge=0, json_schema_extra={MODEL_LIMIT: "vocab"})]


def whole_floats_as_ints(value: Any) -> Any:
    """3.0 -> 3 throughout a request body, so an integer written 3.0 (a JSON Schema "integer")
    passes strict validation; float fields take ints, so nothing else changes."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: whole_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_floats_as_ints(v) for v in value]
    return value


def accepts_only(*choices: dict[str, Any], description: str) -> Any:
    """The schema of an OpenAI field this server takes only at its neutral value(s); other
    values pass validation and are refused by `unsupported_fields` with a 400 naming them."""
    return WithJsonSchema({"anyOf": [*choices, {"type": "null"}], "description": description})


# ----------------------------------------------------------------------------- requests


class StreamOptions(BaseModel):
    model_config = REQUEST_CONFIG
    include_usage: bool = False


class DiffusionFields(BaseModel):
    """Diffusion sampling extras (extra_body in the openai client); None = engine default."""

    @model_validator(mode="before")
    @classmethod
    def _integers(cls, data: Any) -> Any:
        return whole_floats_as_ints(data)

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
    cache: Literal["prefix", "dual", "none"] | None = Field(
        None, description="'none' = exact mode (no KV reuse); 'dual' (fixed canvas) = prefix cache plus "
        "the masked suffix's K/V, reused within a block (Fast-dLLM DualCache)"
    )
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
    stop_token_ids: list[TokenId] | None = Field(
        None, max_length=MAX_STOP_TOKEN_IDS, description="extra stop token ids"
    )
    ignore_eos: bool | None = Field(None, description="EOS logit -> -inf (LLaDA logits_eos_inf), as in vLLM")


StopString = Annotated[str, Field(min_length=1)]


class SamplingRequest(DiffusionFields):
    """Fields common to chat and completions."""

    model_config = REQUEST_CONFIG

    model: str | None = Field(None, description="served model name; the only model when omitted")
    max_tokens: int | None = bounded("max_tokens", json_schema_extra={MODEL_LIMIT: "context"})
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
    top_p: Annotated[float | None, accepts_only(
        {"type": "number", "minimum": 1, "maximum": 1}, description="only 1 (no nucleus sampling)")] = None
    presence_penalty: Annotated[float | None, accepts_only(
        {"type": "number", "minimum": 0, "maximum": 0}, description="only 0")] = None
    frequency_penalty: Annotated[float | None, accepts_only(
        {"type": "number", "minimum": 0, "maximum": 0}, description="only 0")] = None
    logit_bias: Annotated[dict[str, float] | None, accepts_only(
        {"type": "object", "maxProperties": 0}, description="only empty")] = None
    logprobs: Annotated[bool | int | None, accepts_only(
        {"type": "boolean", "const": False}, {"type": "integer", "const": 0},
        description="not supported: only false / 0")] = None
    top_logprobs: Annotated[int | None, accepts_only(
        {"type": "integer", "const": 0}, description="not supported: only 0")] = None
    best_of: Annotated[int | None, accepts_only(
        {"type": "integer", "minimum": 1, "maximum": 16}, description="only equal to n")] = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ContentPart(BaseModel):
    model_config = ConfigDict(**REQUEST_CONFIG, json_schema_extra={"required": ["type", "text"]})
    type: Annotated[str, WithJsonSchema({"const": "text", "description": "text parts only"})]
    text: Annotated[str | None, WithJsonSchema({"type": "string"})] = None


# Chat and completions refuse only the falsy forms of these; the schema names them.
NOTHING = ({"type": "array", "maxItems": 0},)


class ChatMessage(BaseModel):
    model_config = REQUEST_CONFIG
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = bounded("max_tokens", json_schema_extra={MODEL_LIMIT: "context"})
    tools: Annotated[list[Any] | None, accepts_only(*NOTHING, description="tools are not supported")] = None
    tool_choice: Annotated[Any, accepts_only({"const": "none"}, description="only 'none'")] = None
    functions: Annotated[list[Any] | None, accepts_only(*NOTHING, description="not supported")] = None
    function_call: Annotated[str | dict[str, Any] | None, accepts_only(
        {"type": "string", "maxLength": 0}, {"type": "object", "maxProperties": 0},
        description="not supported")] = None
    response_format: Annotated[dict[str, Any] | None, accepts_only(
        {"type": "object", "properties": {"type": {"const": "text"}}}, description="only {'type': 'text'}",
    )] = None
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="extra arguments of tokenizer.apply_chat_template (e.g. enable_thinking)"
    )


# OpenAI's four forms. An empty string is a prompt with no text (the model starts a document),
# as in OpenAI's API; lists are never empty.
PromptType = (
    str
    | Annotated[list[str], Field(min_length=1)]
    | Annotated[list[TokenId], Field(min_length=1)]
    | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1)]
)


class CompletionRequest(SamplingRequest):
    prompt: PromptType
    echo: Annotated[bool | None, accepts_only(
        {"type": "boolean", "const": False}, description="only false")] = False
    suffix: Annotated[str | None, accepts_only(
        {"type": "string", "maxLength": 0}, description="not supported")] = None


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
