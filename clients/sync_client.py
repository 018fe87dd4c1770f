"""Blocking client for a diffuserve (or any OpenAI-compatible) server, on httpx."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from .bodies import (
    Message,
    auth_headers,
    chat_body,
    completion_body,
    normalize_base_url,
    raise_for_event_error,
    score_body,
)
from .errors import (
    DiffuserveAPIError,
    DiffuserveConnectionError,
    DiffuserveTimeoutError,
    json_object,
    transport_error,
)
from .retry import RetryPolicy
from .sse import iter_events
from .types import BlockDelta, Completion, Health, ModelInfo, ScoreResult


class DiffuserveClient:
    """`chat()` / `complete()` return a typed `Completion`; `stream_*()` yield one `BlockDelta` per block.

    Retries: 429 and 503 are retried up to `max_retries` times after the server's
    Retry-After (bounded by `max_retry_wait`); GETs are also retried on transport errors.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = 600.0,
        max_retries: int = 2,
        max_retry_wait: float = 30.0,
        model: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self.base_url = normalize_base_url(base_url)
        self.model = model
        self.retry = RetryPolicy(max_retries=max_retries, max_wait_s=max_retry_wait)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=auth_headers(api_key),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )
        self._sleep = time.sleep  # tests replace it to check the waits without waiting

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DiffuserveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API --------------------------------------------------------------------------
    def models(self) -> list[ModelInfo]:
        data = self._json("GET", "/v1/models")
        return [ModelInfo.from_json(m) for m in data.get("data", [])]

    def health(self) -> Health:
        """Never raises for an error status: a 503 from /health is an answer, not a failure."""
        with self._send("GET", "/health", raise_errors=False) as response:
            response.read()
            return Health(response.is_success, response.status_code, json_object(response))

    def chat(self, messages: list[Message], max_tokens: int | None = None, model: str | None = None,
             **fields: Any) -> Completion:
        body = chat_body(model or self.model, messages, False, max_tokens, **fields)
        return Completion.from_json(self._json("POST", "/v1/chat/completions", body))

    def complete(self, prompt: str, max_tokens: int | None = None, model: str | None = None,
                 **fields: Any) -> Completion:
        body = completion_body(model or self.model, prompt, False, max_tokens, **fields)
        return Completion.from_json(self._json("POST", "/v1/completions", body))

    def stream_chat(self, messages: list[Message], max_tokens: int | None = None, model: str | None = None,
                    **fields: Any) -> Iterator[BlockDelta]:
        body = chat_body(model or self.model, messages, True, max_tokens, **fields)
        return self._stream("/v1/chat/completions", body)

    def stream_complete(self, prompt: str, max_tokens: int | None = None, model: str | None = None,
                        **fields: Any) -> Iterator[BlockDelta]:
        body = completion_body(model or self.model, prompt, True, max_tokens, **fields)
        return self._stream("/v1/completions", body)

    def score(self, candidates: list[str], prompt: str | list[int] | None = None,
              messages: list[Message] | None = None, method: str = "confidence",
              mc_samples: int | None = None, seed: int | None = None, model: str | None = None
              ) -> ScoreResult:
        """Score candidate continuations of `prompt` (or of chat `messages`) with /v1/score."""
        body = score_body(model or self.model, prompt, messages, candidates, method, mc_samples, seed)
        return ScoreResult.from_json(self._json("POST", "/v1/score", body))

    # -- plumbing ----------------------------------------------------------------------------
    def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._send(method, path, body) as response:
            response.read()
            return response.json()

    def _stream(self, path: str, body: dict[str, Any]) -> Iterator[BlockDelta]:
        with self._send("POST", path, body) as response:
            try:
                for event in iter_events(response.iter_lines()):
                    raise_for_event_error(event)
                    yield BlockDelta.from_json(event)
            except httpx.TimeoutException as e:
                raise DiffuserveTimeoutError(f"stream of {path} stalled: {e}") from e
            except httpx.TransportError as e:
                raise DiffuserveConnectionError(f"stream of {path} broke: {e}") from e

    @contextmanager
    def _send(self, method: str, path: str, body: dict[str, Any] | None = None,
              raise_errors: bool = True) -> Iterator[httpx.Response]:
        """Open a response, retrying as the policy allows; raise DiffuserveAPIError on an error status."""
        attempt = 0
        while True:
            try:
                request = self._http.build_request(method, path, json=body)
                response = self._http.send(request, stream=True)
            except httpx.TransportError as e:
                wait = self.retry.wait_for_transport_error(attempt, method, e)
                if wait is None:
                    raise transport_error(method, path, e) from e
                self._sleep(wait)
                attempt += 1
                continue
            if response.is_success or not raise_errors:
                break
            wait = self.retry.wait_for_status(attempt, response)
            if wait is None:
                response.read()
                response.close()
                raise DiffuserveAPIError.from_response(response)
            response.close()
            self._sleep(wait)
            attempt += 1
        try:
            yield response
        finally:
            response.close()
