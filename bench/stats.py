"""Per-request records of a load run, the summary figures computed from them, and the one
percentile definition all benchmark kinds use."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RequestRecord:
    index: int
    start_s: float  # seconds from the start of the run
    end_s: float = 0.0
    first_block_s: float | None = None  # start -> first non-empty content chunk (streaming only)
    output_tokens: int | None = None  # from the server's usage; None when it sent none
    prompt_tokens: int | None = None
    chunks: int = 0  # content chunks received (one per decoded block on diffuserve)
    block_times_s: list[float] = field(default_factory=list)  # arrival of each content chunk (run clock)
    steps: int | None = None  # from the diffusion extra, when the server reports it
    blocks: int | None = None
    tokens_per_step: float | None = None
    finish_reason: str | None = None
    error: str | None = None  # kind: http_429, http_400:invalid_request_error, timeout, connection...

    @property
    def latency_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "latency_s": self.latency_s}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (q in [0, 100]) of every benchmark kind: linear interpolation between
    the closest ranks, numpy's default ("linear") method. p50 is the median; p99 of fewer than 100
    values lies between the two largest, so it never reports a value no request had beyond the max."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def distribution(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "mean": sum(values) / len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def summarize(records: list[RequestRecord], duration_s: float) -> dict[str, Any]:
    """Run-level figures; throughputs divide by the wall time of the whole run."""
    ok = [r for r in records if r.ok]
    out_tokens = sum(r.output_tokens or 0 for r in ok)
    steps = [r.steps for r in ok if r.steps]
    blocks = [r.blocks for r in ok if r.blocks]
    # Tokens per step over the run: total tokens / total steps, not a mean of ratios,
    # so long answers weigh by their length.
    tokens_with_steps = sum(r.output_tokens or 0 for r in ok if r.steps)
    return {
        "num_requests": len(records),
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "duration_s": duration_s,
        "request_throughput_rps": len(ok) / duration_s if duration_s > 0 else 0.0,
        "output_token_throughput_tps": out_tokens / duration_s if duration_s > 0 else 0.0,
        "total_output_tokens": out_tokens,
        "total_prompt_tokens": sum(r.prompt_tokens or 0 for r in ok),
        "usage_reported": sum(r.output_tokens is not None for r in ok),
        "latency_s": distribution([r.latency_s for r in ok]),
        "time_to_first_block_s": distribution([r.first_block_s for r in ok if r.first_block_s is not None]),
        "tokens_per_step": tokens_with_steps / sum(steps) if steps else None,
        "steps_per_block": sum(steps) / sum(blocks) if steps and blocks else None,
        "chunks_per_request": sum(r.chunks for r in ok) / len(ok) if ok else None,
        "finish_reasons": dict(Counter(r.finish_reason or "none" for r in ok)),
        "errors": dict(Counter(r.error for r in records if r.error)),
    }


def throughput_timeline(records: list[RequestRecord], duration_s: float, bins: int = 40
                        ) -> dict[str, list[float]]:
    """Output tokens/s and finished requests/s per time bin.

    A streamed answer's tokens are spread evenly over its blocks, at the time each block
    arrived (blocks have block_length tokens except the last, so this is close); an answer
    without blocks (no streaming) is credited when it finishes.
    """
    width = max(duration_s / bins, 1e-3)
    n = max(1, math.ceil(duration_s / width))
    tokens, reqs = [0.0] * n, [0.0] * n

    def slot(t: float) -> int:
        return min(max(int(t / width), 0), n - 1)

    for r in records:
        if not r.ok:
            continue
        out = r.output_tokens or 0
        times = r.block_times_s or [r.end_s]
        for t in times:
            tokens[slot(t)] += out / len(times)
        reqs[slot(r.end_s)] += 1
    return {
        "t_s": [(i + 0.5) * width for i in range(n)],
        "output_tokens_per_s": [t / width for t in tokens],
        "requests_per_s": [q / width for q in reqs],
    }
