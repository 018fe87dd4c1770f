"""`diffuserve bench soak` for 60 s against a live server on a tiny random checkpoint: every
request finishes or is cancelled by its client, none hangs, the engine drains (running, waiting and
KV pages back to 0) and the server's RSS grows less than 5% after the warm-up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from diffuserve.bench.soak import listening_pid, parse_gauges
from live_server import free_port
from tiny_chat_checkpoint import write_tiny_chat_checkpoint

CLI = [sys.executable, "-m", "diffuserve.server.cli", "--log-level", "WARNING"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_parse_gauges_sums_label_sets():
    text = ('# HELP diffuserve_requests_running x\ndiffuserve_requests_running{model="a"} 2.0\n'
            'diffuserve_requests_running{model="b"} 1.0\ndiffuserve_kv_cache_pages_used{model="a"} 0.0\n'
            'diffuserve_requests_running_total 9\n')
    gauges = parse_gauges(text, ("diffuserve_requests_running", "diffuserve_kv_cache_pages_used"))
    assert gauges == {"diffuserve_requests_running": 3.0, "diffuserve_kv_cache_pages_used": 0.0}


@pytest.mark.slow
def test_soak_60s_against_a_live_server(tmp_path):
    folder = write_tiny_chat_checkpoint(tmp_path / "tiny")
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    # No stop ids: every answer runs to max_tokens, so every request does the same work.
    server = subprocess.Popen([*CLI, "serve", "--model", str(folder), "--port", str(port),
                               "--stop-token-ids", "", "--max-num-seqs", "8", "--kv-cache-memory", "32MiB"],
                              stdout=log, stderr=subprocess.STDOUT, env=ENV)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.3)
        assert listening_pid(port) == server.pid  # what the soak finds without --server-pid
        out = tmp_path / "soak.json"
        proc = subprocess.run([*CLI, "bench", "soak", "--url", url, "--clients", "8", "--duration", "60",
                               "--disconnect-fraction", "0.25", "--max-tokens", "32", "--block-length", "8",
                               "--request-timeout", "60", "--json", str(out)],
                              capture_output=True, text=True, timeout=300, env=ENV)
        report = json.loads(out.read_text())
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert report["passed"] and report["server_pid"] == server.pid
        outcomes = report["outcomes"]
        assert set(outcomes) == {"finished", "cancelled"}, outcomes
        assert outcomes["finished"] >= 8 and outcomes["cancelled"] >= 2
        assert report["gauges_after"] == {"diffuserve_requests_running": 0.0,
                                          "diffuserve_requests_waiting": 0.0,
                                          "diffuserve_kv_cache_pages_used": 0.0}
        assert report["rss_growth"] < 0.05
        assert "[PASS] engine drained" in proc.stdout
        # The server saw the disconnects as aborts, and is still serving.
        metrics = httpx.get(url + "/metrics").text
        assert 'finish_reason="abort"' in metrics
        assert httpx.get(url + "/ready").status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
