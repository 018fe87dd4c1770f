"""Prefix-cache refresh at block boundaries (`cache_refresh`): what it recomputes and when."""

from __future__ import annotations

import pytest
from diffuserve.engine.oracle import generate_fixed, generate_variable
from diffuserve.engine.params import DiffusionParams, ParamError
from engine_cases import engine, prompts, tiny_config, tiny_model


@pytest.mark.parametrize(("family", "canvas"), [("illada", "variable"), ("dream", "variable"),
                                                ("llada", "fixed")])
def test_refresh_every_block_with_one_step_per_block_equals_exact(family, canvas):
    """One step per block and a refresh at every block: each step recomputes every committed token
    beside the new masks, which is exactly what exact mode computes, over many blocks."""
    model, cfg = tiny_model(family, seed=21)
    ps = prompts((11, 26, 5), seed=21)
    params = DiffusionParams(max_tokens=32, block_length=8, steps=1, canvas=canvas, stop_token_ids=())
    ref_fn = generate_fixed if canvas == "fixed" else generate_variable
    ref = [r.token_ids for r in ref_fn(model, cfg, ps, params)]
    assert max(len(r) for r in ref) > 8  # several blocks, so the refresh is exercised
    fresh = engine(model, cfg).generate(ps, params.replace(cache_refresh=1))
    assert [g.token_ids for g in fresh] == ref
    # The check can fail: without the refresh the cached prompt never sees the later blocks.
    stale = engine(model, cfg).generate(ps, params.replace(cache_refresh=0))
    assert [g.token_ids for g in stale] != ref


def _query_starts(eng, ps, params):
    """Run to completion and record, per step of request 0, where its query tokens start."""
    starts: list[int] = []
    real = eng.runner.run

    def spy(batch):
        starts.extend(plan.start_pos for seq, plan in batch if seq.request_id == "req-0" and plan.denoise)
        return real(batch)

    eng.runner.run = spy
    eng.generate(ps, params)
    return starts


@pytest.mark.parametrize("every", [0, 1, 2])
def test_refresh_interval_recomputes_from_position_zero_at_due_blocks_only(every):
    model, cfg = tiny_model("illada", seed=22)
    ps = prompts((10,), seed=22)
    params = DiffusionParams(max_tokens=40, block_length=8, steps=2, suppress_eos=True,
                             stop_token_ids=(), cache_refresh=every)
    no_stops = cfg.with_overrides(stop_token_ids=[])  # with EOS suppressed too, all five blocks run
    starts = _query_starts(engine(model, no_stops), ps, params)
    assert len(starts) == 10  # 5 blocks x 2 steps
    first_steps = starts[0::2]  # the first step of each block
    for block, start in enumerate(first_steps):
        due = block == 0 or (every and block % every == 0)
        assert (start == 0) == bool(due), (block, start)
    assert all(s > 0 for s in starts[1::2])  # later steps of a block read the cache


def test_auto_refresh_waits_until_the_denoising_work_pays_for_it():
    """'auto': a refresh costs about len(committed) query tokens, so it comes once the block tokens
    computed since the last one reach that. Prompt 40, blocks of 8 in 2 steps: 16 tokens of work a
    block against a sequence that grows 8 a block."""
    model, cfg = tiny_model("illada", seed=24)
    ps = prompts((40,), seed=24)
    params = DiffusionParams(max_tokens=96, block_length=8, steps=2, suppress_eos=True,
                             stop_token_ids=(), cache_refresh="auto")
    starts = _query_starts(engine(model, cfg.with_overrides(stop_token_ids=[])), ps, params)
    assert len(starts) == 24
    refreshed = [b for b, s in enumerate(starts[0::2]) if s == 0]
    # Block b starts with 40 + 8b committed tokens and 16 tokens of work per block since the last
    # refresh: 16 * 5 >= 80 at block 5; then 16 * (b - 5) >= 40 + 8b only from block 15.
    assert refreshed == [0, 5]
    assert all(s > 0 for s in starts[1::2])


def test_auto_refresh_is_every_block_when_blocks_outweigh_the_sequence():
    """Many steps per block and a short prompt: 'auto' refreshes at every block, so it decodes
    exactly as cache_refresh=1 does."""
    model, cfg = tiny_model("dream", seed=25)
    ps = prompts((6, 12), seed=25)
    params = DiffusionParams(max_tokens=32, block_length=8, steps=8, stop_token_ids=())
    auto = engine(model, cfg).generate(ps, params.replace(cache_refresh="auto"))
    every = engine(model, cfg).generate(ps, params.replace(cache_refresh=1))
    assert [a.token_ids for a in auto] == [e.token_ids for e in every]
    assert DiffusionParams().cache_refresh == "auto"


def test_refresh_of_a_long_sequence_is_chunked_and_frees_pages():
    model, cfg = tiny_model("illada", seed=23)
    ps = prompts((70, 9), seed=23)
    params = DiffusionParams(max_tokens=24, block_length=8, steps=4, cache_refresh=1)
    eng = engine(model, cfg, prefill_chunk_size=32)
    got = eng.generate(ps, params)
    assert all(g.error is None and g.finish_reason in ("stop", "length") for g in got)
    assert eng.stats().kv_pages_used == 0


@pytest.mark.parametrize("bad", [-1, "sometimes", 1.5])
def test_cache_refresh_must_be_auto_or_a_block_count(bad):
    with pytest.raises(ParamError) as e:
        DiffusionParams(cache_refresh=bad).validate(tiny_config(), 4)
    assert e.value.param == "cache_refresh"


@pytest.mark.parametrize(("every", "recomputes"), [(0, 0), (1, 3)])
def test_step_stats_count_cache_tokens_and_recomputes(every, recomputes):
    """One step per block, so each first step also finishes its block: the recompute count must
    come from the plan as scheduled, not from the sequence after its block is done."""
    model, cfg = tiny_model("illada", seed=26)
    ps = prompts((10,), seed=26)
    params = DiffusionParams(max_tokens=32, block_length=8, steps=1, suppress_eos=True,
                             stop_token_ids=(), cache_refresh=every)
    eng = engine(model, cfg.with_overrides(stop_token_ids=[]))
    steps = []
    eng.listeners.append(steps.append)
    eng.generate(ps, params)
    assert len(steps) == 4
    assert sum(s.num_recomputes for s in steps) == recomputes
    # Cached: the prompt, then each finished block alone (0) or the whole sequence again (1).
    cached = 10 + (8 * 3 if every == 0 else (18 + 26 + 34))
    assert sum(s.num_cache_tokens for s in steps) == cached
    assert all(s.num_query_tokens - s.num_cache_tokens == 8 for s in steps)
