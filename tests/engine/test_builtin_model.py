"""The shipped built-in model: loads like an iLLaDA checkpoint and answers held-out task problems.

Everything here runs on the real checkpoint in engine/assets/builtin through the real engine,
so a broken checkpoint, tokenizer, chat template or decoding path fails these tests.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from diffuserve.engine.assets import BUILTIN_DIR
from diffuserve.engine.llm_engine import LLMEngine
from diffuserve.engine.oracle import generate_variable
from diffuserve.tasks.evaluate import Reply, evaluate_offline, make_params, prompt_ids, suite_problems
from diffuserve.tasks.suite import THINK_END, addition_trace, held_out_problems, option_checks
from diffuserve.training.tokenizer import EOS_ID, EOT_ID

# Reply shapes the model has learned (the model card has its accuracy per task): three
# fixed-width column steps, back to back, for the arithmetic forms; multiple choice adds one
# digit-by-digit check line per option (tasks/suite.py).
ADD_STEPS = r"(\d\+\d\+[01]=\d\d){3}"
OPTION_CHECKS = r"(\n(\d\d[=!]){4}[YN][ABCD]){4}"  # digit pairs and marks, verdict, letter
REPLY_SHAPE = {
    "add": re.compile(f"<think>{ADD_STEPS}</think>" + r"\d+"),
    "sub": re.compile(r"<think>([01]\d-\d-[01]=\d){3}</think>\d+"),
    "sort": re.compile(r"[0-9]+( [0-9]+)*"),
    "mc": re.compile(f"<think>{ADD_STEPS}{OPTION_CHECKS}</think>" + r"[ABCD]"),
    "complete": re.compile(r" [0-9]+"),
}


@pytest.fixture(scope="module")
def engine():
    torch.set_num_threads(2)
    return LLMEngine.from_pretrained(None)


def test_checkpoint_is_illada_format_and_small(engine):
    cfg, tok = engine.cfg, engine.tokenizer
    raw = json.loads((BUILTIN_DIR / "config.json").read_text())
    assert raw["model_type"] == "illada" and raw["architectures"] == ["ILLaDAForCausalLM"]
    assert "mask_token_id" not in raw  # like the real iLLaDA config; the family default 5 applies
    assert cfg.family == "illada" and cfg.mask_token_id == 5 and cfg.tie_embeddings
    assert cfg.num_kv_heads < cfg.num_heads  # GQA
    assert tok.convert_ids_to_tokens(cfg.mask_token_id) == "<|mdm_mask|>"
    assert tok.eos_token_id == EOS_ID and tok.convert_tokens_to_ids("<|eot_id|>") == EOT_ID
    assert {EOS_ID, EOT_ID} <= set(cfg.stop_token_ids)
    assert sum((f.stat().st_size for f in BUILTIN_DIR.iterdir()), 0) < 20 * 2**20
    # Every digit is its own token: no vocabulary entry holds two digits.
    assert not [t for t in tok.get_vocab() if sum(c.isdigit() for c in t) > 1]


@pytest.mark.parametrize("task", sorted(REPLY_SHAPE))
def test_replies_to_held_out_problems_have_the_task_shape(engine, task):
    problems = held_out_problems(task, 10, seed=0)
    report = evaluate_offline(engine, problems, {"cache": "none"}, concurrency=10)
    bad = [r.text for r in report.replies if not REPLY_SHAPE[task].fullmatch(r.text)]
    assert len(bad) <= 1, bad
    assert all(r.finish_reason == "stop" for r in report.replies)


def test_engine_exact_mode_equals_the_reference_sampler_on_task_prompts(engine):
    problems = suite_problems(["add", "sort", "mc", "complete"], 2, seed=1)
    params = make_params({"cache": "none"})
    report = evaluate_offline(engine, problems, {"cache": "none"}, concurrency=8)
    for p, r in zip(problems, report.replies, strict=True):
        ref = generate_variable(engine.model, engine.cfg, [prompt_ids(engine.tokenizer, p)], params,
                                engine.tokenizer)[0]
        assert ref.text == r.text


def test_harness_scores_a_known_wrong_answer_as_wrong(engine):
    (p,) = held_out_problems("add", 1, seed=0)
    right = Reply(p, p.response, 1, 1, "stop")
    wrong = Reply(p, p.response[: -len(p.answer)] + str(int(p.answer) + 1), 1, 1, "stop")
    assert right.correct and not wrong.correct


# Held-out problems the shipped model must answer right in exact mode, out of the first 20 of each
# task (seed 0). The floors sit a little under what the shipped checkpoint measures on exactly
# this sample (20 of 20 for add, sub and sort, 17 for mc, 14 for complete: model card), so a
# retrained model that loses answers fails here.
ACCURACY_FLOOR = {"add": 0.9, "sub": 0.9, "sort": 0.9, "mc": 0.75, "complete": 0.6}


@pytest.mark.parametrize("task", sorted(ACCURACY_FLOOR))
def test_answers_a_fixed_sample_of_held_out_problems(engine, task):
    problems = held_out_problems(task, 20, seed=0)
    report = evaluate_offline(engine, problems, {"cache": "none"}, concurrency=20)
    wrong = [(r.problem.prompt, r.text) for r in report.replies if not r.correct]
    assert report.accuracy(task) >= ACCURACY_FLOOR[task], wrong


def test_multiple_choice_replies_check_every_option_against_the_sum(engine):
    """How the model picks a letter: the addition trace, then one line per option comparing its
    digits with the sum's, then the letter of the line marked `Y`. On these 20 questions the
    whole trace is right in 17 replies and the final letter is the `Y` line's in 19."""
    problems = held_out_problems("mc", 20, seed=0)
    report = evaluate_offline(engine, problems, {"cache": "none"}, concurrency=20)
    right_work = follows_y = 0
    for r in report.replies:
        a, b = (int(v) for v in re.match(r"Question: What is (\d+) \+ (\d+)\?", r.problem.prompt).groups())
        values = [int(line[3:]) for line in r.problem.prompt.split("\n")[1:]]
        work = addition_trace(a, b) + option_checks(a + b, values)
        right_work += r.text.startswith(f"<think>{work}{THINK_END}")
        follows_y += re.findall(r"Y([ABCD])(?=\n|</think>)", r.text) == [r.text.split(THINK_END)[-1].strip()]
    assert right_work >= 15 and follows_y >= 17, report.summary()


def test_threshold_decoding_commits_several_tokens_a_step(engine):
    """Peaked confidences make parallel decoding pay: at threshold 0.9 a 32-token block takes
    far fewer than 32 steps, and the answers stay those of exact mode within a problem or two."""
    problems = suite_problems(["add", "sub", "sort"], 8, seed=0)
    exact = evaluate_offline(engine, problems, {"cache": "none"}, concurrency=24)
    fast = evaluate_offline(engine, problems, {"threshold": 0.9}, concurrency=24)
    assert fast.steps_per_answer <= 8, fast.summary()
    assert exact.steps_per_answer == 32
    assert sum(r.correct for r in fast.replies) >= sum(r.correct for r in exact.replies) - 2


def test_think_bias_closes_cut_traces_and_keeps_answers_with_room(engine):
    """The growing </think> bias (the paper's boost 100): a budget that cuts the worked trace
    short leaves replies inside <think> without it and closes them with it; with room for the
    whole trace it changes no answer's correctness."""
    problems = held_out_problems("add", 10, seed=0) + held_out_problems("sub", 10, seed=0)

    def run(budget, **bias):
        return evaluate_offline(engine, problems, {"cache": "none", "max_tokens": budget, **bias},
                                concurrency=20)

    def closed(report):
        return sum(THINK_END in r.text for r in report.replies)

    # Measured on the shipped checkpoint: 0, 12 and 19 of 20 closed (model card).
    assert closed(run(16)) <= 3
    assert closed(run(16, think_boost=100.0, think_power=1.0)) >= 10
    assert closed(run(16, think_boost=100.0, think_power=3.0)) >= 15
    plain, boosted = run(64), run(64, think_boost=100.0, think_power=3.0)
    assert [r.correct for r in boosted.replies] == [r.correct for r in plain.replies]
    assert closed(plain) == closed(boosted) == len(problems)
