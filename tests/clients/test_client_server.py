"""DiffuserveClient / AsyncDiffuserveClient against the real server (built-in model, real HTTP)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from diffuserve.clients import AsyncDiffuserveClient, DiffuserveAPIError, DiffuserveClient

API_KEY = "test-key"
ASK = [{"role": "user", "content": "Tell me a story about a cat."}]
# Small blocks and ignore_eos, so every answer spans max_tokens / block_length blocks whatever the
# built-in model's quality (an early EOS would make the block checks vacuous).
GEN = dict(max_tokens=24, block_length=4, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def client(server_url):
    with DiffuserveClient(server_url, api_key=API_KEY, timeout=120) as c:
        c.model = c.models()[0].id
        yield c


def test_models_and_health(client):
    (card,) = client.models()
    assert card.id and card.max_model_len and card.max_model_len > 0
    health = client.health()
    assert health.ok and health.status_code == 200


def test_chat_typed_result(client):
    result = client.chat(ASK, **GEN)
    assert result.id and result.model == client.model
    assert result.choices[0].role == "assistant" and isinstance(result.text, str)
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == GEN["max_tokens"]
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    d = result.diffusion
    assert d.blocks == GEN["max_tokens"] // GEN["block_length"]
    assert d.tokens_per_step == pytest.approx(result.usage.completion_tokens / d.steps, rel=1e-6)
    # Default steps per block = block_length: one token per step, at most block_length steps a block.
    assert d.steps <= d.blocks * GEN["block_length"]


def raw_sse_contents(server_url: str, body: dict) -> list[str]:
    """The content deltas of a stream, read with plain httpx: what the client must reproduce."""
    contents = []
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.stream("POST", server_url + "/v1/chat/completions", json=body, headers=headers,
                      timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:])["choices"]
                if choices and choices[0]["delta"].get("content"):
                    contents.append(choices[0]["delta"]["content"])
    return contents


def test_stream_chat_matches_non_streaming(client, server_url):
    whole = client.chat(ASK, **GEN)
    deltas = list(client.stream_chat(ASK, **GEN))
    content = [d for d in deltas if d.text]
    assert deltas[0].role == "assistant"
    assert "".join(d.text for d in content) == whole.text  # temperature 0: same answer both ways
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["length"]
    usage = [d for d in deltas if d.usage]
    assert len(usage) == 1 and usage[0].usage == whole.usage and usage[0].diffusion == whole.diffusion
    # One chunk per decoded block (a block whose text decodes to nothing sends none), exactly
    # as the server framed them.
    assert len(content) <= whole.diffusion.blocks
    raw = raw_sse_contents(server_url, {"model": client.model, "messages": ASK, "stream": True, **GEN})
    assert [d.text for d in content] == raw


def test_completion_and_stream_completion(client):
    whole = client.complete("Once upon a time", **GEN)
    assert whole.choices[0].role is None and whole.usage.completion_tokens == GEN["max_tokens"]
    streamed = list(client.stream_complete("Once upon a time", **GEN))
    assert "".join(d.text for d in streamed) == whole.text
    assert streamed[-1].usage == whole.usage


def test_errors_are_typed(client, server_url):
    with pytest.raises(DiffuserveAPIError) as info:
        client.chat(ASK, model="no-such-model", max_tokens=4)
    assert info.value.status_code == 404 and info.value.type == "invalid_request_error"
    with pytest.raises(DiffuserveAPIError) as info:
        client.chat(ASK, max_tokens=4, threshold=5.0)
    assert info.value.status_code == 400 and info.value.param == "threshold"
    with pytest.raises(DiffuserveAPIError) as info:
        client.complete("x", max_tokens=10**6)
    assert info.value.status_code == 400
    assert info.value.code == "context_length_exceeded" or info.value.param in ("max_tokens", "prompt")
    with DiffuserveClient(server_url, api_key="wrong", max_retries=0) as bad:
        with pytest.raises(DiffuserveAPIError) as info:
            bad.models()
        assert info.value.status_code == 401
        assert bad.health().ok  # /health needs no key
    # The server keeps serving after every one of them.
    assert client.chat(ASK, max_tokens=4, ignore_eos=True).usage.completion_tokens == 4


def test_async_client_concurrent_requests_match_sync(client, server_url):
    expected = client.chat(ASK, **GEN).text

    async def go():
        async with AsyncDiffuserveClient(server_url, api_key=API_KEY, timeout=120, model=client.model) as c:
            models = await c.models()

            async def streamed() -> str:
                return "".join([d.text async for d in c.stream_chat(ASK, **GEN)])

            results = await asyncio.gather(c.chat(ASK, **GEN), streamed(), c.chat(ASK, **GEN), streamed())
            return models, results, await c.health()

    models, (a, b, c2, d), health = asyncio.run(go())
    assert models[0].id == client.model and health.ok
    # Seeded, batch-independent sampling: concurrent requests give the answer a lone one gives.
    assert a.text == b == c2.text == d == expected
