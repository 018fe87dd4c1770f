"""Prompts for `diffuserve bench`: a JSONL file or a small built-in set."""

from __future__ import annotations

import json
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
