"""The Triton kernels compile to a cubin for sm_90 and sm_80 without a GPU (the interpreter
tests cannot show that). Runs in a subprocess: this process imported triton in interpreter mode."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_SCRIPT = """
from diffuserve.kernels.aot_check import compile_all
for arch in (90, 80):
    ptx = compile_all(arch)
    assert "ld.global.v4.b32" in ptx["row_split"], "bf16 logit loads did not vectorise"
    print(arch, sorted(ptx))
"""


def _ptxas_available() -> bool:
    try:
        from triton import knobs

        return knobs.nvidia.ptxas.path is not None
    except Exception:
        return False


@pytest.mark.skipif(not _ptxas_available(), reason="triton has no ptxas here")
def test_kernels_compile_for_cuda(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # a real compile, not a cache hit
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "90 ['row_combine', 'row_split', 'select']" in proc.stdout
