"""`diffuserve eval`: lm-evaluation-harness tasks against a running diffuserve server.

    diffuserve eval --base-url http://127.0.0.1:8000 --tasks tests/data/lm_eval/arith_mc.yaml \\
        --apply-chat-template --method confidence

`--tasks` takes harness task names and paths to local task YAML files; a local file's relative
`dataset_kwargs.data_files` are read relative to the YAML, so a task and its JSON data can live
together anywhere. Needs the `eval` extra (`pip install diffuserve[eval]`).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

HELP = "run lm-evaluation-harness tasks against a diffuserve server (model 'diffuserve')"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", required=True,
                   help="comma-separated harness task names and/or local task YAML files")
    p.add_argument("--base-url", default="http://127.0.0.1:8000")
    p.add_argument("--model", default=None, help="served model name (default: the server's only model)")
    p.add_argument("--api-key", default=os.environ.get("DIFFUSERVE_API_KEY") or None)
    p.add_argument("--method", choices=("confidence", "likelihood"), default="confidence",
                   help="how loglikelihood requests are scored (/v1/score)")
    p.add_argument("--mc-samples", type=int, default=32, help="likelihood: Monte-Carlo samples per candidate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-concurrent", type=int, default=16, help="requests in flight at once")
    p.add_argument("--apply-chat-template", action="store_true",
                   help="send contexts as chat messages (the server renders its chat template)")
    p.add_argument("--num-fewshot", type=int, default=None)
    p.add_argument("--limit", type=float, default=None, help="questions per task (or a fraction)")
    p.add_argument("--model-args", default="",
                   help="extra k=v,... for generation (block_length, steps, threshold, cache, ...)")
    p.add_argument("--output", default=None, help="write the harness's results JSON here")


def local_task(path: Path) -> dict[str, Any]:
    """A task config dict from a local YAML, with relative data files made absolute."""
    import yaml

    config = yaml.safe_load(path.read_text())
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    if isinstance(files, dict):
        config["dataset_kwargs"]["data_files"] = {
            split: str((path.parent / f).resolve()) if isinstance(f, str) else f for split, f in files.items()
        }
    elif isinstance(files, str):
        config["dataset_kwargs"]["data_files"] = str((path.parent / files).resolve())
    return config


def task_specs(tasks: str) -> list[str | dict[str, Any]]:
    specs: list[str | dict[str, Any]] = []
    for name in (t.strip() for t in tasks.split(",") if t.strip()):
        path = Path(name)
        specs.append(local_task(path) if path.suffix in (".yaml", ".yml") and path.is_file() else name)
    return specs


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    import lm_eval
    from lm_eval.utils import simple_parse_args_string

    from .lm_eval_model import DiffuserveLM

    lm = DiffuserveLM(base_url=args.base_url, model=args.model, api_key=args.api_key, method=args.method,
                      mc_samples=args.mc_samples, seed=args.seed, num_concurrent=args.num_concurrent,
                      **simple_parse_args_string(args.model_args))
    limit = args.limit
    if limit is not None and limit >= 1:
        limit = int(limit)
    return lm_eval.simple_evaluate(
        model=lm, tasks=task_specs(args.tasks), num_fewshot=args.num_fewshot, limit=limit,
        apply_chat_template=args.apply_chat_template, log_samples=False, random_seed=args.seed,
        bootstrap_iters=1000,
    )


def run(args: argparse.Namespace) -> int:
    # Nothing is downloaded: local tasks read their own files, and the model is the server.
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging

    from lm_eval.utils import make_table

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    results = evaluate(args)
    print(make_table(results))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1, default=str))
    return 0
