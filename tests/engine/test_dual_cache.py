"""Dual cache (`cache="dual"`, fixed canvas): the masked suffix's K/V computed at a block's first
step are reused by its later steps, whose queries are the block alone (Fast-dLLM's DualCache).

Exactness: the cache is exact where the reused K/V equal what a recomputation would give.
- One step per block and a refresh at every block: nothing is reused, every step is exact
  mode's step (as for the prefix refresh, test_engine_refresh.py).
- A one-layer model: a token's K/V depend on its own id and position only, so cached prefix and
  suffix K/V equal recomputed ones, and dual mode equals exact mode with many steps per block.
  This is what checks the reuse itself (slots, positions, the suffix's keys in every later step).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffuserve.engine.models.bidir_llama import BidirectionalLM
from diffuserve.engine.oracle import generate_fixed
from diffuserve.engine.params import DiffusionParams, ParamError
from diffuserve.engine.sequence import Sequence
from engine_cases import engine, prompts, tiny_config, tiny_model

FAMILIES = ["llada", "illada", "dream"]


def one_layer_model(family: str, seed: int):
    cfg = dataclasses.replace(tiny_config(family), num_layers=1)
    torch.manual_seed(seed)
    model = BidirectionalLM(cfg).eval().requires_grad_(False)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model, cfg.with_overrides(stop_token_ids=[])


def _plans(eng, ps, params, request_id="req-0"):
    """Run to completion and record the denoising plans of one request."""
    plans = []
    real = eng.runner.run

    def spy(batch):
        plans.extend(plan for seq, plan in batch if seq.request_id == request_id and plan.denoise)
        return real(batch)

    eng.runner.run = spy
    out = eng.generate(ps, params)
    return plans, out


@pytest.mark.parametrize("family", FAMILIES)
def test_dual_with_one_step_per_block_and_refresh_equals_exact(family):
    model, cfg = tiny_model(family, seed=41)
    ps = prompts((11, 26, 5), seed=41)
    params = DiffusionParams(max_tokens=32, block_length=8, steps=1, canvas="fixed", stop_token_ids=())
    ref = [r.token_ids for r in generate_fixed(model, cfg, ps, params)]
    assert max(len(r) for r in ref) > 8  # several blocks
    dual = engine(model, cfg).generate(ps, params.replace(cache="dual", cache_refresh=1))
    assert [g.token_ids for g in dual] == ref


@pytest.mark.parametrize("family", FAMILIES)
def test_dual_on_a_one_layer_model_equals_exact_with_many_steps_per_block(family):
    model, cfg = one_layer_model(family, seed=42)
    ps = prompts((9, 20), seed=42)
    params = DiffusionParams(max_tokens=32, block_length=8, steps=4, canvas="fixed", stop_token_ids=(),
                             suppress_eos=True, cache_refresh=0)
    ref = [r.token_ids for r in generate_fixed(model, cfg, ps, params)]
    plans, dual = _plans(engine(model, cfg), ps, params.replace(cache="dual"))
    assert [g.token_ids for g in dual] == ref
    assert sum(p.extra_keys > 0 for p in plans) == 3 * 3  # 3 later steps in each of the first 3 blocks


def test_dual_check_can_fail_without_the_suffix_keys(monkeypatch):
    """The suffix's cached keys matter: hiding them from the later steps changes the answer."""
    model, cfg = one_layer_model("llada", seed=43)
    ps = prompts((9, 20), seed=43)
    params = DiffusionParams(max_tokens=32, block_length=8, steps=4, canvas="fixed", stop_token_ids=(),
                             suppress_eos=True, cache="dual")
    ref = [r.token_ids for r in generate_fixed(model, cfg, ps, params)]
    real_plan = Sequence.plan

    def no_suffix(self, chunk):
        plan = real_plan(self, chunk)
        plan.extra_keys = 0
        return plan

    monkeypatch.setattr(Sequence, "plan", no_suffix)
    blind = engine(model, cfg).generate(ps, params)
    assert [g.token_ids for g in blind] != ref


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_dual_queries_only_the_block_after_its_first_step(family):
    model, cfg = tiny_model(family, seed=44)
    cfg = cfg.with_overrides(stop_token_ids=[])
    ps = prompts((10,), seed=44)
    params = DiffusionParams(max_tokens=32, block_length=8, steps=4, canvas="fixed", stop_token_ids=(),
                             suppress_eos=True)
    shift = 1 if cfg.shift_logits else 0  # Dream: the last committed token stays a query
    prefix_plans, prefix = _plans(engine(model, cfg), ps, params)
    dual_plans, dual = _plans(engine(model, cfg), ps, params.replace(cache="dual"))
    assert len(dual_plans) == len(prefix_plans) == 16
    for i, plan in enumerate(dual_plans):
        block, step = divmod(i, 4)
        future = 32 - 8 * (block + 1)
        if step == 0:  # the block's first step computes the suffix, as prefix mode does
            assert plan.extra_keys == 0 and len(plan.token_ids) >= 8 + future
        else:
            assert len(plan.token_ids) == 8 + shift and plan.extra_keys == future
            assert plan.num_kv_tokens == 10 + 32  # the whole canvas: keys span the suffix
    n_dual = sum(len(p.token_ids) for p in dual_plans)
    n_prefix = sum(len(p.token_ids) for p in prefix_plans)
    assert n_dual < n_prefix
    # Same first steps; the later steps save the suffix: 3 steps of blocks 0..2 with 24, 16, 8 masks.
    assert n_prefix - n_dual == 3 * (24 + 16 + 8)
    assert all(len(g.token_ids) == 32 for g in dual + prefix)


def test_dual_survives_preemption_exactly_on_a_one_layer_model(monkeypatch):
    """A small pool preempts a request mid-block, after its suffix was cached; resumed, it
    recomputes the suffix with its prefix and still decodes exactly."""
    model, cfg = one_layer_model("illada", seed=45)
    ps = prompts((9, 14, 6), seed=45)
    params = DiffusionParams(max_tokens=32, block_length=8, steps=4, canvas="fixed", stop_token_ids=(),
                             suppress_eos=True, cache="dual")
    ref = [r.token_ids for r in generate_fixed(model, cfg, ps, params)]
    preempted_with_suffix = []
    real_preempt = Sequence.preempt

    def spy(self):
        preempted_with_suffix.append(self.suffix_cached)
        real_preempt(self)

    monkeypatch.setattr(Sequence, "preempt", spy)
    page_bytes = cfg.kv_bytes_per_token * 4 * 4  # float32, 4 tokens a page
    # Prefill chunks of 8: requests are admitted with a few pages, then grow to their whole canvas.
    eng = engine(model, cfg, kv_cache_memory=24 * page_bytes, prefill_chunk_size=8)
    got = eng.generate(ps, params)
    assert any(preempted_with_suffix)
    assert [g.token_ids for g in got] == ref


def test_dual_needs_a_fixed_canvas():
    with pytest.raises(ParamError) as e:
        DiffusionParams(cache="dual")
    assert e.value.param == "cache" and "fixed" in str(e.value)
    assert DiffusionParams(cache="dual", canvas="fixed", max_tokens=64).cache == "dual"
