"""AsyncEngine: concurrent streams, validation, abort, consumer cancellation, shutdown."""

from __future__ import annotations

import asyncio
import time

import pytest
from diffuserve.engine.async_engine import AsyncEngine
from diffuserve.engine.params import DiffusionParams, ParamError
from engine_cases import engine, prompts, tiny_model

PARAMS = DiffusionParams(max_tokens=24, block_length=8, steps=4, temperature=0.7, seed=5)


def make_engine(no_stop: bool = False, **econf) -> AsyncEngine:
    model, cfg = tiny_model("illada", seed=21)
    if no_stop:  # requests run to max_tokens: nothing finishes early by chance
        cfg = cfg.with_overrides(stop_token_ids=[])
    return AsyncEngine(engine(model, cfg, **econf))


async def collect(stream):
    outs = [out async for out in stream]
    return outs


def test_concurrent_generate_matches_offline_engine():
    model, cfg = tiny_model("illada", seed=21)
    ps = prompts((7, 19, 12, 30), seed=21)
    offline = engine(model, cfg).generate(ps, PARAMS)
    steps_seen = []

    async def main():
        eng = AsyncEngine(engine(model, cfg))
        eng.add_step_listener(lambda s: steps_seen.append(s))
        assert not eng.is_ready
        await eng.start()
        assert eng.is_ready
        streams = [eng.generate(f"r{i}", p, PARAMS) for i, p in enumerate(ps)]
        results = await asyncio.gather(*(collect(s) for s in streams))
        stats = eng.stats()
        await eng.shutdown()
        return results, stats

    results, stats = asyncio.run(main())
    for outs, ref in zip(results, offline, strict=True):
        assert outs[-1].finished and all(not o.finished for o in outs[:-1])
        assert [t for o in outs for t in o.new_token_ids] == ref.token_ids
        assert outs[-1].finish_reason == ref.finish_reason
        assert outs[-1].steps == ref.steps and outs[-1].queue_time_s >= 0
    assert (stats.running, stats.waiting, stats.kv_pages_used) == (0, 0, 0)
    assert steps_seen and max(s.num_seqs for s in steps_seen) > 1
    assert all(c >= 1 for s in steps_seen for c in s.tokens_committed)


def test_generate_validates_synchronously():
    async def main():
        eng = make_engine()
        with pytest.raises(RuntimeError, match="not running"):
            eng.generate("early", [5, 6], PARAMS)
        await eng.start()
        with pytest.raises(ParamError) as info:
            eng.generate("bad", [5, 6, 7], PARAMS.replace(threshold=2.0))
        assert info.value.param == "threshold"
        with pytest.raises(ParamError):
            eng.generate("bad", [5, 6, 7], PARAMS.replace(max_tokens=10_000))
        assert eng.stats().waiting == 0
        outs = await collect(eng.generate("bad", [5, 6, 7], PARAMS))  # the id is free again
        await eng.shutdown()
        return outs

    assert asyncio.run(main())[-1].finish_reason in ("stop", "length")


def test_abort_and_consumer_cancellation_free_pages():
    long = PARAMS.replace(max_tokens=256, block_length=8, steps=8, temperature=0.0)

    async def main():
        eng = make_engine(no_stop=True)
        await eng.start()
        ps = prompts((10, 12), seed=22)
        s_abort = eng.generate("a", ps[0], long)
        first = await s_abort.__anext__()
        assert not first.finished
        await eng.abort("a")
        rest = [o async for o in s_abort]
        assert rest[-1].finished and rest[-1].finish_reason == "abort"

        async def consume_forever():
            async for _ in eng.generate("c", ps[1], long):
                pass

        task = asyncio.create_task(consume_forever())
        while eng.stats().kv_pages_used == 0:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadline = time.monotonic() + 5
        while eng.stats().kv_pages_used and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        stats = eng.stats()
        await eng.shutdown()
        return stats

    stats = asyncio.run(main())
    assert (stats.running, stats.waiting, stats.kv_pages_used) == (0, 0, 0)


def test_shutdown_aborts_in_flight_and_never_hangs():
    long = PARAMS.replace(max_tokens=480, block_length=8, steps=8)

    async def main():
        eng = make_engine(no_stop=True)
        await eng.start()
        streams = [eng.generate(f"s{i}", p, long) for i, p in enumerate(prompts((8, 16, 4), seed=23))]
        tasks = [asyncio.create_task(collect(s)) for s in streams]
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        await eng.shutdown(timeout_s=0.1)
        took = time.monotonic() - t0
        results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
        assert not eng.is_ready
        with pytest.raises(RuntimeError):
            eng.generate("late", [5, 6], PARAMS)
        return results, took

    results, took = asyncio.run(main())
    assert took < 5
    for outs in results:
        assert outs[-1].finished and outs[-1].finish_reason == "abort"
