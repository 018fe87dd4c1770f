"""Servers of their own: queue-full 429, and SIGTERM (in-flight requests finish, or end cleanly)."""

from __future__ import annotations

import json
import signal
import time

import httpx
import openai
import pytest
from server_helpers import error_shape, expected_model_name, metric, parse_events, start_server

MESSAGES = [{"role": "user", "content": "def run():"}]


def long_body(server, **extra) -> dict:
    card = httpx.get(server.base_url + "/v1/models").json()["data"][0]
    return {"messages": MESSAGES, "max_tokens": card["max_model_len"] - 64, "block_length": 8,
            "ignore_eos": True, "stream": True, **extra}


def first_block(lines) -> None:
    """Read SSE lines until the first content chunk: the request is running from then on."""
    for line in lines:
        if '"delta":{"content":' in line:  # the role chunk's delta starts with "role"
            return
    raise AssertionError("the stream ended before its first block")


@pytest.fixture(scope="module")
def one_seq_server(tmp_path_factory):
    """One sequence at a time and a queue of one: the third concurrent request is refused."""
    # EOS as the only stop id: `ignore_eos` then keeps the long request running whatever the model says.
    s = start_server(tmp_path_factory.mktemp("queue"), "--max-num-seqs", "1", "--max-queue", "1",
                     "--stop-token-ids", "1", name="queue")
    yield s
    assert s.stop() == 0, s.log_tail()


def test_queue_full_429_with_retry_after(one_seq_server):
    s = one_seq_server
    url = s.base_url + "/v1/chat/completions"
    body = long_body(s)
    with httpx.stream("POST", url, json=body, timeout=120) as running:
        lines = running.iter_lines()  # keep it: a collected httpx line iterator closes the connection
        first_block(lines)
        with httpx.stream("POST", url, json=body, timeout=120) as queued:
            assert queued.status_code == 200
            deadline = time.monotonic() + 10
            while metric(s.metrics(), "diffuserve_requests_waiting") < 1:
                assert time.monotonic() < deadline, "the second request never queued"
                time.sleep(0.05)
            r = httpx.post(url, json={"messages": MESSAGES, "max_tokens": 4}, timeout=30)
            assert r.status_code == 429, r.text
            assert int(r.headers["retry-after"]) >= 1
            assert error_shape(r.json())["code"] == "queue_full"
            with openai.OpenAI(base_url=s.base_url + "/v1", api_key="unused", max_retries=0) as client:
                with pytest.raises(openai.RateLimitError):
                    client.chat.completions.create(
                        model=expected_model_name(), messages=MESSAGES, max_tokens=4
                    )
    # Both streams were dropped: the queue drains and the server answers again.
    deadline = time.monotonic() + 10
    while True:
        r = httpx.post(url, json={"messages": MESSAGES, "max_tokens": 4}, timeout=60)
        if r.status_code == 200:
            break
        assert r.status_code == 429 and time.monotonic() < deadline, r.text
        time.sleep(0.1)


def test_sigterm_lets_in_flight_requests_finish(tmp_path):
    s = start_server(tmp_path, "--shutdown-timeout", "60", name="graceful")
    body = {"messages": MESSAGES, "max_tokens": 48, "block_length": 8, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", s.base_url + "/v1/chat/completions", json=body, timeout=120) as r:
        lines = r.iter_lines()
        first_block(lines)
        s.proc.send_signal(signal.SIGTERM)
        rest = sse_events_from(lines)
    chunks = parse_events(rest)  # ends with [DONE]
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finals] in (["length"], ["stop"])
    assert s.proc.wait(60) == 0, s.log_tail()


def test_sigterm_past_the_timeout_ends_streams_with_an_error_event(tmp_path):
    # Abort at once. EOS as the only stop id, as in one_seq_server: `ignore_eos` then keeps the
    # request running until the signal, whatever the model says (the built-in model ends this prompt
    # with <|eot_id|> within a few blocks).
    s = start_server(tmp_path, "--shutdown-timeout", "0", "--stop-token-ids", "1", name="abort")
    with httpx.stream("POST", s.base_url + "/v1/chat/completions", json=long_body(s), timeout=120) as r:
        lines = r.iter_lines()
        first_block(lines)
        stopped_at = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        events = sse_events_from(lines)
    assert events[-1] == "[DONE]"
    err = error_shape(json.loads(events[-2]))
    assert err["code"] == "server_shutting_down"
    assert s.proc.wait(30) == 0, s.log_tail()
    assert time.monotonic() - stopped_at < 20


def sse_events_from(lines) -> list[str]:
    """The remaining `data:` payloads of a stream already partly read."""
    return [line[6:] for line in lines if line.startswith("data: ")]



def test_a_model_that_cannot_load_stops_the_server_with_exit_code_1(tmp_path):
    bad = tmp_path / "bad-model"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "not-a-diffusion-lm"}')
    s = start_server(tmp_path, "--model", str(bad), wait_ready=False, name="bad")
    assert s.proc.wait(60) == 1
    assert "not-a-diffusion-lm" in s.log_tail(80)
