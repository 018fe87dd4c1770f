"""`diffuserve eval-tasks`: held-out task accuracy, tokens/s and tokens per step for decoding settings."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = (
    "Run the built-in task suite (held-out problems: add, sub, sort, mc, complete) through the engine "
    "offline, or against a running server with --base-url, under one or more decoding settings "
    "(--setting 'threshold=0.9,block_length=16', request field names). Prints accuracy per task, "
    "tokens/s and tokens per step; --json writes every reply."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..engine.cli_args import add_engine_args, add_model_args
    from .suite import TASKS

    parser.add_argument("--model", default=None, help="checkpoint folder (default: the built-in model)")
    parser.add_argument("--base-url", default=None,
                        help="evaluate a running server instead (e.g. http://127.0.0.1:8000/v1)")
    parser.add_argument("--served-model-name", default="diffuserve-builtin", help="model name for --base-url")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    parser.add_argument("--per-task", type=int, default=100, help="held-out problems per task")
    parser.add_argument("--seed", type=int, default=0, help="which held-out problems (problem sample seed)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--setting", action="append", default=None,
                        help="decoding setting as field=value pairs (repeatable; default: the defaults)")
    parser.add_argument("--json", default=None, help="write summaries and replies to this file")
    parser.add_argument("--curve", default=None, nargs="+", metavar="RUN_DIR",
                        help="training curve: evaluate every <RUN_DIR>/snapshots/step_* and the final "
                             "<RUN_DIR>/checkpoint (first --setting), print accuracy against steps; "
                             "several RUN_DIRs are consecutive phases (train-builtin --init-from), "
                             "their steps counted on from the previous phase's end")
    parser.add_argument("--plot", default=None, help="with --curve: PNG of accuracy against training steps")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (offline)")
    add_engine_args(parser)
    add_model_args(parser)


def run(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_http, evaluate_offline, markdown_table, parse_setting, suite_problems

    try:
        settings = [parse_setting(s) for s in (args.setting or [""])]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    problems = suite_problems(tasks, args.per_task, args.seed)
    if args.curve:
        unfinished = [d for d in args.curve if not (Path(d) / "checkpoint" / "training_meta.json").is_file()]
        if unfinished:
            print(f"error: --curve: not a finished train-builtin run (no checkpoint/training_meta.json): "
                  f"{', '.join(unfinished)}", file=sys.stderr)
            return 2
        return training_curve(args, problems, settings[0])
    reports = []
    if args.base_url:
        for s in settings:
            reports.append(evaluate_http(args.base_url, args.served_model_name, problems, s,
                                         args.concurrency))
    else:
        import torch

        from ..engine.cli_args import engine_config_from_args, model_overrides_from_args
        from ..engine.llm_engine import LLMEngine

        if args.threads:
            torch.set_num_threads(args.threads)
        engine = LLMEngine.from_pretrained(args.model, engine_config_from_args(args),
                                           **model_overrides_from_args(args).given())
        for s in settings:
            reports.append(evaluate_offline(engine, problems, s, args.concurrency))
    print(markdown_table(reports))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        data = [{**r.summary(), "replies": [
            {"task": x.problem.task, "prompt": x.problem.prompt, "answer": x.problem.answer, "reply": x.text,
             "correct": x.correct, "tokens": x.tokens, "steps": x.steps, "finish_reason": x.finish_reason}
            for x in r.replies]} for r in reports]
        Path(args.json).write_text(json.dumps(data, indent=1))
    return 0


def training_curve(args: argparse.Namespace, problems, setting) -> int:
    """Accuracy of each kept snapshot of a training run, in step order."""
    import torch

    from ..engine.cli_args import engine_config_from_args
    from ..engine.llm_engine import LLMEngine
    from .evaluate import evaluate_offline

    if args.threads:
        torch.set_num_threads(args.threads)
    points, offset = [], 0
    for run_dir in map(Path, args.curve):
        meta = json.loads((run_dir / "checkpoint" / "training_meta.json").read_text())
        snapshots = sorted((run_dir / "snapshots").glob("step_*"))
        points += [(offset + int(p.name.split("_")[1]), p) for p in snapshots]
        offset += int(meta["train_config"]["steps"])
        points.append((offset, run_dir / "checkpoint"))
    rows = []
    for step, folder in points:
        engine = LLMEngine.from_pretrained(str(folder), engine_config_from_args(args))
        report = evaluate_offline(engine, problems, setting, args.concurrency)
        rows.append((step, report))
        print(f"step {step}: {report.summary()['accuracy']}", file=sys.stderr, flush=True)
    tasks = rows[0][1].tasks
    print("| step | " + " | ".join(tasks) + " | mean |")
    print("|---|" + "---|" * (len(tasks) + 1))
    for step, r in rows:
        print(f"| {step} | " + " | ".join(f"{100 * r.accuracy(t):.1f}" for t in tasks)
              + f" | {100 * r.mean_accuracy:.1f} |")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 5))
        for t in tasks:
            ax.plot([s for s, _ in rows], [100 * r.accuracy(t) for _, r in rows], marker="o", label=t)
        ax.set_xlabel("training step")
        ax.set_ylabel("held-out accuracy (%)")
        ax.set_title("built-in model: task accuracy against training steps")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
    return 0
