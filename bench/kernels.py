"""`diffuserve bench kernels`: the denoising row pass and selection pass, timed per backend.

Backends: the PyTorch reference in eager mode, the same function under torch.compile, and the
Triton kernels (CUDA only: the interpreter is not a benchmark). Shapes: rows = 32 x concurrency
(a 32-token block per running sequence), one vocabulary size per model family. Bandwidth is
the logits bytes read once per call; on CUDA it is compared with a measured device-to-device
copy (read + write bytes over time), the ceiling a one-read kernel can reach.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

HELP = "micro-benchmark of the denoising kernels (reference eager / torch.compile / Triton)"
ROWS_PER_SEQ = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cpu, cuda:N")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--vocab", type=int, nargs="+", default=[126464, 155136])
    parser.add_argument("--temperature", type=float, default=0.0, help="0: plain argmax; > 0: Gumbel noise")
    parser.add_argument("--backends", nargs="+", default=["eager", "compile", "triton"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--json", help="also write the results to this file")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> float:
    """Median wall time of one call in ms (CUDA: synchronised around each call)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copy_bandwidth_gbs(device: torch.device, n_bytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth, counting the bytes read and written."""
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, warmup=3, iters=20)
    return 2 * n_bytes / ms / 1e6


def make_inputs(rows: int, vocab: int, dtype: torch.dtype, temperature: float, device: torch.device):
    """Random logits `(rows, vocab)` and the row-pass options (a </think> bias and EOS suppression
    on some rows, as in serving)."""
    g = torch.Generator(device=device).manual_seed(0)
    logits = (torch.randn(rows, vocab, generator=g, device=device) * 3.0).to(dtype)
    lng = dict(dtype=torch.long, device=device)
    from diffuserve.kernels import RowOptions

    opts = RowOptions(
        temperature=torch.full((rows,), temperature, dtype=torch.float32, device=device),
        seed=torch.arange(rows, **lng) * 7919,
        pos=torch.arange(rows, **lng) % 4096,
        step=torch.arange(rows, **lng) % 32,
        bias_token=torch.where(torch.arange(rows, device=device) % 32 == 0, 17, -1).to(torch.long),
        bias_value=torch.full((rows,), 5.0, device=device),
        suppress_ids=torch.tensor([vocab - 1], **lng),
        suppress_row=torch.arange(rows, device=device) % 2 == 0,
        conf_block_ids=torch.tensor([vocab - 2], **lng),
        conf_block_row=torch.ones(rows, dtype=torch.bool, device=device),
        random_conf=torch.zeros(rows, dtype=torch.bool, device=device),
    )
    return logits, opts


def _row_fns(args, logits, opts, device) -> dict[str, Callable[[], object]]:
    from diffuserve.kernels.torch_kernels import row_chunk, row_pass_torch

    noisy = args.temperature > 0
    fns: dict[str, Callable[[], object]] = {}
    if "eager" in args.backends:
        fns["eager"] = lambda: row_pass_torch(logits, opts)
    if "compile" in args.backends:
        compiled = torch.compile(row_chunk, dynamic=False)
        fns["compile"] = lambda: compiled(logits, *opts.tensors(), noisy=noisy)
    if "triton" in args.backends and device.type == "cuda":
        from diffuserve.kernels.triton_row import row_pass_triton

        fns["triton"] = lambda: row_pass_triton(logits, opts)
    return fns


def _select_fns(args, conf, n_seqs, device) -> dict[str, Callable[[], object]]:
    from diffuserve.kernels import CommitPlan
    from diffuserve.kernels.torch_kernels import select_commit_torch

    rows = conf.numel()
    offsets = torch.arange(0, rows + 1, ROWS_PER_SEQ, dtype=torch.long, device=device)
    k = torch.ones(n_seqs, dtype=torch.long, device=device)
    thr = torch.full((n_seqs,), -1.0, device=device)
    tokens = torch.arange(rows, dtype=torch.long, device=device)
    canvas = torch.zeros(rows, dtype=torch.long, device=device)
    index = torch.arange(rows, dtype=torch.long, device=device)
    sel_args = (conf, tokens, CommitPlan(offsets, k, thr, canvas, index))
    fns: dict[str, Callable[[], object]] = {"eager": lambda: select_commit_torch(*sel_args)}
    if "triton" in args.backends and device.type == "cuda":
        from diffuserve.kernels.triton_select import select_commit_triton

        fns["triton"] = lambda: select_commit_triton(*sel_args)
    return fns


def run(args: argparse.Namespace) -> int:
    from diffuserve.engine.engine_config import resolve_device

    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"device: {name}; torch {torch.__version__}; logits {args.dtype}; temperature {args.temperature}")
    copy_gbs = copy_bandwidth_gbs(device) if device.type == "cuda" else None
    if copy_gbs is not None:
        print(f"device-to-device copy: {copy_gbs:.0f} GB/s (read + write)")
    if device.type != "cuda" and "triton" in args.backends:
        print("triton: skipped (CUDA only)")
    results = []
    cols = ("pass", "rows", "vocab", "backend", "ms", "GB/s", "vs copy", "vs eager")
    print("{:7} {:>5} {:>7} {:8} {:>9} {:>8} {:>8} {:>8}".format(*cols))
    for vocab in args.vocab:
        for conc in args.concurrency:
            rows = ROWS_PER_SEQ * conc
            logits, opts = make_inputs(rows, vocab, dtype, args.temperature, device)
            n_bytes = logits.numel() * logits.element_size()
            timings = {}
            for backend, fn in _row_fns(args, logits, opts, device).items():
                try:
                    timings[backend] = time_ms(fn, device, args.warmup, args.iters)
                except Exception as exc:  # torch.compile can fail on a given setup; say so, go on
                    print(
                        f"row     {rows:5d} {vocab:7d} {backend:8} failed: {type(exc).__name__}: {exc}"[:300]
                    )
            for backend, ms in timings.items():
                gbs = n_bytes / ms / 1e6
                rel = f"{gbs / copy_gbs:7.0%}" if copy_gbs else "       -"
                speedup = timings["eager"] / ms if "eager" in timings else float("nan")
                print(
                    f"row     {rows:5d} {vocab:7d} {backend:8} {ms:9.3f} {gbs:8.1f} {rel:>8} {speedup:7.1f}x"
                )
                results.append(dict(kind="row", rows=rows, vocab=vocab, backend=backend, ms=ms, gbs=gbs))
            conf = torch.rand(rows, device=device)
            for backend, fn in _select_fns(args, conf, conc, device).items():
                ms = time_ms(fn, device, args.warmup, args.iters)
                print(f"select  {rows:5d} {'':7} {backend:8} {ms:9.3f}")
                results.append(dict(kind="select", rows=rows, backend=backend, ms=ms))
            del logits, opts
    if args.json:
        meta = dict(device=name, dtype=args.dtype, temperature=args.temperature, copy_gbs=copy_gbs)
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, results=results), f, indent=1)
    return 0
