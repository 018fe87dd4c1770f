"""Triton selection pass (interpreted on the CPU) against the PyTorch reference."""

from __future__ import annotations

import pytest
import torch
from diffuserve.kernels import CommitPlan
from diffuserve.kernels.torch_kernels import select_commit_torch
from diffuserve.kernels.triton_select import BLOCK, select_commit_triton


def _case(lengths: list[int], gen_seed: int, ties: bool = False):
    g = torch.Generator().manual_seed(gen_seed)
    offsets = torch.tensor([0, *lengths]).cumsum(0)
    n = int(offsets[-1])
    conf = torch.rand(n, generator=g) * 0.9 + 0.05
    if ties:  # few distinct values: many ties, -inf among them
        conf = torch.tensor([0.25, 0.5, 0.75, float("-inf")])[torch.randint(0, 4, (n,), generator=g)]
    tokens = torch.randint(0, 50000, (n,), generator=g)
    canvas_len = n + 40
    canvas_index = torch.randperm(canvas_len, generator=g)[:n]
    canvas = torch.full((canvas_len,), -7, dtype=torch.long)
    return conf, offsets, tokens, canvas, canvas_index


def _run_both(conf, offsets, k, thr, tokens, canvas, canvas_index):
    canvas_ref = canvas.clone()
    ref = select_commit_torch(conf, tokens, CommitPlan(offsets, k, thr, canvas_ref, canvas_index))
    out = torch.ones(conf.numel(), dtype=torch.bool)  # poisoned: every row "committed"
    got = select_commit_triton(conf, tokens, CommitPlan(offsets, k, thr, canvas,
                                                        canvas_index), out_committed=out)
    assert got.data_ptr() == out.data_ptr()
    assert torch.equal(got, ref)
    assert torch.equal(canvas, canvas_ref)
    return got


@pytest.mark.parametrize("ties", [False, True])
def test_top_k_matches_reference(ties):
    lengths = [5, 0, 1, 32, 2 * BLOCK + 7, 9, 3]
    conf, offsets, tokens, canvas, index = _case(lengths, gen_seed=1, ties=ties)
    k = torch.tensor([2, 4, 1, 3, 20, 0, 99])  # k = 0 and k > rows included
    thr = torch.full((len(lengths),), -1.0)
    got = _run_both(conf, offsets, k, thr, tokens, canvas, index)
    per_seq = [int(got[int(offsets[b]) : int(offsets[b + 1])].sum()) for b in range(len(lengths))]
    assert per_seq == [2, 0, 1, 3, 20, 0, 3]


def test_k_zero_commits_nothing_and_k_all_commits_all():
    conf, offsets, tokens, canvas, index = _case([6, 6], gen_seed=2)
    before = canvas.clone()
    got = _run_both(conf, offsets, torch.tensor([0, 6]), torch.tensor([-1.0, -1.0]), tokens, canvas, index)
    assert not got[:6].any() and got[6:].all()
    assert torch.equal(canvas[index[:6]], before[index[:6]]) and torch.equal(canvas[index[6:]], tokens[6:])


def test_threshold_commits_at_least_the_best():
    conf, offsets, tokens, canvas, index = _case([8, 8, 40], gen_seed=3)
    thr = torch.tensor([2.0, 0.5, 0.3])  # above every confidence for sequence 0
    got = _run_both(conf, offsets, torch.tensor([0, 0, 0]), thr, tokens, canvas, index)
    assert int(got[:8].sum()) == 1 and bool(got[int(torch.argmax(conf[:8]))])
    assert torch.equal(got[8:16], (conf[8:16] >= 0.5) | (conf[8:16] == conf[8:16].max()))


def test_ties_and_minus_inf_follow_row_order():
    conf = torch.tensor([0.5, float("-inf"), 0.5, 0.9, float("-inf"), 0.5])
    offsets = torch.tensor([0, 6])
    tokens = torch.arange(100, 106)
    canvas = torch.zeros(6, dtype=torch.long)
    got = _run_both(conf, offsets, torch.tensor([5]), torch.tensor([-1.0]), tokens, canvas, torch.arange(6))
    assert got.tolist() == [True, True, True, True, False, True]  # -inf row 1 before -inf row 4


def test_mixed_k_and_threshold_sequences():
    conf, offsets, tokens, canvas, index = _case([BLOCK + 1, 10, 3], gen_seed=4, ties=True)
    _run_both(conf, offsets, torch.tensor([3, 5, 1]), torch.tensor([0.5, -1.0, 0.8]), tokens, canvas, index)


def test_empty_inputs():
    empty_f, empty_i = torch.empty(0), torch.empty(0, dtype=torch.long)
    canvas = torch.zeros(3, dtype=torch.long)
    offsets, k, thr = torch.tensor([0, 0]), torch.tensor([2]), torch.tensor([-1.0])
    got = select_commit_triton(empty_f, empty_i, CommitPlan(offsets, k, thr, canvas, empty_i))
    assert got.shape == (0,) and not canvas.any()
