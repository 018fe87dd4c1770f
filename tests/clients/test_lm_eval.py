"""lm-evaluation-harness through the server: `diffuserve eval` on the local multiple-choice task
(tests/data/lm_eval), and the `diffuserve` harness model's three request types."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from live_server import running_server
from prometheus_client.parser import text_string_to_metric_families
from tiny_chat_checkpoint import write_tiny_chat_checkpoint

pytest.importorskip("lm_eval")

DATA = Path(__file__).parents[1] / "data" / "lm_eval"
TASKS = f"{DATA / 'arith_mc.yaml'},{DATA / 'arith_mc_gen.yaml'}"
NUM_QUESTIONS = len(json.loads((DATA / "arith_mc.json").read_text()))


@pytest.fixture(scope="module")
def tiny_url(tmp_path_factory):
    folder = write_tiny_chat_checkpoint(tmp_path_factory.mktemp("lm_eval") / "ckpt")
    with running_server("--model", str(folder), "--served-model-name", "tiny", "--max-num-seqs", "32") as url:
        yield url


def counter(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def run_eval(url: str, out: Path, *extra: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "diffuserve.server.cli", "eval", "--tasks", TASKS, "--base-url", url,
           "--apply-chat-template", "--output", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "diffuserve_arith_mc" in proc.stdout  # the results table
    return json.loads(out.read_text())


@pytest.mark.slow
def test_eval_command_completes_the_local_task(tiny_url, tmp_path):
    engine_steps = counter(tiny_url, "diffuserve_engine_steps_total")
    request_steps = counter(tiny_url, "diffuserve_denoising_steps_total")
    results = run_eval(tiny_url, tmp_path / "results.json", "--num-concurrent", "16")
    mc, gen = results["results"]["diffuserve_arith_mc"], results["results"]["diffuserve_arith_mc_gen"]
    assert 0.0 <= mc["acc,none"] <= 1.0 and 0.0 <= gen["exact_match,last_letter"] <= 1.0
    for task in ("diffuserve_arith_mc", "diffuserve_arith_mc_gen"):
        assert results["n-samples"][task]["effective"] == NUM_QUESTIONS
    # Concurrent requests share forwards: fewer engine steps than the requests' own steps.
    engine_steps = counter(tiny_url, "diffuserve_engine_steps_total") - engine_steps
    request_steps = counter(tiny_url, "diffuserve_denoising_steps_total") - request_steps
    assert 0 < engine_steps < request_steps / 2


def test_the_harness_model_request_types(tiny_url):
    from diffuserve.clients import DiffuserveClient
    from diffuserve.clients.lm_eval_model import DiffuserveLM
    from lm_eval.api.instance import Instance

    def inst(kind, *args):
        return Instance(request_type=kind, doc={}, arguments=args, idx=0)

    lm = DiffuserveLM(base_url=tiny_url, method="likelihood", mc_samples=4, seed=2, num_concurrent=4)
    assert lm.client.model == "tiny"  # asked the server
    reqs = [inst("loglikelihood", "Question: 1 + 1?", c) for c in (" 2", " 3", " 11")]
    reqs.append(inst("loglikelihood", "Other", " x"))
    got = lm.loglikelihood(reqs)
    with DiffuserveClient(tiny_url) as client:
        direct = client.score([" 2", " 3", " 11"], prompt="Question: 1 + 1?", method="likelihood",
                              mc_samples=4, seed=2)
    assert [g[0] for g in got[:3]] == [s.score for s in direct.scores]
    assert all(g[1] is False for g in got)  # the likelihood method cannot tell greediness

    conf = DiffuserveLM(base_url=tiny_url, method="confidence").loglikelihood(reqs[:2])
    assert all(math.isfinite(s) and isinstance(g, bool) for s, g in conf)

    rolling = lm.loglikelihood_rolling([inst("loglikelihood_rolling", "abc abc"),
                                        inst("loglikelihood_rolling", "x")])
    assert all(math.isfinite(r) and r < 0 for r in rolling)

    outs = lm.generate_until([inst("generate_until", "Say", {"until": ["a"], "max_gen_toks": 16}),
                              inst("generate_until", "Go", {"until": "\n", "max_gen_toks": 8})])
    assert len(outs) == 2 and "a" not in outs[0] and "\n" not in outs[1]

    with pytest.raises(ValueError, match="unknown diffuserve model_args"):
        DiffuserveLM(base_url=tiny_url, blocklength=8)


@pytest.fixture(scope="module")
def builtin_results(tmp_path_factory):
    """Both local tasks through lm-eval against a server on the built-in model."""
    with running_server("--max-num-seqs", "32") as url:
        return run_eval(url, tmp_path_factory.mktemp("builtin") / "results.json", "--num-concurrent", "16")


@pytest.mark.slow
def test_generated_replies_answer_the_builtin_model_questions(builtin_results):
    """The whole reply (trace, one check line per option, letter) graded on its last letter.
    The built-in model picks 37 of the 40 (BENCHMARKS.md); chance is 0.25 and the most frequent
    answer letter covers 0.40, so 0.8 is far above both."""
    acc = builtin_results["results"]["diffuserve_arith_mc_gen"]["exact_match,last_letter"]
    assert acc >= 0.8, f"generation accuracy {acc:.3f} on {NUM_QUESTIONS} questions"


@pytest.mark.slow
@pytest.mark.xfail(reason="the built-in model picks a multiple-choice letter only at the end of a "
                          "worked reply (the addition trace and a check per option); scoring the "
                          "letter straight after the question asks for the bare sum, which it has not "
                          "learned (0.2, BENCHMARKS.md). Passes once a model that answers them ships",
                   strict=False)
def test_confidence_scoring_beats_chance_on_the_builtin_model(builtin_results):
    """Accuracy of confidence scoring on the 40 held-out questions. Chance is 0.25 and the most
    frequent answer letter covers 0.40 of them, so 0.6 is clearly above both."""
    acc = builtin_results["results"]["diffuserve_arith_mc"]["acc,none"]
    assert acc >= 0.6, f"confidence-scoring accuracy {acc:.3f} on {NUM_QUESTIONS} questions"
