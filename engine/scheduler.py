"""First-come first-served scheduler: moves sequences waiting -> running -> finished.

It never builds tensors. Each step it asks every running sequence (oldest first), then waiting
ones, for its `StepPlan`, and admits the plan when it fits the step's token budget and the KV
pool. Invariants:
- a running sequence holds pages for every slot its plan touches (`plan.num_kv_tokens`);
- when pages run out for a running sequence, the youngest running sequence is preempted (pages
  freed, back to the front of the waiting queue, its cache recomputed later); a waiting sequence
  never preempts anyone;
- a plan larger than the whole token budget runs alone, so nothing waits forever;
- `len(running) <= max_num_seqs`.
"""

from __future__ import annotations

import time
from collections import deque

from .engine_config import EngineConfig
from .kv_cache import KVCache, pages_for
from .sequence import SeqStatus, Sequence, StepPlan


class Scheduler:
    def __init__(self, engine_config: EngineConfig, kv: KVCache):
        self.engine_config = engine_config
        self.kv = kv
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[tuple[Sequence, StepPlan]]:
        budget = self.engine_config.max_num_batched_tokens
        chunk = self.engine_config.prefill_chunk_size
        batch: list[tuple[Sequence, StepPlan]] = []
        i = 0
        while i < len(self.running):
            seq = self.running[i]
            plan = seq.plan(chunk)
            if plan.num_query_tokens > budget and batch:
                i += 1  # does not fit this step; keeps its place
                continue
            if not self._reserve_running(seq, plan):
                break  # seq was the youngest and preempted itself
            batch.append((seq, plan))
            budget -= plan.num_query_tokens
            i += 1
        while self.waiting and len(self.running) < self.engine_config.max_num_seqs:
            seq = self.waiting[0]
            plan = seq.plan(chunk)
            if plan.num_query_tokens > budget and batch:
                break
            need = pages_for(plan.num_kv_tokens, self.kv.page_size) - len(seq.pages)
            if need > self.kv.allocator.num_free:
                break
            self.kv.ensure_pages(seq.pages, plan.num_kv_tokens)
            self.waiting.popleft()
            seq.status = SeqStatus.RUNNING
            if seq.first_scheduled_time is None:
                seq.first_scheduled_time = time.monotonic()
            self.running.append(seq)
            batch.append((seq, plan))
            budget -= plan.num_query_tokens
        return batch

    def _reserve_running(self, seq: Sequence, plan: StepPlan) -> bool:
        """Give `seq` pages for its plan, preempting the youngest running sequences as needed."""
        need = pages_for(plan.num_kv_tokens, self.kv.page_size) - len(seq.pages)
        while need > self.kv.allocator.num_free:
            victim = self.running[-1]
            self.preempt(victim)
            if victim is seq:
                return False
        self.kv.ensure_pages(seq.pages, plan.num_kv_tokens)
        return True

    def preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.kv.release(seq.pages)
        seq.preempt()
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def remove(self, seq: Sequence) -> None:
        """Take a finished or aborted sequence out of the queues and free its pages at once."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.kv.release(seq.pages)
