"""The offline benchmark's two runners (the oracle sampler, the engine) and what they measure.
Its workload (standard-library prompts) is in bench/prompts.py."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch
from diffuserve.engine.llm_engine import LLMEngine, RequestResult, collect
from diffuserve.engine.oracle import generate_variable
from diffuserve.engine.params import DiffusionParams


@dataclass
class RunStats:
    name: str
    concurrency: int
    seconds: float
    tokens: int  # generated answer tokens
    forwards: int  # model forwards (engine steps; reference: one per step per request)
    request_steps: int  # sum over requests of their denoising steps
    peak_mem_bytes: int
    flops: float = 0.0
    results: list[RequestResult] = field(default_factory=list, repr=False)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_step(self) -> float:
        return self.tokens / self.request_steps if self.request_steps else 0.0


class MemoryMeter:
    """Peak RSS (CPU, sampled) or max_memory_allocated (CUDA) over one run."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.peak = 0

    def start(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.peak = 0
        self.sample()

    def sample(self, *_args) -> None:
        if not self.cuda:
            with open("/proc/self/statm") as f:
                self.peak = max(self.peak, int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))

    def stop(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated())
        self.sample()
        return self.peak


@torch.inference_mode()
def run_reference(model, cfg, tokenizer, prompts, params: DiffusionParams, meter: MemoryMeter,
                  sample: list[int] | None = None) -> RunStats:
    """The baseline: the exact reference sampler, one request at a time, on the prompts `sample`
    (indices; all by default). Results of prompts left out are None."""
    sample = list(range(len(prompts))) if sample is None else sample
    meter.start()
    t0 = time.perf_counter()
    results: list[RequestResult | None] = [None] * len(prompts)
    for i in sample:
        r = generate_variable(model, cfg, [prompts[i]], params, tokenizer)[0]
        results[i] = RequestResult(r.token_ids, r.text, r.finish_reason, None, r.steps, 0)
        meter.sample()
    seconds = time.perf_counter() - t0
    done = [r for r in results if r is not None]
    steps = sum(r.steps for r in done)
    return RunStats("reference", 1, seconds, sum(len(r.token_ids) for r in done), steps, steps,
                    meter.stop(), results=results)


def step_flops(cfg, batch) -> float:
    """Model FLOPs of one engine step: matmuls on every query token, attention, LM head rows."""
    d, layers = cfg.hidden_size, cfg.num_layers
    kv_d = cfg.num_kv_heads * cfg.head_dim
    per_token = 2 * layers * (d * (cfg.num_heads * cfg.head_dim) * 2 + 2 * d * kv_d
                              + 3 * d * cfg.intermediate_size)
    flops = 0.0
    for _seq, plan in batch:
        q = plan.num_query_tokens
        keys = plan.num_cached + len(plan.token_ids) if plan.paged else len(plan.token_ids)
        flops += per_token * q + 4 * layers * cfg.num_heads * cfg.head_dim * q * keys
        flops += 2 * d * cfg.vocab_size * len(plan.mask_rows) * (2 if plan.uncond_token_ids else 1)
    return flops


@torch.inference_mode()
def run_engine(engine: LLMEngine, name: str, prompts, params: DiffusionParams, concurrency: int,
               meter: MemoryMeter) -> RunStats:
    """Closed loop: keep `concurrency` requests in flight until every prompt is done."""
    flops = [0.0]
    real_run = engine.runner.run

    def counting_run(batch):
        flops[0] += step_flops(engine.cfg, batch)
        return real_run(batch)

    engine.runner.run = counting_run
    meter.start()
    forwards0 = engine.num_forwards
    results = [RequestResult() for _ in prompts]
    next_i, in_flight = 0, 0
    t0 = time.perf_counter()
    while next_i < len(prompts) or in_flight:
        while in_flight < concurrency and next_i < len(prompts):
            engine.add_request(f"{name}-{next_i}", prompts[next_i], params)
            next_i, in_flight = next_i + 1, in_flight + 1
        for out in engine.step():
            collect(results[int(out.request_id.rsplit("-", 1)[1])], out)
            in_flight -= out.finished
        if engine.num_forwards % 8 == 0:
            meter.sample()
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    engine.runner.run = real_run
    errors = [r.error for r in results if r.error]
    if errors:
        raise RuntimeError(f"{name}: {len(errors)} requests failed, first: {errors[0]}")
    return RunStats(name, concurrency, seconds, sum(len(r.token_ids) for r in results),
                    engine.num_forwards - forwards0, sum(r.steps for r in results), meter.stop(),
                    flops[0], results)


def agreement(results: list[RequestResult | None], exact: list[RequestResult | None],
              span: tuple[int, int] | None = None) -> float:
    """Position-wise token match over the answers (the longer answer of each pair counts), over the
    prompts both runs have (the reference may cover a sample; its other entries are None).
    `span` = (start, end): only answer positions in [start, end), e.g. one block."""
    same = total = 0
    for r, e in zip(results, exact, strict=True):
        if r is None or e is None:
            continue
        a_ids, e_ids = r.token_ids, e.token_ids
        if span is not None:
            a_ids, e_ids = a_ids[span[0] : span[1]], e_ids[span[0] : span[1]]
        same += sum(a == b for a, b in zip(a_ids, e_ids, strict=False))
        total += max(len(a_ids), len(e_ids))
    return same / total if total else 1.0
