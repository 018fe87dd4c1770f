"""Asyncio client: the same API as DiffuserveClient, with `await` and `async for`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
from .sse import aiter_events
from .types import BlockDelta, Completion, Health, ModelInfo, ScoreResult


class AsyncDiffuserveClient:
    """See DiffuserveClient; one instance can serve many concurrent requests (it pools connections)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = 600.0,
        max_retries: int = 2,
        max_retry_wait: float = 30.0,
        model: str | None = None,
        max_connections: int = 256,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.base_url = normalize_base_url(base_url)
        self.model = model
        self.retry = RetryPolicy(max_retries=max_retries, max_wait_s=max_retry_wait)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=auth_headers(api_key),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
        )
        self._sleep = asyncio.sleep

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncDiffuserveClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- public API --------------------------------------------------------------------------
    async def models(self) -> list[ModelInfo]:
        data = await self._json("GET", "/v1/models")
        return [ModelInfo.from_json(m) for m in data.get("data", [])]

    async def health(self) -> Health:
        async with self._send("GET", "/health", raise_errors=False) as response:
            await response.aread()
            return Health(response.is_success, response.status_code, json_object(response))

    async def chat(self, messages: list[Message], max_tokens: int | None = None, model: str | None = None,
                   **fields: Any) -> Completion:
        body = chat_body(model or self.model, messages, False, max_tokens, **fields)
        return Completion.from_json(await self._json("POST", "/v1/chat/completions", body))

    async def complete(self, prompt: str, max_tokens: int | None = None, model: str | None = None,
                       **fields: Any) -> Completion:
        body = completion_body(model or self.model, prompt, False, max_tokens, **fields)
        return Completion.from_json(await self._json("POST", "/v1/completions", body))

    def stream_chat(self, messages: list[Message], max_tokens: int | None = None, model: str | None = None,
                    **fields: Any) -> AsyncIterator[BlockDelta]:
        body = chat_body(model or self.model, messages, True, max_tokens, **fields)
        return self._stream("/v1/chat/completions", body)

    def stream_complete(self, prompt: str, max_tokens: int | None = None, model: str | None = None,
                        **fields: Any) -> AsyncIterator[BlockDelta]:
        body = completion_body(model or self.model, prompt, True, max_tokens, **fields)
        return self._stream("/v1/completions", body)

    async def score(self, candidates: list[str], prompt: str | list[int] | None = None,
              messages: list[Message] | None = None, method: str = "confidence",
              mc_samples: int | None = None, seed: int | None = None, model: str | None = None
              ) -> ScoreResult:
        """Score candidate continuations of `prompt` (or of chat `messages`) with /v1/score."""
        body = score_body(model or self.model, prompt, messages, candidates, method, mc_samples, seed)
        return ScoreResult.from_json(await self._json("POST", "/v1/score", body))

    # -- plumbing ----------------------------------------------------------------------------
    async def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        async with self._send(method, path, body) as response:
            await response.aread()
            return response.json()

    async def _stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[BlockDelta]:
        async with self._send("POST", path, body) as response:
            try:
                async for event in aiter_events(response.aiter_lines()):
                    raise_for_event_error(event)
                    yield BlockDelta.from_json(event)
            except httpx.TimeoutException as e:
                raise DiffuserveTimeoutError(f"stream of {path} stalled: {e}") from e
            except httpx.TransportError as e:
                raise DiffuserveConnectionError(f"stream of {path} broke: {e}") from e

    @asynccontextmanager
    async def _send(self, method: str, path: str, body: dict[str, Any] | None = None,
                    raise_errors: bool = True) -> AsyncIterator[httpx.Response]:
        attempt = 0
        while True:
            try:
                request = self._http.build_request(method, path, json=body)
                response = await self._http.send(request, stream=True)
            except httpx.TransportError as e:
                wait = self.retry.wait_for_transport_error(attempt, method, e)
                if wait is None:
                    raise transport_error(method, path, e) from e
                await self._sleep(wait)
                attempt += 1
                continue
            if response.is_success or not raise_errors:
                break
            wait = self.retry.wait_for_status(attempt, response)
            if wait is None:
                await response.aread()
                await response.aclose()
                raise DiffuserveAPIError.from_response(response)
            await response.aclose()
            await self._sleep(wait)
            attempt += 1
        try:
            yield response
        finally:
            await response.aclose()
