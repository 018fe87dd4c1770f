"""The shipped built-in model: loads like an iLLaDA checkpoint, generates, and has learned something.

Also small checks of the training pieces it was made with (data split, SFT format,
objective), on tiny inputs so the whole file stays well under a minute on a CPU.
"""

from __future__ import annotations

import json

import pytest
import torch
from diffuserve.engine.assets import BUILTIN_DIR
from diffuserve.engine.models.loader import load_model
from diffuserve.engine.params import DiffusionParams
from diffuserve.engine.oracle import generate_variable
from diffuserve.engine.training.corpus import chunk_stream, pretrain_stream
from diffuserve.engine.training.data import extract_pairs, held_out_pairs, load_split
from diffuserve.engine.training.evaluate import body_parses, masked_accuracy, most_frequent_token
from diffuserve.engine.training.objective import diffusion_loss, mask_tokens, random_split_layout
from diffuserve.engine.training.tokenizer import EOS_ID, EOT_ID, chat_prompt_ids, format_sft_example


@pytest.fixture(scope="module")
def builtin():
    torch.set_num_threads(2)
    return load_model()


@pytest.fixture(scope="module")
def split():
    return load_split()


@pytest.fixture(scope="module")
def fast_tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(BUILTIN_DIR / "tokenizer.json"))


def test_checkpoint_is_illada_format_and_small(builtin):
    model, tok, cfg = builtin
    raw = json.loads((BUILTIN_DIR / "config.json").read_text())
    assert raw["model_type"] == "illada" and raw["architectures"] == ["ILLaDAForCausalLM"]
    assert "mask_token_id" not in raw  # like the real iLLaDA config; the family default 5 applies
    assert cfg.family == "illada" and cfg.mask_token_id == 5 and cfg.tie_embeddings
    assert cfg.num_kv_heads < cfg.num_heads  # GQA
    assert tok.convert_ids_to_tokens(cfg.mask_token_id) == "<|mdm_mask|>"
    assert tok.eos_token_id == EOS_ID and tok.convert_tokens_to_ids("<|eot_id|>") == EOT_ID
    assert {EOS_ID, EOT_ID} <= set(cfg.stop_token_ids)
    assert len(tok) <= 8192 and cfg.vocab_size <= 8192
    n_params = sum(p.numel() for p in model.parameters())
    assert 5e6 <= n_params <= 15e6
    assert (BUILTIN_DIR / "model.safetensors").stat().st_size < 20 * 2**20
    assert cfg.max_length >= 1024


def test_chat_template_renders_as_trained(builtin):
    _, tok, _ = builtin
    prompt = 'def area(w, h):\n    """Return the area of a w by h rectangle."""'
    body = "    return w * h"
    rendered = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
    assert rendered == ("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\n" + prompt
                        + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    trained = format_sft_example(tok, prompt, body)
    served = chat_prompt_ids(tok, prompt)
    # Training saw exactly the served prompt ids, then the body, end of turn and EOS padding.
    assert trained[: len(served)] == served
    assert tok.encode(rendered, add_special_tokens=False) == served
    answer = trained[len(served):]
    assert tok.decode(answer[: answer.index(EOT_ID)]) == body
    assert set(answer[answer.index(EOT_ID) + 1:]) == {EOS_ID} and len(answer) % 32 == 0


def test_greedy_generation_is_deterministic_and_nonempty(builtin, split):
    model, tok, cfg = builtin
    pair = held_out_pairs(split[1], n=50, seed=0)[0]
    prompt = chat_prompt_ids(tok, pair.prompt)
    params = DiffusionParams(max_tokens=32, block_length=32, temperature=0.0)
    first = generate_variable(model, cfg, [prompt], params, tokenizer=tok)[0]
    second = generate_variable(model, cfg, [prompt], params, tokenizer=tok)[0]
    assert first.token_ids == second.token_ids and first.text == second.text
    assert first.token_ids and first.text.strip()
    assert cfg.mask_token_id not in first.token_ids


def test_masked_accuracy_beats_unigram_baseline(builtin, split, fast_tokenizer):
    model, _, cfg = builtin
    train_files, val_files = split
    unigram = most_frequent_token(pretrain_stream(train_files, fast_tokenizer, seed=0))
    rows = chunk_stream(pretrain_stream(val_files, fast_tokenizer, seed=0), 256, max_rows=16)
    row = masked_accuracy(model, rows, 0.5, cfg.mask_token_id, unigram, seed=1)
    assert row.masked_tokens == 16 * 128
    # A clear margin: at least 10 points above the most-frequent-token predictor.
    assert row.model_accuracy >= row.unigram_accuracy + 0.10, row


def test_split_is_by_file_and_deterministic(split):
    train_files, val_files = split
    names_train, names_val = {f.rel_path for f in train_files}, {f.rel_path for f in val_files}
    assert not names_train & names_val and len(names_val) >= 20
    assert not any(n.startswith(("site-packages/", "test/")) for n in names_train | names_val)
    again = load_split()
    assert [f.rel_path for f in again[1]] == [f.rel_path for f in val_files]
    pairs = extract_pairs(val_files[:10])
    assert pairs and all(body_parses(p.prompt, p.body) for p in pairs)
    assert not body_parses(pairs[0].prompt, "") and not body_parses(pairs[0].prompt, "x = (")


def test_objective_masks_at_rate_t_and_splits_rows():
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(9, 100, (64, 128))
    noisy, masked, t = mask_tokens(tokens, 5, gen)
    assert torch.equal(noisy[masked], torch.full_like(noisy[masked], 5))
    assert torch.equal(noisy[~masked], tokens[~masked])
    assert abs(masked.float().mean(1) - t).mean() < 0.06  # per-row mask share follows t
    layout = random_split_layout(400, 32, 0.3, gen)
    split_rows = layout.segment_ids.any(1)
    assert 0.2 < split_rows.float().mean() < 0.4
    r = int(split_rows.nonzero()[0])
    cut = int(layout.segment_ids[r].argmax())
    assert layout.positions[r, cut] == 0 and layout.positions[r, cut - 1] == cut - 1


def test_diffusion_loss_has_gradients_for_every_weight():
    from diffuserve.engine.config import ModelConfig
    from diffuserve.engine.models.bidir_llama import BidirectionalLM
    from diffuserve.engine.training.export import ModelShape, hf_config, init_weights

    shape = ModelShape(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64,
                       vocab_size=64)
    model = BidirectionalLM(ModelConfig.from_hf(hf_config(shape)))
    init_weights(model)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(9, 64, (4, 16))
    loss, stats = diffusion_loss(model, tokens, random_split_layout(4, 16, 0.5, gen), 5, gen)
    loss.backward()
    assert torch.isfinite(loss) and 0 < stats["mask_frac"] <= 1
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
