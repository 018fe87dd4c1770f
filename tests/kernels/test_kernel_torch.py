"""The PyTorch reference against a direct, row-by-row statement of the semantics."""

from __future__ import annotations

import pytest
import torch
from diffuserve.kernels import CommitPlan, RowOptions, noise, row_pass, select_commit
from diffuserve.kernels.torch_kernels import row_pass_torch, select_commit_torch
from kernel_cases import make_rows, take_rows


def _naive_row(x: torch.Tensor, o: dict[str, torch.Tensor], i: int) -> tuple[int, float]:
    """One row, written out step by step with the scalar-seed noise spec."""
    x = x.float().clone()
    if int(o["bias_token"][i]) >= 0:
        x[int(o["bias_token"][i])] += float(o["bias_value"][i])
    if bool(o["suppress_row"][i]):
        x[o["suppress_ids"]] = float("-inf")
    seed, pos, step = int(o["seed"][i]), o["pos"][i : i + 1], o["step"][i : i + 1]
    t = float(o["temperature"][i])
    y = x + t * noise.gumbel(seed, pos, step, x.numel())[0] if t > 0 else x
    tok = int(torch.argmax(y))
    conf = float(torch.softmax(x, 0)[tok])
    if bool(o["random_conf"][i]):
        conf = float(noise.remask_scores(seed, pos, step)[0])
    if bool(o["conf_block_row"][i]) and tok in o["conf_block_ids"].tolist():
        conf = float("-inf")
    return tok, conf


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_pass_torch_matches_naive(dtype):
    logits, o = make_rows(12, 301, dtype, gen_seed=1, temperature=[0.0, 0.7, 1.3] * 4)
    o["bias_token"][::3] = torch.tensor([5, 17, 300, 2])
    o["bias_value"][::3] = 50.0
    o["suppress_ids"] = torch.tensor([17, 9, 300])
    o["suppress_row"][::2] = True
    o["conf_block_ids"] = torch.tensor([5, 2])
    o["conf_block_row"][:6] = True
    o["random_conf"][1::4] = True
    tok, conf = row_pass_torch(logits, RowOptions(**o))
    for i in range(12):
        t, c = _naive_row(logits[i], o, i)
        assert int(tok[i]) == t
        assert float(conf[i]) == pytest.approx(c, rel=1e-6)
    # bias and suppression really acted: row 0 has token 5 boosted by 50 and not suppressed
    assert int(tok[0]) == 5 and conf[0] == float("-inf")


def test_row_scalar_and_tensor_seed_noise_agree():
    seeds = torch.tensor([0, 1, 2**40 + 3, 2**63 - 1])
    pos, step = torch.tensor([0, 5, 7, 4095]), torch.tensor([0, 1, 2, 63])
    rows = noise.gumbel_rows(seeds, pos, step, 50)
    for i, s in enumerate(seeds.tolist()):
        assert torch.equal(rows[i], noise.gumbel(s, pos[i : i + 1], step[i : i + 1], 50)[0])
        assert torch.equal(
            noise.remask_scores_rows(seeds, pos, step)[i],
            noise.remask_scores(s, pos[i : i + 1], step[i : i + 1])[0],
        )


def test_row_pass_torch_chunks_and_strided_view():
    # More rows than one chunk, and a row-strided view: same as row by row.
    base, o = make_rows(20, 2 * 300, gen_seed=2, temperature=0.9)
    logits = base[:, :300]  # row stride 600
    import diffuserve.kernels.torch_kernels as ref

    old, ref._CHUNK_ELEMS = ref._CHUNK_ELEMS, 1000  # 3 rows per chunk
    try:
        tok, conf = row_pass_torch(logits, RowOptions(**o))
    finally:
        ref._CHUNK_ELEMS = old
    tok2, conf2 = row_pass_torch(logits.contiguous(), RowOptions(**o))
    assert torch.equal(tok, tok2) and torch.equal(conf, conf2)
    assert torch.equal(base[:, :300], logits)  # the caller's logits are not modified


def _naive_select(conf, offsets, k, thr):
    out = torch.zeros(conf.numel(), dtype=torch.bool)
    for b in range(k.numel()):
        lo, hi = int(offsets[b]), int(offsets[b + 1])
        ranked = sorted(range(lo, hi), key=lambda i: (-float(conf[i]), i))
        if float(thr[b]) >= 0:
            chosen = [i for i in range(lo, hi) if float(conf[i]) >= float(thr[b])] + ranked[:1]
        else:
            chosen = ranked[: int(k[b])]
        out[chosen] = True
    return out


def test_select_commit_torch_matches_naive():
    g = torch.Generator().manual_seed(3)
    lengths = [5, 0, 1, 9, 4, 7]
    offsets = torch.tensor([0] + lengths).cumsum(0)
    n = int(offsets[-1])
    conf = torch.rand(n, generator=g)
    conf[[3, 4, 10, 12]] = 0.5  # ties
    conf[[11, 13]] = float("-inf")
    k = torch.tensor([2, 3, 0, 20, 1, 3])
    thr = torch.tensor([-1.0, -1.0, 0.99, -1.0, 2.0, 0.4])
    tokens = torch.randint(0, 1000, (n,), generator=g)
    canvas = torch.full((100,), -7, dtype=torch.long)
    index = torch.randperm(100, generator=g)[:n]
    committed = select_commit_torch(conf, tokens, CommitPlan(offsets, k, thr, canvas, index))
    assert torch.equal(committed, _naive_select(conf, offsets, k, thr))
    expect = torch.full((100,), -7, dtype=torch.long)
    expect[index[committed]] = tokens[committed]
    assert torch.equal(canvas, expect)


def test_public_api_dispatches_to_torch_on_cpu(monkeypatch):
    monkeypatch.delenv("DIFFUSERVE_KERNELS", raising=False)
    logits, o = make_rows(3, 64, gen_seed=4, temperature=1.0)
    tok, conf = row_pass(logits, RowOptions(**o))
    tok2, conf2 = row_pass_torch(logits, RowOptions(**take_rows(o, torch.arange(3))))
    assert torch.equal(tok, tok2) and torch.equal(conf, conf2)
    canvas = torch.zeros(3, dtype=torch.long)
    offsets = torch.tensor([0, 3])
    committed = select_commit(conf, tok, CommitPlan(offsets, torch.tensor([1]), torch.tensor([-1.0]), canvas,
                                                    torch.arange(3)))
    assert int(committed.sum()) == 1 and int(canvas[int(conf.argmax())]) == int(tok[int(conf.argmax())])
