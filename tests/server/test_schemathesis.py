"""The OpenAPI document tells the truth: a bounded schemathesis run, all checks, every endpoint."""

from __future__ import annotations

import pytest
from schemathesis_run import run


@pytest.mark.slow
def test_schemathesis_finds_no_disagreement_between_schema_and_server(tmp_path):
    # The fuzzing phase only: ~2 cases per example budget over the two POST operations, plus the
    # GETs; the coverage phase (hundreds of boundary cases) is in scripts/schemathesis_long.sh.
    out = run(tmp_path, max_examples=100, seed=20261201, phases="fuzzing")
    assert out.server_exit == 0, out.output[-4000:]
    assert out.returncode == 0 and out.failures == 0, out.output[-8000:]
    assert out.cases >= 200, out.output[-2000:]
