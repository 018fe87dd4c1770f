"""SSE framing shared by chat and completions: role chunk, one chunk per block, finish, usage, [DONE]."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from ..errors import APIError, sse_error_event
from .serving import ChoiceRun, OpenAIServing, engine_failure
from .sse import DONE, sse_event


@dataclass(frozen=True)
class ChunkFormat:
    """How one API shapes the `choices` entries of its chunks."""

    object: str  # "chat.completion.chunk" | "text_completion"
    role: Callable[[int], dict[str, Any]] | None  # chat announces the role first; completions do not
    content: Callable[[int, str], dict[str, Any]]
    finish: Callable[[int, str], dict[str, Any]]


CHAT_FORMAT = ChunkFormat(
    object="chat.completion.chunk",
    role=lambda i: {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                    "finish_reason": None},
    content=lambda i, text: {"index": i, "delta": {"content": text}, "logprobs": None, "finish_reason": None},
    finish=lambda i, reason: {"index": i, "delta": {}, "logprobs": None, "finish_reason": reason},
)

COMPLETION_FORMAT = ChunkFormat(
    object="text_completion",
    role=None,
    content=lambda i, text: {"index": i, "text": text, "logprobs": None, "finish_reason": None},
    finish=lambda i, reason: {"index": i, "text": "", "logprobs": None, "finish_reason": reason},
)


def usage_and_diffusion(runs: list[ChoiceRun], num_prompt_tokens: int) -> dict[str, Any]:
    completion = sum(r.last.num_generated_tokens for r in runs if r.last)
    steps = sum(r.last.steps for r in runs if r.last)
    return {
        "usage": {"prompt_tokens": num_prompt_tokens, "completion_tokens": completion,
                  "total_tokens": num_prompt_tokens + completion},
        "diffusion": {"steps": steps, "tokens_per_step": completion / steps if steps else 0.0,
                      "blocks": sum(r.last.blocks for r in runs if r.last)},
    }


async def sse_stream(
    serving: OpenAIServing,
    runs: list[ChoiceRun],
    fmt: ChunkFormat,
    request_id: str,
    model: str,
    num_prompt_tokens: int,
    include_usage: bool,
) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        return sse_event({"id": request_id, "object": fmt.object, "created": created, "model": model,
                          "choices": choices, **extra})

    if fmt.role is not None:
        for run in runs:
            yield chunk([fmt.role(run.index)])
    failure: APIError | None = None
    async with aclosing(serving.stream_outputs(runs)) as outputs:  # closing cancels unfinished choices
        async for run, out in outputs:
            # One chunk per decoded block, even when its text is empty (special tokens only, or a
            # multi-byte character still incomplete): clients see progress at block rate. A last
            # block cut to nothing by a stop sends only the finish chunk.
            if out.text or not out.finished:
                yield chunk([fmt.content(run.index, out.text)])
            if not out.finished:
                continue
            failure = engine_failure([run])
            if failure is not None:
                break
            yield chunk([fmt.finish(run.index, out.finish_reason)])
    if failure is not None:
        yield sse_error_event(failure)  # OpenAI-shaped error event; the openai client raises on it
    elif include_usage:
        yield chunk([], **usage_and_diffusion(runs, num_prompt_tokens))
    yield DONE
