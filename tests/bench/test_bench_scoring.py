"""`diffuserve bench scoring` against a live tiny server: every row runs and the table prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from live_server import running_server
from tiny_chat_checkpoint import write_tiny_chat_checkpoint


@pytest.mark.slow
def test_bench_scoring_prints_every_row(tmp_path):
    folder = write_tiny_chat_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "rows.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with running_server("--model", str(folder), "--max-num-seqs", "16") as url:
        proc = subprocess.run(
            [sys.executable, "-m", "diffuserve.server.cli", "bench", "scoring", "--base-url", url,
             "--questions", "6", "--samples", "2,4", "--concurrency", "1,4", "--gen-max-tokens", "2",
             "--output", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())
    assert [(r["run"], r["concurrency"]) for r in rows] == [
        ("confidence", 1), ("confidence", 4), ("likelihood 2", 4), ("likelihood 4", 4), ("generate", 4)]
    for r in rows:
        assert r["questions"] == 6 and 0.0 <= r["accuracy"] <= 1.0 and r["questions_per_s"] > 0
    assert rows[0]["accuracy"] == rows[1]["accuracy"]  # confidence scoring is deterministic
    assert rows[0]["forwards_per_question"] == 4.0  # four one-token candidates, one forward each
    assert "questions/s at concurrency 4 vs 1" in proc.stdout
