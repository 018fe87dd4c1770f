"""`diffuserve train-builtin`: train the built-in model from the standard library (CPU, fixed seed)."""

from __future__ import annotations

import argparse
import shutil
from dataclasses import replace

HELP = (
    "Train the built-in masked diffusion code model on the running interpreter's standard library: "
    "BPE tokenizer, masked-diffusion pretraining, then SFT on (signature+docstring -> body) pairs. "
    "Defaults reproduce the shipped checkpoint (about 20 minutes on 2 otherwise idle CPU cores)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .export import ModelShape
    from .train import TrainConfig

    d, s = TrainConfig(), ModelShape()
    parser.add_argument("--out-dir", default=d.out_dir, help="run folder (log + checkpoint/)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--pretrain-steps", type=int, default=d.pretrain.steps)
    parser.add_argument("--sft-steps", type=int, default=d.sft.steps)
    parser.add_argument("--lr", type=float, default=d.pretrain.lr, help="peak pretraining learning rate")
    parser.add_argument("--sft-lr", type=float, default=d.sft.lr)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--seq-len", type=int, default=d.seq_len)
    parser.add_argument("--hidden-size", type=int, default=s.hidden_size)
    parser.add_argument("--layers", type=int, default=s.num_layers)
    parser.add_argument("--heads", type=int, default=s.num_heads)
    parser.add_argument("--kv-heads", type=int, default=s.num_kv_heads)
    parser.add_argument("--intermediate-size", type=int, default=s.intermediate_size)
    parser.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    parser.add_argument("--install", action="store_true",
                        help="copy the finished checkpoint into the package's built-in model folder")


def build_config(args: argparse.Namespace):
    from .export import ModelShape
    from .train import TrainConfig

    d = TrainConfig()
    shape = ModelShape(hidden_size=args.hidden_size, num_layers=args.layers, num_heads=args.heads,
                       num_kv_heads=args.kv_heads, intermediate_size=args.intermediate_size)
    warm_pre = max(1, min(d.pretrain.warmup_steps, args.pretrain_steps // 10))
    warm_sft = max(1, min(d.sft.warmup_steps, args.sft_steps // 10))
    return replace(
        d, out_dir=args.out_dir, seed=args.seed, shape=shape, batch_size=args.batch_size,
        seq_len=args.seq_len, threads=args.threads,
        pretrain=replace(d.pretrain, steps=args.pretrain_steps, lr=args.lr, warmup_steps=warm_pre),
        sft=replace(d.sft, steps=args.sft_steps, lr=args.sft_lr, warmup_steps=warm_sft),
    )


def run(args: argparse.Namespace) -> int:
    from ..assets import BUILTIN_DIR
    from .train import train

    ckpt = train(build_config(args))
    if args.install:
        BUILTIN_DIR.mkdir(parents=True, exist_ok=True)
        for f in ckpt.iterdir():
            if f.is_file():
                shutil.copyfile(f, BUILTIN_DIR / f.name)
        print(f"installed the checkpoint into {BUILTIN_DIR}")
    print(f"checkpoint: {ckpt}")
    return 0
