"""The engine thread never dies silently: a real server whose engine loop raises (fault injection)
ends every in-flight request with an error, answers /health and /ready with 503, and exits 1."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from server_helpers import error_shape, start_server

MESSAGES = [{"role": "user", "content": "def run():"}]
FAULT_AFTER_STEPS = 120


@pytest.mark.slow
def test_engine_loop_death_fails_requests_turns_health_503_and_exits_1(tmp_path):
    s = start_server(tmp_path, "--stop-token-ids", "1", name="engine-death",
                     env={"DIFFUSERVE_INJECT_ENGINE_LOOP_FAULT_AFTER_STEPS": str(FAULT_AFTER_STEPS)})
    long = {"messages": MESSAGES, "max_tokens": 600, "block_length": 8, "ignore_eos": True}
    url = s.base_url + "/v1/chat/completions"
    plain: dict = {}
    t = threading.Thread(target=lambda: plain.update(r=httpx.post(url, json=long, timeout=120)))
    t.start()
    health = []
    with httpx.stream("POST", url, json={**long, "stream": True}, timeout=120) as r:
        assert r.status_code == 200
        events = []
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if '"error"' in line:  # probe at once: the server answers 503 for a while, then exits
                    health = [httpx.get(s.base_url + p, timeout=5) for p in ("/health", "/ready")]
    t.join(60)
    assert events[-1] == "[DONE]"
    err = error_shape(json.loads(events[-2]))
    assert err["code"] == "engine_error" and "engine loop died" in err["message"]
    assert plain["r"].status_code == 500, plain["r"].text
    assert error_shape(plain["r"].json())["code"] == "engine_error"
    assert [h.status_code for h in health] == [503, 503]
    assert {error_shape(h.json())["code"] for h in health} == {"engine_dead"}
    assert s.proc.wait(30) == 1, s.log_tail()
    log = s.log_path.read_text()
    assert "the engine loop died" in log and "injected engine loop fault" in log
