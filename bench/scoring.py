"""`diffuserve bench scoring`: multiple-choice accuracy and speed of a server, the iLLaDA Tab. 4
comparison in miniature.

Questions are held-out problems of the built-in task suite's `mc` form (`Question: What is A + B?`
and four lettered options; the answer is the letter), sent as chat messages. Rows:

- `confidence`: /v1/score with the candidates "A".."D" (iLLaDA confidence scoring);
- `likelihood M`: /v1/score with the Monte-Carlo likelihood bound, M samples per candidate;
- `generate`: /v1/chat/completions at temperature 0, graded as the task suite grades replies;

each at the highest --concurrency, plus `confidence` at every other concurrency (questions/s of
one question at a time against many at once). Only the client runs here: the server batches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from diffuserve.clients import AsyncDiffuserveClient

HELP = ("Multiple-choice accuracy (confidence scoring, likelihood bound at several sample counts, "
        "generating the letter) and questions/s at several concurrencies, against a server.")
LETTERS = ["A", "B", "C", "D"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", "--url", dest="base_url", default="http://127.0.0.1:8000")
    p.add_argument("--model", default=None, help="served model name (default: the server's only model)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--questions", type=int, default=200, help="held-out questions")
    p.add_argument("--question-seed", type=int, default=0)
    p.add_argument("--samples", default="8,32,128", help="likelihood: Monte-Carlo samples, comma-separated")
    p.add_argument("--seed", type=int, default=0, help="likelihood sampling seed")
    p.add_argument("--concurrency", default="1,16", help="requests in flight, comma-separated")
    p.add_argument("--gen-max-tokens", type=int, default=96,
                   help="generate: max_tokens of the reply (room for the built-in model's worked trace)")
    p.add_argument("--output", default=None, help="also write the rows as JSON here")


def mc_questions(n: int, seed: int) -> list[tuple[str, str]]:
    """(user message, answer letter) of n held-out `mc` problems."""
    from diffuserve.tasks.suite import held_out_problems

    return [(p.prompt, p.answer) for p in held_out_problems("mc", n, seed=seed)]


async def run_row(client: AsyncDiffuserveClient, questions: list[tuple[str, str]], concurrency: int,
                  kind: str, samples: int | None = None, seed: int = 0, max_tokens: int = 64
                  ) -> dict[str, Any]:
    from diffuserve.tasks.suite import extract_answer

    gate = asyncio.Semaphore(concurrency)
    forwards = 0

    async def one(prompt: str, answer: str) -> bool:
        nonlocal forwards
        messages = [{"role": "user", "content": prompt}]
        async with gate:
            if kind == "generate":
                out = await client.chat(messages, max_tokens=max_tokens, temperature=0.0)
                return extract_answer(out.text) == answer
            extra = {"mc_samples": samples, "seed": seed} if kind == "likelihood" else {}
            res = await client.score(LETTERS, messages=messages, method=kind, **extra)
            forwards += int(res.usage.get("forward_passes", 0))
            return LETTERS[res.best] == answer

    t0 = time.perf_counter()
    correct = await asyncio.gather(*(one(q, a) for q, a in questions))
    elapsed = time.perf_counter() - t0
    name = f"likelihood {samples}" if kind == "likelihood" else kind
    return {"run": name, "concurrency": concurrency, "questions": len(questions),
            "accuracy": sum(correct) / len(questions), "questions_per_s": len(questions) / elapsed,
            "forwards_per_question": forwards / len(questions) if kind != "generate" else None,
            "seconds": elapsed}


async def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    questions = mc_questions(args.questions, args.question_seed)
    levels = sorted({int(c) for c in args.concurrency.split(",")})
    top = levels[-1]
    rows = []
    async with AsyncDiffuserveClient(args.base_url, api_key=args.api_key, model=args.model,
                                     max_retries=20, timeout=3600) as client:
        if client.model is None:
            client.model = (await client.models())[0].id
        await client.score(LETTERS, messages=[{"role": "user", "content": questions[0][0]}])  # warm-up
        for c in levels:
            rows.append(await run_row(client, questions, c, "confidence"))
        for m in (int(s) for s in args.samples.split(",") if s.strip()):
            rows.append(await run_row(client, questions, top, "likelihood", samples=m, seed=args.seed))
        rows.append(await run_row(client, questions, top, "generate", max_tokens=args.gen_max_tokens))
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'run':<16} {'concurrency':>11} {'questions':>9} {'accuracy':>8} {'questions/s':>11} "
             f"{'forwards/q':>10}"]
    for r in rows:
        fq = "-" if r["forwards_per_question"] is None else f"{r['forwards_per_question']:.1f}"
        lines.append(f"{r['run']:<16} {r['concurrency']:>11} {r['questions']:>9} {r['accuracy']:>8.3f} "
                     f"{r['questions_per_s']:>11.2f} {fq:>10}")
    conf = [r for r in rows if r["run"] == "confidence"]
    if len(conf) > 1:
        lo, hi = conf[0], conf[-1]
        lines.append(f"confidence scoring: {hi['questions_per_s'] / lo['questions_per_s']:.1f}x the "
                     f"questions/s at concurrency {hi['concurrency']} vs {lo['concurrency']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    rows = asyncio.run(run_all(args))
    print(format_rows(rows))
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=1))
    return 0
