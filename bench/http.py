"""HTTP server vs offline engine: output tokens/s at the same concurrency and sampling parameters.

    diffuserve bench http --concurrency 16 --requests-per-client 2 --repeats 3

Offline: `LLMEngine.generate` on `concurrency` prompts at once, `requests-per-client` rounds.
HTTP: a real `diffuserve serve` subprocess with the same engine options, `concurrency` streaming
clients (closed loop, `requests-per-client` requests each) sending the same token-id prompts to
/v1/completions. Both use ignore_eos at temperature 0, so both make the same number of tokens and
the ratio measures what the server adds (HTTP, JSON, SSE, the asyncio <-> engine-thread handoff).
Both stay loaded and run in turns (`repeats` alternating pairs), so a busy machine's drift hits
both alike. Time to first block is what clients see: request sent -> first block chunk received.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from diffuserve.engine.cli_args import add_engine_args, engine_argv, engine_config_from_args

from .prompts import BUILTIN_PROMPTS
from .stats import percentile

HELP = "HTTP server vs offline engine: output tokens/s and time to first block at one concurrency"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint folder (default: built-in model)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--requests-per-client", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="alternating offline/HTTP pairs")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--block-length", type=int, default=16)
    p.add_argument("--steps", type=int, default=None, help="steps per block (default: block_length)")
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--json", default=None, help="write the results here as JSON")
    add_engine_args(p, exclude=("max_num_seqs",))  # max_num_seqs: --concurrency


def engine_config(args: argparse.Namespace):
    return engine_config_from_args(args, max_num_seqs=args.concurrency)


def prompt_ids(tokenizer, n: int) -> list[list[int]]:
    return [list(tokenizer(BUILTIN_PROMPTS[i % len(BUILTIN_PROMPTS)])["input_ids"]) for i in range(n)]


def sampling(args: argparse.Namespace) -> dict[str, Any]:
    fields = {"max_tokens": args.max_tokens, "block_length": args.block_length, "temperature": 0.0}
    if args.steps is not None:
        fields["steps"] = args.steps
    if args.threshold is not None:
        fields["threshold"] = args.threshold
    return fields


class Offline:
    """The engine core alone, in this process: the baseline the server is compared with."""

    def __init__(self, args: argparse.Namespace):
        from diffuserve.engine.llm_engine import LLMEngine
        from diffuserve.engine.params import DiffusionParams

        self.engine = LLMEngine.from_pretrained(args.model, engine_config(args))
        self.prompts = prompt_ids(self.engine.tokenizer, args.concurrency)
        self.params = DiffusionParams(suppress_eos=True, **sampling(args))
        self.rounds = args.requests_per_client
        self.step_times: list[float] = []
        self.engine.listeners.append(lambda s: self.step_times.append(s.duration_s))
        self.engine.generate(self.prompts[:2], self.params, prefix="warmup")

    def run(self, tag: str) -> dict[str, Any]:
        self.step_times.clear()
        tokens, t0 = 0, time.perf_counter()
        for r in range(self.rounds):
            results = self.engine.generate(self.prompts, self.params, prefix=f"{tag}-{r}")
            tokens += sum(len(res.token_ids) for res in results)
        elapsed = time.perf_counter() - t0
        return {"tokens": tokens, "seconds": elapsed, "tokens_per_s": tokens / elapsed,
                "engine_steps": len(self.step_times), "step_seconds_sum": sum(self.step_times)}


async def run_http(args: argparse.Namespace, prompts: list[list[int]], base: str,
                   warmup_only: bool = False) -> dict[str, Any]:
    import httpx

    body_common = {**sampling(args), "ignore_eos": True, "stream": True,
                   "stream_options": {"include_usage": True}}
    ttfb: list[float] = []
    tokens = 0

    async def one(client: httpx.AsyncClient, ids: list[int]) -> None:
        nonlocal tokens
        sent = time.perf_counter()
        first = None
        async with client.stream("POST", base + "/v1/completions", json={"prompt": ids, **body_common}) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    raise RuntimeError(event["error"])
                if first is None and event["choices"] and event["choices"][0]["finish_reason"] is None:
                    first = time.perf_counter() - sent
                if event.get("usage"):
                    tokens += event["usage"]["completion_tokens"]
        ttfb.append(first if first is not None else time.perf_counter() - sent)

    async def client_loop(client: httpx.AsyncClient, i: int) -> None:
        for _ in range(args.requests_per_client):
            await one(client, prompts[i])

    limits = httpx.Limits(max_connections=args.concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        if warmup_only:
            await asyncio.gather(*(one(client, prompts[i]) for i in range(2)))
            return {}
        before = await _step_metrics(client, base)
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(client, i) for i in range(args.concurrency)))
        elapsed = time.perf_counter() - t0
        after = await _step_metrics(client, base)
    return {"tokens": tokens, "seconds": elapsed, "tokens_per_s": tokens / elapsed,
            "ttfb_p50_s": percentile(ttfb, 50), "ttfb_p99_s": percentile(ttfb, 99),
            "requests": len(ttfb), "engine_steps": int(after[0] - before[0]),
            "step_seconds_sum": after[1] - before[1]}


async def _step_metrics(client, base: str) -> tuple[float, float]:
    """(count, sum) of the server's engine step duration histogram."""
    values = {}
    for line in (await client.get(base + "/metrics")).text.splitlines():
        if line.startswith("diffuserve_engine_step_duration_seconds_"):
            name, value = line.rsplit(" ", 1)
            values[name.split("{")[0]] = float(value)
    return (values["diffuserve_engine_step_duration_seconds_count"],
            values["diffuserve_engine_step_duration_seconds_sum"])


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The server gets the offline engine's exact configuration.
    cmd = [sys.executable, "-m", "diffuserve.server.cli", "--log-level", "WARNING", "serve",
           "--port", str(port), *engine_argv(engine_config(args)), "--max-queue", str(4 * args.concurrency)]
    if args.model:
        cmd += ["--model", args.model]
    proc = subprocess.Popen(cmd, env=dict(os.environ))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(base + "/ready", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server not ready in 300 s")


def run(args: argparse.Namespace) -> int:
    offline = Offline(args)
    proc, base = start_server(args)  # both stay loaded; they run in turns, never together
    pairs = []
    try:
        asyncio.run(run_http(args, offline.prompts, base, warmup_only=True))
        for k in range(args.repeats):
            off = offline.run(f"rep{k}")
            http = asyncio.run(run_http(args, offline.prompts, base))
            pairs.append({"offline": off, "http": http, "ratio": http["tokens_per_s"] / off["tokens_per_s"]})
            _report(k, off, http)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    ratios = [p["ratio"] for p in pairs]
    ttfb50 = statistics.median(p["http"]["ttfb_p50_s"] for p in pairs)
    ttfb99 = statistics.median(p["http"]["ttfb_p99_s"] for p in pairs)
    print(f"median ratio {statistics.median(ratios):.1%} over {len(pairs)} alternating pairs "
          f"(min {min(ratios):.1%}, max {max(ratios):.1%}); time to first block p50 {ttfb50 * 1e3:.0f} ms, "
          f"p99 {ttfb99 * 1e3:.0f} ms (medians over pairs)")
    if args.json:
        config = engine_config(args)
        params = {**sampling(args), "concurrency": args.concurrency, "device": config.device,
                  "requests_per_client": args.requests_per_client, "dtype": config.dtype}
        with open(args.json, "w") as f:
            json.dump({"params": params, "pairs": pairs, "median_ratio": statistics.median(ratios)}, f,
                      indent=2)
    return 0


def _report(k: int, off: dict[str, Any], http: dict[str, Any]) -> None:
    def part(r: dict[str, Any]) -> str:
        return (f"{r['tokens_per_s']:8.1f} tok/s ({r['tokens']} tokens, {r['seconds']:.2f} s; "
                f"{r['engine_steps']} steps, {r['step_seconds_sum']:.2f} s inside them)")

    print(f"[{k}] offline {part(off)} | http {part(http)} | ratio "
          f"{http['tokens_per_s'] / off['tokens_per_s']:.1%} | first block p50 "
          f"{http['ttfb_p50_s'] * 1e3:.0f} ms p99 {http['ttfb_p99_s'] * 1e3:.0f} ms", flush=True)
