"""Schemathesis, all checks, against a real `diffuserve serve` on a tiny random checkpoint.

Used by the bounded run in the test suite (test_schemathesis.py) and by the long run
(scripts/schemathesis_long.sh). The cross-field rules the OpenAPI document cannot state are in
schemathesis_hooks.py; everything else is checked as the document says.

    python tests/server/schemathesis_run.py --max-examples 400
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from server_helpers import start_server  # noqa: E402
from tiny_chat_checkpoint import write_tiny_chat_checkpoint  # noqa: E402

# Paths left out, with the reason (each is reported in the run's output).
EXCLUDED: dict[str, str] = {
    "/v1/score": "the rule 'exactly one of prompt and messages' is not in its schema (nor in the hooks) yet",
}


@dataclass
class Outcome:
    returncode: int
    cases: int
    failures: int
    seconds: float
    output: str
    server_exit: int


def schemathesis_command(base_url: str, max_examples: int, seed: int | None, phases: str,
                         workers: int = 1) -> list[str]:
    st = Path(sys.executable).with_name("st")
    cmd = [str(st), "run", f"{base_url}/openapi.json", "--checks", "all", "--max-examples",
           str(max_examples), "--phases", phases, "--request-timeout", "60", "--output-sanitize", "false",
           "--no-color", "--workers", str(workers)]
    for path in EXCLUDED:
        cmd += ["--exclude-path", path]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    return cmd


def run(workdir: Path, max_examples: int, seed: int | None = None, phases: str = "coverage,fuzzing",
        server_args: tuple[str, ...] = (), workers: int = 1) -> Outcome:
    model = write_tiny_chat_checkpoint(workdir / "tiny-chat")
    server = start_server(workdir, "--model", str(model), *server_args, name="schemathesis")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "SCHEMATHESIS_HOOKS": "schemathesis_hooks"}
    started = time.monotonic()
    try:
        proc = subprocess.run(schemathesis_command(server.base_url, max_examples, seed, phases, workers),
                              capture_output=True, text=True, env=env, cwd=workdir)
    finally:
        server_exit = server.stop()
    output = proc.stdout + proc.stderr
    return Outcome(proc.returncode, _count(r"(\d+) generated", output), _failures(output),
                   time.monotonic() - started, output, server_exit)


def _count(pattern: str, text: str) -> int:
    found = re.findall(pattern, text)
    return int(found[-1]) if found else 0


def _failures(text: str) -> int:
    if "No issues found" in text:
        return 0
    return _count(r"(\d+) found \d+ unique failures", text) or _count(r"(\d+) failures?", text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-examples", type=int, default=1000, help="per API operation and phase")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--phases", default="coverage,fuzzing")
    ap.add_argument("--workers", type=int, default=4, help="concurrent schemathesis workers")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="diffuserve-schemathesis-") as tmp:
        out = run(Path(tmp), args.max_examples, args.seed, args.phases, workers=args.workers)
    print(out.output)
    for path, why in EXCLUDED.items():
        print(f"excluded {path}: {why}")
    print(f"cases: {out.cases}  failures: {out.failures}  seconds: {out.seconds:.0f}  "
          f"schemathesis exit: {out.returncode}  server exit: {out.server_exit}")
    return 0 if out.returncode == 0 and out.server_exit == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
