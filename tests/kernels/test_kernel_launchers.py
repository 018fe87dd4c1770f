"""The launchers and the public API reject bad arguments with messages that name them."""

from __future__ import annotations

import pytest
import torch
from diffuserve.kernels import CommitPlan, KernelArgError, RowOptions, backend_for, row_pass, select_commit
from diffuserve.kernels.triton_row import row_pass_triton
from diffuserve.kernels.triton_select import select_commit_triton
from kernel_cases import make_rows


@pytest.mark.parametrize("fn", [row_pass, row_pass_triton])
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda lg, o: (lg.to(torch.int32), o), "bfloat16, float16 or float32"),
        (lambda lg, o: (lg[None], o), "2-D"),
        (lambda lg, o: (lg.t().contiguous().t(), o), "unit stride along the vocabulary"),
        (lambda lg, o: (lg, {**o, "seed": o["seed"].int()}), "seed must be torch.int64"),
        (lambda lg, o: (lg, {**o, "temperature": o["temperature"][:2]}), "temperature must have 3 entries"),
        (lambda lg, o: (lg, {**o, "pos": torch.zeros(3, 2).long()[:, 0]}), "pos must be contiguous"),
        (lambda lg, o: (lg, {**o, "suppress_row": o["suppress_row"].long()}), "suppress_row must be torch.b"),
        (lambda lg, o: (lg, {**o, "step": o["step"].to("meta")}), "step is on meta"),
        (lambda lg, o: (lg, {**o, "suppress_ids": torch.zeros(1, 1).long()}), "suppress_ids must be 1-D"),
        (lambda lg, o: (lg[:, :0], o), "empty vocabulary"),
    ],
)  # fmt: skip
def test_row_pass_argument_errors(fn, change, message):
    logits, opts = make_rows(3, 40)
    logits, opts = change(logits, opts)
    with pytest.raises(KernelArgError, match=message):
        fn(logits, RowOptions(**opts))


@pytest.mark.parametrize("fn", [row_pass, row_pass_triton])
def test_row_pass_out_buffer_errors(fn):
    logits, opts = make_rows(3, 40)
    with pytest.raises(KernelArgError, match="out_token must be torch.int64"):
        fn(logits, RowOptions(**opts), out_token=torch.empty(3, dtype=torch.int32))
    with pytest.raises(KernelArgError, match="out_conf must have 3 entries"):
        fn(logits, RowOptions(**opts), out_conf=torch.empty(4))


def _select_args():
    return dict(
        confidence=torch.rand(4), offsets=torch.tensor([0, 1, 4]), k=torch.tensor([1, 1]),
        threshold=torch.tensor([-1.0, -1.0]), tokens=torch.arange(4), canvas=torch.zeros(4, dtype=torch.long),
        canvas_index=torch.arange(4),
    )  # fmt: skip


@pytest.mark.parametrize("fn", [select_commit, select_commit_triton])
@pytest.mark.parametrize(
    "name, value, message",
    [
        ("confidence", torch.rand(4).double(), "confidence must be torch.float32"),
        ("offsets", torch.empty(0, dtype=torch.long), "offsets must have B\\+1 >= 1"),
        ("k", torch.tensor([1]), "k must have 2 entries"),
        ("threshold", torch.tensor([0.5, 0.5]).half(), "threshold must be torch.float32"),
        ("tokens", torch.arange(4).int(), "tokens must be torch.int64"),
        ("canvas_index", torch.arange(8)[::2], "canvas_index must be contiguous"),
    ],
)
def test_select_argument_errors(fn, name, value, message):
    args = _select_args()
    args[name] = value
    confidence, tokens = args.pop("confidence"), args.pop("tokens")
    with pytest.raises(KernelArgError, match=message):
        fn(confidence, tokens, CommitPlan(**args))


def test_backend_choice(monkeypatch):
    monkeypatch.delenv("DIFFUSERVE_KERNELS", raising=False)
    assert backend_for(torch.device("cpu")) == "torch"
    monkeypatch.setenv("DIFFUSERVE_KERNELS", "triton")
    assert backend_for(torch.device("cpu")) == "triton"
    monkeypatch.setenv("DIFFUSERVE_KERNELS", "cuda-please")
    with pytest.raises(ValueError, match="DIFFUSERVE_KERNELS"):
        backend_for(torch.device("cpu"))


def test_forced_triton_on_cpu_runs_the_kernels(monkeypatch):
    # With TRITON_INTERPRET=1 (set by conftest) the public API runs the Triton path on the CPU.
    monkeypatch.setenv("DIFFUSERVE_KERNELS", "triton")
    logits, opts = make_rows(2, 100, temperature=1.0)
    monkeypatch.setattr("diffuserve.kernels.row_pass_torch", None)  # the torch path would fail
    tok, conf = row_pass(logits, RowOptions(**opts))
    assert tok.shape == (2,) and torch.isfinite(conf).all()
