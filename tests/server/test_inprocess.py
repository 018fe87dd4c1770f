"""The app on uvicorn in a thread, over the real engine: 503 while the model loads, 500 for an engine
failure of one request while its neighbour completes."""

from __future__ import annotations

import json
import os
import threading
import time

import httpx
import pytest
import uvicorn
from diffuserve.engine.async_engine import AsyncEngine
from diffuserve.engine.engine_config import EngineConfig
from diffuserve.server.app import create_app
from diffuserve.server.state import ServerSettings
from server_helpers import error_shape, free_port, parse_events, sse_events

# Inside the built-in vocabulary (320 ids); a prompt holding it fails inside the step (injected below).
POISON = 300
MESSAGES = [{"role": "user", "content": "def f():"}]


@pytest.fixture(scope="module")
def gated():
    """A server whose model load waits for `release`: it is up, but not ready, until then."""
    release = threading.Event()

    def factory() -> AsyncEngine:
        assert release.wait(120), "the test never released the model load"
        return AsyncEngine.from_pretrained(os.environ.get("DIFFUSERVE_TEST_MODEL"),
                                           EngineConfig(max_num_seqs=4, kv_cache_memory=64 << 20))

    app = create_app(factory, ServerSettings(served_model_name="gated", retry_after_s=2))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield app, base, release
    release.set()
    server.should_exit = True
    thread.join(60)
    assert not thread.is_alive(), "the in-process server did not stop"


def test_503_until_the_model_is_loaded(gated):
    app, base, release = gated
    assert httpx.get(base + "/health").status_code == 200  # alive while loading
    ready = httpx.get(base + "/ready")
    assert ready.status_code == 503 and ready.headers["retry-after"] == "2"
    assert error_shape(ready.json())["code"] == "model_not_ready"
    r = httpx.post(base + "/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 4})
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    err = error_shape(r.json())
    assert err["code"] == "model_not_ready" and err["type"] == "service_unavailable"
    release.set()
    deadline = time.monotonic() + 120
    while httpx.get(base + "/ready").status_code != 200:
        assert time.monotonic() < deadline, "never became ready"
        time.sleep(0.1)
    r = httpx.post(base + "/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 4})
    assert r.status_code == 200, r.text


@pytest.fixture()
def poisoned(gated):
    """Make the engine's model runner raise for any batch holding a POISON prompt. The engine then
    reruns the batch one request at a time, so only the poisoned request fails."""
    app, base, release = gated
    release.set()
    while httpx.get(base + "/ready").status_code != 200:
        time.sleep(0.1)
    runner = app.state.server_state.engine.engine.runner
    real_run = runner.run

    def run(batch):
        if any(POISON in seq.prompt_ids for seq, _ in batch):
            raise RuntimeError("injected fault")
        return real_run(batch)

    runner.run = run
    yield base
    runner.run = real_run


def test_engine_failure_is_a_500_for_that_request_only(poisoned):
    base = poisoned
    healthy_body = {"prompt": "def g():", "max_tokens": 32, "block_length": 8, "ignore_eos": True,
                    "stream": True}
    results = {}

    def healthy():
        with httpx.stream("POST", base + "/v1/completions", json=healthy_body, timeout=120) as r:
            results["healthy"] = parse_events(sse_events(r))

    t = threading.Thread(target=healthy)
    t.start()
    bad = httpx.post(base + "/v1/completions", json={"prompt": [3, POISON, 9], "max_tokens": 8}, timeout=60)
    t.join(120)
    assert bad.status_code == 500
    err = error_shape(bad.json())
    assert err["code"] == "engine_error" and "injected fault" in err["message"]
    assert results["healthy"][-1]["choices"][0]["finish_reason"] in ("stop", "length")
    # Streaming: the failure arrives as an OpenAI-shaped error event, then [DONE].
    with httpx.stream("POST", base + "/v1/completions", timeout=60,
                      json={"prompt": [POISON], "max_tokens": 8, "stream": True}) as r:
        assert r.status_code == 200
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    assert error_shape(json.loads(events[-2]))["code"] == "engine_error"
    # And the server goes on serving.
    ok = httpx.post(base + "/v1/completions", json={"prompt": "x = ", "max_tokens": 4}, timeout=60)
    assert ok.status_code == 200, ok.text
