"""Step time of the fused projections against the separate q/k/v and gate/up GEMMs they replace.

    OMP_NUM_THREADS=1 python -m diffuserve.bench.fused_step [--model DIR] [--rounds 15]

One process, one set of weights: the unfused twin runs the same layers with q, k, v, gate and up
as separate contiguous weights (what the model computed before fusion), and the two run
alternately, so other load on the machine hits both alike. Reports the median forward time
for two step shapes (wall time and the process's CPU time) and the largest logit difference.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from diffuserve.engine.models.bidir_llama import BidirectionalLM, Block, apply_rope, rope_cos_sin
from diffuserve.engine.models.loader import load_model

# (name, batch, tokens per sequence): an exact-mode step over whole sequences, and the query
# rows of a prefix-cache denoising step (one 32-token block per sequence).
SHAPES = [("exact step 8 x 288", 8, 288), ("block step 16 x 32", 16, 32)]


class _UnfusedForward:
    """Block.forward with five separate projections (weights copied out of the fused ones)."""

    def __init__(self, block: Block):
        self.block = block
        wq, wk, wv = (w.contiguous() for w in block.qkv_proj.weight.split(block.qkv_split))
        bias = block.qkv_proj.bias
        bq, bk, bv = (None,) * 3 if bias is None else (b.contiguous() for b in bias.split(block.qkv_split))
        wg, wu = (w.contiguous() for w in block.gate_up_proj.weight.split(block.ffn))
        self.q, self.k, self.v = (wq, bq), (wk, bk), (wv, bv)
        self.gate, self.up = wg, wu

    def __call__(self, x, cos, sin, layer_idx, attend, keep=None):
        b, n = self.block, x.shape[0]
        hn = b.attn_norm(x)
        q = F.linear(hn, *self.q).view(n, b.num_heads, b.head_dim)
        k = F.linear(hn, *self.k).view(n, b.num_kv_heads, b.head_dim)
        v = F.linear(hn, *self.v).view(n, b.num_kv_heads, b.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        attn = attend(layer_idx, q, k, v).reshape(n, -1)
        if keep is not None:
            x, attn = x[keep], attn[keep]
        x = x + b.o_proj(attn)
        hn = b.mlp_norm(x)
        return x + b.down_proj(F.silu(F.linear(hn, self.gate)) * F.linear(hn, self.up))


def unfused_twin(model: BidirectionalLM) -> BidirectionalLM:
    """The same module with every layer's forward replaced by the unfused computation."""
    import copy

    twin = copy.deepcopy(model)
    for layer in twin.layers:
        layer.forward = _UnfusedForward(layer)
    return twin


@torch.inference_mode()
def _time(model: BidirectionalLM, ids: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """(wall seconds, CPU seconds of this process, logits). On a shared machine the CPU time
    moves far less with other tenants' load than the wall time."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = model(ids)
    return time.perf_counter() - t0, time.process_time() - c0, out


def _report(name: str, wall: dict, cpu: dict, diff: float) -> None:
    uw, fw = (statistics.median(wall[k]) * 1e3 for k in ("unfused", "fused"))
    uc, fc = (statistics.median(cpu[k]) * 1e3 for k in ("unfused", "fused"))
    print(f"{name:>20} | {uw:>10.1f} | {fw:>8.1f} | {fw / uw:>5.3f} | {uc:>14.1f} | {fc:>12.1f} | "
          f"{fc / uc:>5.3f} | {diff:.2e}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="checkpoint folder (default: the built-in model)")
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args(argv)
    fused = load_model(args.model, load_tokenizer=False).model
    unfused = unfused_twin(fused)
    g = torch.Generator().manual_seed(0)
    print(f"model: {sum(t.numel() for t in fused.parameters()) / 1e6:.2f}M parameters, "
          f"{torch.get_num_threads()} thread(s), float32, median of {args.rounds} alternating rounds")
    print(f"{'shape':>20} | {'unfused ms':>10} | {'fused ms':>8} | {'ratio':>5} | {'unfused CPU ms':>14} | "
          f"{'fused CPU ms':>12} | {'ratio':>5} | max |logit diff|")
    for name, batch, tokens in SHAPES:
        ids = torch.randint(0, fused.cfg.vocab_size, (batch, tokens), generator=g)
        _time(fused, ids), _time(unfused, ids)  # warm-up
        wall: dict[str, list[float]] = {"fused": [], "unfused": []}
        cpu: dict[str, list[float]] = {"fused": [], "unfused": []}
        for _ in range(args.rounds):
            for label, model in (("unfused", unfused), ("fused", fused)):
                dt, dc, out = _time(model, ids)
                wall[label].append(dt)
                cpu[label].append(dc)
                if label == "unfused":
                    ref = out
                else:
                    diff = (out - ref).abs().max().item()
        _report(name, wall, cpu, diff)
    # One layer without attention (`attend` hands q back): the projections, RoPE, the SwiGLU and
    # the residual path alone, where fusion acts, on the exact step's 2304 tokens.
    n = SHAPES[0][1] * SHAPES[0][2]
    x = torch.randn(n, fused.cfg.hidden_size, generator=g)
    cos, sin = rope_cos_sin(torch.arange(n) % 288, fused.cfg.head_dim, fused.cfg.rope_theta, x.dtype)
    layers = {"unfused": unfused.layers[0].forward, "fused": fused.layers[0].forward}
    wall, cpu = {"fused": [], "unfused": []}, {"fused": [], "unfused": []}
    with torch.inference_mode():
        for _ in range(args.rounds + 1):
            for label, fn in layers.items():
                t0, c0 = time.perf_counter(), time.process_time()
                out = fn(x, cos, sin, 0, lambda _i, q, k, v: q)
                wall[label].append(time.perf_counter() - t0)
                cpu[label].append(time.process_time() - c0)
                if label == "unfused":
                    ref = out
                else:
                    diff = (out - ref).abs().max().item()
    drop_warmup = {k: v[1:] for k, v in wall.items()}, {k: v[1:] for k, v in cpu.items()}
    _report(f"layer, no attn {n}", *drop_warmup, diff)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
