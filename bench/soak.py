"""`diffuserve bench soak`: N streaming clients for D seconds against a running server, a chosen
fraction of them disconnecting mid-stream; then the checks an operator cares about after hours of
traffic:

- every request finished, or was cancelled by its own client (no errors), and none hung (each
  request has a deadline; one that passes it counts as hung);
- the engine drained: `diffuserve_requests_running`, `diffuserve_requests_waiting` and
  `diffuserve_kv_cache_pages_used` back to 0 on /metrics once the clients stop (so aborted
  requests gave their KV pages back);
- the server's resident memory (VmRSS from /proc/<pid>/status, so the server must run on this
  machine) grew less than `--rss-growth-limit` from the end of the warm-up to the end.

The clients loop until the deadline and every request has its own timeout, so a run ends after at
most `duration + request_timeout + settle_timeout` seconds whatever the server does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .prompts import builtin_prompts
from .stats import distribution

HELP = ("Soak test: streaming clients for a while, some disconnecting mid-stream; checks that no request "
        "hung or failed, the engine drained (running, waiting, KV pages 0) and server memory did not grow.")
DRAIN_GAUGES = (
    "diffuserve_requests_running", "diffuserve_requests_waiting", "diffuserve_kv_cache_pages_used",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL (without /v1)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--model", default=None, help="model name (default: the first of GET /v1/models)")
    p.add_argument("--clients", type=int, default=16, help="streaming clients, each one request at a time")
    p.add_argument("--duration", type=float, default=60.0, help="seconds the clients keep sending")
    p.add_argument("--disconnect-fraction", type=float, default=0.1,
                   help="share of requests whose client goes away after the first block")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--block-length", type=int, default=16)
    p.add_argument("--request-timeout", type=float, default=120.0,
                   help="a request not done after this many seconds counts as hung")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds before the memory baseline is taken (default: 20%% of --duration)")
    p.add_argument("--server-pid", type=int, default=None,
                   help="the server's process id, for its memory (default: the process listening on the "
                   "URL's port, looked up in /proc)")
    p.add_argument("--rss-growth-limit", type=float, default=0.05,
                   help="largest allowed growth of the server's RSS after the warm-up (0.05 = 5%%)")
    p.add_argument("--settle-timeout", type=float, default=60.0,
                   help="seconds the engine gets to drain after the clients stop")
    p.add_argument("--seed", type=int, default=0, help="seed of prompt choice and of who disconnects")
    p.add_argument("--json", default=None, help="also write the report to this JSON file")


@dataclass
class SoakReport:
    outcomes: dict[str, int] = field(default_factory=dict)  # finished / cancelled / hung / error:<kind>
    latency_s: dict[str, float] | None = None  # of finished requests
    output_tokens: int = 0
    gauges_after: dict[str, float] = field(default_factory=dict)
    drained_after_s: float | None = None  # None: not drained within the settle timeout
    server_pid: int | None = None
    rss_warm_bytes: int | None = None
    rss_end_bytes: int | None = None
    rss_peak_bytes: int | None = None
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def rss_growth(self) -> float | None:
        if not self.rss_warm_bytes or self.rss_end_bytes is None:
            return None
        return self.rss_end_bytes / self.rss_warm_bytes - 1.0

    @property
    def passed(self) -> bool:
        return all(self.checks.values())

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rss_growth": self.rss_growth, "passed": self.passed}


# ---- the server's process and gauges -----------------------------------------------------------
def rss_bytes(pid: int) -> int | None:
    """Resident set size of process `pid`, or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def listening_pid(port: int) -> int | None:
    """The process with a TCP socket listening on `port` on this machine, from /proc (Linux)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if fd.readlink().as_posix() in inodes:
                    return int(proc.name)
        except OSError:  # gone, or not ours to read
            continue
    return None


def parse_gauges(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """Sum of each named sample over its label sets, from Prometheus text exposition."""
    out = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in out:
            out[name] += float(line.rsplit(" ", 1)[1])
    return out


# ---- the clients -------------------------------------------------------------------------------
async def one_request(client, url: str, body: dict[str, Any], disconnect: bool, timeout: float
                      ) -> tuple[str, int, float]:
    """(outcome, output tokens, seconds). Outcome: finished, cancelled (this client left after the
    first block, on purpose), hung (past `timeout`) or error:<kind>."""
    import httpx

    start = time.monotonic()

    async def run() -> tuple[str, int]:
        finish, tokens = None, 0
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return f"error:http_{response.status_code}", 0
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    return ("finished", tokens) if finish else ("error:no_finish_reason", tokens)
                event = json.loads(line[6:])
                if "error" in event:
                    return f"error:{event['error'].get('type') or 'event'}", tokens
                for choice in event.get("choices") or []:
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                    delta = choice.get("delta") or {}
                    if disconnect and (delta.get("content") or choice.get("text")):
                        return "cancelled", tokens  # leaving the `async with` closes the connection
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
        return "error:stream_ended_early", tokens

    try:
        outcome, tokens = await asyncio.wait_for(run(), timeout)
    except asyncio.TimeoutError:
        outcome, tokens = "hung", 0
    except httpx.TransportError as e:
        outcome, tokens = f"error:{type(e).__name__}", 0
    return outcome, tokens, time.monotonic() - start


async def _soak(args: argparse.Namespace) -> SoakReport:
    import httpx

    base = args.url.rstrip("/").removesuffix("/v1")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    report = SoakReport()
    port = urlparse(base).port or (443 if base.startswith("https") else 80)
    report.server_pid = args.server_pid or listening_pid(port)
    warmup = args.duration * 0.2 if args.warmup is None else args.warmup
    prompts = [p.as_messages() for p in builtin_prompts()]
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=args.clients + 4)
    async with httpx.AsyncClient(timeout=args.request_timeout, headers=headers, limits=limits) as client:
        model = args.model or (await client.get(base + "/v1/models")).json()["data"][0]["id"]
        deadline = time.monotonic() + args.duration

        async def client_loop(i: int) -> None:
            rng = random.Random(args.seed * 100_003 + i)
            while time.monotonic() < deadline:
                body = {"model": model, "messages": prompts[rng.randrange(len(prompts))],
                        "max_tokens": args.max_tokens, "block_length": args.block_length, "temperature": 0,
                        "stream": True, "stream_options": {"include_usage": True}}
                disconnect = rng.random() < args.disconnect_fraction
                outcome, tokens, seconds = await one_request(
                    client, base + "/v1/chat/completions", body, disconnect, args.request_timeout)
                report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
                if outcome == "finished":
                    latencies.append(seconds)
                    report.output_tokens += tokens

        async def memory_sampler() -> None:
            warm_at = time.monotonic() + warmup
            while time.monotonic() < deadline:
                rss = rss_bytes(report.server_pid) if report.server_pid else None
                if rss is not None:
                    report.rss_peak_bytes = max(report.rss_peak_bytes or 0, rss)
                    if report.rss_warm_bytes is None and time.monotonic() >= warm_at:
                        report.rss_warm_bytes = rss
                await asyncio.sleep(0.5)

        await asyncio.gather(memory_sampler(), *(client_loop(i) for i in range(args.clients)))
        stopped = time.monotonic()
        while True:
            gauges = parse_gauges((await client.get(base + "/metrics")).text, DRAIN_GAUGES)
            if not any(gauges.values()):
                report.drained_after_s = time.monotonic() - stopped
                break
            if time.monotonic() - stopped > args.settle_timeout:
                break
            await asyncio.sleep(0.25)
        report.gauges_after = gauges
    report.latency_s = distribution(latencies)
    if report.server_pid:
        report.rss_end_bytes = rss_bytes(report.server_pid)
    bad = {k: v for k, v in report.outcomes.items() if k not in ("finished", "cancelled")}
    report.checks = {
        "requests ran": report.outcomes.get("finished", 0) > 0,
        "every request finished or was cancelled by its client": not bad,
        "engine drained (running, waiting, KV pages 0)": report.drained_after_s is not None,
        f"server RSS growth < {args.rss_growth_limit:.0%} after warm-up":
            report.rss_growth is not None and report.rss_growth < args.rss_growth_limit,
    }
    if args.disconnect_fraction > 0:
        report.checks["clients disconnected mid-stream"] = report.outcomes.get("cancelled", 0) > 0
    return report


def format_report(r: SoakReport, args: argparse.Namespace) -> str:
    def mib(b: int | None) -> str:
        return "n/a" if b is None else f"{b / 2**20:.1f} MiB"

    lat = r.latency_s or {}
    growth = "n/a (server pid unknown)" if r.rss_growth is None else f"{r.rss_growth:+.2%}"
    lines = [
        f"=== soak: {args.clients} clients x {args.duration:.0f} s, {args.disconnect_fraction:.0%} "
        f"disconnecting, max_tokens {args.max_tokens}, block {args.block_length} ===",
        f"{'requests':<30}" + ", ".join(f"{k}: {v}" for k, v in sorted(r.outcomes.items())),
        f"{'finished latency (s)':<30}" + (f"p50 {lat['p50']:.2f}  p99 {lat['p99']:.2f}  max {lat['max']:.2f}"
                                            if lat else "n/a"),
        f"{'output tokens (finished)':<30}{r.output_tokens} ({r.output_tokens / args.duration:.1f}/s)",
        f"{'drained after':<30}" + ("not within the settle timeout" if r.drained_after_s is None
                                    else f"{r.drained_after_s:.2f} s")
        + "  (" + ", ".join(f"{k.removeprefix('diffuserve_')} {v:g}" for k, v in r.gauges_after.items())
        + ")",
        f"{'server RSS (pid ' + str(r.server_pid) + ')':<30}warm {mib(r.rss_warm_bytes)}, end "
        f"{mib(r.rss_end_bytes)}, peak {mib(r.rss_peak_bytes)}, growth {growth}",
    ]
    lines += [f"  [{'PASS' if ok else 'FAIL'}] {name}" for name, ok in r.checks.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.clients < 1 or args.duration <= 0 or not 0.0 <= args.disconnect_fraction <= 1.0:
        raise SystemExit("--clients must be >= 1, --duration > 0 and --disconnect-fraction in [0, 1]")
    report = asyncio.run(_soak(args))
    print(format_report(report, args), flush=True)
    if args.json:
        out = {"args": vars(args), **report.to_json()}
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0 if report.passed else 1
