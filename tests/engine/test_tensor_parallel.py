"""Tensor parallelism on gloo (real processes, real collectives): 2 ranks give the tokens of one
process, on tiny checkpoints of the three families; bad splits fail before anything starts; a
worker that dies fails the requests instead of hanging."""

from __future__ import annotations

import time

import checkpoint_factory
import pytest
from checkpoint_factory import write_checkpoint
from diffuserve.engine.distributed import TensorParallelError, check_split, start_tensor_parallel
from diffuserve.engine.engine_config import EngineConfig
from diffuserve.engine.llm_engine import LLMEngine
from diffuserve.engine.model_config import ModelConfig
from diffuserve.engine.models.loader import load_model
from diffuserve.engine.params import DiffusionParams
from diffuserve.engine.scoring import ScoreParams

PROMPTS = [[3, 17, 42, 5, 88, 23], [7, 7, 60, 91, 2, 14, 33, 80, 41]]
# exact mode at temperature 0 (the target), the prefix cache, seeded sampling (noised argmax
# across vocabulary slices), a threshold, classifier-free guidance and random remasking
PARAMS = [
    DiffusionParams(max_tokens=16, block_length=8, cache="none"),
    DiffusionParams(max_tokens=16, block_length=8, steps=4),
    DiffusionParams(max_tokens=16, block_length=8, temperature=1.0, seed=11, cache="none"),
    DiffusionParams(max_tokens=12, block_length=4, threshold=0.3, temperature=0.7, seed=5),
    DiffusionParams(max_tokens=8, block_length=8, cfg_scale=1.5, cache="none"),
    DiffusionParams(max_tokens=8, block_length=8, remasking="random", seed=3),
]


# LLaDA's real stop ids lie outside the tiny vocabulary: one in-vocabulary stop id for all.
OVERRIDES = {"load_tokenizer": False, "stop_token_ids": [1]}


@pytest.fixture
def even_vocab(monkeypatch):
    """The factory's vocabulary (97) is prime; 2 ranks need an even one."""
    monkeypatch.setattr(checkpoint_factory, "VOCAB", 98)


def _generate(engine: LLMEngine) -> tuple[dict[str, list[int]], dict]:
    """Tokens of every generation request, and the scores of two scoring requests (whose
    log-probs come from whole logit rows, gathered across ranks)."""
    for i, params in enumerate(PARAMS):
        for j, prompt in enumerate(PROMPTS):
            engine.add_request(f"{i}-{j}", prompt, params)
    engine.add_score_request("score-c", PROMPTS[0], [40, 41, 42], ScoreParams())
    engine.add_score_request("score-l", PROMPTS[1], [9, 8, 7, 6], ScoreParams("likelihood", 8, seed=1))
    out: dict[str, list[int]] = {}
    scores = {}
    errors = []
    while engine.has_unfinished():
        for o in engine.step():
            out.setdefault(o.request_id, []).extend(o.new_token_ids)
            if o.error:
                errors.append(o.error)
            if o.score is not None:
                scores[o.request_id] = o.score
    assert not errors
    return out, scores


def _assert_same(single, parallel) -> None:
    (want, want_scores), (got, got_scores) = single, parallel
    assert len(set(map(tuple, want.values()))) > 3  # the requests do not all say the same thing
    assert got == want
    assert set(got_scores) == set(want_scores) == {"score-c", "score-l"}
    for name, w in want_scores.items():
        g = got_scores[name]
        assert g.score == pytest.approx(w.score, rel=1e-4, abs=1e-5), name  # float32 sums in another order
        assert (g.num_tokens, g.greedy, g.reveal_order) == (w.num_tokens, w.greedy, w.reveal_order)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llada", "illada", "dream"])
def test_two_ranks_give_the_single_process_tokens(tmp_path, even_vocab, family):
    write_checkpoint(tmp_path, family)
    econf = EngineConfig(max_num_seqs=8, device="cpu", dtype="float32")
    single = load_model(tmp_path, **OVERRIDES)
    want = _generate(LLMEngine(single.model, single.config, None, econf))
    engine = start_tensor_parallel(LLMEngine, str(tmp_path), econf.replace(tensor_parallel_size=2),
                                   overrides=OVERRIDES, exit_on_loss=False)
    try:
        assert engine.model.tp_shard.world == 2 and engine.cfg.num_heads == checkpoint_factory.HEADS // 2
        got = _generate(engine)
    finally:
        engine.runner.close()
    _assert_same(want, got)


@pytest.mark.slow
def test_four_ranks_replicate_the_kv_heads(tmp_path, monkeypatch):
    """iLLaDA's 2 KV heads on 4 ranks: each rank holds one query head and a copy of its KV head."""
    monkeypatch.setattr(checkpoint_factory, "VOCAB", 100)
    write_checkpoint(tmp_path, "illada")
    econf = EngineConfig(max_num_seqs=8, device="cpu", dtype="float32")
    single = load_model(tmp_path, **OVERRIDES)
    want = _generate(LLMEngine(single.model, single.config, None, econf))
    engine = start_tensor_parallel(LLMEngine, str(tmp_path), econf.replace(tensor_parallel_size=4),
                                   overrides=OVERRIDES, exit_on_loss=False)
    try:
        assert (engine.cfg.num_heads, engine.cfg.num_kv_heads) == (1, 1)
        assert engine.kv.k.shape[3] == 1  # the rank's KV cache holds its one KV head
        got = _generate(engine)
    finally:
        engine.runner.close()
    _assert_same(want, got)


def test_bad_split_is_refused_before_any_process_starts(tmp_path):
    write_checkpoint(tmp_path, "illada")  # vocabulary 97, 4 heads, 2 KV heads, FFN 48
    with pytest.raises(TensorParallelError, match=r"must divide the model's vocabulary size \(97\)"):
        LLMEngine.from_pretrained(str(tmp_path), EngineConfig(tensor_parallel_size=2, device="cpu"),
                                  load_tokenizer=False)
    cfg = ModelConfig.from_hf(checkpoint_factory.family_config("illada"))
    with pytest.raises(TensorParallelError, match=r"attention heads \(4\).*FFN columns \(48\)"):
        check_split(cfg, 5)
    with pytest.raises(TensorParallelError, match=r"KV heads \(4\), or be a multiple"):
        check_split(ModelConfig.from_hf({**checkpoint_factory.family_config("illada"),
                                         "hidden_size": 48, "num_attention_heads": 12,
                                         "num_key_value_heads": 4}), 6)
    check_split(ModelConfig.from_hf({**checkpoint_factory.family_config("illada"), "vocab_size": 100}), 4)


def test_a_whole_model_with_tensor_parallel_size_is_refused(tmp_path):
    write_checkpoint(tmp_path, "illada")
    loaded = load_model(tmp_path, load_tokenizer=False)
    with pytest.raises(ValueError, match="needs a model split by"):
        LLMEngine(loaded.model, loaded.config, None, EngineConfig(tensor_parallel_size=2, device="cpu"))


@pytest.mark.slow
def test_a_dead_worker_fails_requests_in_bounded_time(tmp_path, even_vocab):
    write_checkpoint(tmp_path, "illada")
    econf = EngineConfig(max_num_seqs=4, device="cpu", dtype="float32", tensor_parallel_size=2)
    engine = start_tensor_parallel(LLMEngine, str(tmp_path), econf, overrides=OVERRIDES, exit_on_loss=False)
    runner = engine.runner
    try:
        engine.add_request("before", PROMPTS[0], PARAMS[0])
        engine.step()  # a step with both ranks alive
        runner.procs[0].kill()
        runner.procs[0].join(10)
        t0 = time.monotonic()
        finished = {}
        while engine.has_unfinished() and time.monotonic() - t0 < 60:
            for o in engine.step():
                if o.finished:
                    finished[o.request_id] = (o.finish_reason, o.error)
        assert finished["before"][0] == "error", finished
        assert time.monotonic() - t0 < 60
        deadline = time.monotonic() + 10  # the watchdog marks the runner lost
        while runner.lost is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "worker 1 exited" in runner.lost
        engine.add_request("after", PROMPTS[1], PARAMS[1])
        (out,) = engine.step()
        assert out.finish_reason == "error" and "worker 1 exited" in out.error
    finally:
        runner.closing = True
        import torch.distributed as dist

        dist.destroy_process_group()


def test_a_split_model_refuses_the_dense_forward(tmp_path, monkeypatch):
    """The reference sampler would run a split model on rank 0 alone and wait on its peers."""
    import torch
    from diffuserve.engine.distributed.shard import shard_model

    monkeypatch.setattr(checkpoint_factory, "VOCAB", 100)
    write_checkpoint(tmp_path, "llada")
    model = load_model(tmp_path, **OVERRIDES).model
    shard_model(model, 0, 4)  # no collective runs before the check
    with pytest.raises(RuntimeError, match="reference sampler needs --tensor-parallel-size 1"):
        model(torch.tensor([[1, 2, 3]]))


@pytest.mark.slow
def test_a_hung_worker_fails_the_step_after_the_collective_timeout(tmp_path, even_vocab, monkeypatch):
    import os
    import signal

    from diffuserve.engine.distributed import launch

    monkeypatch.setattr(launch, "COLLECTIVE_TIMEOUT_S", 3.0)  # rank 0's step collectives
    write_checkpoint(tmp_path, "illada")
    econf = EngineConfig(max_num_seqs=4, device="cpu", dtype="float32", tensor_parallel_size=2)
    engine = start_tensor_parallel(LLMEngine, str(tmp_path), econf, overrides=OVERRIDES, exit_on_loss=False)
    runner = engine.runner
    worker = runner.procs[0]
    try:
        engine.add_request("r", PROMPTS[0], PARAMS[0])
        engine.step()
        os.kill(worker.pid, signal.SIGSTOP)  # alive, never answers
        t0 = time.monotonic()
        (out,) = engine.step()
        waited = time.monotonic() - t0
        assert out.finish_reason == "error" and "collective failed" in out.error, out
        assert waited < 30
        assert worker.is_alive() and "collective failed" in runner.lost
    finally:
        runner.closing = True
        worker.kill()
        import torch.distributed as dist

        dist.destroy_process_group()


@pytest.mark.parametrize("family,world,vocab", [("llada", 2, 98), ("illada", 2, 98), ("dream", 2, 98),
                                                ("illada", 4, 100)])
def test_a_rank_reads_exactly_its_shard(tmp_path, monkeypatch, family, world, vocab):
    """Loading with tensor_parallel=(rank, world) reads slices of the checkpoint tensors; they are
    the whole model's parameters cut by shard_model, bit for bit."""
    from diffuserve.engine.distributed.shard import shard_model

    monkeypatch.setattr(checkpoint_factory, "VOCAB", vocab)
    write_checkpoint(tmp_path, family, shards=2)
    for rank in range(world):
        whole = load_model(tmp_path, **OVERRIDES).model
        shard_model(whole, rank, world)
        part = load_model(tmp_path, tensor_parallel=(rank, world), **OVERRIDES).model
        assert part.tp_shard == whole.tp_shard
        got, want = dict(part.named_parameters()), dict(whole.named_parameters())
        assert got.keys() == want.keys()
        for name, tensor in want.items():
            assert got[name].shape == tensor.shape and bool((got[name] == tensor).all()), (rank, name)
