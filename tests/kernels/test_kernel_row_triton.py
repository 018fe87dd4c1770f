"""Triton row pass (run by Triton's interpreter on the CPU) against the PyTorch reference."""

from __future__ import annotations

import pytest
import torch
from diffuserve.kernels import RowOptions, noise
from diffuserve.kernels.torch_kernels import row_pass_torch
from diffuserve.kernels.triton_row import SPLIT, row_pass_triton
from kernel_cases import make_rows, take_rows

REL_TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-3, torch.float16: 1e-3}


def _with_options(o: dict[str, torch.Tensor], vocab: int) -> dict[str, torch.Tensor]:
    """Turns on every per-row option on some of the (at least 3) rows."""
    o["bias_token"][0] = vocab - 1  # the last id, in the padded tail tile
    o["bias_value"][0] = 1e4
    o["bias_token"][-1] = 7
    o["bias_value"][-1] = -2.5
    o["suppress_ids"] = torch.tensor([vocab - 2, 11, 3])
    o["suppress_row"][1::2] = True
    o["conf_block_ids"] = torch.tensor([vocab - 1, 5])
    o["conf_block_row"][0] = True
    o["random_conf"][2] = True
    return o


def _biased_float64(logits: torch.Tensor, o: dict[str, torch.Tensor]) -> torch.Tensor:
    x = logits.double()
    for i in range(x.shape[0]):
        if o["bias_token"][i] >= 0:
            x[i, o["bias_token"][i]] += float(o["bias_value"][i])
        if o["suppress_row"][i]:
            x[i, o["suppress_ids"]] = float("-inf")
    return x


def _assert_matches_reference(logits, o, dtype):
    tok, conf = row_pass_triton(logits, RowOptions(**o))
    ref_tok, ref_conf = row_pass_torch(logits, RowOptions(**o))
    assert torch.equal(tok, ref_tok)
    finite = torch.isfinite(ref_conf)
    assert torch.equal(finite, torch.isfinite(conf))
    torch.testing.assert_close(conf[finite], ref_conf[finite], rtol=REL_TOL[dtype], atol=0)
    return tok, conf


@pytest.mark.parametrize(
    "vocab, dtype",
    [(155136, torch.float32), (155136, torch.bfloat16), (12347, torch.float32), (12347, torch.bfloat16),
     (301, torch.float16), (1, torch.float32)],
)  # fmt: skip
def test_row_pass_matches_reference(vocab, dtype):
    n_rows = 3 if vocab > 100000 else 6
    temps = [0.0, 0.8, 1.7, 0.0, 0.3, 1.0][:n_rows]
    logits, o = make_rows(n_rows, vocab, dtype, gen_seed=vocab, temperature=temps)
    if vocab > 1:
        o = _with_options(o, vocab)
    tok, conf = _assert_matches_reference(logits, o, dtype)
    if vocab > 1:
        assert int(tok[0]) == vocab - 1 and conf[0] == float("-inf")  # bias won, confidence blocked
        assert not torch.isin(tok[1::2], o["suppress_ids"]).any()
        assert conf[2] == noise.remask_scores_rows(o["seed"][2:3], o["pos"][2:3], o["step"][2:3])[0]
    if dtype == torch.float32:  # the kernel's own accuracy, against float64
        exact = torch.softmax(_biased_float64(logits, o), 1).gather(1, tok[:, None])[:, 0].float()
        keep = torch.isfinite(conf) & ~o["random_conf"]
        torch.testing.assert_close(conf[keep], exact[keep], rtol=2e-6, atol=0)


def test_noise_matches_the_spec_bit_for_bit():
    # At temperature 1e4 the noise decides the argmax, so any hash difference changes the token.
    logits, o = make_rows(16, 3 * SPLIT + 5, gen_seed=7, temperature=1e4, scale=1e-3)
    tok, _ = row_pass_triton(logits, RowOptions(**o))
    noise_only = torch.argmax(noise.gumbel_rows(o["seed"], o["pos"], o["step"], logits.shape[1]), dim=1)
    assert torch.equal(tok, noise_only)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ties_go_to_the_lowest_id(dtype):
    # Integer logits in a narrow range: every row has many tied maxima, across lanes and splits.
    vocab = 2 * SPLIT + 77
    g = torch.Generator().manual_seed(11)
    logits = torch.randint(-6, 3, (5, vocab), generator=g).to(dtype)
    logits[0, :] = -3.0
    logits[0, [SPLIT + 5, 2 * SPLIT + 1, vocab - 1]] = 4.0  # the max only in later splits
    _, o = make_rows(5, vocab, gen_seed=12)
    o["bias_token"][1] = int(torch.argmax(logits[1].float()))
    o["bias_value"][1] = -1.0  # knocks the first maximum out: the next tied one must win
    tok, _ = _assert_matches_reference(logits, o, dtype)
    assert int(tok[0]) == SPLIT + 5


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # its confidence is 0/0, as in torch
def test_all_suppressed_row_gives_id_zero_like_torch_argmax():
    logits, o = make_rows(2, 40, gen_seed=13)
    o["suppress_ids"] = torch.arange(40)
    o["suppress_row"][1] = True
    tok, _ = row_pass_triton(logits, RowOptions(**o))
    ref_tok, _ = row_pass_torch(logits, RowOptions(**o))
    assert int(tok[1]) == 0 == int(ref_tok[1]) and torch.equal(tok, ref_tok)


def test_same_seed_same_result_whatever_the_batch():
    vocab = SPLIT + 300
    logits, o = make_rows(6, vocab, gen_seed=21, temperature=[0.0, 1.0, 2.0, 0.5, 1.0, 0.7])
    o["random_conf"][4] = True
    tok, conf = row_pass_triton(logits, RowOptions(**o))
    # The same rows reversed, interleaved with unrelated rows, in a row-strided buffer.
    others, other_o = make_rows(6, vocab, gen_seed=22, temperature=1.3)
    order = torch.arange(5, -1, -1)
    mixed = torch.stack([others, logits[order]], dim=1).reshape(12, vocab)
    merged = {
        k: (v if k.endswith("_ids") else torch.stack([other_o[k], v[order]], 1).reshape(12))
        for k, v in o.items()
    }
    wide = torch.full((12, vocab + 64), 1e9)
    wide[:, :vocab] = mixed
    tok2, conf2 = row_pass_triton(wide[:, :vocab], RowOptions(**merged))
    assert torch.equal(tok2[1::2], tok[order]) and torch.equal(conf2[1::2], conf[order])
    # And one row alone.
    one = take_rows(o, torch.tensor([2]))
    tok3, conf3 = row_pass_triton(logits[2:3], RowOptions(**one))
    assert int(tok3[0]) == int(tok[2]) and float(conf3[0]) == float(conf[2])


def test_output_buffers_fully_written():
    logits, o = make_rows(7, 999, gen_seed=31, temperature=0.9)
    out_tok = torch.full((7,), -12345, dtype=torch.long)
    out_conf = torch.full((7,), float("nan"))
    tok, conf = row_pass_triton(logits, RowOptions(**o), out_token=out_tok, out_conf=out_conf)
    assert tok.data_ptr() == out_tok.data_ptr() and conf.data_ptr() == out_conf.data_ptr()
    ref_tok, ref_conf = row_pass_torch(logits, RowOptions(**o))
    assert torch.equal(out_tok, ref_tok)
    torch.testing.assert_close(out_conf, ref_conf, rtol=1e-5, atol=0)


def test_empty_batch():
    logits, o = make_rows(0, 50)
    tok, conf = row_pass_triton(logits, RowOptions(**o))
    assert tok.shape == (0,) and conf.shape == (0,)
