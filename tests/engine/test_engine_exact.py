"""Exact mode (cache="none") equals the reference sampler token for token."""

from __future__ import annotations

import pytest
from diffuserve.engine.oracle import generate_fixed, generate_variable
from diffuserve.engine.params import DiffusionParams
from engine_cases import ToyTokenizer, engine, prompts, tiny_model

LENGTHS = (5, 17, 9, 30)


def reference(model, cfg, ps, params, tokenizer=None):
    fn = generate_fixed if params.canvas == "fixed" else generate_variable
    return fn(model, cfg, ps, params, tokenizer)


def assert_same(ref, got):
    for r, g in zip(ref, got, strict=True):
        assert g.error is None
        assert g.token_ids == r.token_ids
        assert g.finish_reason == r.finish_reason
        assert g.text == r.text


@pytest.mark.parametrize("family", ["illada", "llada", "dream"])
@pytest.mark.parametrize("canvas", ["variable", "fixed"])
def test_exact_equals_reference_at_temperature_zero(family, canvas):
    model, cfg = tiny_model(family)
    ps = prompts(LENGTHS)
    params = DiffusionParams(max_tokens=24, block_length=8, steps=4, canvas=canvas, cache="none")
    ref = reference(model, cfg, ps, params)
    got = engine(model, cfg).generate(ps, params)
    assert_same(ref, got)
    assert any(len(r.token_ids) > 8 for r in ref), "the workload must decode more than one block"


@pytest.mark.parametrize("options", [
    dict(threshold=0.3),
    dict(temperature=0.8, seed=1234),
    dict(remasking="random", seed=7),
    dict(suppress_eos=True, suppress_eos_confidence=True, steps=8),
    dict(cfg_scale=1.5),
], ids=["threshold", "temperature", "random-remask", "suppress", "cfg"])
def test_exact_equals_reference_with_options(options):
    model, cfg = tiny_model("illada", seed=3)
    ps = prompts((6, 13, 21), seed=5)
    params = DiffusionParams(max_tokens=16, block_length=8, cache="none", **{"steps": 4, **options})
    assert_same(reference(model, cfg, ps, params), engine(model, cfg).generate(ps, params))


def test_exact_think_bias_stop_strings_and_text():
    model, cfg = tiny_model("illada", seed=4)
    tok = ToyTokenizer(think_ids=(7, 8))
    ps = prompts((7, 12), seed=6)
    params = DiffusionParams(max_tokens=24, block_length=8, steps=8, cache="none", think_boost=40.0,
                             think_power=1.0)
    ref = reference(model, cfg, ps, params, tok)
    assert_same(ref, engine(model, cfg, tok).generate(ps, params))
    assert any(7 in r.token_ids for r in ref), "the boost should make the model write </think>"
    # A stop string taken from the reference's own text ends the request there.
    word = ref[0].text.split()[2]
    stopped = params.replace(stop=(word,))
    ref_s = reference(model, cfg, ps, stopped, tok)
    got_s = engine(model, cfg, tok).generate(ps, stopped)
    assert got_s[0].finish_reason == ref_s[0].finish_reason == "stop"
    assert got_s[0].text == ref_s[0].text and word not in got_s[0].text


def test_exact_beside_other_requests():
    """Exact requests give the reference's tokens while prefix and other exact requests share steps."""
    model, cfg = tiny_model("illada", seed=2)
    mine = prompts((11, 25), seed=8)
    others = prompts((40, 3, 19, 8), seed=9)
    exact = DiffusionParams(max_tokens=24, block_length=8, steps=4, cache="none")
    other_params = [
        DiffusionParams(max_tokens=16, block_length=4, steps=2),
        DiffusionParams(max_tokens=32, block_length=16, threshold=0.5),
        DiffusionParams(max_tokens=8, block_length=8, cache="none", temperature=1.0, seed=3),
        DiffusionParams(max_tokens=16, block_length=8, canvas="fixed"),
    ]
    eng = engine(model, cfg, max_num_batched_tokens=4096)
    got = eng.generate(others[:2] + mine + others[2:], other_params[:2] + [exact, exact] + other_params[2:])
    assert_same(reference(model, cfg, mine, exact), got[2:4])
    assert eng.stats().kv_pages_used == 0
