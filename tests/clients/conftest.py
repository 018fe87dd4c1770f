"""Shared fixtures of the client tests.

`server_url`: the real `diffuserve serve` with the built-in model, once per session.
`scripted_http`: a real HTTP peer on loopback that answers from a script: for retry and framing tests.

Each entry of `script` is (status, headers, body bytes); requests consume entries in order
and the last one repeats. Requests seen are recorded (method, path, body, time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from live_server import running_server

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


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    # EOS is the only stop id, so `ignore_eos` requests always run to max_tokens (exact counts).
    with running_server("--api-key", "test-key", "--max-queue", "64", "--stop-token-ids", "1") as url:
        yield url
