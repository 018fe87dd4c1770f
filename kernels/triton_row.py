"""Triton row pass: candidate token and confidence per masked row, one read of the logits.

Two launches. `_row_split_kernel` runs one program per (row, vocabulary split of SPLIT ids) and
keeps per-lane running state over BLOCK-wide tiles: max, sum of exp (rescaled online), argmax,
and at temperature > 0 the Gumbel-noised max, its index and the un-noised logit there. It
writes one partial per split; `_row_combine_kernel` merges a row's partials in split order
and applies the confidence options. Splits let a small batch (32 rows) still fill the GPU.

The split size depends only on the vocabulary, never on the batch, so a row's result (its
confidence included, to the last bit) is the same whatever rows run beside it.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from . import noise
from .checks import KernelArgError, check_out, check_row_pass
from .row_options import RowOptions

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
BLOCK = 2048  # vocabulary ids per tile
SPLIT = 4 * BLOCK  # vocabulary ids per program
# hash32's last mixing input for the random-remasking score: (REMASK_SALT + 1) * C_VOCAB mod 2**32
_REMASK_TERM = ((noise.REMASK_SALT + 1) * noise.C_VOCAB) & 0xFFFFFFFF
_I32_MAX = tl.constexpr(2**31 - 1)  # "no index" in min-reductions
# noise.py's constants, so the kernel cannot drift from the spec (fmix32's are MurmurHash3's).
_GOLDEN = tl.constexpr(noise.GOLDEN)
_C_STEP = tl.constexpr(noise.C_STEP)
_C_VOCAB = tl.constexpr(noise.C_VOCAB)

if _INTERPRET:  # the interpreter has no libdevice; numpy's log is within 1 ulp of torch's

    @triton.jit
    def _log(x):
        return tl.log(x)

else:
    from triton.language.extra import libdevice

    @triton.jit
    def _log(x):
        # libdevice's logf (what torch's CUDA log calls without fast-math), not an approximate log
        return libdevice.log(x)


@triton.jit
def _fmix32(h):
    h ^= h >> 16
    h *= 0x85EBCA6B
    h ^= h >> 13
    h *= 0xC2B2AE35
    h ^= h >> 16
    return h


@triton.jit
def _row_key(seed, pos, step):
    """noise.hash32 up to the vocabulary term, for one row: uint32 scalar. seed, pos, step: int64."""
    # int64 -> uint32 keeps the low 32 bits, as `& 0xFFFFFFFF` does in noise.py
    h = _fmix32(((pos + 1).to(tl.uint32) * _GOLDEN) ^ seed.to(tl.uint32))
    return _fmix32(h ^ ((step + 1).to(tl.uint32) * _C_STEP) ^ (seed >> 32).to(tl.uint32))


@triton.jit
def _uniform(key, term):
    """noise.uniform from a row key and the mixed vocabulary term `(idx + 1) * C_VOCAB`."""
    h = _fmix32(key ^ term)
    return ((h >> 9).to(tl.int32).to(tl.float32) + 0.5) * (1.0 / 8388608.0)


@triton.jit
def _biased_tile(row_ptr, idx, V, bias_tok, bias_val, sup_ids_ptr, n_sup, sup_row):
    """Float32 logits of the ids `idx` (BLOCK,), with the bias added and suppressed ids at -inf."""
    x = tl.load(row_ptr + idx, mask=idx < V, other=float("-inf")).to(tl.float32)
    x = tl.where(idx == bias_tok, x + bias_val, x)
    if sup_row:
        for j in range(n_sup):
            x = tl.where(idx == tl.load(sup_ids_ptr + j).to(tl.int32), float("-inf"), x)
    return x


@triton.jit
def _row_split_kernel(
    logits_ptr, stride_row, V,
    temp_ptr, seed_ptr, pos_ptr, step_ptr, bias_tok_ptr, bias_val_ptr,
    sup_ids_ptr, n_sup, sup_row_ptr,
    p_max_ptr, p_sum_ptr, p_arg_ptr, p_nmax_ptr, p_narg_ptr, p_nval_ptr,
    NS,
    BLOCK: tl.constexpr, SPLIT: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    split = tl.program_id(1)
    row_ptr = logits_ptr + row.to(tl.int64) * stride_row
    t = tl.load(temp_ptr + row)
    bias_tok = tl.load(bias_tok_ptr + row).to(tl.int32)  # -1 matches no id
    bias_val = tl.load(bias_val_ptr + row)
    sup_row = tl.load(sup_row_ptr + row) != 0
    start = split * SPLIT
    stop = tl.minimum(start + SPLIT, V)
    lanes = tl.arange(0, BLOCK)
    # Per-lane state (BLOCK,). Index state starts at the lane's first id, so an all -inf lane
    # reports its lowest id, as torch.argmax does for an all -inf row.
    m_vec = tl.full([BLOCK], float("-inf"), tl.float32)
    s_vec = tl.zeros([BLOCK], tl.float32)
    a_vec = start + lanes
    nm_vec = tl.full([BLOCK], float("-inf"), tl.float32)
    na_vec = start + lanes
    nv_vec = tl.full([BLOCK], float("-inf"), tl.float32)
    key = _row_key(tl.load(seed_ptr + row), tl.load(pos_ptr + row), tl.load(step_ptr + row))
    for off in range(start, stop, BLOCK):
        idx = off + lanes
        x = _biased_tile(row_ptr, idx, V, bias_tok, bias_val, sup_ids_ptr, n_sup, sup_row)
        new_m = tl.maximum(m_vec, x)
        safe_m = tl.where(new_m == float("-inf"), 0.0, new_m)  # keeps exp(-inf - -inf) out
        s_vec = s_vec * tl.exp(m_vec - safe_m) + tl.exp(x - safe_m)
        a_vec = tl.where(x > m_vec, idx, a_vec)  # strict: the earlier id wins a tie
        m_vec = new_m
        if t > 0:
            g = -_log(-_log(_uniform(key, (idx + 1).to(tl.uint32) * _C_VOCAB)))
            y = x + t * g
            better = y > nm_vec
            nm_vec = tl.where(better, y, nm_vec)
            na_vec = tl.where(better, idx, na_vec)
            nv_vec = tl.where(better, x, nv_vec)
    m = tl.max(m_vec, axis=0)
    safe = tl.where(m == float("-inf"), 0.0, m)
    s = tl.sum(s_vec * tl.exp(m_vec - safe), axis=0)
    a = tl.min(tl.where(m_vec == m, a_vec, _I32_MAX), axis=0)
    nm = tl.max(nm_vec, axis=0)
    na = tl.min(tl.where(nm_vec == nm, na_vec, _I32_MAX), axis=0)
    nv = tl.max(tl.where(na_vec == na, nv_vec, float("-inf")), axis=0)
    out = row * NS + split
    tl.store(p_max_ptr + out, m)
    tl.store(p_sum_ptr + out, s)
    tl.store(p_arg_ptr + out, a)
    tl.store(p_nmax_ptr + out, nm)
    tl.store(p_narg_ptr + out, na)
    tl.store(p_nval_ptr + out, nv)


@triton.jit
def _row_combine_kernel(
    p_max_ptr, p_sum_ptr, p_arg_ptr, p_nmax_ptr, p_narg_ptr, p_nval_ptr, NS,
    temp_ptr, seed_ptr, pos_ptr, step_ptr, rand_ptr, blk_ids_ptr, n_blk, blk_row_ptr,
    token_ptr, conf_ptr,
    NS_P2: tl.constexpr, REMASK_TERM: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    j = tl.arange(0, NS_P2)
    valid = j < NS
    at = row * NS + j
    pm = tl.load(p_max_ptr + at, mask=valid, other=float("-inf"))
    ps = tl.load(p_sum_ptr + at, mask=valid, other=0.0)
    m = tl.max(pm, axis=0)
    safe = tl.where(m == float("-inf"), 0.0, m)
    s = tl.sum(ps * tl.exp(pm - safe), axis=0)
    # Each split holds its lowest id at its max; the lowest id over the best splits wins ties.
    token = tl.min(tl.where(valid & (pm == m), tl.load(p_arg_ptr + at, mask=valid, other=0), _I32_MAX), 0)
    lc = m  # un-noised (biased) logit at the candidate
    if tl.load(temp_ptr + row) > 0:
        pnm = tl.load(p_nmax_ptr + at, mask=valid, other=float("-inf"))
        pna = tl.load(p_narg_ptr + at, mask=valid, other=0)
        nm = tl.max(pnm, axis=0)
        token = tl.min(tl.where(valid & (pnm == nm), pna, _I32_MAX), axis=0)
        pnv = tl.load(p_nval_ptr + at, mask=valid, other=float("-inf"))
        lc = tl.max(tl.where(valid & (pna == token), pnv, float("-inf")), axis=0)
    conf = tl.exp(lc - m) / s  # softmax(biased)[token]
    if tl.load(rand_ptr + row) != 0:
        key = _row_key(tl.load(seed_ptr + row), tl.load(pos_ptr + row), tl.load(step_ptr + row))
        conf = _uniform(key, REMASK_TERM)
    if tl.load(blk_row_ptr + row) != 0:
        for i in range(n_blk):
            conf = tl.where(tl.load(blk_ids_ptr + i) == token, float("-inf"), conf)
    tl.store(token_ptr + row, token.to(tl.int64))
    tl.store(conf_ptr + row, conf)


def row_pass_triton(
    logits: torch.Tensor,
    opts: RowOptions,
    *,
    out_token: torch.Tensor | None = None,
    out_conf: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton version of `torch_kernels.row_pass_torch` (same arguments, same results)."""
    check_row_pass(logits, opts)
    o = opts
    n_rows, vocab = logits.shape
    dev = logits.device
    check_out("out_token", out_token, torch.int64, n_rows, dev)
    check_out("out_conf", out_conf, torch.float32, n_rows, dev)
    if dev.type != "cuda" and not _INTERPRET:
        raise KernelArgError(f"Triton kernels need CUDA tensors (got {dev}) or TRITON_INTERPRET=1")
    if vocab >= 2**31 - BLOCK:
        raise KernelArgError(f"vocabulary {vocab} exceeds the kernel's int32 ids")
    token = out_token if out_token is not None else torch.empty(n_rows, dtype=torch.int64, device=dev)
    conf = out_conf if out_conf is not None else torch.empty(n_rows, dtype=torch.float32, device=dev)
    if n_rows == 0:
        return token, conf
    n_splits = triton.cdiv(vocab, SPLIT)
    part_f = torch.empty(4, n_rows, n_splits, dtype=torch.float32, device=dev)  # max, sum, nmax, nval
    part_i = torch.empty(2, n_rows, n_splits, dtype=torch.int32, device=dev)  # arg, narg
    extra = {} if _INTERPRET else {"num_warps": 8, "enable_fp_fusion": False}
    _row_split_kernel[(n_rows, n_splits)](
        logits, logits.stride(0), vocab,
        o.temperature, o.seed, o.pos, o.step, o.bias_token, o.bias_value,
        o.suppress_ids, o.suppress_ids.numel(), o.suppress_row.view(torch.int8),
        part_f[0], part_f[1], part_i[0], part_f[2], part_i[1], part_f[3],
        n_splits, BLOCK=BLOCK, SPLIT=SPLIT, **extra,
    )  # fmt: skip
    _row_combine_kernel[(n_rows,)](
        part_f[0], part_f[1], part_i[0], part_f[2], part_i[1], part_f[3], n_splits,
        o.temperature, o.seed, o.pos, o.step, o.random_conf.view(torch.int8),
        o.conf_block_ids, o.conf_block_ids.numel(), o.conf_block_row.view(torch.int8),
        token, conf,
        NS_P2=triton.next_power_of_2(n_splits), REMASK_TERM=_REMASK_TERM,
    )  # fmt: skip
    return token, conf
