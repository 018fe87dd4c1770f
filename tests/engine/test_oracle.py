"""Properties of the exact reference samplers, driven by a scripted model whose logits we choose.

The sampler is the unit under test here, so the model is a small scripted module
(the real model is covered by test_loader.py and by the engine-vs-reference tests).
"""

from __future__ import annotations

import pytest
import torch
from diffuserve.engine.decoding import think_bias
from diffuserve.engine.model_config import ModelConfig
from diffuserve.engine.oracle import generate_fixed, generate_variable, llada_generate
from diffuserve.engine.params import DiffusionParams, ParamError, transfer_schedule
from torch import nn

V, MASK, EOS = 64, 5, 1
CFG = ModelConfig.from_hf({
    "model_type": "illada", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1,
    "intermediate_size": 8, "vocab_size": V, "eos_token_id": EOS, "max_position_embeddings": 512,
})


class ScriptedModel(nn.Module):
    """logits[b, t] = script(row ids, t); records every canvas it is called on."""

    def __init__(self, script):
        super().__init__()
        self.embed = nn.Embedding(V, 1)
        self.script = script
        self.calls: list[torch.Tensor] = []

    def forward(self, ids, attention_mask=None):
        self.calls.append(ids.clone())
        out = torch.zeros(*ids.shape, V)
        for b in range(ids.shape[0]):
            start = int((~attention_mask[b]).sum()) if attention_mask is not None else 0
            for t in range(ids.shape[1]):
                out[b, t] = self.script(ids[b, start:], t - start)
        return out


def random_script(seed: int):
    table = torch.randn(512, V, generator=torch.Generator().manual_seed(seed)) * 3
    table[:, EOS] = -30.0  # no early stop, so lengths are predictable
    return lambda row, t: table[t]


def test_schedule_counts_and_commits_are_final():
    model = ScriptedModel(random_script(0))
    prompt = [9, 10, 11]
    params = DiffusionParams(max_tokens=16, block_length=8, steps=3, canvas="fixed")
    generate_fixed(model, CFG, [prompt], params)
    assert len(model.calls) == 6  # 2 blocks x 3 steps
    committed_per_step = []
    for before, after in zip(model.calls, model.calls[1:], strict=False):
        b, a = before[0, len(prompt):], after[0, len(prompt):]
        was, now = b != MASK, a != MASK
        assert torch.equal(a[was], b[was]), "a committed token changed"
        committed_per_step.append(int((now & ~was).sum()))
    assert transfer_schedule(8, 3) == [3, 3, 2]
    assert committed_per_step == [3, 3, 2, 3, 3]  # the last step's commits are after the last call


def test_temperature_zero_deterministic_and_seeded_sampling_reproducible():
    p = DiffusionParams(max_tokens=16, block_length=8)
    a = generate_variable(ScriptedModel(random_script(1)), CFG, [[7, 8]], p)
    b = generate_variable(ScriptedModel(random_script(1)), CFG, [[7, 8]], p)
    assert a[0].token_ids == b[0].token_ids and len(a[0].token_ids) == 16
    hot = p.replace(temperature=2.0, seed=42)
    c = generate_variable(ScriptedModel(random_script(1)), CFG, [[7, 8]], hot)
    d = generate_variable(ScriptedModel(random_script(1)), CFG, [[7, 8]], hot)
    e = generate_variable(ScriptedModel(random_script(1)), CFG, [[7, 8]], hot.replace(seed=43))
    assert c[0].token_ids == d[0].token_ids != a[0].token_ids
    assert e[0].token_ids != c[0].token_ids


def _answer_index_script(prompt_len: int, stop_at: int):
    """Predict token 10 + (answer index % 40) confidently; EOS at answer index stop_at."""
    def script(row, t):
        logits = torch.zeros(V)
        a = t - prompt_len
        logits[EOS if a == stop_at else 10 + a % 40] = 10.0
        return logits
    return script


def test_variable_stops_at_first_block_with_stop_id_and_truncates():
    prompt = [20, 21, 22]
    model = ScriptedModel(_answer_index_script(len(prompt), stop_at=11))
    res = generate_variable(model, CFG, [prompt], DiffusionParams(max_tokens=64, block_length=8))[0]
    assert res.finish_reason == "stop"
    assert res.token_ids == [10 + i for i in range(11)]
    # Block 2 (answer 8..15) held the stop id, so no third block was appended.
    assert max(c.shape[1] for c in model.calls) == len(prompt) + 16


def test_variable_length_limit_and_short_last_block():
    prompt = [20, 21]
    model = ScriptedModel(_answer_index_script(len(prompt), stop_at=10_000))
    res = generate_variable(model, CFG, [prompt], DiffusionParams(max_tokens=20, block_length=8))[0]
    assert res.finish_reason == "length" and len(res.token_ids) == 20
    assert [c.shape[1] - len(prompt) for c in model.calls][-4:] == [20] * 4  # short block: 4 steps


def test_mixed_prompt_lengths_batch_equals_single():
    script = random_script(3)
    p = DiffusionParams(max_tokens=16, block_length=8, steps=4)
    prompts = [[9], [9, 10, 11, 12, 13], [30, 31, 32]]
    batched = generate_variable(ScriptedModel(script), CFG, prompts, p)
    for prompt, got in zip(prompts, batched, strict=True):
        assert generate_variable(ScriptedModel(script), CFG, [prompt], p)[0].token_ids == got.token_ids


def test_threshold_commits_all_above_and_at_least_one():
    # Rows 0 and 2 very confident, the rest flat.
    def script(row, t):
        logits = torch.zeros(V)
        if t in (2, 4):
            logits[30 + t] = 20.0
        return logits
    model = ScriptedModel(script)
    generate_variable(model, CFG, [[40, 41]], DiffusionParams(max_tokens=4, block_length=4, threshold=0.9))
    after_first = model.calls[1][0, 2:]
    assert after_first.tolist() == [32, MASK, 34, MASK]
    # Nothing reaches 0.9 any more: exactly one commit per step from here.
    assert (model.calls[2][0, 2:] != MASK).sum() == 3


def test_think_bias_formula_and_position():
    p = DiffusionParams(max_tokens=100, think_boost=100.0, think_power=3.0)
    assert think_bias([MASK] * 10, 0, [7], p) == (7, pytest.approx(100 * (1 / 100) ** 3))
    tok, val = think_bias([11, 12, MASK, MASK], 2, [7], p)
    assert tok == 7 and val == pytest.approx(100 * 0.03**3)
    # Multi-token </think>: the next token of the sequence after a partial match.
    assert think_bias([11, 50, MASK], 2, [50, 51, 52], p)[0] == 51
    assert think_bias([11, 50, 51, MASK], 3, [50, 51, 52], p)[0] == 52
    assert think_bias([50, 51, 52, MASK], 3, [50, 51, 52], p) is None  # already closed
    assert think_bias([11, MASK], 1, [7], p.replace(think_boost=0.0)) is None


def test_think_bias_lands_on_first_masked_position():
    class ThinkTok:
        def encode(self, text, add_special_tokens=False):
            return [7]

        def decode(self, ids, skip_special_tokens=True):
            return ""

    model = ScriptedModel(lambda row, t: torch.zeros(V))  # flat logits: the bias decides
    params = DiffusionParams(max_tokens=8, block_length=8, think_boost=1e3, think_power=1.0)
    res = generate_variable(model, CFG, [[40, 41]], params, tokenizer=ThinkTok())[0]
    assert model.calls[1][0, 2:].tolist() == [7] + [MASK] * 7
    assert res.token_ids[0] == 7 and 7 not in res.token_ids[1:]


def test_cfg_runs_unconditional_pass_with_masked_prompt():
    model = ScriptedModel(random_script(5))
    generate_fixed(model, CFG, [[40, 41, 42]], DiffusionParams(max_tokens=4, block_length=4, cfg_scale=1.0))
    assert len(model.calls) == 8 and model.calls[1][0, :3].tolist() == [MASK] * 3


def test_mask_token_is_never_committed():
    def script(row, t):
        logits = torch.zeros(V)
        logits[MASK] = 50.0  # the model's favourite is the mask token itself
        logits[12] = 5.0
        return logits
    res = generate_variable(ScriptedModel(script), CFG, [[40]], DiffusionParams(max_tokens=8, block_length=4))
    assert res[0].token_ids == [12] * 8


def test_bad_sampler_arguments_named():
    model = ScriptedModel(random_script(0))
    with pytest.raises(ParamError, match="gen_length 30 is not divisible by block_length 8"):
        llada_generate(model, CFG, [1, 2], steps=8, gen_length=30, block_length=8)
    with pytest.raises(ParamError, match="steps 10 is not divisible by the number of blocks 4"):
        llada_generate(model, CFG, [1, 2], steps=10, gen_length=32, block_length=8)
    with pytest.raises(ParamError, match="exceeds the model's context length 512") as err:
        generate_variable(model, CFG, [[1] * 500], DiffusionParams(max_tokens=64))
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(ParamError, match="block_length must be >= 1"):
        generate_variable(model, CFG, [[1]], DiffusionParams(block_length=0))
    with pytest.raises(ParamError, match=r"threshold must be in \(0, 1\]"):
        generate_variable(model, CFG, [[1]], DiffusionParams(threshold=1.5))
