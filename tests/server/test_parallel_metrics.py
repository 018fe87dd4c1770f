"""Parallel decoding over HTTP: the factor rule, the per-step cap and the dual cache are request
fields, bad combinations are 400s naming the field, and the tokens-per-step histogram and the
step latency histogram on /metrics show what the rules did."""

from __future__ import annotations

import time

import httpx
from server_helpers import metric


def _idle(server, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        m = server.metrics()
        if metric(m, "diffuserve_requests_running") == 0 and metric(m, "diffuserve_requests_waiting") == 0:
            return m
        assert time.monotonic() < deadline, "the server stays busy"
        time.sleep(0.05)


def test_tokens_per_step_histogram_follows_the_cap(server):
    """A huge factor passes every masked token; the cap of 4 then commits exactly 4 a step:
    blocks of 8 in 2 steps, whatever the model predicts."""
    before = _idle(server)
    body = {"prompt": "def f(x):", "max_tokens": 16, "block_length": 8, "ignore_eos": True,
            "threshold_factor": 1000, "max_commits_per_step": 4}
    r = server.post("/v1/completions", body)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 16
    assert r.json()["diffusion"]["steps"] == 4
    after = _idle(server)

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    hist = "diffuserve_tokens_committed_per_step"
    assert delta(hist + "_count") == 4 and delta(hist + "_sum") == 16
    assert delta(hist + "_bucket", le="3.0") == 0 and delta(hist + "_bucket", le="4.0") == 4
    assert delta("diffuserve_engine_step_duration_seconds_count") >= 4
    assert delta("diffuserve_engine_step_duration_seconds_sum") > 0


def test_dual_cache_over_http(server):
    body = {"prompt": "def f(x):", "max_tokens": 16, "block_length": 8, "steps": 4, "ignore_eos": True,
            "canvas": "fixed", "cache": "dual"}
    r = server.post("/v1/completions", body)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 16 and r.json()["diffusion"]["steps"] == 8


def test_bad_parallel_fields_are_400s_naming_the_field(server):
    cases = [
        ({"threshold": 0.9, "threshold_factor": 1.0}, "threshold_factor"),
        ({"threshold_factor": 0}, "threshold_factor"),
        ({"threshold": 0.9, "max_commits_per_step": 0}, "max_commits_per_step"),
        ({"cache": "dual", "canvas": "variable"}, "cache"),  # no suffix to cache
    ]
    for fields, param in cases:
        r = server.post("/v1/completions", {"prompt": "x", "max_tokens": 8, **fields})
        assert r.status_code == 400, (fields, r.text)
        err = r.json()["error"]
        assert err["param"] == param, (fields, err)
    assert httpx.get(server.base_url + "/health", timeout=10).status_code == 200
