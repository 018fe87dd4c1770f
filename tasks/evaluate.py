"""Task accuracy of a model under one decoding setting: offline through the engine, or over HTTP.

Both routes send exactly what a user would: chat tasks as one user message through
the chat template, completion tasks as raw text. A reply is graded by `suite.is_correct`.
The offline route keeps `concurrency` requests in flight in one LLMEngine (a new one
joins when one finishes), so concurrency 1 measures one-at-a-time latency and 16 the
batched throughput; the HTTP route does the same with `concurrency` client tasks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .suite import TASKS, Problem, held_out_problems, is_correct

# What a request of the task suite leaves to the defaults when the setting does not say.
DEFAULT_MAX_TOKENS = 96


@dataclass
class Reply:
    problem: Problem
    text: str
    tokens: int
    steps: int  # denoising forwards the request took part in (0 when unknown, e.g. over HTTP)
    finish_reason: str | None

    @property
    def correct(self) -> bool:
        return is_correct(self.problem, self.text)


@dataclass
class EvalReport:
    setting: dict[str, Any]
    concurrency: int
    wall_s: float
    replies: list[Reply] = field(default_factory=list)

    def accuracy(self, task: str | None = None) -> float:
        rs = [r for r in self.replies if task is None or r.problem.task == task]
        return sum(r.correct for r in rs) / len(rs) if rs else float("nan")

    @property
    def tasks(self) -> list[str]:
        return [t for t in TASKS if any(r.problem.task == t for r in self.replies)]

    @property
    def mean_accuracy(self) -> float:
        """Mean over tasks (each task weighs the same whatever its sample size)."""
        accs = [self.accuracy(t) for t in self.tasks]
        return sum(accs) / len(accs) if accs else float("nan")

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.replies)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else float("nan")

    @property
    def tokens_per_step(self) -> float:
        steps = sum(r.steps for r in self.replies)
        return self.tokens / steps if steps else float("nan")

    @property
    def steps_per_answer(self) -> float:
        return sum(r.steps for r in self.replies) / len(self.replies) if self.replies else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "setting": self.setting, "concurrency": self.concurrency, "n": len(self.replies),
            "accuracy": {t: round(self.accuracy(t), 4) for t in self.tasks},
            "mean_accuracy": round(self.mean_accuracy, 4), "wall_s": round(self.wall_s, 2),
            "tokens": self.tokens, "tokens_per_s": round(self.tokens_per_s, 2),
            "tokens_per_step": round(self.tokens_per_step, 3),
            "steps_per_answer": round(self.steps_per_answer, 2),
        }


def parse_setting(text: str) -> dict[str, Any]:
    """`"threshold=0.9,block_length=16"` -> DiffusionParams fields, typed by the dataclass.

    One spelling for every decoding setting (the eval CLI, the quality benchmark and the
    docs all name settings by the request fields users send); each value is converted to
    the type its field declares, so a new request field needs nothing here.
    """
    import typing

    from ..engine.params import DiffusionParams, parse_cache_refresh

    hints = typing.get_type_hints(DiffusionParams)
    out: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip().replace("-", "_"), value.strip()
        if not sep or key not in hints:
            raise ValueError(f"bad setting {item!r}: expected field=value with a DiffusionParams field")
        if key == "cache_refresh":
            out[key] = parse_cache_refresh(value)
        elif value.lower() in ("none", "null") and _optional(hints[key]) \
                and value not in _literals(hints[key]):
            out[key] = None  # e.g. steps=none; but cache=none is the literal "none"
        else:
            out[key] = _convert(value, hints[key])
    return out


def _optional(hint) -> bool:
    import typing

    return type(None) in typing.get_args(hint)


def _literals(hint) -> set:
    import typing

    if typing.get_origin(hint) is typing.Literal:
        return set(typing.get_args(hint))
    return {v for a in typing.get_args(hint) for v in _literals(a)}


def _convert(value: str, hint) -> Any:
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    for kind in (bool, int, float):  # bool before int: bool is an int subclass
        if kind in args:
            if kind is bool:
                return value.lower() in ("1", "true", "yes")
            return kind(value)
    return value


def make_params(setting: dict[str, Any]):
    from ..engine.params import DiffusionParams

    return DiffusionParams(**{"max_tokens": DEFAULT_MAX_TOKENS, **setting})


def suite_problems(tasks: Sequence[str], per_task: int, seed: int = 0) -> list[Problem]:
    return [p for t in tasks for p in held_out_problems(t, per_task, seed)]


def prompt_ids(tokenizer, problem: Problem) -> list[int]:
    """The ids the server would build for this problem (chat template rendered, then tokenized)."""
    if problem.chat:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": problem.prompt}], tokenize=False, add_generation_prompt=True
        )
    else:
        text = problem.prompt
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def evaluate_offline(engine, problems: list[Problem], setting: dict[str, Any], concurrency: int = 16
                     ) -> EvalReport:
    """Run `problems` through an LLMEngine with `concurrency` requests in flight."""
    params = make_params(setting)
    ids = [prompt_ids(engine.tokenizer, p) for p in problems]
    replies: dict[int, Reply] = {}
    texts: dict[int, list[str]] = {i: [] for i in range(len(problems))}
    pending = list(range(len(problems)))[::-1]
    in_flight = 0
    start = time.perf_counter()
    while pending or in_flight:
        while pending and in_flight < concurrency:
            i = pending.pop()
            engine.add_request(f"eval-{i}", ids[i], params)
            in_flight += 1
        for out in engine.step():
            i = int(out.request_id.rsplit("-", 1)[1])
            texts[i].append(out.text)
            if out.finished:
                in_flight -= 1
                replies[i] = Reply(problems[i], "".join(texts[i]), out.num_generated_tokens, out.steps,
                                   out.finish_reason)
    wall = time.perf_counter() - start
    return EvalReport(setting, concurrency, wall, [replies[i] for i in range(len(problems))])


def evaluate_http(base_url: str, model: str, problems: list[Problem], setting: dict[str, Any],
                  concurrency: int = 16, api_key: str = "unused", timeout_s: float = 300.0) -> EvalReport:
    """The same suite against a running server with the official `openai` client."""
    return asyncio.run(_evaluate_http(base_url, model, problems, setting, concurrency, api_key, timeout_s))


async def _evaluate_http(base_url, model, problems, setting, concurrency, api_key, timeout_s) -> EvalReport:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)
    body = {k: v for k, v in setting.items() if k != "max_tokens"}
    max_tokens = setting.get("max_tokens", DEFAULT_MAX_TOKENS)
    gate = asyncio.Semaphore(concurrency)

    async def one(p: Problem) -> Reply:
        async with gate:
            if p.chat:
                r = await client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": p.prompt}], max_tokens=max_tokens,
                    temperature=setting.get("temperature", 0.0), extra_body=body)
                choice = r.choices[0]
                text = choice.message.content or ""
            else:
                r = await client.completions.create(
                    model=model, prompt=p.prompt, max_tokens=max_tokens,
                    temperature=setting.get("temperature", 0.0), extra_body=body)
                choice = r.choices[0]
                text = choice.text
            tokens = r.usage.completion_tokens if r.usage else 0
            steps = (r.model_extra or {}).get("diffusion", {}).get("steps", 0)  # diffuserve's extra
            return Reply(p, text, tokens, steps, choice.finish_reason)

    start = time.perf_counter()
    try:
        replies = await asyncio.gather(*(one(p) for p in problems))
    finally:
        await client.close()
    return EvalReport(setting, concurrency, time.perf_counter() - start, list(replies))


def markdown_table(reports: list[EvalReport], baseline_tps: float | None = None) -> str:
    """One row per report: accuracy per task and mean, tokens/s, tokens/step, steps/answer, x baseline."""
    tasks = [t for t in TASKS if any(t in r.tasks for r in reports)]
    head = ["setting", "conc."] + tasks + ["mean", "tok/s", "tok/step", "steps/answer"]
    if baseline_tps:
        head.append("x baseline")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in reports:
        name = ", ".join(f"{k}={v}" for k, v in r.setting.items()) or "defaults"
        row = [name, str(r.concurrency)] + [f"{100 * r.accuracy(t):.1f}" for t in tasks]
        row += [f"{100 * r.mean_accuracy:.1f}", f"{r.tokens_per_s:.1f}", f"{r.tokens_per_step:.2f}",
                f"{r.steps_per_answer:.1f}"]
        if baseline_tps:
            row.append(f"{r.tokens_per_s / baseline_tps:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
