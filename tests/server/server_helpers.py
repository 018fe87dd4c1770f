"""Helpers of the server tests: real servers: `diffuserve serve` subprocesses on free loopback ports.

The model is the built-in one (DIFFUSERVE_TEST_MODEL may point at another checkpoint folder).
Engine settings stay small (tiny KV pool, few sequences) so the suite runs on 2 busy cores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

API_KEY = "test-key-0123"
STARTUP_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected_model_name() -> str:
    path = os.environ.get("DIFFUSERVE_TEST_MODEL")
    return Path(path).name if path else "diffuserve-builtin"


def model_args() -> list[str]:
    path = os.environ.get("DIFFUSERVE_TEST_MODEL")
    return ["--model", path] if path else []


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    port: int
    log_path: Path
    api_key: str | None
    extra: dict = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def post(self, path: str, body: dict, timeout: float = 60.0, **kw) -> httpx.Response:
        headers = {**self.headers(), **kw.pop("headers", {})}
        return httpx.post(self.base_url + path, json=body, headers=headers, timeout=timeout, **kw)

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        text = httpx.get(self.base_url + "/metrics", timeout=10).text
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(
                f"server did not stop within {timeout}s after SIGTERM:\n{self.log_tail()}"
            ) from None


def metric(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


def start_server(tmp_path: Path, *args: str, api_key: str | None = None, wait_ready: bool = True,
                 name: str = "server", env: dict[str, str] | None = None) -> ServerProcess:
    port = free_port()
    log_path = tmp_path / f"{name}-{port}.log"
    cmd = [sys.executable, "-m", "diffuserve.server.cli", "serve", "--port", str(port), *model_args(),
           "--kv-cache-memory", "64MiB", *args]
    if api_key:
        cmd += ["--api-key", api_key]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    log_file = open(log_path, "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(proc, port, log_path, api_key)
    if wait_ready:
        wait_until_ready(server)
    return server


def wait_until_ready(server: ServerProcess, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.base_url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise AssertionError(f"server not ready after {timeout}s:\n{server.log_tail()}")




def sse_events(response: httpx.Response) -> list[str]:
    """The `data:` payloads of an SSE response, in order (raw strings; '[DONE]' included)."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            events.append(line[len("data: "):])
        else:
            assert line == "", f"unexpected SSE line {line!r}"
    return events


def parse_events(events: list[str]) -> list[dict]:
    assert events and events[-1] == "[DONE]", f"stream must end with [DONE], got {events[-1:]}"
    return [json.loads(e) for e in events[:-1]]


def error_shape(body: dict) -> dict:
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    return err
