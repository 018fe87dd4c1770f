"""POST /v1/score against a real `diffuserve serve` of a tiny random checkpoint (character-level
tokenizer, the built-in chat template): response shape, reproducibility alone and under load, the
chat template, errors naming the field, queue-full 429, metrics and the OpenAPI schema."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from server_helpers import error_shape, metric, start_server
from tiny_chat_checkpoint import write_tiny_chat_checkpoint

PROMPT = "Question: What is 2 + 3?\nA. 5\nB. 6\nAnswer:"
CANDIDATES = [" A", " B", " C is long"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("score")
    folder = write_tiny_chat_checkpoint(tmp / "ckpt")
    s = start_server(tmp, "--model", str(folder), "--served-model-name", "tiny", "--max-num-seqs", "16",
                     "--max-queue", "40", name="score")
    yield s, folder
    assert s.stop() == 0, s.log_tail()


def score(server, **body):
    r = server.post("/v1/score", {"model": "tiny", **body}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_confidence_response(tiny):
    server, _ = tiny
    body = score(server, prompt=PROMPT, candidates=CANDIDATES)
    assert body["object"] == "score" and body["model"] == "tiny" and body["method"] == "confidence"
    scores = body["scores"]
    assert [s["index"] for s in scores] == [0, 1, 2]
    assert [s["num_tokens"] for s in scores] == [len(c) for c in CANDIDATES]  # one token a character
    for s in scores:
        assert s["score"] < 0 and isinstance(s["greedy"], bool) and s["score_stderr"] is None
    assert body["best"] == max(range(3), key=lambda i: scores[i]["score"])
    usage = body["usage"]
    assert usage["candidate_tokens"] == sum(len(c) for c in CANDIDATES)
    assert usage["forward_passes"] == usage["candidate_tokens"]  # one forward per candidate token
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["candidate_tokens"]
    assert score(server, prompt=PROMPT, candidates=CANDIDATES)["scores"] == scores  # deterministic


def test_likelihood_is_seeded_and_equal_under_load(tiny):
    server, _ = tiny
    req = dict(prompt=PROMPT, candidates=CANDIDATES, method="likelihood", mc_samples=8, seed=3)
    alone = score(server, **req)
    for s in alone["scores"]:
        assert s["greedy"] is None and s["score_stderr"] > 0
    assert alone["usage"]["forward_passes"] <= 8 * 3
    other_seed = score(server, **{**req, "seed": 4})
    assert other_seed["scores"] != alone["scores"]

    def busy(i):
        if i % 2:
            return server.post("/v1/completions", {"model": "tiny", "prompt": f"x{i}", "max_tokens": 8},
                               timeout=120).status_code
        return server.post("/v1/score", {"model": "tiny", "prompt": f"q{i}", "candidates": ["ab", "c"]},
                           timeout=120).status_code

    with ThreadPoolExecutor(12) as pool:
        noise = [pool.submit(busy, i) for i in range(10)]
        loaded = pool.submit(score, server, **req)
        assert all(f.result() == 200 for f in noise)
        under_load = loaded.result()
    for a, b in zip(alone["scores"], under_load["scores"], strict=True):
        assert b["score"] == pytest.approx(a["score"], rel=1e-5, abs=1e-4)
        assert b["score_stderr"] == pytest.approx(a["score_stderr"], rel=1e-4, abs=1e-4)


def test_messages_go_through_the_chat_template(tiny):
    from transformers import AutoTokenizer

    server, folder = tiny
    messages = [{"role": "user", "content": "What is 1 + 1?"}]
    tok = AutoTokenizer.from_pretrained(str(folder))
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.endswith("assistant<|end_header_id|>\n\n")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    by_chat = score(server, messages=messages, candidates=["2", "3"])
    by_ids = score(server, prompt=ids, candidates=["2", "3"])
    assert by_chat["scores"] == by_ids["scores"]
    assert by_chat["usage"]["prompt_tokens"] == len(ids)


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": "q", "candidates": []}, "candidates"),
    ({"prompt": "q"}, "candidates"),
    ({"prompt": "q", "candidates": ["a", ""]}, "candidates[1]"),
    ({"prompt": "q", "candidates": ["a", "b" * 300]}, "candidates[1]"),
    ({"prompt": "q", "candidates": ["a"], "method": "mean"}, "method"),
    ({"prompt": "q", "candidates": ["a"], "mc_samples": 0}, "mc_samples"),
    ({"prompt": "q", "candidates": ["a"], "mc_samples": "8"}, "mc_samples"),
    ({"prompt": "q", "candidates": ["a"], "seed": -1}, "seed"),
    ({"prompt": "q", "candidates": [1]}, "candidates[0]"),
    ({"candidates": ["a"]}, "prompt"),
    ({"prompt": "q", "messages": [{"role": "user", "content": "q"}], "candidates": ["a"]}, "prompt"),
    ({"prompt": [500], "candidates": ["a"]}, "prompt"),
    ({"prompt": "q", "candidates": ["a"], "mc_sample": 8}, "mc_sample"),
])
def test_bad_bodies_get_400_naming_the_field(tiny, body, param):
    server, _ = tiny
    r = server.post("/v1/score", {"model": "tiny", **body})
    assert r.status_code == 400, r.text
    err = error_shape(r.json())
    assert err["param"] == param and err["type"] == "invalid_request_error", err


def test_unknown_model_is_404_and_the_server_keeps_serving(tiny):
    server, _ = tiny
    r = server.post("/v1/score", {"model": "nope", "prompt": "q", "candidates": ["a"]})
    assert r.status_code == 404 and error_shape(r.json())["param"] == "model"
    assert score(server, prompt="q", candidates=["a"])["best"] == 0


def test_queue_full_is_429(tiny):
    server, _ = tiny
    r = server.post("/v1/score", {"model": "tiny", "prompt": "q", "candidates": ["a"] * 41})
    assert r.status_code == 429 and r.headers["retry-after"]
    assert error_shape(r.json())["code"] == "queue_full"


def test_metrics_count_each_candidate(tiny):
    server, _ = tiny
    before = server.metrics()
    score(server, prompt="q", candidates=["a", "b", "c"])
    after = server.metrics()
    for name, labels, delta in (("diffuserve_requests_total", {"status": "200", "finish_reason": "stop"}, 3),
                                ("diffuserve_denoising_steps_total", {}, 3)):
        assert metric(after, name, **labels) - metric(before, name, **labels) == delta
    assert metric(after, "diffuserve_kv_cache_pages_used") == 0


def test_openapi_schema_documents_the_endpoint(tiny):
    server, _ = tiny
    spec = httpx.get(server.base_url + "/openapi.json", timeout=10).json()
    post = spec["paths"]["/v1/score"]["post"]
    assert {"200", "400", "429", "503"} <= set(post["responses"])
    req = spec["components"]["schemas"]["ScoreRequest"]
    assert req["properties"]["method"]["enum"] == ["confidence", "likelihood"]
    assert req["properties"]["mc_samples"]["maximum"] == 1024
    assert set(spec["components"]["schemas"]["CandidateScoreOut"]["required"]) >= {"index", "score", "greedy"}


def test_the_project_clients_score(tiny):
    import asyncio

    from diffuserve.clients import AsyncDiffuserveClient, DiffuserveClient

    server, _ = tiny
    raw = score(server, prompt=PROMPT, candidates=CANDIDATES, method="likelihood", mc_samples=4, seed=1)
    with DiffuserveClient(server.base_url, model="tiny") as client:
        got = client.score(CANDIDATES, prompt=PROMPT, method="likelihood", mc_samples=4, seed=1)
    assert [s.score for s in got.scores] == [s["score"] for s in raw["scores"]] and got.best == raw["best"]

    async def chat_score():
        async with AsyncDiffuserveClient(server.base_url, model="tiny") as client:
            return await client.score(["2", "3"], messages=[{"role": "user", "content": "1 + 1?"}])

    res = asyncio.run(chat_score())
    assert res.method == "confidence" and len(res.scores) == 2 and isinstance(res.scores[0].greedy, bool)
