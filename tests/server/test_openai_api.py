"""The official `openai` client (and raw httpx SSE) against a real `diffuserve serve` process."""

from __future__ import annotations

import httpx
import pytest
from server_helpers import API_KEY, expected_model_name, parse_events, sse_events

SMALL = {"block_length": 8, "ignore_eos": True}  # ignore_eos: the answer runs to max_tokens, block by block
# Streams sample (seeded, so reproducible): greedy decoding of a small model can settle on tokens
# that decode to no visible text, which would make "one chunk per block" untestable.
SAMPLED = {"temperature": 1.0, "seed": 11}


def served_model(client) -> str:
    models = client.models.list().data
    assert len(models) == 1
    return models[0].id


def test_models_lists_the_served_model(openai_client):
    models = openai_client.models.list().data
    assert [m.id for m in models] == [expected_model_name()]
    assert models[0].owned_by == "diffuserve"


def test_chat_completion(openai_client):
    model = served_model(openai_client)
    r = openai_client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "def add(a, b):"}], max_tokens=16,
        extra_body=SMALL,
    )
    assert r.object == "chat.completion" and r.model == model and r.id.startswith("chatcmpl-")
    (choice,) = r.choices
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # ignore_eos, and only EOS stops on the test server: the answer fills max_tokens in 2 blocks of
    # 8, at most 8 steps each (the server's default threshold may commit several tokens a step).
    assert r.usage.completion_tokens == 16 and choice.finish_reason == "length"
    diffusion = r.model_extra["diffusion"]
    assert diffusion["blocks"] == 2 and 2 <= diffusion["steps"] <= 16
    assert abs(diffusion["tokens_per_step"] - r.usage.completion_tokens / diffusion["steps"]) < 1e-9


def test_completion_and_seeded_sampling_is_reproducible(openai_client):
    model = served_model(openai_client)
    kw = dict(model=model, prompt="import os\n", max_tokens=12, temperature=1.0, seed=1234, extra_body=SMALL)
    a = openai_client.completions.create(**kw)
    b = openai_client.completions.create(**kw)
    assert a.object == "text_completion" and a.choices[0].text == b.choices[0].text
    assert a.usage.completion_tokens > 0 and a.choices[0].finish_reason in ("stop", "length")


def test_n_choices_and_prompt_list(openai_client):
    model = served_model(openai_client)
    kw = dict(model=model, max_tokens=8, temperature=1.0, extra_body=SMALL)
    r = openai_client.completions.create(prompt=["def f():", "class A:"], n=2, seed=7, **kw)
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
    text = {c.index: c.text for c in r.choices}
    # Choice j of a prompt samples with seed + j, so choice 1 of prompt 1 (index 3) is what a
    # single request for that prompt with seed 8 gives.
    alone = openai_client.completions.create(prompt="class A:", n=1, seed=8, **kw)
    assert alone.choices[0].text == text[3]
    token_prompt = openai_client.completions.create(model=model, prompt=[5 + 100, 200, 300], max_tokens=8,
                                                    extra_body=SMALL)
    assert token_prompt.usage.prompt_tokens == 3


def test_streaming_chat_one_chunk_per_block(openai_client):
    model = served_model(openai_client)
    stream = openai_client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "def mul(a, b):"}], max_tokens=32, stream=True,
        stream_options={"include_usage": True}, extra_body=SMALL, **SAMPLED,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(content) > 1, "a 32-token answer in blocks of 8 must stream more than one chunk"
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "length"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens > 0
    assert usage_chunk.model_extra["diffusion"]["blocks"] == 4 >= len(content)


def test_streaming_raw_sse(server):
    body = {"messages": [{"role": "user", "content": "def sub(a, b):"}], "max_tokens": 32, "stream": True,
            "stream_options": {"include_usage": True}, **SMALL, **SAMPLED}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {API_KEY}"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    chunks = parse_events(events)  # asserts [DONE] is last
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    blocks = [c["choices"][0]["delta"]["content"] for c in chunks[1:] if c["choices"] and
              "content" in c["choices"][0]["delta"]]
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["delta"] == {}
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 32
    # One chunk per decoded block: 32 tokens in blocks of 8 -> 4 (the last may fold into the finish).
    n_blocks = usage["diffusion"]["blocks"]
    assert n_blocks == 4 and len(blocks) in (n_blocks, n_blocks - 1) and len(blocks) > 1
    assert len({c["id"] for c in chunks}) == 1
    # The stream carries exactly the text a non-streaming request with the same seed returns.
    whole = server.post("/v1/chat/completions", {**body, "stream": False, "stream_options": None}).json()
    assert "".join(blocks) == whole["choices"][0]["message"]["content"]


def test_streaming_completion_raw_sse(server):
    body = {"prompt": "def g(x):", "max_tokens": 24, "stream": True, **SMALL, **SAMPLED}
    with httpx.stream("POST", server.base_url + "/v1/completions", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {API_KEY}"}) as r:
        chunks = parse_events(sse_events(r))
    assert all(c["object"] == "text_completion" for c in chunks)
    assert sum(1 for c in chunks if c["choices"][0]["text"]) > 1
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")  # no usage chunk unless asked


def test_openapi_schema(server):
    schema = httpx.get(server.base_url + "/openapi.json", timeout=10).json()
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/ready", "/metrics"):
        assert path in schema["paths"]
    props = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    extras = {"block_length", "steps", "threshold", "cache", "cache_refresh", "canvas", "think_boost"}
    assert extras <= set(props)


def test_diffusion_extras_are_honoured(server):
    def run(**extra) -> dict:
        r = server.post("/v1/completions", {"prompt": "def k():", "max_tokens": 16, "block_length": 8,
                                            "ignore_eos": True, **extra})
        assert r.status_code == 200, r.text
        return r.json()

    two_steps = run(steps=2)["diffusion"]  # 2 steps per block of 8: 4 tokens a step
    assert two_steps == {"steps": 4, "tokens_per_step": 4.0, "blocks": 2}
    exact = run(cache="none", canvas="fixed")
    assert exact["usage"]["completion_tokens"] == 16 and exact["diffusion"]["steps"] == 16
    # One step per block with a refresh at every block recomputes what exact mode does.
    refreshed = run(steps=1, cache_refresh=1)
    assert refreshed["choices"][0]["text"] == run(steps=1, cache="none")["choices"][0]["text"]
    assert refreshed["diffusion"]["blocks"] == 2
    parallel = run(threshold=0.01)["diffusion"]  # nearly every token clears the bar at once
    assert parallel["steps"] < 16 and parallel["tokens_per_step"] > 1.0


def test_openapi_schema_shows_the_limits_the_server_enforces(server):
    from diffuserve.engine.params import BOUNDS

    schema = httpx.get(server.base_url + "/openapi.json", timeout=10).json()
    props = schema["components"]["schemas"]["CompletionRequest"]["properties"]
    for name in ("temperature", "block_length", "steps", "threshold", "seed", "cfg_scale", "think_power"):
        (number,) = [s for s in props[name]["anyOf"] if s.get("type") in ("number", "integer")]
        bound = BOUNDS[name]
        assert number.get("exclusiveMinimum" if bound.low_open else "minimum") == bound.low, name
        assert number.get("exclusiveMaximum" if bound.high_open else "maximum") == bound.high, name
    card = httpx.get(server.base_url + "/v1/models", headers=server.headers(), timeout=10).json()["data"][0]
    assert props["max_tokens"]["maximum"] == card["max_model_len"] - 1  # the served model's context
    assert "422" not in schema["paths"]["/v1/completions"]["post"]["responses"]  # errors are 400s
    r = server.post("/v1/completions", {"prompt": "x", "max_tokens": props["max_tokens"]["maximum"] + 1})
    assert r.status_code == 400


def test_empty_prompt_is_the_start_of_a_document(server):
    """As in OpenAI's API, "" is a valid prompt (the schema allows it): the model starts a document."""
    r = server.post("/v1/completions", {"prompt": "", "max_tokens": 4})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == 1


@pytest.mark.parametrize("body, param", [
    ({"prompt": [[False]]}, "prompt"),  # booleans are not token ids
    ({"prompt": [True, 5]}, "prompt"),
    ({"prompt": "x", "max_tokens": "4"}, "max_tokens"),  # no numbers as strings
    ({"prompt": "x", "max_tokens": 4.5}, "max_tokens"),
    ({"prompt": "x", "stream": 1}, "stream"),
    ({"prompt": "x", "temperature": True}, "temperature"),
    ({"prompt": []}, "prompt"),
])
def test_types_are_strict(server, body, param):
    r = server.post("/v1/completions", body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_an_integer_may_be_written_as_a_whole_float(server):
    r = server.post("/v1/completions", {"prompt": [5.0, 6], "max_tokens": 4.0, "block_length": 4.0})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 4
