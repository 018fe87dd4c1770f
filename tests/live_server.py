"""`diffuserve serve` as a real subprocess on a free loopback port, for tests of every package."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(*args: str, ready_timeout: float = 180.0) -> Iterator[str]:
    """`diffuserve serve` (built-in model) as a subprocess on a free loopback port; yields its URL."""
    port = free_port()
    if os.environ.get("DIFFUSERVE_TEST_MODEL"):  # run the same tests against another checkpoint
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
