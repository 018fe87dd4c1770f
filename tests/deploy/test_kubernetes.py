"""Kubernetes manifests (docker/kubernetes): every overlay renders with kustomize (`kubectl
kustomize`), validates offline against the Kubernetes API schemas (kubernetes-validate), its
objects point at each other, its `serve` flags parse with the real parser, and its port, probe
paths and metric names are what a live server exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from live_server import running_server

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "docker" / "kubernetes"
OVERLAYS = ["gpu", "tensor-parallel", "cpu"]
# The oldest Kubernetes the manifests target (sidecar-free, autoscaling/v2, policy/v1) and the
# newest schemas kubernetes-validate ships.
K8S_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]

# ServiceMonitor is a Prometheus Operator CRD, absent from the Kubernetes schemas: this is the
# part of its monitoring.coreos.com/v1 schema the manifests use, strict about those fields.
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {"type": "object", "additionalProperties": False, "properties": {
                    "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["port"],
                    "properties": {"port": {"type": "string"}, "path": {"type": "string", "pattern": "^/"},
                                   "interval": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
                                   "scheme": {"enum": ["http", "https"]}}}},
            },
        },
    },
}


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl (which bundles kustomize) is not installed")
    return path


def render(path: Path) -> list[dict]:
    out = subprocess.run([_kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def container(docs: list[dict]) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def serve_args(docs: list[dict]):
    """The container's args parsed by the real `diffuserve serve` parser."""
    import argparse

    from diffuserve.server import serve_cmd

    parser = argparse.ArgumentParser(exit_on_error=False)
    serve_cmd.add_arguments(parser)
    return parser.parse_args(container(docs)["args"])


def validate(doc: dict, version: str) -> None:
    if doc["kind"] == "ServiceMonitor":
        jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    out = {name: render(K8S / "overlays" / name) for name in OVERLAYS}
    out["prometheus-adapter"] = render(K8S / "prometheus-adapter")
    return out


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_overlay_validates(rendered, version):
    for name, docs in rendered.items():
        for doc in docs:
            try:
                validate(doc, version)
            except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
                pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc}")


def test_validation_is_not_vacuous(rendered):
    deployment = one(rendered["gpu"], "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken, K8S_VERSIONS[-1])
    monitor = yaml.safe_load(yaml.safe_dump(one(rendered["gpu"], "ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["interval"] = "fast"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor, K8S_VERSIONS[-1])


def test_overlay_contents(rendered):
    gpu, tp, cpu = rendered["gpu"], rendered["tensor-parallel"], rendered["cpu"]
    assert {d["kind"] for d in gpu} == {"Namespace", "Service", "PersistentVolumeClaim", "Deployment",
                                        "PodDisruptionBudget", "HorizontalPodAutoscaler", "ServiceMonitor"}
    assert container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == 1
    # tensor parallel: one pod holds as many GPUs as it has ranks, and NCCL gets a real /dev/shm
    tp_args, tp_res = serve_args(tp), container(tp)["resources"]
    assert tp_args.tensor_parallel_size > 1
    gpus = tp_args.tensor_parallel_size
    assert tp_res["requests"]["nvidia.com/gpu"] == tp_res["limits"]["nvidia.com/gpu"] == gpus
    shm = [v for v in one(tp, "Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == "dshm"]
    assert shm and shm[0]["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container(tp)["volumeMounts"]
    # cpu smoke test: nothing a bare kind / minikube cluster lacks (GPUs, CRDs, a custom-metrics API,
    # a ReadOnlyMany volume), and the built-in model
    assert {d["kind"] for d in cpu} == {"Namespace", "Service", "Deployment", "PodDisruptionBudget"}
    assert "nvidia.com/gpu" not in str(container(cpu)["resources"])
    assert serve_args(cpu).device == "cpu"
    assert {"name": "DIFFUSERVE_MODEL", "value": ""} in container(cpu)["env"]
    assert "persistentVolumeClaim" not in str(one(cpu, "Deployment")["spec"]["template"]["spec"]["volumes"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_point_at_each_other(rendered, overlay):
    docs = rendered[overlay]
    deployment = one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ctr = container(docs)
    port = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    service = one(docs, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert all(p["targetPort"] in port for p in service["spec"]["ports"])
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert ctr[probe]["httpGet"]["port"] in port
    pod_volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {m["name"] for m in ctr["volumeMounts"]} <= {v["name"] for v in pod_volumes}
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod_volumes if "persistentVolumeClaim" in v}
    assert claims == {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    if any(d["kind"] == "ServiceMonitor" for d in docs):
        monitor = one(docs, "ServiceMonitor")
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        service_ports = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= service_ports
    if any(d["kind"] == "HorizontalPodAutoscaler" for d in docs):
        ref = one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) == ("Deployment", deployment["metadata"]["name"])


def _dockerfile_env(name: str) -> str:
    match = re.search(rf"\b{name}=(\S+)", (ROOT / "docker" / "Dockerfile").read_text())
    assert match, name
    return match.group(1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_port_and_grace_period_match_the_server(rendered, overlay):
    docs = rendered[overlay]
    ctr = container(docs)
    # The image's entrypoint serves on $DIFFUSERVE_PORT, the port the Dockerfile exposes.
    (http,) = [p for p in ctr["ports"] if p["name"] == "http"]
    assert http["containerPort"] == int(_dockerfile_env("DIFFUSERVE_PORT"))
    assert f"EXPOSE {http['containerPort']}" in (ROOT / "docker" / "Dockerfile").read_text()
    # SIGTERM -> preStop pause, then the server drains for --shutdown-timeout; uvicorn's backstop
    # adds 10 s (serve_cmd.run). The kubelet must not SIGKILL before all of that.
    args = serve_args(docs)
    pre_stop = int(ctr["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = one(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > pre_stop + args.shutdown_timeout + 10


def _adapter_rules(rendered) -> list[dict]:
    config_map = one(rendered["prometheus-adapter"], "ConfigMap")
    return yaml.safe_load(config_map["data"]["config.yaml"])["rules"]


def test_hpa_metrics_are_served_by_the_adapter(rendered):
    rules = _adapter_rules(rendered)
    served = {r["name"]["as"] for r in rules}
    for overlay in ("gpu", "tensor-parallel"):
        hpa = one(rendered[overlay], "HorizontalPodAutoscaler")
        for metric in hpa["spec"]["metrics"]:
            assert metric["type"] == "Pods"
            assert metric["pods"]["metric"]["name"] in served
    for r in rules:  # the per-pod mapping the HPA's Pods metrics rely on
        assert r["resources"]["overrides"]["pod"] == {"resource": "pod"}
        assert re.fullmatch(r["name"]["matches"], r["name"]["as"])


@pytest.mark.slow
def test_manifests_agree_with_a_live_server(rendered):
    """Probe paths answer 200 on a loaded server, and every metric the autoscaling path reads is
    one the server exports."""
    probe_paths = {container(rendered[o])[p]["httpGet"]["path"] for o in OVERLAYS
                   for p in ("startupProbe", "livenessProbe", "readinessProbe")}
    monitor_paths = {e.get("path", "/metrics") for o in ("gpu", "tensor-parallel")
                     for e in one(rendered[o], "ServiceMonitor")["spec"]["endpoints"]}
    metric_name = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
    series = {metric_name.match(r["seriesQuery"]).group(0) for r in _adapter_rules(rendered)}
    assert probe_paths == {"/health", "/ready"}
    with running_server("--device", "cpu", "--max-num-seqs", "2") as url:
        for path in probe_paths:
            assert httpx.get(url + path, timeout=10).status_code == 200, path
        (metrics_path,) = monitor_paths
        scrape = httpx.get(url + metrics_path, timeout=10)
        assert scrape.status_code == 200
        exported = set(re.findall(r"^# TYPE (\S+) ", scrape.text, flags=re.M))
    assert series <= exported, series - exported
