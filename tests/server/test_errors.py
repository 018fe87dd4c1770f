"""Every error a client can get, produced by real requests: OpenAI body shape and the right status."""

from __future__ import annotations

import httpx
import openai
import pytest
from server_helpers import API_KEY, error_shape, expected_model_name, metric

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "def f(x):"}]


def chat_error(server, body: dict, status: int, **kw) -> dict:
    r = server.post(CHAT, {"messages": MESSAGES, "max_tokens": 4, **body}, **kw)
    assert r.status_code == status, r.text
    return error_shape(r.json())


@pytest.mark.parametrize(
    "body, param",
    [
        ({"block_length": 0}, "block_length"),  # pydantic range
        ({"threshold": 2.0}, "threshold"),
        ({"cache": "disk"}, "cache"),
        ({"temperature": -1}, "temperature"),
        ({"messages": [{"role": "user"}], "stop": 5}, "stop"),
        ({"block_length": 4, "steps": 8}, "steps"),  # DiffusionParams.validate (engine-side rule)
        ({"temperature": 50.0}, "temperature"),  # pydantic lets it through, the engine range does not
    ],
)
def test_validation_errors_name_the_field(server, body, param):
    err = chat_error(server, body, 400)
    assert err["param"] == param and param in err["message"]
    assert err["type"] == "invalid_request_error"


def test_engine_param_error_code(server):
    err = chat_error(server, {"cfg_scale": 1.0}, 400)  # guidance needs exact mode
    assert (err["param"], err["code"]) == ("cfg_scale", "unsupported_value")


def test_context_length_exceeded(server, openai_client):
    with pytest.raises(openai.BadRequestError) as e:
        openai_client.chat.completions.create(
            model=expected_model_name(), messages=MESSAGES, max_tokens=10**6
        )
    assert e.value.status_code == 400
    assert e.value.code == "context_length_exceeded" and e.value.param == "max_tokens"
    # A prompt alone longer than the context fails the same way, through the completions route.
    card = httpx.get(server.base_url + "/v1/models", headers=server.headers()).json()["data"][0]
    max_len = card["max_model_len"]
    err = error_shape(server.post("/v1/completions", {"prompt": [7] * (max_len + 1), "max_tokens": 1}).json())
    assert err["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    "body, param",
    [
        ({"logprobs": True}, "logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"top_p": 0.5}, "top_p"),
        ({"presence_penalty": 1.0}, "presence_penalty"),
        ({"logit_bias": {"3": 5}}, "logit_bias"),
    ],
)
def test_unsupported_fields_are_refused(server, body, param):
    err = chat_error(server, body, 400)
    assert err["param"] == param and err["code"] == "unsupported_parameter" and param in err["message"]


def test_unknown_fields_are_ignored(server):
    r = server.post(CHAT, {"messages": MESSAGES, "max_tokens": 4, "some_future_field": {"x": 1}})
    assert r.status_code == 200, r.text


def test_malformed_json(server):
    r = httpx.post(server.base_url + CHAT, content=b'{"messages": [', timeout=30,
                   headers={**server.headers(), "content-type": "application/json"})
    assert r.status_code == 400 and error_shape(r.json())["code"] == "invalid_json"


def test_unknown_model_404(openai_client):
    with pytest.raises(openai.NotFoundError) as e:
        openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=4)
    assert e.value.code == "model_not_found" and e.value.param == "model" and "gpt-4o" in e.value.message


def test_api_key_401(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {API_KEY}x"}):
        r = httpx.post(server.base_url + CHAT, json={"messages": MESSAGES}, headers=headers, timeout=30)
        assert r.status_code == 401 and error_shape(r.json())["code"] == "invalid_api_key"
        assert r.headers["www-authenticate"] == "Bearer"
    with openai.OpenAI(base_url=server.base_url + "/v1", api_key="nope", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    # Probes and metrics stay open without the key.
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(server.base_url + path, timeout=30).status_code == 200, path


def test_body_too_large_413(server):
    big = {"messages": [{"role": "user", "content": "x" * 70_000}]}  # limit is 65536 bytes
    assert error_shape(server.post(CHAT, big).json())["code"] == "request_too_large"
    assert server.post(CHAT, big).status_code == 413

    def chunked():  # no Content-Length: the limit applies while the body streams in
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(80):
            yield b"y" * 1000
        yield b'"}]}'

    r = httpx.post(server.base_url + CHAT, content=chunked(), timeout=30,
                   headers={**server.headers(), "content-type": "application/json"})
    assert r.status_code == 413 and error_shape(r.json())["code"] == "request_too_large"


def test_wrong_method_and_route(server):
    r = httpx.get(server.base_url + CHAT, headers=server.headers(), timeout=30)
    assert r.status_code == 405 and error_shape(r.json())
    r = httpx.get(server.base_url + "/v1/nothing", headers=server.headers(), timeout=30)
    assert r.status_code == 404 and error_shape(r.json())


def test_errors_are_counted_and_the_server_keeps_serving(server):
    before = server.metrics()
    chat_error(server, {"block_length": 0}, 400)
    chat_error(server, {"model": "nope"}, 404)
    after = server.metrics()
    for status in ("400", "404"):
        name = "diffuserve_requests_total"
        assert metric(after, name, status=status) == metric(before, name, status=status) + 1
    r = server.post(CHAT, {"messages": MESSAGES, "max_tokens": 4})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")
