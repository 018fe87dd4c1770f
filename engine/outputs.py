"""What the engine hands back: one `BlockOutput` per decoded block of a request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .scoring import CandidateScore

FinishReason = Literal["stop", "length", "abort", "error"]


class EngineFatalError(RuntimeError):
    """The engine cannot step any more (e.g. a tensor-parallel worker is gone). The step's
    requests fail like any failed step; the runner also tells the AsyncEngine at once (its
    `on_lost` hook), which ends every stream with an error and makes the server unhealthy."""


@dataclass
class BlockOutput:
    request_id: str
    new_token_ids: list[int]  # tokens of this block kept after stop handling
    text: str  # text delta of this block after stop-string handling
    finished: bool = False
    finish_reason: FinishReason | None = None
    error: str | None = None  # set when finish_reason == "error"
    # Per-request counters so far.
    num_prompt_tokens: int = 0
    num_generated_tokens: int = 0
    steps: int = 0  # denoising steps (forward passes this request took part in, for denoising)
    blocks: int = 0
    queue_time_s: float = 0.0  # arrival -> first scheduled
    first_block_time_s: float | None = None  # arrival -> first block emitted
    score: CandidateScore | None = None  # a scoring request's result (scoring.py), on its last output

    @property
    def tokens_per_step(self) -> float:
        return self.num_generated_tokens / self.steps if self.steps else 0.0


@dataclass
class StepStats:
    """One engine step, for metrics listeners."""

    duration_s: float
    num_seqs: int
    num_query_tokens: int
    tokens_committed: list[int] = field(default_factory=list)  # per denoising sequence
    # Query tokens written to the KV cache as committed tokens (prompt chunks, finished blocks,
    # refreshes); the rest of num_query_tokens is block/mask tokens and exact-mode canvases.
    num_cache_tokens: int = 0
    # Sequences whose cache of an already decoded answer was rebuilt from position 0 this step
    # (cache refreshes, and recoveries after preemption).
    num_recomputes: int = 0


@dataclass
class EngineStats:
    running: int
    waiting: int
    kv_pages_used: int
    kv_pages_total: int
    num_preemptions: int = 0

    @property
    def kv_usage(self) -> float:
        return self.kv_pages_used / self.kv_pages_total if self.kv_pages_total else 0.0
