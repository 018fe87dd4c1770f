"""Request bodies shared by the sync and async clients (OpenAI fields + diffusion extras)."""

from __future__ import annotations

from typing import Any

from .errors import DiffuserveAPIError

# Extra body fields the diffuserve server understands on top of OpenAI's.
DIFFUSION_FIELDS = (
    "block_length", "steps", "threshold", "remasking", "cache", "cache_refresh", "canvas",
    "cfg_scale", "think_boost", "think_power", "stop_token_ids", "ignore_eos",
)

Message = dict[str, str]


def chat_body(
    model: str | None,
    messages: list[Message],
    stream: bool,
    max_tokens: int | None,
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": messages, **_common(model, stream, max_tokens, fields)}
    return body


def completion_body(
    model: str | None,
    prompt: str,
    stream: bool,
    max_tokens: int | None,
    **fields: Any,
) -> dict[str, Any]:
    return {"prompt": prompt, **_common(model, stream, max_tokens, fields)}


def score_body(
    model: str | None,
    prompt: str | list[int] | None,
    messages: list[Message] | None,
    candidates: list[str],
    method: str,
    mc_samples: int | None,
    seed: int | None,
) -> dict[str, Any]:
    """/v1/score: exactly one of prompt and messages; None fields are left to the server."""
    body: dict[str, Any] = {"candidates": list(candidates), "method": method}
    for key, value in (("model", model), ("prompt", prompt), ("messages", messages),
                       ("mc_samples", mc_samples), ("seed", seed)):
        if value is not None:
            body[key] = value
    return body


def _common(
    model: str | None, stream: bool, max_tokens: int | None, fields: dict[str, Any]
) -> dict[str, Any]:
    body: dict[str, Any] = {"stream": stream}
    if model is not None:
        body["model"] = model
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if stream and "stream_options" not in fields:
        # Ask for the usage chunk: it is how a stream learns its token counts.
        body["stream_options"] = {"include_usage": True}
    # None means "server default": leave the field out rather than send null.
    body.update({k: v for k, v in fields.items() if v is not None})
    return body


def raise_for_event_error(event: dict[str, Any]) -> None:
    """Some servers report a failure inside the stream as `data: {"error": {...}}`."""
    err = event.get("error")
    if isinstance(err, dict):
        raise DiffuserveAPIError(
            status_code=int(err.get("status_code") or 500),
            message=str(err.get("message", "")),
            type=err.get("type"),
            param=err.get("param"),
            code=err.get("code"),
            body=event,
        )


def auth_headers(api_key: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "diffuserve-client/0.1"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def normalize_base_url(base_url: str) -> str:
    """Accept both http://host:8000 and http://host:8000/v1; paths below are written without /v1."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url
