"""`diffuserve train-builtin`: train the built-in model on the task corpus (CPU, fixed seed)."""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from dataclasses import replace
from pathlib import Path

HELP = (
    "Train the built-in masked diffusion model on the seeded task corpus (addition and subtraction "
    "with worked traces, sorting, multiple choice, completion): byte-level BPE with single-digit "
    "tokens, then masked-diffusion training in the iLLaDA SFT format. Defaults reproduce the shipped "
    "checkpoint (see the model card for its wall time on 2 CPU cores)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..tasks.suite import MC_REPLIES
    from .export import ModelShape
    from .train import TrainConfig

    d, s = TrainConfig(), ModelShape()
    parser.add_argument("--out-dir", default=d.out_dir, help="run folder (log, snapshots/, checkpoint/)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--examples", type=int, default=d.examples, help="corpus size in problems")
    parser.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    parser.add_argument("--decay-fraction", type=share, default=d.decay_fraction,
                        help="last share of the steps over which the learning rate decays linearly")
    parser.add_argument("--mix", type=task_mix, default=None, metavar="TASK=SHARE,...",
                        help="corpus share of each task form, e.g. add=0.22,sub=0.22,sort=0.22,mc=0.3,"
                        "complete=0.04 (weights, normalised; a task left out gets none; default: the "
                        "shipped mix)")
    parser.add_argument("--mc-reply", choices=MC_REPLIES, default=d.mc_reply,
                        help="multiple-choice reply form of the corpus: the addition trace, one "
                        "digit-by-digit check line per option, then the letter (digit-checks), or the "
                        "trace then the letter (sum, v4's; model card, \"What was tried\"); "
                        "default: %(default)s, the shipped model's")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--seq-len", type=int, default=d.seq_len)
    parser.add_argument("--prompt-visible-prob", type=share, default=d.prompt_visible_prob,
                        help="share of rows whose prompt tokens are never masked")
    parser.add_argument("--hidden-size", type=int, default=s.hidden_size)
    parser.add_argument("--layers", type=int, default=s.num_layers)
    parser.add_argument("--heads", type=int, default=s.num_heads)
    parser.add_argument("--kv-heads", type=int, default=s.num_kv_heads)
    parser.add_argument("--intermediate-size", type=int, default=s.intermediate_size)
    parser.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                        help="continue from this checkpoint folder (weights, config, tokenizer; the "
                        "shape flags are ignored) instead of a fresh model: a second training phase")
    parser.add_argument("--snapshot-every", type=int, default=d.snapshot_every)
    parser.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    parser.add_argument("--install", action="store_true",
                        help="copy the finished checkpoint into the package's built-in model folder")


def share(text: str) -> float:
    """A flag that is a share of rows or steps: a number in [0, 1] (a usage error otherwise)."""
    from ..engine.params import Range, number_in

    unit = Range(0.0, 1.0)
    value = number_in(text, unit)
    if value is None:
        raise argparse.ArgumentTypeError(f"must be in {unit.text()}, got {text!r}")
    return value


def task_mix(text: str) -> dict[str, float]:
    """`add=0.2,sub=0.2,...`: every known task form at most once, non-negative weights, sum > 0."""
    from ..engine.params import Range, number_in
    from ..tasks.suite import TASKS

    finite_weight = Range(0.0, math.inf, high_open=True)
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq or name not in TASKS or name in mix:
            raise argparse.ArgumentTypeError(
                f"expected TASK=SHARE pairs over {', '.join(TASKS)} (each once), got {part.strip()!r}")
        weight = number_in(value, finite_weight)
        if weight is None:
            raise argparse.ArgumentTypeError(f"{name}: a share is a finite number >= 0, got {value!r}")
        mix[name] = weight
    if sum(mix.values()) <= 0:
        raise argparse.ArgumentTypeError("the shares must not all be zero")
    return mix


def build_config(args: argparse.Namespace):
    from .export import ModelShape
    from .train import TrainConfig

    d = TrainConfig()
    shape = ModelShape(hidden_size=args.hidden_size, num_layers=args.layers, num_heads=args.heads,
                       num_kv_heads=args.kv_heads, intermediate_size=args.intermediate_size)
    return replace(
        d, out_dir=args.out_dir, seed=args.seed, shape=shape, batch_size=args.batch_size,
        seq_len=args.seq_len, threads=args.threads, steps=args.steps, lr=args.lr,
        decay_fraction=args.decay_fraction,
        examples=args.examples, prompt_visible_prob=args.prompt_visible_prob,
        warmup_steps=max(1, min(d.warmup_steps, args.steps // 10)), snapshot_every=args.snapshot_every,
        init_from=args.init_from, mix=args.mix or dict(d.mix), mc_reply=args.mc_reply,
    )


def missing_checkpoint_files(folder: str) -> list[str]:
    """What `--init-from` needs and `folder` lacks (checked before the corpus is built)."""
    from .export import TOKENIZER_FILES

    needed = ("config.json", "model.safetensors", *TOKENIZER_FILES)
    return [f for f in needed if not (Path(folder) / f).is_file()]


def run(args: argparse.Namespace) -> int:
    from ..engine.assets import BUILTIN_DIR
    from .train import train

    missing = missing_checkpoint_files(args.init_from) if args.init_from else []
    if missing:
        print(f"error: --init-from {args.init_from}: not a checkpoint folder (missing {', '.join(missing)})",
              file=sys.stderr)
        return 2
    ckpt = train(build_config(args))
    if args.install:
        BUILTIN_DIR.mkdir(parents=True, exist_ok=True)
        for f in BUILTIN_DIR.iterdir():
            if f.is_file() and f.name != "README.md":  # the model card is written by hand
                f.unlink()
        for f in ckpt.iterdir():
            if f.is_file():
                shutil.copyfile(f, BUILTIN_DIR / f.name)
        print(f"installed the checkpoint into {BUILTIN_DIR}")
    print(f"checkpoint: {ckpt}")
    return 0
