"""`serve --tensor-parallel-size 2` over HTTP (gloo, 2 real processes): the answers of a single
process, token for token in exact mode; a killed worker fails the request in flight and the
server exits non-zero in bounded time."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
from server_helpers import free_port, model_args

FLAGS = ["--device", "cpu", "--dtype", "float32", "--max-num-seqs", "4", "--kv-cache-memory", "64MiB"]
PROMPTS = ["12 + 7 =", "Sort: 9 3 5", "The capital of"]
BODY = {"max_tokens": 16, "block_length": 8, "temperature": 0, "cache": "none", "ignore_eos": True}


class Server:
    def __init__(self, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="diffuserve-tp-", suffix=".log", delete=False)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "diffuserve.server.cli", "serve", "--port", str(self.port),
             *model_args(), *FLAGS, *args], stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 240
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server not ready:\n{self.output()}")
            time.sleep(0.5)
        self.model = httpx.get(self.url + "/v1/models", timeout=10).json()["data"][0]["id"]

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def complete(self, prompt: str, **extra) -> httpx.Response:
        return httpx.post(self.url + "/v1/completions", timeout=300,
                          json={"model": self.model, "prompt": prompt, **BODY, **extra})

    def workers(self) -> list[int]:
        """Pids of the server's tensor parallel workers (spawned children, not the resource tracker)."""
        out = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
            if ppid == self.proc.pid and "spawn_main" in cmd and "resource_tracker" not in cmd:
                out.append(int(pid))
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)
        return self.proc.returncode


def _answers(server: Server) -> list[str]:
    out = []
    for prompt in PROMPTS:
        r = server.complete(prompt)
        assert r.status_code == 200, r.text
        out.append(r.json()["choices"][0]["text"])
    return out


@pytest.mark.slow
def test_two_ranks_over_http_answer_as_one_process_and_a_dead_worker_stops_the_server():
    # EOS as the only stop id and ignore_eos in BODY: answers run to max_tokens whatever the model.
    single = Server("--stop-token-ids", "1")
    try:
        want = _answers(single)
    finally:
        single.stop()
    tp = Server("--stop-token-ids", "1", "--tensor-parallel-size", "2")
    try:
        assert _answers(tp) == want
        (worker,) = tp.workers()
        # a long request in flight when the worker dies
        result: dict = {}

        def long_request() -> None:
            try:
                result["response"] = tp.complete("Count:", max_tokens=512, block_length=32)
            except httpx.HTTPError as exc:  # the server may close the connection as it exits
                result["error"] = exc

        thread = threading.Thread(target=long_request)
        thread.start()
        time.sleep(3)
        os.kill(worker, 9)
        t0 = time.monotonic()
        health = []  # /health while the server fails: 503 before it exits (the engine-death path)
        while tp.proc.poll() is None and time.monotonic() - t0 < 60:
            try:
                health.append(httpx.get(tp.url + "/health", timeout=1).status_code)
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        code = tp.proc.wait(timeout=60)
        exited_after = time.monotonic() - t0
        thread.join(timeout=30)
        assert code != 0, tp.output()
        assert exited_after < 30
        assert "tensor parallel worker 1 exited" in tp.output()
        assert 503 in health, health
        # the request did not end as a success: an error answer, or a connection cut at exit
        assert "error" in result or result["response"].status_code >= 500 or \
            result["response"].json()["choices"][0]["finish_reason"] == "error", result
    finally:
        tp.stop()
