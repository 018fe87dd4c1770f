"""`diffuserve bench quality`: task accuracy against speed for every decoding mode, in one process.

The question a user asks before turning on a fast path: how much faster, and how many
answers do I lose? Every row runs the same held-out task problems (tasks/suite.py) and
reports accuracy per task and their mean beside tokens/s, tokens per step and steps per
answer. The baseline is the exact reference sampler (the oracle: full recompute, one
token a step, one request at a time); "x baseline" is each row's tokens/s over its.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HELP = (
    "Accuracy (held-out task suite) against tokens/s for the reference sampler and every engine "
    "decoding mode: exact, prefix cache with refresh 0/auto/1, threshold 0.95/0.9/0.8/0.7, fixed "
    "canvas, block lengths 8/16/32, at each --concurrency. Prints a markdown table, writes JSON and "
    "an accuracy-vs-tokens/s plot with the Pareto front."
)

# name -> request fields. One place that says what each row of the published table means.
MATRIX: dict[str, dict] = {
    "exact": {"cache": "none"},
    "prefix, refresh 0": {"cache": "prefix", "cache_refresh": 0},
    "prefix, refresh auto": {"cache": "prefix", "cache_refresh": "auto"},
    "prefix, refresh 1": {"cache": "prefix", "cache_refresh": 1},
    "threshold 0.95": {"threshold": 0.95},
    "threshold 0.9": {"threshold": 0.9},
    "threshold 0.8": {"threshold": 0.8},
    "threshold 0.7": {"threshold": 0.7},
    "fixed canvas": {"canvas": "fixed"},
    "fixed canvas, threshold 0.9": {"canvas": "fixed", "threshold": 0.9},
    "fixed canvas, dual cache": {"canvas": "fixed", "cache": "dual"},
    "fixed canvas, dual cache, threshold 0.9": {"canvas": "fixed", "cache": "dual", "threshold": 0.9},
    "factor 0.5": {"threshold_factor": 0.5},
    "factor 1.0": {"threshold_factor": 1.0},
    "block 8": {"block_length": 8},
    "block 16": {"block_length": 16},
    "block 16, threshold 0.9": {"block_length": 16, "threshold": 0.9},
}
DEFAULTS_ROW = "server defaults"  # what `diffuserve serve` runs for a request with no diffusion fields


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..engine.cli_args import add_engine_args, add_model_args
    from ..tasks.suite import TASKS

    p.add_argument("--model", default=None, help="checkpoint folder (default: the built-in model)")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    p.add_argument("--per-task", type=int, default=30, help="held-out problems per task")
    p.add_argument("--seed", type=int, default=0, help="which held-out problems")
    p.add_argument("--concurrency", default="16", help="comma-separated concurrency levels")
    p.add_argument("--rows", default=None,
                   help=f"comma-separated row names to run (default: all): {', '.join(MATRIX)}")
    p.add_argument("--setting", action="append", default=[],
                   help="extra row as field=value pairs (repeatable), e.g. 'threshold=0.9,block_length=8'")
    p.add_argument("--no-reference", action="store_true", help="skip the reference-sampler baseline")
    p.add_argument("--reference-per-task", type=int, default=None,
                   help="problems per task for the (slow) baseline (default: --per-task)")
    p.add_argument("--json", default="runs/bench_quality.json")
    p.add_argument("--plot", default=None, help="PNG of mean accuracy against tokens/s (Pareto front)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--think-study", action="store_true",
                   help="instead of the matrix: the </think> bias on add/sub at budgets that cut the trace")
    p.add_argument("--think-budgets", default="16,24,32,64", help="max_tokens budgets of --think-study")
    add_engine_args(p)
    add_model_args(p)


def reference_report(engine, problems, setting: dict):
    """The oracle, one request at a time, on the same problems (its own prompt ids, same as the engine's)."""
    import torch

    from ..engine.oracle import generate_variable
    from ..tasks.evaluate import EvalReport, Reply, make_params, prompt_ids

    params = make_params(setting)
    replies = []
    start = time.perf_counter()
    with torch.inference_mode():
        for p in problems:
            r = generate_variable(engine.model, engine.cfg, [prompt_ids(engine.tokenizer, p)], params,
                                  engine.tokenizer)[0]
            replies.append(Reply(p, r.text, len(r.token_ids), r.steps, r.finish_reason))
    return EvalReport({"sampler": "reference"}, 1, time.perf_counter() - start, replies)


def rows(args) -> dict[str, dict]:
    from ..engine.params import SERVED_THRESHOLD, with_served_rule
    from ..tasks.evaluate import parse_setting

    chosen = {DEFAULTS_ROW: with_served_rule({}, SERVED_THRESHOLD), **MATRIX}
    if args.rows:
        names = [n.strip() for n in args.rows.split(",") if n.strip()]
        unknown = [n for n in names if n not in chosen]
        if unknown:
            raise ValueError(f"unknown rows {unknown}; known: {list(chosen)}")
        chosen = {n: chosen[n] for n in names}
    for s in args.setting:
        chosen[s] = parse_setting(s)
    return chosen


def run(args) -> int:
    import torch

    from ..engine.cli_args import engine_config_from_args, model_overrides_from_args
    from ..engine.llm_engine import LLMEngine
    from ..tasks.evaluate import evaluate_offline, suite_problems

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        settings = rows(args)
        levels = [int(c) for c in args.concurrency.split(",")]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    problems = suite_problems(tasks, args.per_task, args.seed)
    engine = LLMEngine.from_pretrained(args.model, engine_config_from_args(args),
                                       **model_overrides_from_args(args).given())
    if args.think_study:
        budgets = [int(b) for b in args.think_budgets.split(",")]
        print(think_study(engine, [p for p in problems if p.task in ("add", "sub")], budgets, levels[-1]))
        return 0
    evaluate_offline(engine, problems[:4], {}, 4)  # warm-up: first-call allocations out of the timings
    reports, names = [], []
    baseline = None
    if not args.no_reference:
        n_ref = args.reference_per_task or args.per_task
        baseline = reference_report(engine, suite_problems(tasks, n_ref, args.seed), {})
        reports.append(baseline)
        names.append("reference sampler (baseline)")
        print(f"reference: {baseline.summary()}", file=sys.stderr, flush=True)
    for name, setting in settings.items():
        for c in levels:
            r = evaluate_offline(engine, problems, setting, c)
            reports.append(r)
            names.append(name)
            print(f"{name} @ {c}: {r.summary()}", file=sys.stderr, flush=True)
    table = named_table(reports, names, baseline.tokens_per_s if baseline else None)
    print(table)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(
            [{"row": n, **r.summary()} for n, r in zip(names, reports, strict=True)], indent=1))
    if args.plot:
        plot(reports, names, args.plot)
    return 0


# The paper's growing </think> bias settings, and none.
THINK_BIASES = {"no bias": {}, "boost 100, power 3": {"think_boost": 100.0, "think_power": 3.0},
                "boost 100, power 1": {"think_boost": 100.0, "think_power": 1.0}}


def think_study(engine, problems, budgets: list[int], concurrency: int) -> str:
    """Accuracy and share of replies that close the trace (`</think>`), per budget and bias.

    A budget under the trace's length cuts the reasoning short: without a bias the reply ends
    inside `<think>` and has no answer. The bias pushes `</think>` (and so an answer) in before
    the budget runs out; at a budget with room it must not change the answers.
    """
    from ..tasks.evaluate import evaluate_offline
    from ..tasks.suite import THINK_END

    lines = ["| max_tokens | bias | accuracy | reach </think> | mean tokens |", "|---|---|---|---|---|"]
    for budget in budgets:
        for name, bias in THINK_BIASES.items():
            r = evaluate_offline(engine, problems, {"max_tokens": budget, **bias}, concurrency)
            closed = sum(THINK_END in x.text for x in r.replies) / len(r.replies)
            lines.append(f"| {budget} | {name} | {100 * r.mean_accuracy:.1f} | {100 * closed:.1f} | "
                         f"{r.tokens / len(r.replies):.1f} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def named_table(reports, names, baseline_tps) -> str:
    from ..tasks.evaluate import markdown_table

    lines = markdown_table(reports, baseline_tps).split("\n")
    out = lines[:2]
    for name, line in zip(names, lines[2:], strict=True):
        cells = line.split(" | ")
        cells[0] = f"| {name}"
        out.append(" | ".join(cells))
    return "\n".join(out)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both speed (x) and accuracy (y), by speed."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front, best_acc = [], float("-inf")
    for i in order:
        if points[i][1] > best_acc:
            front.append(i)
            best_acc = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


def plot(reports, names, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r.tokens_per_s, 100 * r.mean_accuracy) for r in reports]
    front = pareto_front(pts)
    fig, ax = plt.subplots(figsize=(9, 6))
    ax.scatter([x for x, _ in pts], [y for _, y in pts], color="tab:blue")
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], color="tab:red", label="Pareto front")
    for (x, y), name, r in zip(pts, names, reports, strict=True):
        ax.annotate(f"{name} (c{r.concurrency})", (x, y), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("tokens/s (log scale)")
    ax.set_ylabel("mean task accuracy (%)")
    ax.set_title("diffuserve decoding modes: accuracy against speed (built-in model, CPU)")
    ax.legend()
    ax.grid(alpha=0.3)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
