"""`server_url`: the real `diffuserve serve` with the built-in model, once per session of bench tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from live_server import running_server


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    # EOS is the only stop id, so `ignore_eos` requests always run to max_tokens (exact counts).
    with running_server("--api-key", "test-key", "--max-queue", "64", "--stop-token-ids", "1") as url:
        yield url
