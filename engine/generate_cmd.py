"""`diffuserve generate`: one prompt through the engine (or the exact reference sampler), offline."""

from __future__ import annotations

import argparse
import json
import sys
import time

from .cli_args import add_engine_args, add_model_args, engine_config_from_args, model_overrides_from_args
from .params import parse_cache_refresh

HELP = "Generate a completion for one prompt with the engine (built-in model when --model is absent)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint folder or hub id (default: the built-in model)")
    p.add_argument("--prompt", required=True, help="prompt text")
    p.add_argument("--chat", action="store_true", help="wrap the prompt as a user message (chat template)")
    p.add_argument("--json", action="store_true",
                   help='print {"text", "token_ids", "steps", "finish_reason"} as JSON')
    p.add_argument("--sampler", choices=["engine", "reference"], default="engine",
                   help="engine (batched, KV cache) or the exact reference sampler (the oracle)")
    s = p.add_argument_group("sampling")
    s.add_argument("--max-tokens", type=int, default=128, help="answer cap (fixed canvas: gen_length)")
    s.add_argument("--canvas", choices=["variable", "fixed"], default="variable")
    s.add_argument("--block-length", type=int, default=32)
    s.add_argument("--steps", type=int, default=None, help="steps per block (default: block length)")
    s.add_argument("--threshold", type=float, default=None, help="parallel decoding confidence threshold")
    s.add_argument("--threshold-factor", type=float, default=None,
                   help="parallel decoding by Fast-dLLM's factor rule (instead of --threshold)")
    s.add_argument("--max-commits-per-step", type=int, default=None,
                   help="with --threshold / --threshold-factor: at most this many tokens a step")
    s.add_argument("--remasking", choices=["low_confidence", "random"], default="low_confidence")
    s.add_argument("--temperature", type=float, default=0.0)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--cfg-scale", type=float, default=0.0, help="guidance scale (needs --cache none)")
    s.add_argument("--think-boost", type=float, default=0.0, help="growing </think> bias strength")
    s.add_argument("--think-power", type=float, default=3.0)
    s.add_argument("--suppress-eos", action="store_true", help="EOS logit -> -inf (LLaDA logits_eos_inf)")
    s.add_argument("--suppress-eos-confidence", action="store_true",
                   help="EOS/EOT confidence -> -inf (LLaDA confidence_eos_eot_inf)")
    s.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    s.add_argument("--cache", choices=["prefix", "dual", "none"], default="prefix",
                   help="prefix KV cache; dual (fixed canvas: the masked suffix's K/V reused within a "
                   "block too); or none (exact: recompute the canvas every step)")
    s.add_argument("--cache-refresh", type=parse_cache_refresh, default="auto",
                   help="prefix cache: 'auto', or recompute the K/V every N finished blocks (0 = never)")
    add_engine_args(p)
    add_model_args(p)


def build_params(args: argparse.Namespace):
    from .params import DiffusionParams

    return DiffusionParams(
        max_tokens=args.max_tokens, canvas=args.canvas, block_length=args.block_length, steps=args.steps,
        threshold=args.threshold, threshold_factor=args.threshold_factor,
        max_commits_per_step=args.max_commits_per_step, remasking=args.remasking,
        temperature=args.temperature, seed=args.seed,
        cfg_scale=args.cfg_scale, think_boost=args.think_boost, think_power=args.think_power,
        suppress_eos=args.suppress_eos, suppress_eos_confidence=args.suppress_eos_confidence,
        stop=tuple(args.stop), cache=args.cache, cache_refresh=args.cache_refresh,
    )


def run(args: argparse.Namespace) -> int:
    from .llm_engine import LLMEngine
    from .model_config import CheckpointError
    from .oracle import generate_fixed, generate_variable
    from .params import ParamError

    try:
        engine_config = engine_config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        overrides = model_overrides_from_args(args).given()
        engine = LLMEngine.from_pretrained(args.model, engine_config, **overrides)
        tok = engine.tokenizer
        if args.chat:
            ids = tok.apply_chat_template([{"role": "user", "content": args.prompt}],
                                          add_generation_prompt=True, tokenize=True)
            ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        else:
            ids = tok.encode(args.prompt, add_special_tokens=False)
        params = build_params(args).validate(engine.cfg, len(ids))
        start = time.perf_counter()
        if args.sampler == "reference":
            sample = generate_fixed if params.canvas == "fixed" else generate_variable
            out = sample(engine.model, engine.cfg, [ids], params, tok)[0]
            text, token_ids, steps, reason = out.text, out.token_ids, out.steps, out.finish_reason
        else:
            res = engine.generate([ids], params)[0]
            if res.finish_reason == "error":
                print(f"error: {res.error}", file=sys.stderr)
                return 1
            text, token_ids, steps, reason = res.text, res.token_ids, res.steps, res.finish_reason
        elapsed = time.perf_counter() - start
    except (ParamError, CheckpointError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"text": text, "token_ids": token_ids, "steps": steps, "finish_reason": reason}))
    else:
        print(text)
        print(f"[{len(token_ids)} tokens, {steps} steps, finish_reason={reason}, {elapsed:.2f}s]",
              file=sys.stderr)
    return 0
