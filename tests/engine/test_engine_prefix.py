"""Prefix-cache mode: reproducible under load, page-layout independent, pages returned, preemption."""

from __future__ import annotations

import dataclasses

import pytest
from diffuserve.engine.oracle import generate_variable
from diffuserve.engine.params import DiffusionParams
from engine_cases import engine, prompts, tiny_model


@pytest.mark.parametrize("family", ["illada", "dream"])
def test_seeded_request_same_alone_and_under_load(family):
    model, cfg = tiny_model(family, seed=11)
    # No stop ids: the sampled answer must span several blocks whatever the random weights say.
    cfg = dataclasses.replace(cfg, stop_token_ids=())
    mine = prompts((13,), seed=2)[0]
    params = DiffusionParams(max_tokens=24, block_length=8, steps=4, temperature=0.9, seed=42)
    alone = engine(model, cfg).generate([mine], params)[0]
    load = prompts((30, 5, 22, 17, 9), seed=3)
    load_params = [
        DiffusionParams(max_tokens=32, block_length=8, temperature=1.0, seed=s) for s in range(4)
    ] + [DiffusionParams(max_tokens=16, block_length=16, canvas="fixed", cache="none")]
    eng = engine(model, cfg)
    both = eng.generate(load[:2] + [mine] + load[2:], load_params[:2] + [params] + load_params[2:])
    assert both[2].token_ids == alone.token_ids
    assert alone.blocks >= 2
    assert eng.stats().kv_pages_used == 0


def test_page_size_does_not_change_tokens():
    """The page table maps token -> slot; any page size must give the same K/V, hence the same tokens."""
    model, cfg = tiny_model("illada", seed=5)
    ps = prompts((9, 23, 4), seed=4)
    params = DiffusionParams(max_tokens=24, block_length=8, steps=4)
    results = [engine(model, cfg, kv_page_size=size).generate(ps, params) for size in (1, 3, 16)]
    for other in results[1:]:
        assert [r.token_ids for r in other] == [r.token_ids for r in results[0]]


def test_one_block_one_step_equals_exact():
    """With a single block decoded in one step nothing is approximated: prefix == exact == reference."""
    model, cfg = tiny_model("dream", seed=6)
    ps = prompts((10, 31), seed=5)
    params = DiffusionParams(max_tokens=8, block_length=8, steps=1)
    ref = generate_variable(model, cfg, ps, params)
    got = engine(model, cfg).generate(ps, params)
    assert [g.token_ids for g in got] == [r.token_ids for r in ref]


@pytest.mark.parametrize("canvas", ["variable", "fixed"])
def test_prefix_mode_runs_stops_and_frees_pages(canvas):
    model, cfg = tiny_model("llada", seed=7)
    ps = prompts((12, 40, 3, 25), seed=6)
    params = DiffusionParams(max_tokens=32, block_length=8, canvas=canvas, threshold=0.5)
    eng = engine(model, cfg)
    got = eng.generate(ps, params)
    for g in got:
        assert g.finish_reason in ("stop", "length") and g.error is None
        assert len(g.token_ids) <= 32
        assert g.finish_reason == "stop" or len(g.token_ids) == 32
        assert 1 <= g.steps <= 32
    s = eng.stats()
    assert (s.running, s.waiting, s.kv_pages_used) == (0, 0, 0)


def test_abort_frees_pages():
    model, cfg = tiny_model("illada")
    eng = engine(model, cfg)
    for i, p in enumerate(prompts((20, 33, 7), seed=8)):
        eng.add_request(f"r{i}", p, DiffusionParams(max_tokens=64, block_length=8))
    eng.step()
    eng.step()
    assert eng.stats().kv_pages_used > 0
    outs = [eng.abort(f"r{i}") for i in range(3)]
    assert all(o.finished and o.finish_reason == "abort" for o in outs)
    assert eng.abort("r0") is None
    s = eng.stats()
    assert (s.running, s.waiting, s.kv_pages_used) == (0, 0, 0)


def test_preemption_with_tiny_pool_loses_no_request():
    model, cfg = tiny_model("illada", seed=9)
    ps = prompts((20, 18, 22, 16, 19, 21), seed=9)
    params = DiffusionParams(max_tokens=32, block_length=8, steps=4)
    # 2 layers x 2 KV heads x 16 dims x 2 (K, V) x 4 bytes = 512 B a token; pages of 4 tokens:
    # 24 pages = 96 tokens, room for about two of these 52-token requests at a time.
    eng = engine(model, cfg, kv_cache_memory=512 * 4 * 24, kv_page_size=4)
    assert eng.kv.num_pages == 24
    got = eng.generate(ps, params)
    assert eng.stats().num_preemptions > 0
    for g in got:
        assert g.error is None and g.finish_reason in ("stop", "length")
        assert g.finish_reason == "stop" or len(g.token_ids) == 32
    s = eng.stats()
    assert (s.running, s.waiting, s.kv_pages_used) == (0, 0, 0)


def test_chunked_prefill_long_prompt_beside_others():
    """A prompt longer than the chunk is prefilled over several steps, mixed with others' denoising;
    its tokens do not depend on the others (chunk boundaries depend on the request alone)."""
    model, cfg = tiny_model("illada", seed=10)
    long_prompt = prompts((150,), seed=10)[0]
    params = DiffusionParams(max_tokens=16, block_length=8, steps=4)
    alone_eng = engine(model, cfg, prefill_chunk_size=32)
    alone = alone_eng.generate([long_prompt], params)[0]
    assert alone.steps == 8  # prefill-only chunk steps are not denoising steps
    eng = engine(model, cfg, prefill_chunk_size=32, max_num_batched_tokens=64)
    others = prompts((5, 9), seed=11)
    got = eng.generate(others + [long_prompt], params)
    assert got[2].token_ids == alone.token_ids
    assert eng.num_forwards < sum(g.steps for g in got) + 5  # the prefill chunks shared steps
    assert eng.stats().kv_pages_used == 0
