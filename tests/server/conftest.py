"""Fixtures of the server tests: one shared real `diffuserve serve` process (see server_helpers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from server_helpers import API_KEY, ServerProcess, start_server


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    """The shared server: API key on, small body limit (for 413), up to 8 sequences at once.

    Only EOS (id 1 in the built-in tokenizer) stops generation, so a request with `ignore_eos`
    (EOS logit -> -inf) runs to exactly max_tokens whatever the model: block counts are exact."""
    tmp = tmp_path_factory.mktemp("server")
    s = start_server(tmp, "--max-num-seqs", "8", "--max-body-bytes", "65536", "--stop-token-ids", "1",
                     api_key=API_KEY)
    yield s
    code = s.stop()
    assert code == 0, f"server exit code {code} after SIGTERM:\n{s.log_tail()}"


@pytest.fixture()
def openai_client(server):
    import openai

    with openai.OpenAI(base_url=server.base_url + "/v1", api_key=API_KEY, max_retries=0, timeout=120) as c:
        yield c


