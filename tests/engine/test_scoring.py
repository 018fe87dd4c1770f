"""Scoring candidates in the engine: confidence scoring against a plain loop over the model, the
likelihood bound's reproducibility, greediness, and scoring beside generation."""

from __future__ import annotations

import math

import pytest
import torch
from diffuserve.engine.params import DiffusionParams, ParamError
from diffuserve.engine.scoring import ScoreParams, stratified_samples
from engine_cases import MASK, engine, prompts, tiny_model


def oracle_confidence(model, cfg, prompt, candidate):
    """Eq. 2 as a plain loop: one full forward per revealed token (mask token excluded)."""
    canvas = [MASK] * len(candidate)
    total, order, greedy = 0.0, [], True
    for _ in candidate:
        ids = torch.tensor([prompt + canvas])
        logits = model(ids)[0, len(prompt):].float()
        logits[:, MASK] = float("-inf")
        logp = torch.log_softmax(logits, dim=-1)
        masked = [j for j, t in enumerate(canvas) if t == MASK]
        j = max(masked, key=lambda j: logp[j, candidate[j]].item())
        order.append(j)
        total += logp[j, candidate[j]].item()
        greedy &= logits[j, candidate[j]].item() >= logits[j].max().item()
        canvas[j] = candidate[j]
    return total, order, greedy


def oracle_likelihood(model, cfg, prompt, candidate, mc_samples, seed):
    values = []
    for t, masked in stratified_samples(len(candidate), mc_samples, seed):
        if not masked:
            values.append(0.0)
            continue
        canvas = [MASK if j in masked else c for j, c in enumerate(candidate)]
        logits = model(torch.tensor([prompt + canvas]))[0, len(prompt):].float()
        logits[:, MASK] = float("-inf")
        logp = torch.log_softmax(logits, dim=-1)
        values.append(sum(logp[j, candidate[j]].item() for j in masked) / t)
    return sum(values) / len(values)


def run(eng, requests):
    """requests: (kind, id, prompt, payload, params); kind 'score' (payload = candidate) or 'gen'.
    All are queued at once; returns {id: last BlockOutput} and {id: generated tokens}."""
    for kind, rid, prompt, payload, params in requests:
        if kind == "score":
            eng.add_score_request(rid, prompt, payload, params)
        else:
            eng.add_request(rid, prompt, params)
    last, tokens = {}, {rid: [] for _, rid, *_ in requests}
    while len(last) < len(requests):
        assert eng.scheduler.has_work
        for out in eng.step():
            tokens[out.request_id] += out.new_token_ids
            if out.finished:
                last[out.request_id] = out
    return last, tokens


def score(eng, prompt, candidates, params, prefix="s"):
    last, _ = run(eng, [("score", f"{prefix}{i}", prompt, c, params) for i, c in enumerate(candidates)])
    outs = [last[f"{prefix}{i}"] for i in range(len(candidates))]
    assert all(o.finish_reason == "stop" and o.error is None for o in outs), outs
    return [o.score for o in outs]


@pytest.mark.parametrize("family", ["illada", "llada", "dream"])
def test_confidence_equals_a_plain_loop(family):
    model, cfg = tiny_model(family, seed=1)
    prompt = prompts((9,), seed=2)[0]
    cands = prompts((1, 4, 7), seed=3)
    got = score(engine(model, cfg, max_num_seqs=8), prompt, cands, ScoreParams("confidence"))
    for cand, s in zip(cands, got, strict=True):
        total, order, greedy = oracle_confidence(model, cfg, prompt, cand)
        assert s.reveal_order == order
        assert s.score == pytest.approx(total, rel=1e-4, abs=1e-4)
        assert s.greedy == greedy and s.num_tokens == len(cand) and s.num_forwards == len(cand)
        assert s.stderr is None


def test_likelihood_matches_its_definition_and_is_reproducible():
    model, cfg = tiny_model("illada", seed=2)
    prompt = prompts((8,), seed=4)[0]
    cands = prompts((3, 6), seed=5)
    params = ScoreParams("likelihood", mc_samples=16, seed=11)
    first = score(engine(model, cfg), prompt, cands, params)
    again = score(engine(model, cfg), prompt, cands, params, prefix="again")
    for cand, a, b in zip(cands, first, again, strict=True):
        assert a.score == b.score and a.stderr == b.stderr  # same seed, same numbers
        assert a.score == pytest.approx(oracle_likelihood(model, cfg, prompt, cand, 16, 11), rel=1e-4)
        assert a.stderr > 0 and a.num_tokens == len(cand) and a.greedy is None
        assert a.num_forwards <= 16
    other = score(engine(model, cfg), prompt, cands[:1], ScoreParams("likelihood", mc_samples=16, seed=12))
    assert other[0].score != first[0].score  # the seed matters


def test_stratified_mask_ratios_cover_the_unit_interval():
    draws = stratified_samples(50, 8, seed=3)
    for k, (t, masked) in enumerate(draws):
        assert k / 8 < t <= (k + 1) / 8
        assert all(0 <= j < 50 for j in masked)
    assert stratified_samples(50, 8, seed=3) == draws


def test_likelihood_alone_equals_under_load():
    model, cfg = tiny_model("illada", seed=3)
    prompt = prompts((10,), seed=6)[0]
    cand = prompts((5,), seed=7)[0]
    params = ScoreParams("likelihood", mc_samples=12, seed=5)
    alone = score(engine(model, cfg), prompt, [cand], params)[0]
    load = [("gen", f"g{i}", p, None, DiffusionParams(max_tokens=16, block_length=8, steps=4))
            for i, p in enumerate(prompts((30, 7, 19), seed=8))]
    load += [("score", "busy", prompts((4,), seed=9)[0], cand, ScoreParams("confidence"))]
    last, _ = run(engine(model, cfg, max_num_seqs=8), [("score", "me", prompt, cand, params), *load])
    # Equal up to float rounding (other batch shapes round differently), not statistically close.
    assert last["me"].score.score == pytest.approx(alone.score, rel=1e-5, abs=1e-4)
    assert last["me"].score.stderr == pytest.approx(alone.stderr, rel=1e-4, abs=1e-4)


def test_a_greedily_generated_candidate_is_greedy():
    """One token per step at temperature 0 commits, each step, the position whose argmax is most
    probable: exactly the position confidence scoring reveals, with the argmax token."""
    model, cfg = tiny_model("illada", seed=5)
    found = 0
    for i, prompt in enumerate(prompts((6, 9, 13, 8, 11), seed=10)):
        gen = engine(model, cfg).generate([prompt], DiffusionParams(max_tokens=6, block_length=6,
                                                                      cache="none"))[0]
        if len(gen.token_ids) < 6:  # cut at a stop id: not the whole canvas
            continue
        found += 1
        s = score(engine(model, cfg), prompt, [gen.token_ids], ScoreParams("confidence"), f"p{i}-")[0]
        assert s.greedy is True
        perturbed = list(gen.token_ids)
        perturbed[2] = 10 + (perturbed[2] + 1) % 80  # another ordinary token
        s2 = score(engine(model, cfg), prompt, [perturbed], ScoreParams("confidence"), f"q{i}-")[0]
        assert s2.greedy is False and s2.score < s.score
    assert found >= 2, "the workload must generate full candidates"


@pytest.mark.parametrize("cache", ["none", "prefix"])
def test_scoring_beside_generation_leaves_generated_tokens_unchanged(cache):
    model, cfg = tiny_model("llada", seed=6)
    gen_prompts = prompts((12, 5, 22), seed=11)
    params = DiffusionParams(max_tokens=16, block_length=8, steps=4, cache=cache)
    alone = engine(model, cfg).generate(gen_prompts, params)
    reqs = [("gen", f"g{i}", p, None, params) for i, p in enumerate(gen_prompts)]
    reqs += [("score", f"s{i}", gen_prompts[i % 3], c, ScoreParams(m, mc_samples=6, seed=i))
             for i, (c, m) in enumerate(zip(prompts((3, 8, 2, 5), seed=12),
                                            ["confidence", "likelihood"] * 2, strict=True))]
    eng = engine(model, cfg, max_num_seqs=8)
    last, tokens = run(eng, reqs)
    for i, a in enumerate(alone):
        assert tokens[f"g{i}"] == a.token_ids and last[f"g{i}"].finish_reason == a.finish_reason
    assert all(last[f"s{i}"].score is not None for i in range(4))
    assert eng.num_forwards < sum(o.steps for o in last.values()), "scoring must share forwards"
    assert eng.kv.allocator.num_used == 0 and not eng.seqs


def test_abort_and_bad_input():
    model, cfg = tiny_model("illada")
    eng = engine(model, cfg)
    prompt = prompts((5,), seed=1)[0]
    eng.add_score_request("a", prompt, [10, 11, 12], ScoreParams("confidence"))
    eng.step()
    out = eng.abort("a")
    assert out.finished and out.finish_reason == "abort" and out.score is None and not eng.seqs
    for kwargs, field in ((dict(method="mean"), "method"), (dict(mc_samples=0), "mc_samples"),
                          (dict(seed=-1), "seed")):
        with pytest.raises(ParamError) as e:
            ScoreParams(**kwargs)
        assert e.value.param == field
    for cand, field in (([], "candidates"), ([MASK], "candidates"), ([500], "candidates"),
                        ([7] * 600, "candidates")):
        with pytest.raises(ParamError) as e:
            eng.add_score_request("b", prompt, cand, ScoreParams())
        assert e.value.param == field
    dream, dream_cfg = tiny_model("dream")
    with pytest.raises(ParamError) as e:  # Dream reads token p at row p - 1: needs a prompt token
        engine(dream, dream_cfg).add_score_request("b", [], [5], ScoreParams())
    assert e.value.param == "prompt"


def test_an_empty_prompt_scores_the_candidate_unconditionally():
    model, cfg = tiny_model("llada", seed=1)
    cand = prompts((5,), seed=3)[0]
    got = score(engine(model, cfg), [], [cand], ScoreParams("confidence"))[0]
    total, order, _ = oracle_confidence(model, cfg, [], cand)
    assert got.reveal_order == order and got.score == pytest.approx(total, rel=1e-4, abs=1e-4)


def test_a_single_token_candidate_with_one_sample_still_finishes():
    model, cfg = tiny_model("illada")
    prompt = prompts((5,), seed=1)[0]
    for seed in range(6):  # some seeds draw an empty mask for M = 1
        s = score(engine(model, cfg), prompt, [[20]], ScoreParams("likelihood", mc_samples=1, seed=seed),
                  f"x{seed}-")[0]
        assert math.isfinite(s.score) and s.num_forwards == 1 and s.stderr == 0.0


def test_identical_canvases_are_computed_once():
    """The candidates of a multiple-choice question start from the same canvas (prompt + masks):
    the step computes it once, and each candidate reads its own target from the shared rows."""
    model, cfg = tiny_model("illada", seed=2)
    prompt = prompts((12,), seed=3)[0]
    letters = [[20], [21], [22], [23]]
    eng = engine(model, cfg)
    steps = []
    eng.listeners.append(steps.append)
    together = score(eng, prompt, letters, ScoreParams("confidence"))
    assert [s.num_query_tokens for s in steps] == [len(prompt) + 1]
    for cand, s in zip(letters, together, strict=True):
        alone = score(engine(model, cfg), prompt, [cand], ScoreParams("confidence"))[0]
        assert s.score == pytest.approx(alone.score, rel=1e-5, abs=1e-5)
    assert len({s.score for s in together}) == 4  # four targets, four different log-probs
