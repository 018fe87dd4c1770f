"""Scoring candidate continuations: a scoring sequence rides in the engine's ordinary steps.

A scoring request is a prompt plus one candidate continuation (the server sends one engine
request per candidate, as it does per choice). `ScoringSequence` has the shape the scheduler,
runner and engine expect of a `Sequence`: each step it plans one exact-mode forward (prompt +
candidate canvas, no KV pages) whose extra `score_rows` ask the runner for the log-probability of
the candidate's token at each still-masked position (and whether it is the model's argmax). So
scoring rows share forwards with generation rows; nothing runs one request at a time.

Two methods:
- `confidence` (iLLaDA Eq. 2): the candidate starts fully masked; each step reveals, among the
  still-masked positions, the one whose ground-truth token the model gives the highest
  probability; the score is the sum of the revealed tokens' log-probs in reveal order. One
  forward per candidate token. `greedy`: every revealed token was the argmax at its reveal.
- `likelihood` (the masked-diffusion bound, Eq. 1): per sample k a mask ratio t_k, stratified
  over (0, 1] (t_k = (k + u_k) / M), masks each candidate token with probability t_k; the sample
  value is (1 / t_k) * (sum of log-probs of the masked tokens), prompt visible. The score is the
  mean over `mc_samples` samples (a lower bound on log p(candidate | prompt) in expectation), with
  the sample standard error (conservative for stratified draws). One forward per sample that masks
  something; an empty sample is worth exactly 0 and costs nothing. Draws depend on the seed and
  the candidate length only: the same seed gives every candidate of a question the same t_k
  (common random numbers) and a request the same score alone or under load.

Log-probs exclude the mask token (its logit is -inf, as in generation), so "greedy" means what
the sampler at temperature 0 would commit.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch

from .model_config import ModelConfig
from .params import ParamError
from .sequence import SeqStatus, StepPlan

METHODS = ("confidence", "likelihood")
MAX_MC_SAMPLES = 1024


@dataclass(frozen=True)
class ScoreParams:
    method: Literal["confidence", "likelihood"] = "confidence"
    mc_samples: int = 32  # likelihood only
    seed: int | None = None  # likelihood only; None = 0

    def __post_init__(self) -> None:
        """The model-independent checks (an instance that exists is in range)."""
        if self.method not in METHODS:
            raise ParamError("method", f"method must be 'confidence' or 'likelihood', got {self.method!r}")
        if not (isinstance(self.mc_samples, int) and 1 <= self.mc_samples <= MAX_MC_SAMPLES):
            raise ParamError("mc_samples",
                             f"mc_samples must be in [1, {MAX_MC_SAMPLES}], got {self.mc_samples}")
        if self.seed is not None and not (isinstance(self.seed, int) and 0 <= self.seed < 2**63):
            raise ParamError("seed", f"seed must be in [0, 2**63), got {self.seed}")

    def validate(self, cfg: ModelConfig, prompt_ids: list[int], candidate_ids: list[int]) -> ScoreParams:
        """The model-dependent checks: raise ParamError naming the bad field; return self."""
        prompt_len, candidate_len = len(prompt_ids), len(candidate_ids)
        vocab = cfg.vocab_size
        for name, ids in (("prompt", prompt_ids), ("candidates", candidate_ids)):
            bad = next((t for t in ids if not (isinstance(t, int) and 0 <= t < vocab)), None)
            if bad is not None:
                raise ParamError(name, f"token id {bad} is outside the vocabulary [0, {vocab})")
        if cfg.mask_token_id in candidate_ids:
            raise ParamError("candidates", "a candidate holds the mask token")
        if prompt_len < 1 and cfg.shift_logits:  # the first candidate token has no row to read
            raise ParamError("prompt", "the prompt is empty (this model predicts each token from the "
                             "position before it, so scoring needs at least one prompt token)")
        if candidate_len < 1:
            raise ParamError("candidates", "a candidate is empty (no tokens)")
        if prompt_len + candidate_len > cfg.max_length:
            raise ParamError("candidates", f"prompt ({prompt_len} tokens) + candidate ({candidate_len} "
                             f"tokens) exceeds the model's context length {cfg.max_length}",
                             code="context_length_exceeded")
        return self


@dataclass
class CandidateScore:
    score: float
    num_tokens: int
    num_forwards: int
    greedy: bool | None = None  # confidence only
    stderr: float | None = None  # likelihood only
    reveal_order: list[int] = field(default_factory=list)  # confidence: candidate positions


class ScoreJob(NamedTuple):
    """A scoring request on its way to the engine thread (`AsyncEngine.score`)."""

    prompt_ids: list[int]
    candidate_ids: list[int]
    params: ScoreParams


def stratified_samples(num_tokens: int, mc_samples: int, seed: int) -> list[tuple[float, list[int]]]:
    """(t_k, masked positions) for each sample k: t_k = (k + u_k) / M in (0, 1], each position
    masked with probability t_k. Depends on (num_tokens, mc_samples, seed) only."""
    rng = random.Random(seed)
    out = []
    for k in range(mc_samples):
        t = (k + 1.0 - rng.random()) / mc_samples  # 1 - U[0,1) lies in (0, 1]: t > 0
        out.append((t, [j for j in range(num_tokens) if rng.random() < t]))
    return out


def row_scores(logits: torch.Tensor, targets: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Per row `(S, 2)` float32: log-prob of the target token (mask token excluded from the
    distribution) and 1.0 when the target attains the row's maximum logit."""
    logits = logits.float()
    logits[:, mask_id] = float("-inf")
    target_logit = logits.gather(1, targets[:, None])[:, 0]
    logp = target_logit - torch.logsumexp(logits, dim=-1)
    greedy = (target_logit >= logits.max(dim=-1).values).float()
    return torch.stack([logp, greedy], dim=1)


class ScoringSequence:
    """One candidate being scored; quacks like `Sequence` for the scheduler, runner and engine."""

    is_scoring = True
    exact = True

    def __init__(self, request_id: str, prompt_ids: list[int], candidate_ids: list[int],
                 params: ScoreParams, cfg: ModelConfig, arrival_time: float | None = None):
        self.request_id = request_id
        self.prompt_ids = list(prompt_ids)
        self.candidate = list(candidate_ids)
        self.params = params
        self.mask_id = cfg.mask_token_id
        self.shift = 1 if cfg.shift_logits else 0
        self.status = SeqStatus.WAITING
        self.pages: list[int] = []  # exact mode: no KV pages
        self.answer: list[int] = []  # nothing generated
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.result: CandidateScore | None = None
        self.num_steps = 0
        self.num_blocks = 0
        self.num_preemptions = 0
        self.arrival_time = time.monotonic() if arrival_time is None else arrival_time
        self.first_scheduled_time: float | None = None
        self.first_block_time: float | None = None
        n = len(self.candidate)
        # confidence state
        self.canvas = [self.mask_id] * n
        self.order: list[int] = []
        self.total = 0.0
        self.greedy = True
        # likelihood state: the samples that mask something; empty ones are worth 0
        self.samples: list[tuple[float, list[int]]] = []
        self.values: list[float] = []
        if params.method == "likelihood":
            drawn = stratified_samples(n, params.mc_samples, params.seed or 0)
            self.samples = [s for s in drawn if s[1]] or [(1.0, [])]  # all empty: one row-less step
            self.values = [0.0] * (len(drawn) - len(self.samples))

    @property
    def is_finished(self) -> bool:
        return self.status is SeqStatus.FINISHED

    def finish(self, reason: str, error: str | None = None) -> None:
        self.status = SeqStatus.FINISHED
        self.finish_reason = reason
        self.error = error

    def preempt(self) -> None:  # holds no pages; its state survives as is
        self.num_preemptions += 1
        self.status = SeqStatus.WAITING

    def plan(self, chunk_size: int) -> StepPlan:
        if self.params.method == "confidence":
            canvas = self.canvas
            masked = [j for j, t in enumerate(canvas) if t == self.mask_id]
        else:
            masked = self.samples[self.num_steps][1]
            canvas = list(self.candidate)
            for j in masked:
                canvas[j] = self.mask_id
        p = len(self.prompt_ids)
        plan = StepPlan(self.prompt_ids + canvas, 0, False, 0, 0, False, block_offset=p)
        plan.score_rows = [p + j - self.shift for j in masked]
        plan.score_targets = [self.candidate[j] for j in masked]
        plan.score_cols = masked
        return plan

    def apply(self, plan: StepPlan, rows: list[tuple[float, bool]] | None) -> bool:
        """Record the step's (log-prob, is-argmax) per score row; True when the candidate is scored."""
        assert rows is not None and len(rows) == len(plan.score_cols)
        self.num_steps += 1
        n = len(self.candidate)
        if self.params.method == "confidence":
            best = max(range(len(rows)), key=lambda r: rows[r][0])  # first of ties: leftmost position
            j = plan.score_cols[best]
            self.canvas[j] = self.candidate[j]
            self.order.append(j)
            self.total += rows[best][0]
            self.greedy = self.greedy and bool(rows[best][1])
            if len(self.order) < n:
                return False
            self.result = CandidateScore(self.total, n, self.num_steps, greedy=self.greedy,
                                         reveal_order=list(self.order))
            return True
        t, _ = self.samples[self.num_steps - 1]
        self.values.append(sum(lp for lp, _ in rows) / t)
        if self.num_steps < len(self.samples):
            return False
        m = len(self.values)
        mean = sum(self.values) / m
        var = sum((v - mean) ** 2 for v in self.values) / (m - 1) if m > 1 else 0.0
        self.result = CandidateScore(mean, n, self.num_steps, stderr=math.sqrt(var / m))
        return True
