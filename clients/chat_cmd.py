"""`diffuserve chat`: interactive terminal chat that streams each decoded block as it lands.

Reads one user turn per line. On a terminal it shows a prompt; from a pipe it reads
lines until end of input, so scripts and tests can drive it. `/reset` clears the
conversation, `/exit` (or end of input) quits.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator
from typing import TextIO

from .errors import DiffuserveError
from .sync_client import DiffuserveClient
from .types import DiffusionStats, Usage

HELP = "Interactive chat against a diffuserve server; streams blocks, prints tokens/s and steps per block."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    p.add_argument("--model", default=None, help="model name (default: the first of GET /v1/models)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--system", default=None, help="system message put first in the conversation")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--block-length", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="denoising steps per block")
    p.add_argument("--threshold", type=float, default=None, help="parallel decoding confidence threshold")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--timeout", type=float, default=600.0)


def _turns(stdin: TextIO, interactive: bool) -> Iterator[str]:
    while True:
        if interactive:
            try:
                line = input("you> ")
            except EOFError:
                return
        else:
            line = stdin.readline()
            if not line:
                return
        line = line.strip()
        if line:
            yield line


def stats_line(
    usage: Usage | None, seconds: float, blocks_seen: int, diffusion: DiffusionStats | None
) -> str:
    parts = []
    if usage is not None:
        rate = usage.completion_tokens / seconds if seconds > 0 else 0.0
        parts.append(f"{usage.completion_tokens} tokens in {seconds:.2f} s, {rate:.1f} tokens/s")
        parts.append(f"prompt {usage.prompt_tokens} tokens")
    else:
        parts.append(f"{seconds:.2f} s (server sent no usage)")
    if diffusion is not None and diffusion.steps:
        parts.append(f"{diffusion.steps} steps, {diffusion.blocks} blocks, "
                     f"{diffusion.steps_per_block:.1f} steps/block, "
                     f"{diffusion.tokens_per_step:.2f} tokens/step")
    else:
        parts.append(f"{blocks_seen} blocks streamed")
    return "[" + "; ".join(parts) + "]"


def chat_loop(client: DiffuserveClient, args: argparse.Namespace, stdin: TextIO, stdout: TextIO,
              interactive: bool) -> int:
    history: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    fields = {"block_length": args.block_length, "steps": args.steps, "threshold": args.threshold,
              "temperature": args.temperature}
    failures = 0
    for line in _turns(stdin, interactive):
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            history = history[:1] if args.system else []
            print("(conversation cleared)", file=stdout, flush=True)
            continue
        history.append({"role": "user", "content": line})
        if interactive:
            print("assistant> ", end="", file=stdout, flush=True)
        answer, usage, diffusion, blocks = [], None, None, 0
        t0 = time.perf_counter()
        try:
            for delta in client.stream_chat(history, max_tokens=args.max_tokens, **fields):
                if delta.text:
                    blocks += 1
                    answer.append(delta.text)
                    print(delta.text, end="", file=stdout, flush=True)  # one block as it lands
                usage = delta.usage or usage
                diffusion = delta.diffusion or diffusion
        except DiffuserveError as e:
            history.pop()  # the turn failed: do not keep a question without an answer
            failures += 1
            print(f"\nerror: {e}", file=sys.stderr, flush=True)
            continue
        except KeyboardInterrupt:
            # Ctrl-C stops this answer (closing the stream makes the server abort it), not the chat.
            history.pop()
            print("\n(interrupted)", file=stdout, flush=True)
            if not interactive:
                raise
            continue
        elapsed = time.perf_counter() - t0
        history.append({"role": "assistant", "content": "".join(answer)})
        print("\n" + stats_line(usage, elapsed, blocks, diffusion), file=stdout, flush=True)
    return 1 if failures else 0


def run(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request drowns the output
    with DiffuserveClient(args.url, api_key=args.api_key, timeout=args.timeout) as client:
        if args.model is None:
            try:
                models = client.models()
            except DiffuserveError as e:
                print(f"error: cannot list models at {args.url}: {e}", file=sys.stderr)
                return 2
            if not models:
                print("error: the server lists no models; pass --model", file=sys.stderr)
                return 2
            args.model = models[0].id
        client.model = args.model
        interactive = sys.stdin.isatty()
        if interactive:
            print(f"chatting with {args.model} at {client.base_url}; /reset clears, /exit quits", flush=True)
        return chat_loop(client, args, sys.stdin, sys.stdout, interactive)
