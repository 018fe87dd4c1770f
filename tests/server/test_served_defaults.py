"""The server's default decoding (engine/params.py SERVED_THRESHOLD, `serve --threshold`) is what a
request without diffusion fields gets, over HTTP on the real `diffuserve serve` process; a request
that picks its own rule, or exact mode, keeps it."""

from __future__ import annotations

from diffuserve.engine.params import SERVED_THRESHOLD

PROMPT = [{"role": "user", "content": "What is 123 + 456?"}]


def _chat(server, **fields) -> dict:
    r = server.post("/v1/chat/completions", {"messages": PROMPT, "max_tokens": 64, **fields})
    assert r.status_code == 200, r.text
    body = r.json()
    return {"text": body["choices"][0]["message"]["content"], "steps": body["diffusion"]["steps"],
            "blocks": body["diffusion"]["blocks"], "tokens": body["usage"]["completion_tokens"]}


def test_a_request_without_diffusion_fields_gets_the_served_threshold(server):
    plain = _chat(server)
    assert plain == _chat(server, threshold=SERVED_THRESHOLD)
    # Parallel decoding pays on the built-in model: clearly fewer steps than tokens.
    assert plain["steps"] < plain["tokens"] / 1.5, plain


def test_a_request_with_its_own_rule_or_exact_mode_keeps_it(server):
    one_a_step = _chat(server, steps=32)  # steps = block_length: the reference schedule
    assert one_a_step["steps"] == 32 * one_a_step["blocks"]
    exact = _chat(server, cache="none")
    assert exact["steps"] == 32 * exact["blocks"]
    factor = _chat(server, threshold_factor=1000.0, max_commits_per_step=4)
    assert factor["steps"] == 8 * factor["blocks"]  # the factor rule and its cap, not the threshold
    served = _chat(server)
    assert served["steps"] < 32 * served["blocks"]
