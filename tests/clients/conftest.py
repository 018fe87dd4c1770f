"""Shared fixtures of the client tests.

`server_url`: the real `diffuserve serve` with the built-in model, once per session.
`scripted_http`: a real HTTP peer on loopback that answers from a script: for retry and framing tests.

Each entry of `script` is (status, headers, body bytes); requests consume entries in order
and the last one repeats. Requests seen are recorded (method, path, body, time).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

Reply = tuple[int, dict[str, str], bytes]


class ScriptedServer:
    def __init__(self, script: list[Reply]):
        self.script = list(script)
        self.seen: list[tuple[str, str, bytes, float]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                owner.seen.append((self.command, self.path, body, time.monotonic()))
                status, headers, payload = owner.script[min(len(owner.seen), len(owner.script)) - 1]
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted_http() -> type[ScriptedServer]:
    return ScriptedServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(*args: str, ready_timeout: float = 180.0) -> Iterator[str]:
    """`diffuserve serve` (built-in model) as a subprocess on a free loopback port; yields its URL."""
    port = _free_port()
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


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    with running_server("--api-key", "test-key", "--max-queue", "64") as url:
        yield url
