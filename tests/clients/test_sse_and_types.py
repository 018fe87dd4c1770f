"""SSE framing and typed results, on literal server payloads and a real loopback stream."""

from __future__ import annotations

import json

import pytest
from diffuserve.clients import DiffuserveAPIError, DiffuserveClient
from diffuserve.clients.sse import iter_events


def sse(*events: dict | str) -> bytes:
    out = []
    for e in events:
        out.append(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n")
    return "".join(out).encode()


def test_iter_events_frames_comments_multiline_and_done():
    lines = [": keep-alive", "", "data: {\"a\":", "data: 1}", "", "event: x", "data: {\"b\": 2}", "",
             "data: [DONE]", "", "data: {\"after\": 1}", ""]
    assert list(iter_events(iter(lines))) == [{"a": 1}, {"b": 2}]


def test_iter_events_without_trailing_blank_line():
    assert list(iter_events(iter(["data: {\"x\": 3}"]))) == [{"x": 3}]


def chunk(content: str | None = None, finish: str | None = None, role: str | None = None) -> dict:
    delta = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_stream_chat_yields_blocks_usage_and_diffusion(scripted_http):
    body = sse(
        chunk(role="assistant", content=""), chunk("The cat "), chunk("sat."), chunk(finish="stop"),
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
         "usage": {"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13},
         "diffusion": {"steps": 16, "tokens_per_step": 0.5, "blocks": 2}},
        "[DONE]",
    )
    with scripted_http([(200, {"Content-Type": "text/event-stream"}, body)]) as server:
        with DiffuserveClient(server.url) as client:
            messages = [{"role": "user", "content": "hi"}]
            deltas = list(client.stream_chat(messages, max_tokens=8, block_length=4))
    sent = json.loads(server.seen[0][2])
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["block_length"] == 4 and "threshold" not in sent  # None fields are not sent
    assert [d.text for d in deltas] == ["", "The cat ", "sat.", "", ""]
    assert deltas[0].role == "assistant" and deltas[3].finish_reason == "stop"
    assert deltas[4].usage.completion_tokens == 8
    assert deltas[4].diffusion.steps_per_block == 8.0


def test_stream_error_event_raises_typed_error(scripted_http):
    body = sse(chunk("partial"), {"error": {"message": "engine failed", "type": "server_error",
                                            "param": None, "code": None}}, "[DONE]")
    with scripted_http([(200, {"Content-Type": "text/event-stream"}, body)]) as server:
        with DiffuserveClient(server.url) as client:
            stream = client.stream_complete("x")
            assert next(stream).text == "partial"
            with pytest.raises(DiffuserveAPIError) as info:
                next(stream)
    assert info.value.type == "server_error" and info.value.message == "engine failed"


def test_base_url_with_v1_suffix(scripted_http):
    models = json.dumps({"object": "list", "data": [{"id": "tiny", "object": "model", "owned_by": "x",
                                                      "max_model_len": 512}]}).encode()
    with scripted_http([(200, {"Content-Type": "application/json"}, models)]) as server:
        with DiffuserveClient(server.url + "/v1/") as client:
            (card,) = client.models()
    assert server.seen[0][1] == "/v1/models"
    assert card.id == "tiny" and card.max_model_len == 512
