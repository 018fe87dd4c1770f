"""One request's decoding state. The sequence owns everything about itself: the scheduler only
moves it between queues, the runner only reads the `StepPlan` it produces.

Token layout (absolute positions): `committed` = prompt + answer blocks already decoded, then the
current `block` (mask id at undecided positions), then, on a fixed canvas, `future_len` masks.
"""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass, field

from .decoding import block_steps, think_bias
from .model_config import ModelConfig
from .params import DiffusionParams, transfer_schedule

# A block that still holds masks after this many steps (the model keeps predicting the mask id
# itself) fails instead of looping forever.
MAX_STEPS_FACTOR = 4


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class StepPlan:
    """What one sequence puts into one engine step (host lists; the runner makes tensors)."""

    token_ids: list[int]  # query tokens, at consecutive positions from start_pos
    start_pos: int
    paged: bool  # False (exact mode): keys are this step's query tokens only, no pool use
    num_cached: int  # keys already in the pool, before the queries (paged only)
    num_to_cache: int  # the first n query tokens become cached after this step
    denoise: bool  # False: a prefill chunk only
    block_offset: int = 0  # index in token_ids of the current block's first token
    # Dual cache: keys in the pool right after the queries (the masked suffix of a fixed canvas,
    # computed at the block's first step), read but not written by this step.
    extra_keys: int = 0
    mask_cols: list[int] = field(default_factory=list)  # block index of each masked position
    mask_rows: list[int] = field(default_factory=list)  # query row whose hidden state predicts it
    bias: tuple[int, float] | None = None  # </think> boost at the first masked position
    k: int = 0  # tokens to commit this step (schedule policy)
    uncond_token_ids: list[int] | None = None  # cfg_scale > 0: the prompt replaced by masks
    # Scoring sequences (`scoring.py`): query rows whose log-prob of `score_targets` the runner
    # returns, and the candidate positions they score. None for generation.
    score_rows: list[int] | None = None
    score_targets: list[int] = field(default_factory=list)
    score_cols: list[int] = field(default_factory=list)

    @property
    def num_query_tokens(self) -> int:
        return len(self.token_ids) * (2 if self.uncond_token_ids is not None else 1)

    @property
    def num_kv_tokens(self) -> int:
        """Pool slots this step touches (cached + written + dual-cached suffix), for page allocation."""
        return self.num_cached + len(self.token_ids) + self.extra_keys if self.paged else 0


class Sequence:
    def __init__(self, request_id: str, prompt_ids: list[int], params: DiffusionParams,
                 cfg: ModelConfig, think_ids: list[int], arrival_time: float | None = None):
        self.request_id = request_id
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.mask_id = cfg.mask_token_id
        self.shift = cfg.shift_logits
        self.stop_ids = frozenset(params.stop_ids(cfg))
        self.think_ids = think_ids if params.think_boost > 0 else []
        self.exact = params.cache == "none"
        self.dual = params.cache == "dual"
        # Dual cache: the pool holds the K/V of the masked suffix (after the current block), written
        # by this block's first step; later steps of the block read it instead of recomputing it.
        self.suffix_cached = False
        self.status = SeqStatus.WAITING
        self.committed: list[int] = list(prompt_ids)  # prompt + decoded answer blocks
        self.answer: list[int] = []
        self.block: list[int] = []
        self.block_step = 0
        self.schedule: list[int] = []
        self.future_len = 0
        self.pages: list[int] = []
        self.num_cached = 0
        self.work_since_refresh = 0  # denoising query tokens (block + masks) since the cache was built
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.aborted = False
        # Counters and timestamps for BlockOutput and metrics.
        self.num_steps = 0
        self.num_blocks = 0
        self.num_preemptions = 0
        self.arrival_time = time.monotonic() if arrival_time is None else arrival_time
        self.first_scheduled_time: float | None = None
        self.first_block_time: float | None = None
        self.emitted_text = ""
        self.start_block()

    # ---- block life cycle -------------------------------------------------------------
    @property
    def is_finished(self) -> bool:
        return self.status is SeqStatus.FINISHED

    @property
    def max_tokens_total(self) -> int:
        """Worst-case positions this sequence ever holds: prompt + max_tokens."""
        return len(self.prompt_ids) + self.params.max_tokens

    def start_block(self) -> None:
        p = self.params
        n = min(p.block_length, p.max_tokens - len(self.answer))
        self.block = [self.mask_id] * n
        self.block_step = 0
        self.schedule = transfer_schedule(n, block_steps(p, n))
        self.future_len = p.max_tokens - len(self.answer) - n if p.canvas == "fixed" else 0
        self.suffix_cached = False  # the suffix changed (a block left it): its K/V must be recomputed
        if self.num_blocks and self._refresh_due():
            # Refresh: the cached K/V saw the tokens of the step that cached them, never the blocks
            # decoded since. Forgetting the cache makes this block's first step recompute every
            # committed token beside the new masks, exactly as exact mode does; pages are kept
            # and their slots overwritten.
            self.num_cached = 0
            self.work_since_refresh = 0

    def _refresh_due(self) -> bool:
        every = self.params.cache_refresh
        if every == "auto":  # a refresh costs about len(committed) query tokens
            return self.work_since_refresh >= len(self.committed)
        return bool(every) and self.num_blocks % every == 0

    def complete_block(self) -> tuple[list[int], bool]:
        """Move the decoded block into the answer. Returns (its tokens kept, hit a stop id)."""
        block = self.block
        cut = next((i for i, t in enumerate(block) if t in self.stop_ids), None)
        kept = block if cut is None else block[:cut]
        self.answer.extend(kept)
        self.committed.extend(kept)
        self.block = []
        self.num_blocks += 1
        return kept, cut is not None

    @property
    def answer_done(self) -> bool:
        return len(self.answer) >= self.params.max_tokens

    def finish(self, reason: str, error: str | None = None) -> None:
        self.status = SeqStatus.FINISHED
        self.finish_reason = reason
        self.error = error

    # ---- planning one step --------------------------------------------------------------
    def plan(self, chunk_size: int) -> StepPlan:
        tail = self.block + [self.mask_id] * self.future_len
        uncond = None
        if self.exact:
            # Exact mode: the whole canvas is the query, every step (no cache reads or writes).
            tokens = self.committed + tail
            plan = StepPlan(tokens, 0, False, 0, 0, True, block_offset=len(self.committed))
            if self.params.cfg_scale > 0:
                n_prompt = len(self.prompt_ids)
                uncond = [self.mask_id] * n_prompt + tokens[n_prompt:]
            plan.uncond_token_ids = uncond
        else:
            # Dream (shift) reads the prediction for position p at p - 1: the last committed token
            # stays a query token every step and is never cached.
            cacheable = len(self.committed) - (1 if self.shift else 0)
            todo = cacheable - self.num_cached
            if todo > chunk_size:
                chunk = self.committed[self.num_cached : self.num_cached + chunk_size]
                return StepPlan(chunk, self.num_cached, True, self.num_cached, chunk_size, False)
            if self.suffix_cached:  # dual cache: the masked suffix's K/V are already in the pool
                tail = self.block
            tokens = self.committed[self.num_cached :] + tail
            plan = StepPlan(tokens, self.num_cached, True, self.num_cached, todo, True,
                            block_offset=len(self.committed) - self.num_cached,
                            extra_keys=self.future_len if self.suffix_cached else 0)
        cols = [j for j, t in enumerate(self.block) if t == self.mask_id]
        plan.mask_cols = cols
        shift = 1 if self.shift else 0
        plan.mask_rows = [plan.block_offset + j - shift for j in cols]
        k_sched = self.schedule[self.block_step] if self.block_step < len(self.schedule) else len(cols)
        plan.k = k_sched
        if self.think_ids and cols:
            answer_canvas = self.answer + self.block
            plan.bias = think_bias(answer_canvas, len(self.answer) + cols[0], self.think_ids, self.params)
        return plan

    def apply(self, plan: StepPlan, new_block: list[int] | None) -> bool:
        """Record a step's result; True when the current block has no masks left."""
        self.num_cached += plan.num_to_cache if plan.paged else 0
        if not plan.denoise:
            return False
        # A denoising step wrote the suffix's K/V (they stay valid until the block ends: its masks
        # never change within the block).
        self.suffix_cached = self.dual and plan.paged
        assert new_block is not None
        self.work_since_refresh += len(plan.token_ids) - plan.block_offset
        self.block = new_block
        self.block_step += 1
        self.num_steps += 1
        if self.block_step > MAX_STEPS_FACTOR * (len(self.block) + self.params.steps_per_block):
            raise RuntimeError(f"block did not finish in {self.block_step} steps (the model keeps "
                               "predicting the mask token)")
        return self.mask_id not in self.block

    def preempt(self) -> None:
        """Forget the cache (pages are freed by the caller); decoding state is kept."""
        self.num_cached = 0
        self.work_since_refresh = 0
        self.suffix_cached = False
        self.num_preemptions += 1
        self.status = SeqStatus.WAITING

    # ---- text ---------------------------------------------------------------------------
    def text_delta(self, tokenizer, final: bool = False) -> tuple[str, bool]:
        """(new text since the last emission, a stop string was hit) for the answer so far."""
        if tokenizer is None:
            return "", False
        text = tokenizer.decode(self.answer, skip_special_tokens=True)
        hits = [text.find(s) for s in self.params.stop if s in text]
        if hits:
            text = text[: min(hits)]
        elif not final and text.endswith("\ufffd"):
            text = text.rstrip("\ufffd")  # an incomplete UTF-8 character: wait for the next block
        if text.startswith(self.emitted_text):
            delta = text[len(self.emitted_text) :]
        else:  # the tokenizer merged across the block boundary: resend from the common prefix
            delta = text[len(os.path.commonprefix([text, self.emitted_text])) :]
        self.emitted_text = text
        return delta, bool(hits)
