"""Compiles the Triton kernels for a CUDA architecture without a GPU (Triton's bundled ptxas).

A machine with no GPU can still prove the kernels lower to PTX and a cubin, which the
interpreter used by the CPU tests cannot: run `python -m diffuserve.kernels.aot_check [90]`.
It must run without TRITON_INTERPRET, since interpreted kernels cannot be compiled.
"""

from __future__ import annotations

import re
import sys

# Argument types as the launchers pass them; logits and its row stride 16-divisible, as for
# a contiguous (R, V) buffer with V a multiple of 16 (Triton specialises on that at launch;
# it lets the tile loads vectorise, 16 bytes a thread).
_PER_ROW = {"temp_ptr": "*fp32", "seed_ptr": "*i64", "pos_ptr": "*i64", "step_ptr": "*i64"}
_PARTIALS = {
    "p_max_ptr": "*fp32", "p_sum_ptr": "*fp32", "p_arg_ptr": "*i32",
    "p_nmax_ptr": "*fp32", "p_narg_ptr": "*i32", "p_nval_ptr": "*fp32",
}  # fmt: skip


def compile_all(arch: int = 90, logits_dtype: str = "bf16") -> dict[str, str]:
    """PTX of each kernel compiled for sm_`arch`; raises if a kernel does not compile."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import triton_row, triton_select

    if not isinstance(triton_row._row_split_kernel, triton.runtime.JITFunction):
        raise RuntimeError("kernels were built for the interpreter: unset TRITON_INTERPRET")
    split_sig = {
        "logits_ptr": f"*{logits_dtype}", "stride_row": "i64", "V": "i32", **_PER_ROW,
        "bias_tok_ptr": "*i64", "bias_val_ptr": "*fp32", "sup_ids_ptr": "*i64", "n_sup": "i32",
        "sup_row_ptr": "*i8", **_PARTIALS, "NS": "i32", "BLOCK": "constexpr", "SPLIT": "constexpr",
    }  # fmt: skip
    combine_sig = {
        **_PARTIALS, "NS": "i32", **_PER_ROW, "rand_ptr": "*i8", "blk_ids_ptr": "*i64", "n_blk": "i32",
        "blk_row_ptr": "*i8", "token_ptr": "*i64", "conf_ptr": "*fp32", "NS_P2": "constexpr",
        "REMASK_TERM": "constexpr",
    }  # fmt: skip
    select_sig = {
        "conf_ptr": "*fp32", "offsets_ptr": "*i64", "k_ptr": "*i64", "thr_ptr": "*fp32",
        "factor_ptr": "*fp32", "cap_ptr": "*i64", "tokens_ptr": "*i64", "canvas_ptr": "*i64",
        "canvas_index_ptr": "*i64", "committed_ptr": "*i8", "BLOCK": "constexpr",
    }  # fmt: skip
    div16 = [["tt.divisibility", 16]]
    aligned = {(0,): div16, (1,): div16, (2,): div16}  # logits pointer, row stride, V
    jobs = {
        "row_split": (triton_row._row_split_kernel, split_sig,
                      {"BLOCK": triton_row.BLOCK, "SPLIT": triton_row.SPLIT}, aligned, 8),
        "row_combine": (triton_row._row_combine_kernel, combine_sig,
                        {"NS_P2": 32, "REMASK_TERM": triton_row._REMASK_TERM}, {}, 4),
        "select": (triton_select._select_kernel, select_sig, {"BLOCK": triton_select.BLOCK}, {}, 4),
    }  # fmt: skip
    target = GPUTarget("cuda", arch, 32)
    out = {}
    for name, (fn, sig, consts, attrs, warps) in jobs.items():
        src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
        compiled = triton.compile(src, target=target, options={"num_warps": warps, "enable_fp_fusion": False})
        out[name] = compiled.asm["ptx"]
    return out


def main() -> int:
    arch = int(sys.argv[1]) if len(sys.argv) > 1 else 90
    for name, ptx in compile_all(arch).items():
        loads = sorted(set(re.findall(r"ld\.global\.[\w.]+", ptx)))
        print(f"{name}: sm_{arch} ok, {len(ptx.splitlines())} PTX lines, loads {loads}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
