"""`diffuserve eval-builtin`: the model card's figures, measured (see evaluate.py for definitions)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HELP = (
    "Measure the built-in model (or --model): masked-token accuracy on the validation files at mask "
    "ratios 0.15/0.5/0.9 beside a unigram baseline, parse rate of generated bodies for held-out "
    "functions (variable length, block 32), three samples. Writes JSON and prints a markdown block."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="checkpoint folder (default: the built-in model)")
    parser.add_argument("--out", default="runs/eval_builtin.json", help="JSON file for all figures")
    parser.add_argument("--val-rows", type=int, default=200, help="256-token validation rows to score")
    parser.add_argument("--functions", type=int, default=50, help="held-out functions to generate")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=None, help="steps per block (default: block length)")
    parser.add_argument("--batch", type=int, default=10, help="prompts per reference-sampler batch")
    parser.add_argument("--seed", type=int, default=0, help="mask and function-sample seed")
    parser.add_argument("--threads", type=int, default=2)


_REPORTED_ARGS = ("val_rows", "functions", "max_tokens", "block_length", "steps", "seed")


def _split_settings(folder: Path) -> tuple[float, int]:
    """The train/validation split the checkpoint was trained with (defaults when unknown)."""
    meta = folder / "training_meta.json"
    if meta.is_file():
        cfg = json.loads(meta.read_text())["train_config"]
        return float(cfg["val_fraction"]), int(cfg["seed"])
    return 0.1, 0


def markdown(report: dict) -> str:
    lines = ["| mask ratio | model accuracy | unigram baseline | masked tokens |", "|---|---|---|---|"]
    for row in report["masked_accuracy"]:
        lines.append(f"| {row['mask_ratio']:.2f} | {row['model_accuracy']:.3f} | "
                     f"{row['unigram_accuracy']:.3f} | {row['masked_tokens']} |")
    g = report["generation"]
    lines += [
        "",
        f"Unigram baseline token: {report['unigram_token']!r}.",
        "",
        f"Held-out functions: {g['functions']}; bodies that parse: **{g['parse_rate']:.0%}**; "
        f"exact match with the original body: {g['exact_match_rate']:.0%}; stopped by EOS/EOT before "
        f"max_tokens: {g['stopped_rate']:.0%}; mean generated tokens: {g['mean_generated_tokens']:.1f}.",
        "",
        f"Answers are repetitive: {g['distinct_answers']} distinct answers for {g['functions']} prompts; the "
        f"most common, {g['most_common_answer']!r}, is {g['most_common_answer_share']:.0%} of them. Without "
        f"it, {g['parse_rate_without_most_common']:.0%} of the remaining answers parse.",
    ]
    for i, s in enumerate(report["samples"], 1):
        lines += ["", f"Sample {i} ({s['source']}, parses: {s['parses']}):", "", "```python",
                  s["prompt"], s["generated"].rstrip() or "# (empty answer)", "```"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch
    from tokenizers import Tokenizer

    from ..models.loader import load_model
    from ..params import DiffusionParams
    from .corpus import pretrain_stream
    from .data import held_out_pairs, load_split
    from .evaluate import accuracy_table, generate_bodies, records_as_dicts, summarize_generations

    torch.set_num_threads(args.threads)
    t0 = time.time()
    model, tokenizer, cfg = load_model(args.model)
    folder = Path(args.model) if args.model else __import__(
        "diffuserve.engine.assets", fromlist=["builtin_model_path"]).builtin_model_path()
    val_fraction, split_seed = _split_settings(folder)
    train_files, val_files = load_split(val_fraction, split_seed)
    fast = Tokenizer.from_file(str(folder / "tokenizer.json"))
    val_stream = pretrain_stream(val_files, fast, split_seed)
    train_stream = pretrain_stream(train_files, fast, split_seed)
    table, unigram = accuracy_table(model, val_stream, train_stream, cfg.mask_token_id,
                                    max_rows=args.val_rows, seed=args.seed)

    pairs = held_out_pairs(val_files, args.functions, args.seed)
    params = DiffusionParams(max_tokens=args.max_tokens, block_length=args.block_length, steps=args.steps,
                             temperature=0.0)
    records = generate_bodies(model, cfg, tokenizer, pairs, params, batch=args.batch)
    report = {
        "model": str(folder),
        "command": "diffuserve eval-builtin " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if k in _REPORTED_ARGS and v is not None),
        "validation_files": len(val_files),
        "unigram_token": fast.id_to_token(unigram),
        "masked_accuracy": [r.__dict__ for r in table],
        "generation": {**summarize_generations(records), "max_tokens": args.max_tokens,
                       "block_length": args.block_length, "steps_per_block": params.steps_per_block},
        "samples": records_as_dicts(records[:3]),
        "records": records_as_dicts(records),
        "wall_time_s": round(time.time() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"\nfigures written to {out} in {report['wall_time_s']:.0f} s")
    return 0
