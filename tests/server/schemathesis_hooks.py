"""Schemathesis hooks for diffuserve: the rules an OpenAPI schema cannot state.

JSON Schema describes each field on its own. A few rules of this API relate two fields or
depend on tokenization; the server refuses requests that break them with a 400 naming the
field, and documents them in the field descriptions:

- `steps` <= `block_length` (32 when left out);
- a fixed canvas needs `max_tokens` divisible by `block_length`;
- `cfg_scale` > 0 needs `cache: "none"`; `cache: "dual"` needs `canvas: "fixed"`;
- `threshold` and `threshold_factor` exclude each other; `max_commits_per_step` needs one of them;
- `stream_options` only with `stream: true`; `best_of` only equal to `n`;
- at most 64 completions per request (prompts x n; the hook keeps to 8 for speed);
- prompt tokens + `max_tokens` <= the model's context length.

For *positive* cases (ones schemathesis expects the server to accept) this hook rewrites the
body so that these rules hold, keeping every field schema-valid; negative cases are left
alone. Everything else (types, ranges, enums, required fields, content types, status codes)
is checked against the schema as generated. The size caps assume a model with a context of
at least 256 tokens and a tokenizer that makes at most one token per character (the tiny
test checkpoint; the built-in model's tokenizer makes fewer).

Load with SCHEMATHESIS_HOOKS=schemathesis_hooks (this folder on PYTHONPATH).
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis import GenerationMode

DEFAULT_BLOCK_LENGTH = 32  # DiffusionParams' default
# Size caps: small enough that a positive case runs in a fraction of a second on 2 busy cores.
MAX_CHOICES = 8  # prompts x n (the server's limit is ServerSettings.max_prompts_times_n = 64)
MAX_NEW_TOKENS = 8
MAX_TEXT = 32  # characters per prompt text or message
MAX_IDS = 64  # tokens per token-id prompt
MAX_MESSAGES = 2
GENERATION_PATHS = ("/v1/chat/completions", "/v1/completions")


@schemathesis.hook
def map_case(context, case):
    meta = getattr(case, "meta", None)
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return case
    if case.operation.path in GENERATION_PATHS and isinstance(case.body, dict):
        satisfy_cross_field_rules(case.body)
    return case


def _int(value: Any) -> int | None:
    """An integer as JSON Schema sees one (3 or 3.0), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        return None
    return int(value)


def satisfy_cross_field_rules(body: dict[str, Any]) -> None:
    n = _int(body.get("n")) or 1
    if body.get("best_of") is not None:
        body["best_of"] = n
    if body.get("stream_options") is not None and body.get("stream") is not True:
        body.pop("stream_options")
    if (body.get("cfg_scale") or 0) > 0:
        body["cache"] = "none"
    if body.get("cache") == "dual":
        body["canvas"] = "fixed"
    if body.get("threshold") is not None and body.get("threshold_factor") is not None:
        body.pop("threshold_factor")
    if body.get("threshold") is None and body.get("threshold_factor") is None:
        body.pop("max_commits_per_step", None)
    for key in ("max_tokens", "max_completion_tokens"):
        if _int(body.get(key)) is not None:
            body[key] = min(_int(body[key]), MAX_NEW_TOKENS)
    block = _int(body.get("block_length")) or DEFAULT_BLOCK_LENGTH
    if body.get("canvas") == "fixed":
        block = min(block, MAX_NEW_TOKENS)
        body["block_length"] = block
        # chat reads max_completion_tokens first; both must divide evenly
        for key in ("max_tokens", "max_completion_tokens"):
            if key in body or key == "max_tokens":
                body[key] = block
    if (_int(body.get("steps")) or 0) > block:
        body["steps"] = block
    if "prompt" in body:
        body["prompt"] = _small_prompt(body["prompt"], n)
    if isinstance(body.get("messages"), list):
        body["messages"] = [_small_message(m) for m in body["messages"][:MAX_MESSAGES]]


def _small_prompt(prompt: Any, n: int) -> Any:
    if isinstance(prompt, str):
        return prompt[:MAX_TEXT]
    if not isinstance(prompt, list) or not prompt:
        return prompt
    if not isinstance(prompt[0], str | list):
        return prompt[:MAX_IDS]
    keep = prompt[: max(1, MAX_CHOICES // n)]
    return [p[:MAX_TEXT] if isinstance(p, str) else p[:MAX_IDS] if isinstance(p, list) else p for p in keep]


def _small_message(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    content = message.get("content")
    if isinstance(content, str):
        message["content"] = content[:MAX_TEXT]
    elif isinstance(content, list):
        parts = content[:2]
        for part in parts:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                part["text"] = part["text"][: MAX_TEXT // 2]
        message["content"] = parts
    return message
