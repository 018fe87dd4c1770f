"""`diffuserve bench offline`: the engine against the exact reference sampler, in one process.

(a) the reference sampler, one request at a time (exact, full canvas each step): the baseline;
(b) the engine at each concurrency, prefix cache with the schedule policy (same steps as the
reference) and with a confidence threshold, plus exact mode. Prints tokens/s, forwards/s, tokens
per step, peak memory, speed against the reference and token agreement with exact mode.
"""

from __future__ import annotations

import argparse
import json
import logging

import torch
from diffuserve.engine.cli_args import add_engine_args, engine_config_from_args
from diffuserve.engine.engine_config import resolve_device, resolve_dtype
from diffuserve.engine.llm_engine import LLMEngine
from diffuserve.engine.params import DiffusionParams, parse_cache_refresh

from .offline_runs import MemoryMeter, RunStats, agreement, run_engine, run_reference
from .prompts import random_prompts, stdlib_prompts

log = logging.getLogger(__name__)

HELP = "offline engine benchmark against the reference sampler (tokens/s, agreement, memory)"
H100_BF16_FLOPS = 790e12

SHAPES = {
    "llada-8b": dict(model_type="llada", d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32,
                     mlp_hidden_size=12288, embedding_size=126464, vocab_size=126464,
                     max_sequence_length=4096, rope_theta=500000.0),
    "illada-8b": dict(model_type="illada", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, intermediate_size=14336, vocab_size=155136,
                      max_position_embeddings=8192, tie_word_embeddings=True),
    # A CPU-sized stand-in to smoke-test the random-weights path.
    "tiny": dict(model_type="illada", hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=256, vocab_size=1024, max_position_embeddings=1024),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint folder or hub id (default: built-in model)")
    p.add_argument("--shape", choices=sorted(SHAPES), default=None,
                   help="random weights of a real model shape instead of a checkpoint (GPU)")
    p.add_argument("--num-prompts", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--block-length", type=int, default=32)
    p.add_argument("--steps", type=int, default=None, help="steps per block (default: block length)")
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--threshold-factor", type=float, default=1.0, help="the factor mode's threshold_factor")
    p.add_argument("--canvas", choices=["variable", "fixed"], default="variable",
                   help="fixed: LLaDA's gen_length canvas, all max_tokens masks from the start (dual modes)")
    p.add_argument("--cache-refresh", default="auto",
                   help="comma-separated cache_refresh values for the prefix modes ('auto', or blocks "
                   "between full K/V recomputes, 0 = never); each value is its own run")
    p.add_argument("--concurrency", default="1,8,16,32", help="comma-separated concurrency levels")
    p.add_argument("--modes", default="schedule,threshold,exact",
                   help="engine modes among schedule, threshold, factor (threshold_factor), exact, and "
                   "with --canvas fixed dual, dual-threshold, dual-factor (cache='dual')")
    p.add_argument("--exact-concurrency", type=int, default=None,
                   help="run exact mode only at this concurrency (default: the highest)")
    p.add_argument("--no-reference", action="store_true", help="skip the reference baseline")
    p.add_argument("--reference-prompts", type=int, default=None,
                   help="run the slow reference on N evenly spread prompts only (the baseline tokens/s)")
    p.add_argument("--allow-eos", action="store_true",
                   help="let requests stop at the model's stop ids (default: no stop ids, so every "
                   "answer is max_tokens long and runs compare the same work)")
    p.add_argument("--compare-dtype", default=None,
                   help="also run exact mode with the weights cast to this dtype (e.g. bfloat16) and "
                   "report its agreement with exact mode: the numerical noise floor of the agreement")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    add_engine_args(p, exclude=("max_num_seqs",))  # max_num_seqs: the highest --concurrency


def concurrency_levels(args) -> list[int]:
    return [int(c) for c in args.concurrency.split(",")]


def build(args) -> tuple[LLMEngine, list[list[int]]]:
    """A checkpoint with the standard-library workload, or random weights of a model shape with
    random token prompts."""
    engine_config = engine_config_from_args(args, max_num_seqs=max(concurrency_levels(args)))
    if args.shape is None:
        # Without stop ids every answer runs to max_tokens: the reference and each engine mode then
        # do the same work whatever the model says (EOS suppression alone leaves EOT and friends).
        no_stops = {} if args.allow_eos else {"stop_token_ids": []}
        engine = LLMEngine.from_pretrained(args.model, engine_config, **no_stops)
        return engine, stdlib_prompts(engine.tokenizer, args.num_prompts, engine.cfg.vocab_size)
    from diffuserve.engine.model_config import ModelConfig
    from diffuserve.engine.models.bidir_llama import BidirectionalLM

    device = resolve_device(engine_config.device)
    if args.shape != "tiny" and device.type != "cuda":
        raise SystemExit(f"--shape {args.shape} needs a CUDA device (8B parameters)")
    cfg = ModelConfig.from_hf(SHAPES[args.shape]).with_overrides(stop_token_ids=[1] if args.allow_eos else [])
    if engine_config.tensor_parallel_size > 1:  # every rank builds the same random weights
        from diffuserve.engine.distributed import start_tensor_parallel

        engine = start_tensor_parallel(LLMEngine, SHAPES[args.shape], engine_config,
                                       overrides={"stop_token_ids": list(cfg.stop_token_ids)})
        return engine, random_prompts(args.num_prompts, cfg.vocab_size)
    with torch.device("meta"):
        model = BidirectionalLM(cfg)
    dtype = resolve_dtype(engine_config.dtype, device)
    model = model.to_empty(device=device).to(dtype).eval().requires_grad_(False)
    with torch.no_grad():
        for name, prm in model.named_parameters():
            prm.fill_(1.0) if "norm" in name else prm.normal_(0.0, 0.02)
    return LLMEngine(model, cfg, None, engine_config), random_prompts(args.num_prompts, cfg.vocab_size)


def run(args) -> int:
    if args.tensor_parallel_size > 1 and (not args.no_reference or args.compare_dtype):
        # The reference sampler and the cast copy run the model in this process alone.
        raise SystemExit("--tensor-parallel-size > 1 needs --no-reference and no --compare-dtype")
    engine, prompts = build(args)
    steps = args.steps or args.block_length
    base = DiffusionParams(max_tokens=args.max_tokens, block_length=args.block_length, steps=steps,
                           canvas=args.canvas)
    levels = concurrency_levels(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    exact_c = args.exact_concurrency or max(levels)
    meter = MemoryMeter(engine.device)
    lens = [len(p) for p in prompts]
    print(f"workload: {len(prompts)} prompts of {min(lens)}-{max(lens)} tokens, "
          f"max_tokens {args.max_tokens}, "
          f"block {args.block_length}, {steps} steps/block, cache_refresh {args.cache_refresh}, "
          f"device {engine.device}, "
          f"{engine.runner.backend.name} attention, KV pool {engine.kv.num_pages} x {engine.kv.page_size}")
    runs: list[RunStats] = []
    if not args.no_reference:
        k = min(args.reference_prompts or len(prompts), len(prompts))
        sample = sorted({i * len(prompts) // k for i in range(k)})
        runs.append(run_reference(engine.model, engine.cfg, engine.tokenizer, prompts,
                                  base.replace(cache="none"), meter, sample))
        print(f"  reference done: {runs[-1].tokens_per_s:.1f} tok/s", flush=True)
    rules = {"schedule": {}, "threshold": {"threshold": args.threshold},
             "factor": {"threshold_factor": args.threshold_factor}}
    plans = {"exact": lambda: base.replace(cache="none")}
    for rule, fields in rules.items():
        plans[rule] = lambda fields=fields: base.replace(**fields)
        plans["dual" if rule == "schedule" else f"dual-{rule}"] = (
            lambda fields=fields: base.replace(cache="dual", **fields))
    unknown = [m for m in modes if m not in plans]
    if unknown:
        raise SystemExit(f"unknown mode(s) {', '.join(unknown)}; choose among {', '.join(plans)}")
    if args.canvas != "fixed" and any(m.startswith("dual") for m in modes):
        raise SystemExit("the dual modes cache the masked suffix of a fixed canvas: add --canvas fixed")
    refreshes = [parse_cache_refresh(r) for r in args.cache_refresh.split(",")]
    for mode in modes:
        variants = [(mode, plans[mode]())]
        if mode != "exact":  # one run per refresh policy, named by it when there are several
            variants = [(f"{mode}:r{r}" if len(refreshes) > 1 else mode,
                         plans[mode]().replace(cache_refresh=r)) for r in refreshes]
        for name, params in variants:
            for c in [exact_c] if mode == "exact" else levels:
                stats = run_engine(engine, name, prompts, params, c, meter)
                runs.append(stats)
                print(f"  {name} c={c} done: {stats.tokens_per_s:.1f} tok/s", flush=True)
    if args.compare_dtype:
        runs.append(run_cast_exact(engine, args.compare_dtype, prompts, plans["exact"](), exact_c, meter))
        print(f"  exact-{args.compare_dtype} done", flush=True)
    report(runs, engine.device, args.block_length, args.max_tokens)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([row(r, runs) for r in runs], f, indent=1)
    return 0


def run_cast_exact(engine: LLMEngine, dtype: str, prompts, params: DiffusionParams, concurrency: int,
                   meter: MemoryMeter) -> RunStats:
    """Exact mode on a copy of the model cast to `dtype`: how far rounding alone moves the tokens."""
    import copy

    model = copy.deepcopy(engine.model).to(resolve_dtype(dtype, engine.device))
    twin = LLMEngine(model, engine.cfg, engine.tokenizer, engine.econf)
    return run_engine(twin, f"exact-{dtype}", prompts, params, concurrency, meter)


def row(r: RunStats, runs: list[RunStats]) -> dict:
    ref = next((x for x in runs if x.name == "reference"), None)
    exact = next((x for x in runs if x.name == "exact"), None) or ref
    return {
        "run": r.name, "concurrency": r.concurrency, "seconds": round(r.seconds, 3), "tokens": r.tokens,
        "tokens_per_s": round(r.tokens_per_s, 2), "forwards_per_s": round(r.forwards / r.seconds, 2),
        "tokens_per_step": round(r.tokens_per_step, 3), "peak_mem_mib": round(r.peak_mem_bytes / 2**20, 1),
        "speedup_vs_reference": round(r.tokens_per_s / ref.tokens_per_s, 2) if ref else None,
        "agreement_with_exact": round(agreement(r.results, exact.results), 4) if exact else None,
        "mfu": round(r.flops / r.seconds / H100_BF16_FLOPS, 4) if r.flops else None,
    }  # fmt: skip


def report(runs: list[RunStats], device: torch.device, block: int, max_tokens: int) -> None:
    cols = ["run", "c", "tok/s", "fwd/s", "tok/step", "peak MiB", "x ref", "agree"]
    if device.type == "cuda":
        cols.append("MFU")
    print("\n" + " | ".join(f"{c:>11}" for c in cols))
    for r in runs:
        d = row(r, runs)
        cells = [d["run"], d["concurrency"], d["tokens_per_s"], d["forwards_per_s"], d["tokens_per_step"],
                 d["peak_mem_mib"], d["speedup_vs_reference"], d["agreement_with_exact"]]
        if device.type == "cuda":
            cells.append(d["mfu"])
        print(" | ".join(f"{'-' if c is None else c:>11}" for c in cells))
    exact = next((x for x in runs if x.name == "exact"), None)
    if exact is not None:
        spans = [(s, min(s + block, max_tokens)) for s in range(0, max_tokens, block)]
        names = ", ".join(f"{a}-{b - 1}" for a, b in spans)
        print(f"\nagreement with exact mode by answer block ({names})")
        for r in runs:
            if r is not exact and r.name != "reference":
                cells = " / ".join(f"{agreement(r.results, exact.results, sp):.3f}" for sp in spans)
                print(f"  {r.name:>13} c={r.concurrency:<3} {cells}")
    print("agree = position-wise token match with exact mode over the prompts both ran (the engine's exact "
          "mode when it ran, else the reference sampler); MFU against 790 TFLOP/s bf16")
