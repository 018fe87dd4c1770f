"""GPU-only paths against their CPU-checked references. Skipped cleanly without CUDA (CI)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from diffuserve.engine.params import DiffusionParams
from diffuserve.kernels import CommitPlan, RowOptions, row_pass_torch, select_commit_torch
from engine_cases import engine, prompts, tiny_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_row_pass_on_cuda_matches_reference(dtype):
    g = torch.Generator().manual_seed(0)
    r, v = 96, 155136
    logits = (torch.randn(r, v, generator=g) * 3).to(dtype)
    opts = dict(
        temperature=torch.rand(r, generator=g), seed=torch.randint(0, 2**62, (r,), generator=g),
        pos=torch.randint(0, 4096, (r,), generator=g), step=torch.randint(0, 64, (r,), generator=g),
        bias_token=torch.full((r,), -1, dtype=torch.long), bias_value=torch.zeros(r),
        suppress_ids=torch.tensor([1]), suppress_row=torch.rand(r, generator=g) < 0.5,
        conf_block_ids=torch.tensor([2]), conf_block_row=torch.ones(r, dtype=torch.bool),
        random_conf=torch.zeros(r, dtype=torch.bool),
    )
    # Imported here, not at collection: importing triton fixes TRITON_INTERPRET for the whole
    # session, and the kernel tests set it to 1 in their own conftest.
    from diffuserve.kernels.triton_row import row_pass_triton

    want_tok, want_conf = row_pass_torch(logits, RowOptions(**opts))
    cuda = {k: t.cuda() for k, t in opts.items()}
    tok, conf = row_pass_triton(logits.cuda(), RowOptions(**cuda))
    assert torch.equal(tok.cpu(), want_tok)
    tol = 1e-5 if dtype == torch.float32 else 1e-3
    assert torch.allclose(conf.cpu(), want_conf, rtol=tol, atol=1e-7)


def test_triton_select_on_cuda_matches_reference():
    from diffuserve.kernels.triton_select import select_commit_triton

    g = torch.Generator().manual_seed(1)
    conf = torch.rand(40, generator=g)
    offsets = torch.tensor([0, 10, 25, 40])
    k, thr = torch.tensor([3, 0, 15]), torch.tensor([-1.0, 0.5, -1.0])
    tokens = torch.randint(10, 99, (40,), generator=g)
    canvas = torch.full((40,), 5)
    index = torch.arange(40)
    want = canvas.clone()
    want_mask = select_commit_torch(conf, tokens, CommitPlan(offsets, k, thr, want, index))
    got = canvas.cuda()
    mask = select_commit_triton(conf.cuda(), tokens.cuda(), CommitPlan(offsets.cuda(), k.cuda(), thr.cuda(),
                                                                       got, index.cuda()))
    assert torch.equal(mask.cpu(), want_mask) and torch.equal(got.cpu(), want)


@pytest.mark.parametrize("backend", ["torch_varlen", "flash_attn"])
def test_cuda_attention_backends_equal_torch_backend(backend):
    if backend == "flash_attn" and importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash-attn is not installed")
    model, cfg = tiny_model()
    model = model.cuda()
    page = 256 if backend == "flash_attn" else 16
    ps = prompts((5, 40, 77))
    params = DiffusionParams(max_tokens=24, block_length=8)
    runs = {}
    for name in ("torch", backend):
        runs[name] = engine(model, cfg, attention_backend=name, kv_page_size=page, device="cuda").generate(
            ps, params)
    want, got = runs["torch"], runs[backend]
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
