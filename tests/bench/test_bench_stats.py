"""Bench arithmetic: percentiles, Poisson arrivals, summaries and the throughput timeline."""

from __future__ import annotations

import json
import math
import random
import statistics

import numpy as np
import pytest
from diffuserve.bench.load import poisson_arrivals
from diffuserve.bench.prompts import builtin_prompts, load_prompts
from diffuserve.bench.report import format_summary, format_sweep_table
from diffuserve.bench.stats import RequestRecord, percentile, summarize, throughput_timeline


@pytest.mark.parametrize("n", [1, 2, 7, 100])
def test_percentile_matches_numpy(n):
    rng = random.Random(n)
    values = [rng.expovariate(1.0) for _ in range(n)]
    for q in (0, 1, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert math.isnan(percentile([], 50))


def test_poisson_arrivals_rate_and_memorylessness():
    times = poisson_arrivals(4000, rate=8.0, seed=3)
    gaps = np.diff(times)
    assert times[0] == 0.0 and np.all(gaps > 0)
    assert gaps.mean() == pytest.approx(1 / 8.0, rel=0.06)
    # Exponential gaps: standard deviation equals the mean (a fixed-interval schedule would give 0).
    assert gaps.std() == pytest.approx(1 / 8.0, rel=0.08)
    assert poisson_arrivals(10, 8.0, seed=3) == times[:10]
    assert poisson_arrivals(10, 8.0, seed=4) != times[:10]
    with pytest.raises(ValueError):
        poisson_arrivals(3, 0.0)


def _records() -> list[RequestRecord]:
    recs = []
    for i in range(10):
        r = RequestRecord(index=i, start_s=i * 0.1, end_s=i * 0.2 + 1.0, first_block_s=0.2 + 0.01 * i,
                          output_tokens=10 + i, prompt_tokens=5, chunks=2, steps=20, blocks=2,
                          tokens_per_step=(10 + i) / 20, finish_reason="stop")
        recs.append(r)
    recs.append(RequestRecord(index=10, start_s=0.0, end_s=0.5, error="http_429:rate_limit_error"))
    return recs


def test_summarize_counts_only_successes():
    s = summarize(_records(), duration_s=3.0)
    assert (s["num_requests"], s["completed"], s["failed"]) == (11, 10, 1)
    assert s["total_output_tokens"] == sum(range(10, 20))
    assert s["output_token_throughput_tps"] == pytest.approx(145 / 3.0)
    assert s["request_throughput_rps"] == pytest.approx(10 / 3.0)
    lat = [1.0 + i * 0.1 for i in range(10)]
    assert s["latency_s"]["p50"] == pytest.approx(statistics.median(lat))
    assert s["latency_s"]["p99"] == pytest.approx(float(np.percentile(lat, 99)))
    assert s["tokens_per_step"] == pytest.approx(145 / 200)
    assert s["steps_per_block"] == pytest.approx(10.0)
    assert s["errors"] == {"http_429:rate_limit_error": 1}
    json.dumps(s)  # the summary must be JSON-serializable as is
    text = format_summary(s, "test")
    assert "p99" in text and "http_429:rate_limit_error: 1" in text
    table = format_sweep_table([1, 4], [s, s])
    assert len(table.splitlines()) == 4


def test_timeline_conserves_tokens():
    recs = _records()
    tl = throughput_timeline(recs, duration_s=3.0, bins=12)
    width = 3.0 / 12
    assert sum(tl["output_tokens_per_s"]) * width == pytest.approx(145)
    assert sum(tl["requests_per_s"]) * width == pytest.approx(10)


def test_prompt_files(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a"}\n\n'
                    '{"messages": [{"role": "user", "content": "b"}], "max_tokens": 9}\n"c"\n')
    prompts = load_prompts(path)
    assert [p.as_prompt() for p in prompts] == ["a", "b", "c"]
    assert prompts[1].max_tokens == 9 and prompts[0].as_messages() == [{"role": "user", "content": "a"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_prompts(bad)
    assert len(builtin_prompts()) >= 8


def test_timeline_places_streamed_tokens_at_their_blocks():
    streamed = RequestRecord(index=0, start_s=0.0, end_s=2.9, output_tokens=12, block_times_s=[0.1, 1.1, 2.1])
    plain = RequestRecord(index=1, start_s=0.0, end_s=2.9, output_tokens=5)
    tl = throughput_timeline([streamed, plain], duration_s=3.0, bins=3)  # 1 s bins
    assert tl["output_tokens_per_s"] == pytest.approx([4.0, 4.0, 4.0 + 5.0])
    assert tl["requests_per_s"] == pytest.approx([0.0, 0.0, 2.0])
