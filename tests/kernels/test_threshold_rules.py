"""The parallel decoding rules of the selection pass (threshold, Fast-dLLM's factor rule, the
per-step cap): the kernels' contract (at least one commit per sequence and step, never a mask
token), the factor rule against its definition, and the Triton kernel (interpreted) against the
PyTorch path."""

from __future__ import annotations

import pytest
import torch
from diffuserve.engine.denoise import Denoiser
from diffuserve.engine.model_config import ModelConfig
from diffuserve.engine.oracle import pick_commits
from diffuserve.engine.params import DiffusionParams, ParamError
from diffuserve.kernels import CommitPlan, select_commit
from diffuserve.kernels.torch_kernels import select_commit_torch
from diffuserve.kernels.triton_select import select_commit_triton

MASK = 99


def _case(lengths: list[int], gen_seed: int, ties: bool = False):
    g = torch.Generator().manual_seed(gen_seed)
    offsets = torch.tensor([0, *lengths]).cumsum(0)
    n = int(offsets[-1])
    # Confidences near 1 as well as low ones, so the factor rule commits several rows at times.
    conf = 1.0 - torch.rand(n, generator=g) ** 3
    if ties:
        conf = torch.tensor([0.99, 0.9, 0.5, float("-inf")])[torch.randint(0, 4, (n,), generator=g)]
    tokens = torch.randint(0, MASK, (n,), generator=g)  # candidates are never the mask (see Denoiser)
    canvas = torch.full((n + 5,), MASK, dtype=torch.long)
    index = torch.randperm(n + 5, generator=g)[:n]
    return conf, offsets, tokens, canvas, index


def _factor_count(conf: list[float], factor: float) -> int:
    """The definition: the largest n with (n + 1) * (1 - c_n) < factor over the sorted confidences
    (searched over every n, not assumed to be a prefix), at least one."""
    c = sorted(conf, reverse=True)
    ok = [n for n in range(1, len(c) + 1)
          if float(torch.tensor(n + 1.0) * (1.0 - torch.tensor(c[n - 1]))) < factor]
    return max([1, *ok])


def _rules(n_seqs: int, gen_seed: int):
    """Per sequence, one of: schedule (k), threshold, factor; and a cap on some."""
    g = torch.Generator().manual_seed(gen_seed)
    kind = torch.randint(0, 3, (n_seqs,), generator=g)
    k = torch.randint(1, 6, (n_seqs,), generator=g)
    thr = torch.where(kind == 1, torch.rand(n_seqs, generator=g), torch.tensor(-1.0))
    factor = torch.where(kind == 2, torch.rand(n_seqs, generator=g) * 4 + 0.1, torch.tensor(-1.0))
    cap = torch.where(kind > 0, torch.randint(1, 8, (n_seqs,), generator=g), torch.tensor(10_000))
    return k, thr, factor, cap


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("gen_seed", range(4))
def test_every_rule_commits_at_least_one_and_never_a_mask(gen_seed, ties):
    lengths = [1, 7, 32, 0, 3, 40, 16, 2]
    conf, offsets, tokens, canvas, index = _case(lengths, gen_seed, ties)
    k, thr, factor, cap = _rules(len(lengths), gen_seed)
    committed = select_commit(conf, tokens, CommitPlan(offsets, k, thr, canvas, index, factor=factor,
                                                       max_commits=cap))
    for b, n in enumerate(lengths):
        rows = slice(int(offsets[b]), int(offsets[b + 1]))
        got = int(committed[rows].sum())
        if n:
            assert 1 <= got <= max(1, int(cap[b])), (b, got)
    # Committed rows hold their (non-mask) candidate; every other canvas position keeps the mask.
    assert torch.equal(canvas[index[committed]], tokens[committed])
    assert (canvas[index[~committed]] == MASK).all()
    assert int((canvas != MASK).sum()) == int(committed.sum())


@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0, 4.0])
def test_factor_rule_commits_the_defined_count_of_best_rows(factor):
    lengths = [32, 8, 1, 17]
    conf, offsets, tokens, canvas, index = _case(lengths, gen_seed=11)
    n = len(lengths)
    committed = select_commit_torch(conf, tokens, CommitPlan(offsets, torch.ones(n, dtype=torch.long),
                                                             torch.full((n,), -1.0), canvas, index,
                                                             factor=torch.full((n,), factor),
                                                             max_commits=torch.full((n,), 1000)))
    counts = []
    for b in range(n):
        lo, hi = int(offsets[b]), int(offsets[b + 1])
        c = conf[lo:hi]
        want = _factor_count(c.tolist(), factor)
        assert int(committed[lo:hi].sum()) == want
        # ... and they are the best ones
        rest = c[~committed[lo:hi]]
        assert not rest.numel() or c[committed[lo:hi]].min() >= rest.max()
        counts.append(want)
    if factor >= 2.0:
        assert max(counts) > 1  # the rule is not trivially one token a step on these confidences


def test_factor_rule_examples():
    # (n + 1) * (1 - c_n): 2 * 0.01, 3 * 0.05, 4 * 0.2, 5 * 0.3
    conf = torch.tensor([0.7, 0.99, 0.8, 0.95])
    for factor, want in ((0.01, 1), (0.12, 1), (0.2, 2), (0.7, 2), (0.9, 3), (2.0, 4)):
        canvas = torch.full((4,), MASK)
        select_commit_torch(conf, torch.arange(4), CommitPlan(torch.tensor([0, 4]), torch.tensor([1]),
                                                              torch.tensor([-1.0]), canvas, torch.arange(4),
                                                              factor=torch.tensor([factor])))
        assert int((canvas != MASK).sum()) == want, factor
    # the cap keeps the best rows
    canvas = torch.full((4,), MASK)
    select_commit_torch(conf, torch.arange(4), CommitPlan(torch.tensor([0, 4]), torch.tensor([1]),
                                                          torch.tensor([-1.0]), canvas, torch.arange(4),
                                                          factor=torch.tensor([2.0]),
                                                          max_commits=torch.tensor([2])))
    assert canvas.tolist() == [MASK, 1, MASK, 3]


@pytest.mark.parametrize("ties", [False, True])
def test_triton_matches_torch_for_factor_and_cap(ties):
    lengths = [5, 0, 1, 32, 71, 9, 3]
    conf, offsets, tokens, canvas, index = _case(lengths, gen_seed=3, ties=ties)
    k, thr, factor, cap = _rules(len(lengths), gen_seed=3)
    canvas_ref = canvas.clone()
    ref = select_commit_torch(conf, tokens, CommitPlan(offsets, k, thr, canvas_ref, index, factor=factor,
                                                       max_commits=cap))
    got = select_commit_triton(conf, tokens, CommitPlan(offsets, k, thr, canvas, index, factor=factor,
                                                        max_commits=cap))
    assert torch.equal(got, ref) and torch.equal(canvas, canvas_ref)


@pytest.mark.parametrize("gen_seed", range(3))
def test_oracle_picks_the_rows_the_kernel_commits(gen_seed):
    conf, offsets, tokens, canvas, index = _case([24], gen_seed)
    masked = torch.ones(24, dtype=torch.bool)
    for thr, factor, cap in ((0.9, None, None), (None, 1.5, None), (0.5, None, 3), (None, 3.0, 2)):
        c = canvas.clone()
        plan = CommitPlan(offsets, torch.tensor([1]), torch.tensor([-1.0 if thr is None else thr]), c, index,
                          factor=torch.tensor([-1.0 if factor is None else factor]),
                          max_commits=torch.tensor([cap or 24]))
        committed = select_commit_torch(conf, tokens, plan)
        picked = sorted(pick_commits(conf, masked, None, thr, factor, cap))
        assert picked == committed.nonzero()[:, 0].tolist()


def _tiny_cfg() -> ModelConfig:
    return ModelConfig(family="llada", vocab_size=128, hidden_size=8, num_layers=1, num_heads=1,
                       num_kv_heads=1, head_dim=8, intermediate_size=8, norm_eps=1e-5, norm_type="rms",
                       rope_theta=10000.0, tie_embeddings=False, qkv_bias=False, shift_logits=False,
                       max_length=64, mask_token_id=MASK, stop_token_ids=(3,))


@pytest.mark.parametrize("rule", [{"threshold": 0.9}, {"threshold_factor": 1.0},
                                  {"threshold_factor": 8.0, "max_commits_per_step": 2}])
def test_denoiser_never_commits_the_mask_even_when_the_model_prefers_it(rule):
    """Logits where the mask id dominates every row: the Denoiser removes it from the candidates,
    and each rule still commits at least one real token."""
    from diffuserve.engine.sequence import Sequence

    cfg = _tiny_cfg()
    params = DiffusionParams(max_tokens=8, block_length=8, canvas="fixed", **rule)
    seq = Sequence("r", [5, 6], params, cfg, [])
    plan = seq.plan(64)
    den = Denoiser(cfg, torch.device("cpu"))
    rows = den.prepare([(seq, plan)])
    logits = torch.randn(len(plan.mask_cols), cfg.vocab_size, generator=torch.Generator().manual_seed(1))
    logits[:, MASK] = 50.0
    canvas, bad = den.commit(logits, rows)
    block = canvas.tolist()
    assert not bad.any()
    n = sum(t != MASK for t in block)
    assert 1 <= n <= rule.get("max_commits_per_step", 8)


def test_params_rules_are_validated():
    with pytest.raises(ParamError) as e:
        DiffusionParams(threshold=0.9, threshold_factor=1.0)
    assert e.value.param == "threshold_factor"
    for bad in (0.0, -1.0, float("nan"), 2000.0, "1"):
        with pytest.raises(ParamError) as e:
            DiffusionParams(threshold_factor=bad)
        assert e.value.param == "threshold_factor"
    with pytest.raises(ParamError) as e:
        DiffusionParams(max_commits_per_step=2)  # the schedule rule fixes the count already
    assert e.value.param == "max_commits_per_step"
    for bad in (0, 1.5, True):
        with pytest.raises(ParamError) as e:
            DiffusionParams(threshold=0.9, max_commits_per_step=bad)
        assert e.value.param == "max_commits_per_step"
    assert DiffusionParams(threshold_factor=1.0, max_commits_per_step=4).max_commits_per_step == 4
