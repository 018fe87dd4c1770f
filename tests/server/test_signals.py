"""SIGTERM and SIGINT at every point of a real `diffuserve serve`'s life end it cleanly.

Exit statuses (docs/deploy.md): 0 for a graceful stop, from the moment the server has installed
its signal handlers (it logs "Started server process"), during the model load included; before
that, while Python still imports torch, the signal's default action ends the process: killed by
the signal (-15 / -2 here; 143 / 130 in a shell). Never 134 (an aborted interpreter), never a hang.
"""

from __future__ import annotations

import signal
import time

import httpx
import pytest
from server_helpers import start_server

MESSAGES = [{"role": "user", "content": "def run():"}]
STOP_WITHIN_S = 30


def wait_for_log(server, text: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log_path.read_text(errors="replace"):
        assert server.proc.poll() is None, f"exited early with {server.proc.returncode}:\n{server.log_tail()}"
        assert time.monotonic() < deadline, f"never logged {text!r}:\n{server.log_tail()}"
        time.sleep(0.02)


def stop_with(server, sig: int) -> int:
    server.proc.send_signal(sig)
    try:
        code = server.proc.wait(STOP_WITHIN_S)
    except Exception:
        server.proc.kill()
        raise AssertionError(f"no exit {STOP_WITHIN_S} s after {sig!r}:\n{server.log_tail()}") from None
    log = server.log_path.read_text(errors="replace")
    assert "terminate called" not in log and "Fatal Python error" not in log, log[-3000:]
    return code


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_python_imports_is_the_default_action(tmp_path, sig):
    s = start_server(tmp_path, wait_ready=False, name=f"imports-{sig.name}")
    time.sleep(0.3)  # far from "Started server process": torch is still being imported
    assert stop_with(s, sig) in (-sig, 0)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_the_load_thread_runs_torch_exits_0(tmp_path, sig):
    """The load thread is inside torch (held there by DIFFUSERVE_INJECT_SLOW_LOAD_S): a normal
    interpreter exit would abort (134, "terminate called without an active exception")."""
    s = start_server(tmp_path, wait_ready=False, name=f"load-{sig.name}",
                     env={"DIFFUSERVE_INJECT_SLOW_LOAD_S": "120"})
    wait_for_log(s, "busy in torch before the load")
    wait_for_log(s, "Application startup complete")
    time.sleep(0.3)
    started = time.monotonic()
    assert stop_with(s, sig) == 0, s.log_tail()
    assert time.monotonic() - started < 10  # it does not wait for the load
    assert "exiting while diffuserve-load still runs" in s.log_path.read_text()


@pytest.mark.slow
def test_sigterm_as_the_model_load_starts_exits_0(tmp_path):
    s = start_server(tmp_path, wait_ready=False, name="load-start")
    wait_for_log(s, "Application startup complete")  # handlers installed; the load thread runs
    assert stop_with(s, signal.SIGTERM) == 0, s.log_tail()


@pytest.mark.slow
def test_sigint_while_serving_a_stream_exits_0(tmp_path):
    s = start_server(tmp_path, "--shutdown-timeout", "0", name="serving-SIGINT")
    body = {"messages": MESSAGES, "max_tokens": 256, "block_length": 8, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", s.base_url + "/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        next(line for line in lines if '"delta":{"content":' in line)  # generating now
        code = stop_with(s, signal.SIGINT)
        rest = [line for line in lines if line.startswith("data: ")]
    assert code == 0, s.log_tail()
    assert rest[-1] == "data: [DONE]"


@pytest.mark.slow
def test_sigterm_when_idle_and_ready_exits_0(tmp_path):
    s = start_server(tmp_path, name="idle")
    assert stop_with(s, signal.SIGTERM) == 0, s.log_tail()
