"""The benchmarks' prompt sets, one place for all kinds.

- Text requests (`bench serve`, `bench http`, `bench soak`): a JSONL file or the built-in set below.
- Token workloads (`bench offline`): 64-512-token prompts cut from Python standard-library sources
  (present on every machine, no download), tokenized with the model's tokenizer; lengths and files
  are fixed by the prompt index, so every run sees the same prompts. Random token ids stand in
  for a model shape with random weights (no tokenizer).
"""

from __future__ import annotations

import json
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Short, varied requests: questions, instructions, continuations. Kept model-agnostic so
# the same set is meaningful on the tiny built-in model and on an 8B checkpoint.
BUILTIN_PROMPTS = (
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain in two sentences why the sky is blue.",
    "List three uses of a paper clip.",
    "Translate 'good morning' into Spanish.",
    "What is 17 times 23?",
    "Summarize the plot of a fairy tale you know.",
    "Give me a name for a friendly robot.",
    "Describe a sunrise over the mountains.",
    "Why do cats purr?",
    "Write a haiku about autumn leaves.",
    "How many days are there in a leap year?",
    "Tell me a fun fact about octopuses.",
    "Suggest a healthy breakfast.",
    "What does a compiler do?",
    "Continue the story: The door creaked open and",
)


@dataclass(frozen=True)
class BenchPrompt:
    messages: list[dict[str, str]] | None  # chat endpoint
    prompt: str | None  # completions endpoint
    max_tokens: int | None = None  # per-prompt override of --max-tokens

    def as_messages(self) -> list[dict[str, str]]:
        if self.messages is not None:
            return self.messages
        return [{"role": "user", "content": self.prompt or ""}]

    def as_prompt(self) -> str:
        if self.prompt is not None:
            return self.prompt
        # A chat prompt sent to /v1/completions: its turns joined, the last user turn last.
        return "\n".join(m.get("content", "") for m in self.messages or [])


def builtin_prompts() -> list[BenchPrompt]:
    return [BenchPrompt(messages=None, prompt=p) for p in BUILTIN_PROMPTS]


def load_prompts(path: str | Path) -> list[BenchPrompt]:
    """One JSON object a line: {"prompt": str} or {"messages": [...]}, optional "max_tokens"."""
    prompts = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj: dict[str, Any] = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: not JSON: {e}") from e
        if isinstance(obj, str):
            obj = {"prompt": obj}
        messages, prompt = obj.get("messages"), obj.get("prompt")
        if messages is None and prompt is None:
            raise ValueError(f"{path}:{lineno}: needs a 'prompt' or 'messages' field")
        if messages is not None and not (
            isinstance(messages, list) and all(isinstance(m, dict) and "content" in m for m in messages)
        ):
            raise ValueError(f"{path}:{lineno}: 'messages' must be a list of {{role, content}} objects")
        max_tokens = obj.get("max_tokens")
        prompts.append(
            BenchPrompt(messages, str(prompt) if prompt is not None else None,
                        int(max_tokens) if max_tokens is not None else None)
        )
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


STDLIB_FILES = (
    "textwrap.py", "shlex.py", "fractions.py", "heapq.py", "bisect.py", "glob.py", "fnmatch.py",
    "colorsys.py", "string.py", "getopt.py", "calendar.py", "difflib.py", "argparse.py", "csv.py",
    "queue.py", "sched.py", "statistics.py", "random.py", "pprint.py", "tokenize.py", "ast.py",
    "copy.py", "dataclasses.py", "enum.py", "functools.py", "gettext.py", "gzip.py", "hmac.py",
    "ipaddress.py", "json/decoder.py", "json/encoder.py", "locale.py",
)  # fmt: skip


def prompt_length(i: int) -> int:
    """64..512 tokens, spread over the range by a fixed stride."""
    return 64 + (i * 149) % 449


def stdlib_prompts(tokenizer, n: int, vocab_size: int) -> list[list[int]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out: list[list[int]] = []
    for i in range(n):
        name = STDLIB_FILES[i % len(STDLIB_FILES)]
        ids = tokenizer.encode((root / name).read_text(encoding="utf-8"), add_special_tokens=False)
        length = prompt_length(i)
        start = (i // len(STDLIB_FILES)) * 600 % max(1, len(ids) - length)
        out.append([t for t in ids[start : start + length] if t < vocab_size])
    return out


def random_prompts(n: int, vocab_size: int, seed: int = 0) -> list[list[int]]:
    import torch  # only this workload needs it: the text prompt sets stay importable without torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randint(10, vocab_size - 10, (prompt_length(i),), generator=g).tolist() for i in range(n)]
