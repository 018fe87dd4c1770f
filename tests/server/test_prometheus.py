"""A real Prometheus (Debian package `prometheus`) scrapes the test server and answers queries."""

from __future__ import annotations

import shutil
import subprocess
import time

import httpx
import pytest
from server_helpers import free_port, metric

PROMETHEUS = shutil.which("prometheus")


@pytest.fixture()
def prometheus(server, tmp_path):
    if PROMETHEUS is None:
        pytest.skip("the prometheus binary is not installed (Debian: apt-get install -y prometheus)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: diffuserve\n    scrape_interval: 1s\n    scrape_timeout: 1s\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{server.port}']\n"
    )
    log = open(tmp_path / "prometheus.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
        try:
            if httpx.get(base + "/-/ready", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "prometheus did not become ready"
        time.sleep(0.2)
    yield base
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    log.close()


def query(base: str, promql: str) -> list[dict]:
    r = httpx.get(base + "/api/v1/query", params={"query": promql}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_ingests_the_request_counter(server, prometheus):
    r = server.post("/v1/completions", {"prompt": "def p():", "max_tokens": 8, "block_length": 8})
    assert r.status_code == 200
    served = metric(server.metrics(), "diffuserve_requests_total", status="200")
    assert served >= 1
    promql = 'sum(diffuserve_requests_total{job="diffuserve",status="200"})'
    deadline = time.monotonic() + 60
    while True:
        result = query(prometheus, promql)
        if result and float(result[0]["value"][1]) >= served:
            break
        assert time.monotonic() < deadline, f"Prometheus never saw {served} requests: {result}"
        time.sleep(0.5)
    assert float(query(prometheus, 'up{job="diffuserve"}')[0]["value"][1]) == 1.0
    # Histograms and engine gauges arrive too, with the model label.
    steps = query(prometheus, "diffuserve_engine_step_duration_seconds_count")
    assert steps and float(steps[0]["value"][1]) > 0 and steps[0]["metric"]["model"]
    assert query(prometheus, "diffuserve_kv_cache_pages_total")
