"""Load generation: closed loop at fixed concurrency, or open loop at a Poisson arrival rate."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from diffuserve.clients import (
    AsyncDiffuserveClient,
    BlockDelta,
    Completion,
    DiffuserveAPIError,
    DiffuserveConnectionError,
    DiffuserveTimeoutError,
)

from .prompts import BenchPrompt
from .stats import RequestRecord


@dataclass(frozen=True)
class LoadSpec:
    num_requests: int
    concurrency: int | None = None  # closed loop: this many requests always in flight
    rate: float | None = None  # open loop: Poisson arrivals, requests per second
    endpoint: str = "chat"  # "chat" or "completions"
    stream: bool = True
    max_tokens: int | None = 64
    seed: int = 0  # arrival times and prompt order
    fields: dict[str, Any] = field(default_factory=dict)  # diffusion extras, temperature, ...


def poisson_arrivals(num: int, rate: float, seed: int = 0) -> list[float]:
    """Arrival offsets in seconds: exponential gaps of mean 1/rate, the first request at 0."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    rng = random.Random(seed)
    t, times = 0.0, []
    for i in range(num):
        if i:
            t += rng.expovariate(rate)
        times.append(t)
    return times


def error_kind(e: BaseException) -> str:
    """Low-cardinality label for the error table: http_<status>[:<type>], timeout, connection."""
    if isinstance(e, DiffuserveAPIError):
        return f"http_{e.status_code}" + (f":{e.type}" if e.type else "")
    if isinstance(e, DiffuserveTimeoutError):
        return "timeout"
    if isinstance(e, DiffuserveConnectionError):
        return "connection"
    return type(e).__name__


async def _one_request(client: AsyncDiffuserveClient, model: str | None, prompt: BenchPrompt, spec: LoadSpec,
                       record: RequestRecord, t0: float) -> None:
    max_tokens = prompt.max_tokens or spec.max_tokens
    try:
        if spec.stream:
            if spec.endpoint == "chat":
                blocks = client.stream_chat(prompt.as_messages(), max_tokens, model, **spec.fields)
            else:
                blocks = client.stream_complete(prompt.as_prompt(), max_tokens, model, **spec.fields)
            async for delta in blocks:
                _take_delta(record, delta, time.perf_counter() - t0)
        else:
            if spec.endpoint == "chat":
                result = await client.chat(prompt.as_messages(), max_tokens, model, **spec.fields)
            else:
                result = await client.complete(prompt.as_prompt(), max_tokens, model, **spec.fields)
            _take_completion(record, result)
    except Exception as e:  # every failure is a data point of the run, never a crash of it
        record.error = error_kind(e)
    record.end_s = time.perf_counter() - t0


def _take_delta(record: RequestRecord, delta: BlockDelta, now_s: float) -> None:
    if delta.text:
        record.chunks += 1
        record.block_times_s.append(now_s)
        if record.first_block_s is None:
            record.first_block_s = now_s - record.start_s
    if delta.finish_reason:
        record.finish_reason = delta.finish_reason
    if delta.usage:
        record.output_tokens = delta.usage.completion_tokens
        record.prompt_tokens = delta.usage.prompt_tokens
    if delta.diffusion:
        _take_diffusion(record, delta.diffusion)


def _take_completion(record: RequestRecord, result: Completion) -> None:
    record.chunks = 1 if result.text else 0
    record.finish_reason = result.finish_reason
    if result.usage:
        record.output_tokens = result.usage.completion_tokens
        record.prompt_tokens = result.usage.prompt_tokens
    if result.diffusion:
        _take_diffusion(record, result.diffusion)


def _take_diffusion(record: RequestRecord, d: Any) -> None:
    record.steps, record.blocks, record.tokens_per_step = d.steps, d.blocks, d.tokens_per_step


async def run_load(
    client: AsyncDiffuserveClient,
    model: str | None,
    prompts: list[BenchPrompt],
    spec: LoadSpec,
    on_done: Callable[[RequestRecord], None] | None = None,
) -> tuple[list[RequestRecord], float]:
    """Send spec.num_requests requests (prompts cycled in a seeded shuffle); return records and wall time."""
    if (spec.concurrency is None) == (spec.rate is None):
        raise ValueError("give exactly one of concurrency (closed loop) or rate (open loop)")
    order = list(range(len(prompts)))
    random.Random(spec.seed).shuffle(order)
    picks = [prompts[order[i % len(order)]] for i in range(spec.num_requests)]
    records: list[RequestRecord] = []
    t0 = time.perf_counter()

    async def fire(i: int) -> None:
        record = RequestRecord(index=i, start_s=time.perf_counter() - t0)
        records.append(record)
        await _one_request(client, model, picks[i], spec, record, t0)
        if on_done:
            on_done(record)

    if spec.concurrency is not None:
        next_index = iter(range(spec.num_requests))

        async def worker() -> None:
            for i in next_index:  # shared iterator: each worker takes the next free index
                await fire(i)

        await asyncio.gather(*(worker() for _ in range(min(spec.concurrency, spec.num_requests))))
    else:
        tasks = []
        for i, at in enumerate(poisson_arrivals(spec.num_requests, spec.rate, spec.seed)):
            delay = at - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(fire(i)))  # open loop: never waits for earlier answers
        await asyncio.gather(*tasks)
    duration = time.perf_counter() - t0
    records.sort(key=lambda r: r.index)
    return records, duration
