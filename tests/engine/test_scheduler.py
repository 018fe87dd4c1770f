"""Scheduler: FCFS admission under token budget, max seqs and pages; youngest-first preemption."""

from __future__ import annotations

import torch
from diffuserve.engine.engine_config import EngineConfig
from diffuserve.engine.kv_cache import KVCache
from diffuserve.engine.params import DiffusionParams
from diffuserve.engine.scheduler import Scheduler
from diffuserve.engine.sequence import SeqStatus, Sequence
from engine_cases import prompts, tiny_config

PARAMS = DiffusionParams(max_tokens=16, block_length=8)


def setup(num_pages=64, page_size=4, **econf):
    cfg = tiny_config("illada")
    kv = KVCache(cfg, num_pages, page_size, torch.float32, torch.device("cpu"))
    return cfg, kv, Scheduler(EngineConfig(kv_page_size=page_size, **econf), kv)


def seqs(cfg, lengths, params=PARAMS):
    return [Sequence(f"s{i}", p, params, cfg, []) for i, p in enumerate(prompts(lengths))]


def test_fcfs_under_max_num_seqs_and_token_budget():
    cfg, kv, sched = setup(max_num_seqs=2, max_num_batched_tokens=1000)
    s = seqs(cfg, (10, 10, 10))
    for q in s:
        sched.add(q)
    batch = sched.schedule()
    assert [q.request_id for q, _ in batch] == ["s0", "s1"]
    assert s[2].status is SeqStatus.WAITING and len(sched.running) == 2
    # a budget that fits one plan (10 prompt + 8 block tokens) admits one at a time, in order
    cfg, kv, sched = setup(max_num_batched_tokens=20)
    s = seqs(cfg, (10, 10))
    for q in s:
        sched.add(q)
    assert [q.request_id for q, _ in sched.schedule()] == ["s0"]


def test_oversized_plan_runs_alone():
    cfg, kv, sched = setup(max_num_batched_tokens=8, prefill_chunk_size=512)
    s = seqs(cfg, (40, 5))
    for q in s:
        sched.add(q)
    batch = sched.schedule()
    assert [q.request_id for q, _ in batch] == ["s0"]
    assert batch[0][1].num_query_tokens == 48


def test_pages_reserved_for_every_slot_a_plan_touches():
    cfg, kv, sched = setup(page_size=4)
    (q,) = seqs(cfg, (10,))
    sched.add(q)
    ((_, plan),) = sched.schedule()
    assert plan.num_kv_tokens == 18 and len(q.pages) == 5
    sched.remove(q)
    assert kv.allocator.num_used == 0


def test_chunked_prefill_plans():
    cfg, kv, sched = setup(prefill_chunk_size=16)
    (q,) = seqs(cfg, (40,))
    sched.add(q)
    ((_, plan),) = sched.schedule()
    assert not plan.denoise and plan.token_ids == q.prompt_ids[:16] and plan.num_to_cache == 16
    q.apply(plan, None)
    plan2 = q.plan(16)
    assert not plan2.denoise and plan2.start_pos == 16 and plan2.num_cached == 16
    q.apply(plan2, None)
    plan3 = q.plan(16)  # 8 left: prefill finishes in the first denoising step
    assert plan3.denoise and len(plan3.token_ids) == 8 + 8 and plan3.num_to_cache == 8


def test_youngest_running_is_preempted_when_pages_run_out():
    # 10 pages of 4 tokens
    cfg, kv, sched = setup(num_pages=10, page_size=4)
    s = seqs(cfg, (4, 4, 4))  # plans of 4 + 8 = 12 tokens -> 3 pages each
    for q in s:
        sched.add(q)
    batch = sched.schedule()
    assert len(batch) == 3 and kv.allocator.num_free == 1
    # the oldest finishes its first block: it now needs 4 + 8 committed + 8 new = 5 pages (2 more)
    s[0].block = [50] * 8
    s[0].apply(batch[0][1], [50] * 8)
    s[0].complete_block()
    s[0].start_block()
    for q, plan in batch[1:]:
        q.apply(plan, q.block)
    batch = sched.schedule()
    assert s[2].status is SeqStatus.WAITING and sched.waiting[0] is s[2]
    assert sched.num_preemptions == 1 and s[2].pages == [] and s[2].num_cached == 0
    assert [q.request_id for q, _ in batch] == ["s0", "s1"]
