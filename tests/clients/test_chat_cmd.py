"""`diffuserve chat` driven through a pipe against the real server."""

from __future__ import annotations

import re
import subprocess
import sys

STATS = re.compile(r"^\[(\d+) tokens in [\d.]+ s, ([\d.]+) tokens/s; prompt (\d+) tokens; "
                   r"(\d+) steps, (\d+) blocks, ([\d.]+) steps/block, ([\d.]+) tokens/step\]$")


def test_chat_through_a_pipe_keeps_the_conversation(server_url):
    proc = subprocess.run(
        [sys.executable, "-m", "diffuserve.server.cli", "chat", "--url", server_url, "--api-key", "test-key",
         "--max-tokens", "12", "--block-length", "4", "--system", "You are terse."],
        input="Hello there.\n\n/reset\nWhat is a cat?\nAnd a dog?\n/exit\nnever sent\n",
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    stats = [STATS.match(line) for line in proc.stdout.splitlines() if line.startswith("[")]
    assert len(stats) == 3 and all(stats), proc.stdout
    assert "(conversation cleared)" in proc.stdout
    for m in stats:
        tokens, rate, prompt, steps, blocks, steps_per_block, tokens_per_step = m.groups()
        assert 0 <= int(tokens) <= 12 and (float(rate) > 0) == (int(tokens) > 0)
        assert int(steps) > 0 and 1 <= int(blocks) <= 3
        assert float(steps_per_block) == round(int(steps) / int(blocks), 1)
    prompts = [int(m.group(3)) for m in stats]
    # Turn 3 carries turn 2 (question and answer) in its prompt; turn 2 followed a /reset, so it is
    # no longer than the first turn plus its own question.
    assert prompts[2] > prompts[1]


def test_chat_reports_unreachable_server():
    proc = subprocess.run(
        [sys.executable, "-m", "diffuserve.server.cli", "chat", "--url", "http://127.0.0.1:9"],
        input="hi\n", capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "cannot list models" in proc.stderr
