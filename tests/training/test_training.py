"""The training pieces of the built-in model: tokenizer, corpus packing, objective, a tiny end-to-end run."""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from diffuserve.tasks.suite import SHIPPED_MC_REPLY, TASKS, sample_problem
from diffuserve.training.corpus import (
    ChatFrame,
    answer_ids,
    build_stream,
    example_ids,
    sample_windows,
    training_problems,
)
from diffuserve.training.export import ModelShape, hf_config, init_weights
from diffuserve.training.objective import diffusion_loss, mask_tokens, random_split_layout
from diffuserve.training.tokenizer import (
    EOS_ID,
    EOT_ID,
    load_hf_tokenizer,
    save_tokenizer,
    train_tokenizer,
)
from diffuserve.training.train import TrainConfig

TINY = ModelShape(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64,
                  vocab_size=320)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    problems = training_problems(3000, seed=0)
    fast = train_tokenizer((t for p in problems for t in (p.prompt, p.response, "user", "assistant")), 512)
    folder = tmp_path_factory.mktemp("tok")
    save_tokenizer(fast, folder, 1024)
    return fast, load_hf_tokenizer(folder), problems


def test_every_digit_is_its_own_token(tokenizers):
    fast, hf, _ = tokenizers
    assert not [t for t in fast.get_vocab() if sum(c.isdigit() for c in t) > 1]
    ids = hf.encode("What is 12345 + 678?", add_special_tokens=False)
    pieces = hf.convert_ids_to_tokens(ids)
    assert [p for p in pieces if p.lstrip("Ġ").isdigit()] == list("12345678")


def test_tokenizer_round_trips_text(tokenizers):
    _, hf, problems = tokenizers
    texts = [p.prompt for p in problems[:200]] + [p.response for p in problems[:200]]
    texts += ["Ünïcode ✓ and\ttabs\n\n  spaces", "<think>1+2=3</think>3"]
    for text in texts:
        assert hf.decode(hf.encode(text, add_special_tokens=False)) == text


def test_chat_template_renders_through_transformers(tokenizers):
    _, hf, _ = tokenizers
    text = hf.apply_chat_template([{"role": "user", "content": "What is 1 + 2?"}], tokenize=False,
                                  add_generation_prompt=True)
    assert text == ("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is 1 + 2?<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
    think = hf.convert_tokens_to_ids(["<think>", "</think>"])
    assert hf.decode(think) == "<think></think>"  # visible in decoded text, one token each


def test_eos_run_fills_the_last_block_and_is_never_empty():
    chat, plain = sample_problem("add", random.Random(0))[0], sample_problem("complete", random.Random(0))[0]
    assert answer_ids(chat, [9] * 5, 32) == [9] * 5 + [EOT_ID] + [EOS_ID] * 26
    assert answer_ids(plain, [9] * 31, 32) == [9] * 31 + [EOS_ID]
    # A reply that fills its block exactly gets a whole block of EOS: the terminal EOS is never
    # dropped, and the padding still ends on a block border.
    assert answer_ids(chat, [9] * 31, 32) == [9] * 31 + [EOT_ID] + [EOS_ID] * 32


def test_packed_stream_equals_the_transformers_route(tokenizers):
    fast, hf, _ = tokenizers
    rng = random.Random(7)
    problems = [sample_problem(t, rng)[0] for t in TASKS for _ in range(20)]
    stream, is_prompt = build_stream(problems, fast, ChatFrame.from_tokenizer(hf), block_length=32)
    at = 0
    for p in problems:
        prompt, answer = example_ids(p, hf, 32)
        n = len(prompt) + len(answer)
        assert stream[at:at + n].tolist() == prompt + answer
        assert is_prompt[at:at + n].tolist() == [True] * len(prompt) + [False] * len(answer)
        # The answer: response, end of turn (chat only), then EOS up to a whole number of blocks.
        assert len(answer) % 32 == 0 and answer[-1] == EOS_ID
        assert (EOT_ID in answer) == p.chat
        text = hf.decode([t for t in answer if t not in (EOS_ID, EOT_ID)])
        assert text == p.response
        at += n
    assert at == stream.numel()


def test_windows_carry_their_prompt_flags():
    stream = torch.arange(1000)
    flags = stream % 3 == 0
    tokens, f = sample_windows(stream, flags, 8, 64, torch.Generator().manual_seed(0))
    assert tokens.shape == f.shape == (8, 64)
    assert torch.equal(f, tokens % 3 == 0)


def test_visible_tokens_are_never_masked():
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(9, 100, (64, 128))
    visible = torch.rand(64, 128, generator=gen) < 0.5
    for _ in range(5):
        noisy, masked, _ = mask_tokens(tokens, 5, gen, visible=visible)
        assert not (masked & visible).any()
        assert torch.equal(noisy[visible], tokens[visible])
        assert masked.any()


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
    from diffuserve.engine.model_config import ModelConfig
    from diffuserve.engine.models.bidir_llama import BidirectionalLM

    model = BidirectionalLM(ModelConfig.from_hf(hf_config(TINY)))
    init_weights(model)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(9, 64, (4, 16))
    loss, stats = diffusion_loss(model, tokens, random_split_layout(4, 16, 0.5, gen), 5, gen)
    loss.backward()
    assert torch.isfinite(loss) and 0 < stats["mask_frac"] <= 1
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_tiny_training_run_writes_a_loadable_checkpoint_reproducibly(tmp_path):
    from diffuserve.engine.llm_engine import LLMEngine
    from diffuserve.engine.params import DiffusionParams
    from diffuserve.training.train import TrainConfig, train

    def run(out):
        cfg = replace(TrainConfig(), out_dir=str(out), examples=1500, tokenizer_examples=300, steps=3,
                      batch_size=2, seq_len=64, shape=replace(TINY, vocab_size=512), snapshot_every=2)
        return train(cfg)

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert (tmp_path / "a" / "snapshots" / "step_000002" / "model.safetensors").is_file()
    engine = LLMEngine.from_pretrained(str(first))
    assert engine.cfg.family == "illada" and engine.cfg.mask_token_id == 5
    out = engine.generate([[1, 2, 3]], DiffusionParams(max_tokens=8, block_length=8, cache="none"))[0]
    assert out.finish_reason in ("stop", "length") and engine.cfg.mask_token_id not in out.token_ids


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diffuserve.server.cli", *args],
                          capture_output=True, text=True, timeout=300)


def test_a_second_phase_continues_from_a_checkpoint(tmp_path):
    """`--init-from`: the second phase starts from the first phase's weights and tokenizer (zero
    steps of training reproduce them exactly) and trains them further."""
    from diffuserve.engine.models.loader import load_model
    from diffuserve.training.train import TrainConfig, train

    base = replace(TrainConfig(), examples=1500, tokenizer_examples=300, batch_size=2, seq_len=64,
                   shape=replace(TINY, vocab_size=512), snapshot_every=0)
    first = train(replace(base, out_dir=str(tmp_path / "a"), steps=2))
    kept = train(replace(base, out_dir=str(tmp_path / "b"), steps=0, init_from=str(first)))
    moved = train(replace(base, out_dir=str(tmp_path / "c"), steps=2, init_from=str(first),
                          prompt_visible_prob=1.0))
    assert (kept / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()
    assert (kept / "tokenizer.json").read_bytes() == (first / "tokenizer.json").read_bytes()
    a, c = load_model(first).model.state_dict(), load_model(moved).model.state_dict()
    assert a.keys() == c.keys() and any(not torch.equal(a[k], c[k]) for k in a)
    # The training curve of both phases counts the second phase's steps on from the first's end.
    out = _cli("eval-tasks", "--curve", str(tmp_path / "a"), str(tmp_path / "c"), "--tasks", "add",
               "--per-task", "1")
    assert out.returncode == 0, out.stderr
    assert [line.split(" | ")[0] for line in out.stdout.splitlines()[2:]] == ["| 2", "| 4"]



def test_init_from_a_folder_that_is_no_checkpoint_is_refused_before_any_work(tmp_path):
    """The files it lacks are named and the command exits 2, before the corpus is built."""
    (tmp_path / "config.json").write_text("{}")
    out = _cli("train-builtin", "--steps", "1", "--init-from", str(tmp_path),
               "--out-dir", str(tmp_path / "run"))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "missing model.safetensors, tokenizer.json" in out.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", ["--decay-fraction", "--prompt-visible-prob"])
@pytest.mark.parametrize("value", ["1.5", "-0.1", "half"])
def test_share_flags_outside_zero_to_one_are_usage_errors(tmp_path, flag, value):
    out = _cli("train-builtin", "--steps", "1", flag, value, "--out-dir", str(tmp_path / "run"))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"must be in [0, 1], got '{value}'" in out.stderr
    assert not (tmp_path / "run").exists()


def test_mix_flag_sets_the_corpus_shares():
    import argparse

    from diffuserve.training.cli import add_arguments, build_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = build_config(parser.parse_args(["--mix", "sort=3, mc=1"]))
    assert cfg.mix == {"sort": 3.0, "mc": 1.0}
    counts = {t: 0 for t in TASKS}
    for p in training_problems(2000, seed=0, mix=cfg.mix):
        counts[p.task] += 1
    assert counts["add"] == counts["sub"] == counts["complete"] == 0
    assert 0.7 < counts["sort"] / 2000 < 0.8
    assert build_config(parser.parse_args([])).mix == TrainConfig().mix


def test_mc_reply_flag_sets_the_corpus_reply_form(tmp_path):
    import argparse

    from diffuserve.training.cli import add_arguments, build_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = build_config(parser.parse_args(["--mc-reply", "sum", "--mix", "mc=1"]))
    assert cfg.mc_reply == "sum"
    plain = training_problems(50, seed=0, mix=cfg.mix, mc_reply=cfg.mc_reply)
    checked = training_problems(50, seed=0, mix=cfg.mix)
    assert [p.prompt for p in checked] == [p.prompt for p in plain]  # same questions, other replies
    for p, q in zip(checked, plain, strict=True):
        assert p.response.count("\n") == 4 and "\n" not in q.response
    assert build_config(parser.parse_args([])).mc_reply == "digit-checks" == SHIPPED_MC_REPLY
    out = _cli("train-builtin", "--steps", "1", "--mc-reply", "letter", "--out-dir", str(tmp_path / "run"))
    assert out.returncode == 2 and "argument --mc-reply" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("mix", ["add=1,foo=2", "add=1,add=2", "add", "add=-1", "add=nan", "add=inf",
                                 "add=0,sub=0"])
def test_bad_mix_is_a_usage_error(tmp_path, mix):
    out = _cli("train-builtin", "--steps", "1", "--mix", mix, "--out-dir", str(tmp_path / "run"))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "argument --mix" in out.stderr
    assert not (tmp_path / "run").exists()


def test_curve_of_a_folder_that_is_no_finished_run_is_refused(tmp_path):
    out = _cli("eval-tasks", "--curve", str(tmp_path), "--per-task", "1")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "no checkpoint/training_meta.json" in out.stderr
