"""`diffuserve bench serve`: load generator against any OpenAI-compatible endpoint."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from diffuserve.clients import AsyncDiffuserveClient

from .load import LoadSpec, run_load
from .prompts import builtin_prompts, load_prompts
from .report import format_summary, format_sweep_table
from .stats import summarize

HELP = ("Load generator: closed loop at --concurrency or open loop at a Poisson --rate; reports req/s, "
        "output tokens/s, time to first block, latency percentiles, tokens per step, errors.")


# The engine's parse_cache_refresh is not imported: the client package must not pull in torch.
def _int_or_auto(text: str) -> int | str:
    return "auto" if text.strip().lower() == "auto" else int(text)


# CLI flag -> request body field (None values are not sent: the server's default applies).
EXTRA_FIELDS = {
    "block_length": int, "steps": int, "threshold": float, "remasking": str, "cache": str,
    "cache_refresh": _int_or_auto,
    "canvas": str, "cfg_scale": float, "think_boost": float, "think_power": float,
    "temperature": float, "seed": int,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL (with or without /v1)")
    p.add_argument("--model", default=None, help="model name (default: the first of GET /v1/models)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--endpoint", choices=("chat", "completions"), default="chat")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=int, default=None, help="closed loop: requests in flight")
    load.add_argument("--rate", type=float, default=None, help="open loop: Poisson arrivals, requests/s")
    load.add_argument("--sweep", default=None, help="closed-loop concurrency levels, e.g. 1,4,16")
    p.add_argument("--num-requests", type=int, default=64, help="requests per run (per level in a sweep)")
    p.add_argument("--warmup", type=int, default=0, help="requests sent (and not counted) before each run")
    p.add_argument("--prompts", default=None, help="JSONL file: {'prompt': ...} or {'messages': [...]}")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                   help="stream (needed for time to first block); --no-stream for plain requests")
    p.add_argument("--timeout", type=float, default=600.0, help="per-request timeout in seconds")
    p.add_argument("--json", dest="json_path", default=None, help="write summary + per-request records")
    p.add_argument("--plot", default=None, help="write a PNG: latency distribution, throughput over time")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--load-seed", type=int, default=0, help="seed of prompt order and arrival times")
    extra = p.add_argument_group("request fields (sent only when given)")
    for name, typ in EXTRA_FIELDS.items():
        extra.add_argument("--" + name.replace("_", "-"), dest=f"field_{name}", type=typ, default=None,
                           metavar=name.upper())
    extra.add_argument("--ignore-eos", dest="field_ignore_eos", action="store_const", const=True,
                       default=None, help="generate max_tokens every time (fixed-length load)")


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    names = [*EXTRA_FIELDS, "ignore_eos"]
    return {k: getattr(args, f"field_{k}") for k in names if getattr(args, f"field_{k}") is not None}


async def _resolve_model(client: AsyncDiffuserveClient, model: str | None) -> str:
    if model:
        return model
    models = await client.models()
    if not models:
        raise SystemExit("the server lists no models; pass --model")
    return models[0].id


async def _run_level(client: AsyncDiffuserveClient, model: str, prompts: list, spec: LoadSpec, label: str,
                     progress: bool) -> tuple[list, float]:
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=spec.num_requests, desc=label, unit="req", file=sys.stderr, leave=False)
    try:
        on_done = (lambda _record: bar.update(1)) if bar else None
        return await run_load(client, model, prompts, spec, on_done=on_done)
    finally:
        if bar:
            bar.close()


async def _main(args: argparse.Namespace) -> int:
    prompts = load_prompts(args.prompts) if args.prompts else builtin_prompts()
    # No retries: a bench reports a 429 as a 429 instead of hiding it in a longer latency.
    async with AsyncDiffuserveClient(args.url, api_key=args.api_key, timeout=args.timeout, max_retries=0,
                                     max_connections=1024) as client:
        model = await _resolve_model(client, args.model)
        if args.sweep:
            levels = [int(x) for x in args.sweep.split(",") if x.strip()]
        else:
            levels = [args.concurrency if args.concurrency is not None or args.rate is not None else 1]
        base = dict(num_requests=args.num_requests, endpoint=args.endpoint, stream=args.stream,
                    max_tokens=args.max_tokens, seed=args.load_seed, fields=_fields(args))
        runs = []
        for level in levels:
            spec = (LoadSpec(rate=args.rate, **base) if args.rate is not None and not args.sweep
                    else LoadSpec(concurrency=level, **base))
            label = f"rate {spec.rate}/s" if spec.rate else f"concurrency {spec.concurrency}"
            if args.warmup:
                warm = LoadSpec(**{**base, "num_requests": args.warmup}, concurrency=spec.concurrency or 1)
                await run_load(client, model, prompts, warm)
            records, duration = await _run_level(client, model, prompts, spec, label, not args.no_progress)
            summary = summarize(records, duration)
            runs.append({"label": label, "concurrency": spec.concurrency, "rate": spec.rate,
                         "summary": summary, "requests": [r.to_json() for r in records],
                         "_records": records, "_duration": duration})
            print(format_summary(summary, f"{model} @ {label} ({args.endpoint}, "
                                          f"{'stream' if args.stream else 'no stream'})"), flush=True)
    if args.sweep:
        print("\n" + format_sweep_table(levels, [r["summary"] for r in runs]), flush=True)
    if args.json_path:
        out = {"model": model, "url": args.url, "endpoint": args.endpoint, "stream": args.stream,
               "max_tokens": args.max_tokens, "fields": _fields(args), "num_prompts": len(prompts),
               "runs": [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs]}
        Path(args.json_path).write_text(json.dumps(out, indent=1))
    if args.plot:
        from .plot import plot_run, plot_sweep

        title = f"diffuserve bench: {model}, max_tokens {args.max_tokens}"
        if args.sweep:
            plot_sweep(levels, [r["summary"] for r in runs], title, args.plot)
        else:
            plot_run(runs[0]["_records"], runs[0]["_duration"], f"{title}, {runs[0]['label']}", args.plot)
    return 0 if all(r["summary"]["completed"] for r in runs) else 1


def run(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request drowns the output
    if args.num_requests < 1:
        raise SystemExit("--num-requests must be >= 1")
    return asyncio.run(_main(args))
