"""Client disconnects abort their requests and free KV pages; /metrics moves with real traffic."""

from __future__ import annotations

import json
import socket
import time

import httpx
from server_helpers import API_KEY, metric

MESSAGES = [{"role": "user", "content": "def loop():"}]


def long_request(server) -> dict:
    """Nearly the whole context, one token per step: hundreds of engine steps."""
    card = httpx.get(server.base_url + "/v1/models", headers=server.headers()).json()["data"][0]
    return {"max_tokens": card["max_model_len"] - 64, "block_length": 8, "ignore_eos": True}


def wait_idle(server, timeout: float = 10.0) -> dict:
    """Poll /metrics until nothing runs or waits and no KV page is held; return that sample."""
    deadline = time.monotonic() + timeout
    while True:
        m = server.metrics()
        busy = (metric(m, "diffuserve_requests_running"), metric(m, "diffuserve_requests_waiting"),
                metric(m, "diffuserve_kv_cache_pages_used"))
        if busy == (0, 0, 0):
            return m
        assert time.monotonic() < deadline, f"still busy (running, waiting, pages) = {busy}"
        time.sleep(0.05)


def test_stream_disconnect_aborts_and_frees_pages(server):
    wait_idle(server)
    before = server.metrics()
    body = {"messages": MESSAGES, "stream": True, **long_request(server)}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {API_KEY}"}) as r:
        lines = r.iter_lines()
        content = 0
        for line in lines:  # role chunk, then wait for a real block: the request holds pages now
            if '"delta":{"content":' in line:  # the role chunk's delta starts with "role"
                content += 1
                break
        assert content == 1
        during = server.metrics()
        assert metric(during, "diffuserve_requests_running") == 1
        assert metric(during, "diffuserve_kv_cache_pages_used") > 0
    gone = time.monotonic()  # leaving the block closes the connection mid-stream
    after = wait_idle(server)
    assert time.monotonic() - gone < 5.0
    name = "diffuserve_requests_total"
    assert metric(after, name, status="499", finish_reason="abort") == \
        metric(before, name, status="499", finish_reason="abort") + 1
    # It stopped early: fewer tokens than it would have made.
    tokens = "diffuserve_generation_tokens_total"
    assert 0 < metric(after, tokens) - metric(before, tokens) < body["max_tokens"]


def test_non_streaming_disconnect_aborts(server):
    wait_idle(server)
    before = server.metrics()
    body = {"messages": MESSAGES, **long_request(server)}

    payload = json.dumps(body).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + payload)
        deadline = time.monotonic() + 10
        while metric(server.metrics(), "diffuserve_kv_cache_pages_used") == 0:  # wait until it holds pages
            assert time.monotonic() < deadline, "the request never started"
            time.sleep(0.01)
    # The socket is closed before any answer: the server must notice and abort.
    after = wait_idle(server)
    name = "diffuserve_requests_total"
    assert metric(after, name, status="499", finish_reason="abort") == \
        metric(before, name, status="499", finish_reason="abort") + 1


def test_metrics_move_after_requests(server):
    before = server.metrics()
    # steps = block_length: one token a step, whatever the server's default rule, so the counts
    # below are exact.
    r = server.post("/v1/completions", {"prompt": "def h():", "max_tokens": 16, "block_length": 8,
                                        "steps": 8, "ignore_eos": True})
    assert r.status_code == 200
    usage = r.json()["usage"]
    after = server.metrics()
    reason = r.json()["choices"][0]["finish_reason"]

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("diffuserve_requests_total", status="200", finish_reason=reason) == 1
    assert delta("diffuserve_prompt_tokens_total") == usage["prompt_tokens"]
    assert delta("diffuserve_generation_tokens_total") == usage["completion_tokens"]
    assert delta("diffuserve_denoising_steps_total") == r.json()["diffusion"]["steps"]
    assert delta("diffuserve_e2e_request_latency_seconds_count") == 1
    assert delta("diffuserve_time_to_first_block_seconds_count") == 1
    assert delta("diffuserve_request_queue_time_seconds_count") == 1
    assert delta("diffuserve_engine_step_duration_seconds_count") >= r.json()["diffusion"]["steps"]
    # Every committed token is seen once by the per-step histogram.
    assert delta("diffuserve_tokens_committed_per_step_sum") >= usage["completion_tokens"]
    # Two blocks of 8 in 8 steps each: 128 block tokens. The cache takes the prompt, then at the
    # second block the default 'auto' refresh (64 tokens of work >= the sequence) recomputes the
    # prompt and the first block from position 0.
    prompt = usage["prompt_tokens"]
    assert usage["completion_tokens"] == 16
    assert delta("diffuserve_engine_query_tokens_total", kind="block") == 128
    assert delta("diffuserve_engine_query_tokens_total", kind="cache") == prompt + (prompt + 8)
    assert delta("diffuserve_cache_recomputes_total") == 1
    assert metric(after, "diffuserve_kv_cache_pages_total") > 0
    assert 0.0 <= metric(after, "diffuserve_kv_cache_usage_ratio") <= 1.0
    text = httpx.get(server.base_url + "/metrics").text
    assert 'model="' in text and "# TYPE diffuserve_requests_total counter" in text
