"""Prometheus metrics of one server: its own CollectorRegistry, so several apps can live in a process.

Names carry the `diffuserve_` prefix and their unit; labels stay low-cardinality (the served
model name, the finish reason, the HTTP status). Engine-step metrics arrive from the engine
thread through `on_step` (prometheus_client is thread-safe); queue and KV gauges are read
from `engine.stats()` at scrape time, so they are never stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from diffuserve.engine.outputs import BlockOutput, EngineStats, StepStats
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)
TOKENS_PER_STEP_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)


class _EngineStatsCollector(Collector):
    """Gauges read from the engine when Prometheus scrapes."""

    def __init__(self, model: str, stats: Callable[[], EngineStats | None]):
        self.model = model
        self.stats = stats

    def collect(self) -> Iterator:
        s = self.stats()
        if s is None:  # model still loading: export nothing rather than fake zeros
            return
        for name, doc, value in (
            ("diffuserve_requests_running", "requests being denoised", s.running),
            ("diffuserve_requests_waiting", "requests queued in the engine", s.waiting),
            ("diffuserve_kv_cache_usage_ratio", "used / total KV cache pages", s.kv_usage),
            ("diffuserve_kv_cache_pages_used", "KV cache pages in use", s.kv_pages_used),
            ("diffuserve_kv_cache_pages_total", "KV cache pages in the pool", s.kv_pages_total),
        ):
            g = GaugeMetricFamily(name, doc, labels=["model"])
            g.add_metric([self.model], float(value))
            yield g
        c = CounterMetricFamily("diffuserve_preemptions", "sequences preempted for lack of KV pages",
                                labels=["model"])
        c.add_metric([self.model], float(s.num_preemptions))
        yield c


class ServerMetrics:
    def __init__(self, model: str, stats: Callable[[], EngineStats | None]):
        self.model = model
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "diffuserve_requests", "requests by HTTP status and finish reason (one per choice when "
            "generation ran; 'none' when refused before it)",
            ["model", "status", "finish_reason"], registry=r,
        )
        self.e2e_latency = Histogram(
            "diffuserve_e2e_request_latency_seconds", "arrival at the server to last block",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.first_block = Histogram(
            "diffuserve_time_to_first_block_seconds", "arrival at the server to first decoded block",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue_time = Histogram(
            "diffuserve_request_queue_time_seconds", "engine arrival to first scheduled",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.step_duration = Histogram(
            "diffuserve_engine_step_duration_seconds", "one engine step (one batched forward + denoise)",
            ["model"], buckets=STEP_BUCKETS, registry=r,
        )
        self.tokens_per_step = Histogram(
            "diffuserve_tokens_committed_per_step", "tokens committed by one sequence in one step",
            ["model"], buckets=TOKENS_PER_STEP_BUCKETS, registry=r,
        )
        self.prompt_tokens = Counter("diffuserve_prompt_tokens", "prompt tokens of finished requests",
                                     ["model"], registry=r)
        self.generation_tokens = Counter("diffuserve_generation_tokens", "tokens generated",
                                         ["model"], registry=r)
        self.denoising_steps = Counter("diffuserve_denoising_steps", "denoising steps summed over requests",
                                       ["model"], registry=r)
        self.engine_steps = Counter("diffuserve_engine_steps", "engine steps", ["model"], registry=r)
        self.query_tokens = Counter(
            "diffuserve_engine_query_tokens", "tokens through the model: kind=cache (committed tokens "
            "computed into the KV cache: prompts, finished blocks, refreshes), kind=block (masked "
            "blocks and exact-mode canvases)", ["model", "kind"], registry=r,
        )
        self.cache_recomputes = Counter(
            "diffuserve_cache_recomputes", "prefix caches rebuilt from position 0 after an answer "
            "block (cache_refresh, or recovery after preemption)", ["model"], registry=r,
        )
        r.register(_EngineStatsCollector(model, stats))
        # Bound children: label lookups off the hot path.
        self._step_duration = self.step_duration.labels(model)
        self._tokens_per_step = self.tokens_per_step.labels(model)
        self._engine_steps = self.engine_steps.labels(model)
        self._cache_tokens = self.query_tokens.labels(model, "cache")
        self._block_tokens = self.query_tokens.labels(model, "block")
        self._recomputes = self.cache_recomputes.labels(model)

    def count(self, status: int, finish_reason: str, n: int = 1) -> None:
        self.requests.labels(self.model, str(status), finish_reason).inc(n)

    def on_step(self, step: StepStats) -> None:
        """Engine-thread listener: called after every engine step."""
        self._step_duration.observe(step.duration_s)
        self._engine_steps.inc()
        self._cache_tokens.inc(step.num_cache_tokens)
        self._block_tokens.inc(step.num_query_tokens - step.num_cache_tokens)
        self._recomputes.inc(step.num_recomputes)
        for committed in step.tokens_committed:
            self._tokens_per_step.observe(committed)

    def on_first_block(self, seconds: float) -> None:
        self.first_block.labels(self.model).observe(seconds)

    def on_finished(self, last: BlockOutput, status: int, e2e_seconds: float) -> None:
        """One engine request (one choice) ended; `last` is its final BlockOutput."""
        m = self.model
        self.count(status, last.finish_reason or "none")
        self.e2e_latency.labels(m).observe(e2e_seconds)
        self.queue_time.labels(m).observe(last.queue_time_s)
        self.prompt_tokens.labels(m).inc(last.num_prompt_tokens)
        self.generation_tokens.labels(m).inc(last.num_generated_tokens)
        self.denoising_steps.labels(m).inc(last.steps)
