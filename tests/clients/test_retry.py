"""Retries against a real loopback HTTP peer: 429/503 honour Retry-After (bounded); errors stay typed."""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import time

import httpx
import pytest
from diffuserve.clients import (
    AsyncDiffuserveClient,
    DiffuserveAPIError,
    DiffuserveClient,
    DiffuserveConnectionError,
)
from diffuserve.clients.retry import RetryPolicy, parse_retry_after

OK_COMPLETION = json.dumps({
    "id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "text": "hello", "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    "diffusion": {"steps": 4, "tokens_per_step": 0.5, "blocks": 1},
}).encode()
JSON = {"Content-Type": "application/json"}


def error_body(message: str, etype: str, code: str | None = None, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": etype, "param": param, "code": code}}).encode()


def test_parse_retry_after_seconds_date_and_garbage():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-4") == 0.0
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(7.0, abs=1.0)
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None


def test_policy_bounds_and_methods():
    policy = RetryPolicy(max_retries=2, backoff_base_s=0.5, max_wait_s=5.0)
    r429 = httpx.Response(429, headers={"Retry-After": "3600"})
    assert policy.wait_for_status(0, r429) == 5.0  # clipped to max_wait_s
    assert policy.wait_for_status(2, r429) is None  # out of retries
    assert policy.wait_for_status(0, httpx.Response(500)) is None  # 500 is not retried
    assert policy.wait_for_status(1, httpx.Response(503)) == 1.0  # no header: backoff 0.5 * 2**1
    read_error = httpx.ReadError("reset")
    assert policy.wait_for_transport_error(0, "GET", read_error) == 0.5
    assert policy.wait_for_transport_error(0, "POST", read_error) is None  # may have been processed
    assert policy.wait_for_transport_error(0, "POST", httpx.ConnectError("refused")) == 0.5


def test_sync_retries_429_after_retry_after(scripted_http):
    script = [(429, {**JSON, "Retry-After": "1"}, error_body("queue full", "rate_limit_error")),
              (200, JSON, OK_COMPLETION)]
    with scripted_http(script) as server, DiffuserveClient(server.url, max_retries=2) as client:
        result = client.complete("hi", max_tokens=4, model="m", threshold=0.9)
    assert result.text == "hello" and result.finish_reason == "stop"
    assert result.usage.completion_tokens == 2 and result.diffusion.steps == 4
    assert len(server.seen) == 2
    waited = server.seen[1][3] - server.seen[0][3]
    assert 0.9 <= waited < 5.0, waited  # the server's 1 s, not the 0.5 s default backoff
    sent = json.loads(server.seen[0][2])
    assert sent == {"prompt": "hi", "model": "m", "max_tokens": 4, "stream": False, "threshold": 0.9}


def test_sync_gives_up_with_typed_error(scripted_http):
    script = [(503, {**JSON, "Retry-After": "0"}, error_body("not ready", "service_unavailable", "loading"))]
    with scripted_http(script) as server, DiffuserveClient(server.url, max_retries=2) as client:
        with pytest.raises(DiffuserveAPIError) as info:
            client.chat([{"role": "user", "content": "x"}])
    e = info.value
    assert (e.status_code, e.type, e.code, e.message, e.retry_after) == (
        503, "service_unavailable", "loading", "not ready", 0.0)
    assert len(server.seen) == 3  # first try + 2 retries


def test_no_retry_on_400_and_param_kept(scripted_http):
    script = [(400, JSON, error_body("threshold must be in (0, 1]", "invalid_request_error",
                                     "invalid_value", "threshold"))]
    with scripted_http(script) as server, DiffuserveClient(server.url, max_retries=3) as client:
        with pytest.raises(DiffuserveAPIError) as info:
            client.complete("x", threshold=7)
    assert info.value.status_code == 400 and info.value.param == "threshold"
    assert len(server.seen) == 1


def test_non_openai_error_body_still_typed(scripted_http):
    with scripted_http([(502, {"Content-Type": "text/html"}, b"<h1>Bad gateway</h1>")]) as server:
        with DiffuserveClient(server.url, max_retries=0) as client, pytest.raises(DiffuserveAPIError) as info:
            client.models()
    assert info.value.status_code == 502 and info.value.type is None and "Bad gateway" in info.value.message


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_is_retried_then_raised():
    client = DiffuserveClient(f"http://127.0.0.1:{_closed_port()}", max_retries=2)
    waits: list[float] = []
    client._sleep = waits.append
    with client, pytest.raises(DiffuserveConnectionError):
        client.models()
    assert waits == [0.5, 1.0]


def test_async_retries_429_after_retry_after(scripted_http):
    script = [(429, {**JSON, "Retry-After": "1"}, error_body("queue full", "rate_limit_error")),
              (429, {**JSON, "Retry-After": "1"}, error_body("queue full", "rate_limit_error")),
              (200, JSON, OK_COMPLETION)]

    async def go():
        async with AsyncDiffuserveClient(server.url, max_retries=2) as client:
            return await client.complete("hi")

    with scripted_http(script) as server:
        t0 = time.monotonic()
        result = asyncio.run(go())
        elapsed = time.monotonic() - t0
    assert result.text == "hello" and len(server.seen) == 3
    assert 1.9 <= elapsed < 8.0, elapsed
