"""Failures stay with their request; bad parameters never reach the engine."""

from __future__ import annotations

import pytest
import torch
from diffuserve.engine.params import DiffusionParams, ParamError
from diffuserve.engine.runner import ModelRunner
from diffuserve.engine.sequence import Sequence
from engine_cases import EOS, engine, prompts, tiny_model

PARAMS = DiffusionParams(max_tokens=16, block_length=8, steps=4)


def _others_match(got, ref, skip):
    for i, (g, r) in enumerate(zip(got, ref, strict=True)):
        if i != skip:
            assert g.error is None and g.token_ids == r.token_ids


def test_nan_request_fails_alone():
    """A poisoned embedding row makes one request's hidden states NaN: it fails, the others don't."""
    model, cfg = tiny_model("llada", seed=1)  # untied: the poisoned row is not also an LM-head row
    ps = prompts((9, 14, 6), seed=1)
    # The poison is EOS: suppress_eos keeps any request from generating it, so only the
    # prompt that holds it ever embeds it.
    params = PARAMS.replace(suppress_eos=True)
    clean = engine(model, cfg).generate(ps, params)
    poison = EOS
    with torch.no_grad():
        model.embed.weight[poison] = float("nan")
    bad = list(ps)
    bad[1] = ps[1][:5] + [poison] + ps[1][5:]
    eng = engine(model, cfg)
    got = eng.generate(bad, params)
    assert got[1].finish_reason == "error" and "NaN" in got[1].error
    _others_match(got, clean, skip=1)
    assert eng.stats().kv_pages_used == 0


def test_exception_in_forward_fails_only_its_request(monkeypatch):
    model, cfg = tiny_model("illada", seed=2)
    ps = prompts((9, 14, 6), seed=2)
    clean = engine(model, cfg).generate(ps, PARAMS)
    real_run = ModelRunner.run

    def flaky_run(self, batch):
        if any(seq.request_id == "req-0" and seq.num_steps == 2 for seq, _ in batch):
            raise RuntimeError("injected failure")
        return real_run(self, batch)

    monkeypatch.setattr(ModelRunner, "run", flaky_run)
    eng = engine(model, cfg)
    got = eng.generate(ps, PARAMS)
    assert got[0].finish_reason == "error" and "injected failure" in got[0].error
    _others_match(got, clean, skip=0)
    assert eng.stats().kv_pages_used == 0


def test_exception_in_bookkeeping_fails_only_its_request(monkeypatch):
    model, cfg = tiny_model("illada", seed=3)
    ps = prompts((9, 14, 6), seed=3)
    clean = engine(model, cfg).generate(ps, PARAMS)
    real_apply = Sequence.apply

    def flaky_apply(self, plan, block):
        if self.request_id == "req-2" and self.num_steps == 5:
            raise ValueError("bookkeeping bug")
        return real_apply(self, plan, block)

    monkeypatch.setattr(Sequence, "apply", flaky_apply)
    eng = engine(model, cfg)
    got = eng.generate(ps, PARAMS)
    assert got[2].finish_reason == "error" and "bookkeeping bug" in got[2].error
    _others_match(got, clean, skip=2)
    assert eng.stats().kv_pages_used == 0


@pytest.mark.parametrize("changes, param, words", [
    (dict(block_length=0), "block_length", "block_length must be >= 1"),
    (dict(threshold=0.0), "threshold", "(0, 1]"),
    (dict(threshold=1.5), "threshold", "(0, 1]"),
    (dict(max_tokens=600), "max_tokens", "context length"),
    (dict(steps=9), "steps", "steps per block"),
    (dict(cfg_scale=1.0), "cfg_scale", "cache='none'"),
])
def test_invalid_params_rejected_before_queueing(changes, param, words):
    model, cfg = tiny_model("illada")
    eng = engine(model, cfg)
    with pytest.raises(ParamError) as info:
        eng.add_request("x", prompts((10,))[0], PARAMS.replace(**changes))
    assert info.value.param == param and words in str(info.value)
    assert not eng.has_unfinished() and eng.stats().waiting == 0


def test_request_larger_than_the_kv_pool_is_rejected():
    model, cfg = tiny_model("illada")
    eng = engine(model, cfg, kv_cache_memory=512 * 4 * 8, kv_page_size=4)  # 8 pages = 32 tokens
    with pytest.raises(ParamError, match="KV pages"):
        eng.add_request("x", prompts((20,))[0], PARAMS)
    # exact mode holds no pages, so the same request is accepted
    eng.add_request("y", prompts((20,))[0], PARAMS.replace(cache="none"))
    with pytest.raises(ParamError, match="prompt"):
        eng.add_request("z", [], PARAMS)
    with pytest.raises(ValueError, match="already running"):
        eng.add_request("y", prompts((5,))[0], PARAMS)


def test_a_dying_engine_loop_ends_every_stream_with_an_error(monkeypatch):
    """An exception outside any request's step (here: the loop's stats snapshot) kills the loop:
    every stream ends with an error, new requests are refused, and the server is told."""
    import asyncio

    from diffuserve.engine.async_engine import AsyncEngine
    from diffuserve.engine.llm_engine import LLMEngine

    model, cfg = tiny_model("illada", seed=4)
    eng = AsyncEngine(engine(model, cfg.with_overrides(stop_token_ids=[])))
    told: list[str] = []
    eng.on_fatal = told.append
    long = PARAMS.replace(max_tokens=256)
    real_stats = LLMEngine.stats

    def stats_that_breaks(self):
        if self.num_forwards >= 3:
            raise RuntimeError("loop bug")
        return real_stats(self)

    async def main():
        await eng.start()
        streams = [eng.generate(f"r{i}", p, long) for i, p in enumerate(prompts((6, 9), seed=4))]
        monkeypatch.setattr(LLMEngine, "stats", stats_that_breaks)
        async def drain(stream):
            return [o async for o in stream]

        outs = await asyncio.wait_for(asyncio.gather(*(drain(s) for s in streams)), 30)
        assert not eng.is_ready
        with pytest.raises(RuntimeError, match="not running"):
            eng.generate("late", [5, 6], PARAMS)
        await eng.shutdown(timeout_s=1)
        return outs

    results = asyncio.run(main())
    for outs in results:
        assert outs[-1].finished and outs[-1].finish_reason == "error"
        assert "engine loop died" in outs[-1].error and "loop bug" in outs[-1].error
    assert told and "loop bug" in told[0] and eng.fatal_error == told[0]
