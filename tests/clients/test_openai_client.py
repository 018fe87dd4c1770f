"""The official `openai` client works against diffuserve (chat, streaming chat, completions)."""

from __future__ import annotations

import openai
import pytest

API_KEY = "test-key"


@pytest.fixture(scope="module")
def oai(server_url):
    client = openai.OpenAI(base_url=server_url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
    yield client
    client.close()


def test_openai_chat_stream_and_completion(oai):
    model = oai.models.list().data[0].id
    messages = [{"role": "user", "content": "Say something nice."}]
    extra = {"block_length": 4, "ignore_eos": True}  # full-length answers whatever the model says
    chat = oai.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0,
                                       extra_body=extra)
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].finish_reason == "length" and chat.usage.completion_tokens == 16
    assert chat.model_extra["diffusion"]["steps"] > 0  # the diffusion extra survives the openai types

    stream = oai.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0,
                                         extra_body=extra, stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == chat.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens

    completion = oai.completions.create(model=model, prompt="The weather today", max_tokens=8, temperature=0,
                                        extra_body=extra)
    assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == 8

    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="no-such-model", messages=messages, max_tokens=4)
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=model, messages=messages, max_tokens=4, extra_body={"steps": 0})
    assert info.value.body["param"] == "steps"
