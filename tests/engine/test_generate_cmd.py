"""`diffuserve generate --json` on the built-in model, through the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys

BASE = [sys.executable, "-m", "diffuserve.server.cli", "--log-level", "WARNING", "generate"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*BASE, *args], capture_output=True, text=True, timeout=300, env=ENV)


def test_generate_json_engine_equals_reference():
    # No stop ids: the answer runs to max_tokens, whatever the model's quality.
    common = ["--prompt", "def add(a, b):\n", "--max-tokens", "16", "--block-length", "8",
              "--stop-token-ids", "", "--json"]
    engine = _generate(*common, "--cache", "none")
    reference = _generate(*common, "--sampler", "reference")
    assert engine.returncode == 0, engine.stderr
    assert reference.returncode == 0, reference.stderr
    out = json.loads(engine.stdout)
    assert set(out) == {"text", "token_ids", "steps", "finish_reason"}
    assert len(out["token_ids"]) == 16 and all(isinstance(t, int) and t >= 0 for t in out["token_ids"])
    assert out["steps"] == 16 and out["finish_reason"] == "length"
    assert out == json.loads(reference.stdout)


def test_generate_rejects_bad_values_by_name():
    bad = _generate("--prompt", "x", "--block-length", "0")
    assert bad.returncode == 2 and "block_length must be >= 1" in bad.stderr
    bad = _generate("--prompt", "x", "--threshold", "1.5")
    assert bad.returncode == 2 and "threshold must be in (0, 1]" in bad.stderr
    bad = _generate("--model", "/nonexistent/folder", "--prompt", "x")
    assert bad.returncode == 2 and "is not a folder" in bad.stderr
