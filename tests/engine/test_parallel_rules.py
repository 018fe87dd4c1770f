"""Parallel decoding rules end to end: the engine decodes with Fast-dLLM's factor rule and the
per-step cap exactly as the oracle sampler does (exact mode), and the rules really run in
parallel (fewer steps than tokens) without exceeding the cap."""

from __future__ import annotations

import pytest
from diffuserve.engine.oracle import generate_fixed, generate_variable
from diffuserve.engine.params import DiffusionParams
from engine_cases import engine, prompts, tiny_model


@pytest.mark.parametrize(("family", "canvas", "rule"), [
    ("llada", "fixed", {"threshold_factor": 2.0}),
    ("illada", "variable", {"threshold_factor": 4.0, "max_commits_per_step": 2}),
    ("dream", "fixed", {"threshold": 0.3, "max_commits_per_step": 2}),
])
def test_exact_mode_with_parallel_rules_equals_the_oracle(family, canvas, rule):
    model, cfg = tiny_model(family, seed=31)
    ps = prompts((9, 17), seed=31)
    params = DiffusionParams(max_tokens=24, block_length=8, canvas=canvas, stop_token_ids=(),
                             suppress_eos=True, cache="none", **rule)
    no_stops = cfg.with_overrides(stop_token_ids=[])
    ref_fn = generate_fixed if canvas == "fixed" else generate_variable
    ref = ref_fn(model, no_stops, ps, params)
    got = engine(model, no_stops).generate(ps, params)
    assert [g.token_ids for g in got] == [r.token_ids for r in ref]
    for g in got:  # (the oracle counts a batch's steps, the engine each request's)
        assert len(g.token_ids) == 24
        cap = rule.get("max_commits_per_step")
        if cap:
            assert g.steps >= 24 // cap
    # The peaked tiny models are confident: the rules commit several tokens in some steps.
    assert min(g.steps for g in got) < 24


def test_factor_rule_grows_parallelism_with_the_factor():
    model, cfg = tiny_model("illada", seed=32)
    ps = prompts((12,), seed=32)
    no_stops = cfg.with_overrides(stop_token_ids=[])
    steps = []
    for factor in (0.01, 3.0, 64.0):
        params = DiffusionParams(max_tokens=32, block_length=16, stop_token_ids=(), suppress_eos=True,
                                 threshold_factor=factor)
        steps.append(engine(model, no_stops).generate(ps, params)[0].steps)
    # A tiny factor commits one token a step; a huge one commits a whole block in one step.
    assert steps[0] == 32 and steps[2] == 2 and steps[0] >= steps[1] >= steps[2]
