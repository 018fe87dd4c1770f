"""The oracle: exact reference samplers that every faster path is tested against.

Written from the algorithm (docs/design.md, "Sampling"), not copied: each step runs one
dense forward over the whole canvas (prompt + answer so far + masks), then
picks, per row and in plain Python, which masked positions of the current block
to commit. Prompts of different lengths share a batch through left padding and
an attention mask; positions count real tokens, so padding changes nothing.

Noise comes from `kernels.noise`, keyed by (seed, answer position, step in
block), so a seeded request samples the same tokens here and in the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..kernels import softmax_at
from ..kernels.noise import gumbel, remask_scores
from .decoding import block_steps, think_bias, think_token_ids
from .model_config import ModelConfig
from .params import DiffusionParams, ParamError, transfer_schedule


@dataclass
class RefResult:
    token_ids: list[int]
    text: str
    steps: int
    finish_reason: str  # "stop" | "length"


def choose_candidates(
    logits: torch.Tensor, answer_pos: torch.Tensor, step: int, bias: tuple[int, float] | None,
    first_masked_row: int, cfg: ModelConfig, params: DiffusionParams,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate token and confidence `(n,)` for one block's rows `logits` `(n, V)`."""
    lg = logits.float().clone()
    # A committed mask token would leave its position masked forever: never a candidate.
    lg[:, cfg.mask_token_id] = -math.inf
    if bias is not None:
        lg[first_masked_row, bias[0]] += bias[1]
    if params.suppress_eos and cfg.stop_token_ids:
        lg[:, cfg.stop_token_ids[0]] = -math.inf
    steps = torch.full_like(answer_pos, step)
    if params.temperature > 0:
        noise = gumbel(params.effective_seed, answer_pos, steps, lg.shape[-1])
        cand = torch.argmax(lg + params.temperature * noise, dim=-1)
    else:
        cand = torch.argmax(lg, dim=-1)
    if params.remasking == "random":
        conf = remask_scores(params.effective_seed, answer_pos, steps)
    else:
        # The kernels' accurate softmax-at-index: confidences agree with the engine to the bit.
        conf = softmax_at(lg, cand)
    if params.suppress_eos_confidence and cfg.stop_token_ids:
        blocked = torch.isin(cand, torch.tensor(cfg.stop_token_ids))
        conf = conf.masked_fill(blocked, -math.inf)
    return cand, conf


def pick_commits(
    conf: torch.Tensor, masked: torch.Tensor, k: int | None, threshold: float | None,
    factor: float | None = None, cap: int | None = None,
) -> list[int]:
    """Rows to commit: top-k masked rows by confidence (ties: lower row first), or all >= threshold,
    or (factor rule) the n best for the largest n with (n + 1) * (1 - c_n) < factor; the two
    parallel rules commit at least one and at most `cap`."""
    rows = [int(i) for i in torch.sort(conf, descending=True, stable=True).indices if masked[i]]
    if threshold is not None:
        chosen = [i for i in rows if conf[i] >= threshold]
    elif factor is not None:
        # float32 tensor arithmetic, as the kernels do it, so both pick the same n at the boundary
        chosen = [i for n, i in enumerate(rows, 1) if (n + 1) * (1.0 - conf[i].float()) < factor]
    else:
        return rows[:k]
    return (chosen or rows[:1])[: cap or len(rows)]


def _forward(model, rows: list[list[int]], cfg: ModelConfig, params: DiffusionParams,
             prompt_lens: list[int]) -> torch.Tensor:
    """Logits `(B, T, V)` for left-padded rows; with cfg_scale, the guided mix of two passes."""
    device = model.embed.weight.device
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), cfg.mask_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, r in enumerate(rows):
        ids[b, width - len(r):] = torch.tensor(r)
        mask[b, width - len(r):] = True
    ids, mask = ids.to(device), mask.to(device)
    cond = model(ids, attention_mask=mask).float()
    if params.cfg_scale <= 0:
        return cond
    un_ids = ids.clone()
    for b, r in enumerate(rows):
        start = width - len(r)
        un_ids[b, start : start + prompt_lens[b]] = cfg.mask_token_id
    un = model(un_ids, attention_mask=mask).float()
    return un + (params.cfg_scale + 1) * (cond - un)


@torch.no_grad()
def _decode_block(model, cfg, params, prompts, answers, n, think_ids) -> int:
    """Decode one block of n masks appended to every answer, in place. Returns steps taken.

    `answers[b]` may already hold masks to the right of the block (fixed canvas); the
    block is answer positions [start, start + n) where start = first mask position.
    """
    start = answers[0].index(cfg.mask_token_id)
    steps_b = block_steps(params, n)
    schedule = transfer_schedule(n, steps_b)
    answer_pos = torch.arange(start, start + n)
    step = 0
    while any(cfg.mask_token_id in a[start : start + n] for a in answers):
        rows = [p + a for p, a in zip(prompts, answers, strict=True)]
        logits = _forward(model, rows, cfg, params, [len(p) for p in prompts])
        width = logits.shape[1]
        for b, a in enumerate(answers):
            block = a[start : start + n]
            masked = torch.tensor([t == cfg.mask_token_id for t in block])
            if not masked.any():
                continue
            first = int(masked.int().argmax())
            bias = think_bias(a, start + first, think_ids, params)
            # The answer's block sits at the same columns in every row: padding is on the left.
            cols = slice(width - len(a) + start, width - len(a) + start + n)
            cand, conf = choose_candidates(logits[b, cols], answer_pos, step, bias, first, cfg, params)
            k = schedule[step] if step < len(schedule) else None
            for i in pick_commits(conf, masked, k, params.threshold, params.threshold_factor,
                                  params.max_commits_per_step):
                a[start + i] = int(cand[i])
        step += 1
    return step


def _finish(cfg, params, tokenizer, answer: list[int], steps: int, full: bool) -> RefResult:
    stop_ids = set(params.stop_ids(cfg))
    cut = next((i for i, t in enumerate(answer) if t in stop_ids), None)
    ids = answer if cut is None else answer[:cut]
    text = tokenizer.decode(ids, skip_special_tokens=True) if tokenizer is not None else ""
    hits = [text.find(s) for s in params.stop if s in text]
    if hits:
        text = text[: min(hits)]
    reason = "stop" if cut is not None or hits else ("length" if full else "")
    return RefResult(ids, text, steps, reason)


def _check(cfg: ModelConfig, prompts: list[list[int]], params: DiffusionParams) -> None:
    for p in prompts:
        params.validate(cfg, len(p))


@torch.no_grad()
def generate_fixed(model, cfg: ModelConfig, prompts: list[list[int]], params: DiffusionParams,
                   tokenizer=None) -> list[RefResult]:
    """LLaDA block sampler: canvas = prompt + max_tokens masks, blocks left to right."""
    params = params.replace(canvas="fixed", cache="none")
    _check(cfg, prompts, params)
    answers = [[cfg.mask_token_id] * params.max_tokens for _ in prompts]
    think_ids = think_token_ids(cfg, tokenizer)
    steps = 0
    for _ in range(params.max_tokens // params.block_length):
        steps += _decode_block(model, cfg, params, prompts, answers, params.block_length, think_ids)
    return [_finish(cfg, params, tokenizer, a, steps, True) for a in answers]


@torch.no_grad()
def generate_variable(model, cfg: ModelConfig, prompts: list[list[int]], params: DiffusionParams,
                      tokenizer=None) -> list[RefResult]:
    """iLLaDA variable length: append one block at a time until a stop or max_tokens."""
    params = params.replace(canvas="variable", cache="none")
    _check(cfg, prompts, params)
    think_ids = think_token_ids(cfg, tokenizer)
    results: list[RefResult | None] = [None] * len(prompts)
    answers: list[list[int]] = [[] for _ in prompts]
    steps = [0] * len(prompts)
    active = list(range(len(prompts)))
    while active:
        n = min(params.block_length, params.max_tokens - len(answers[active[0]]))
        for b in active:
            answers[b] += [cfg.mask_token_id] * n
        taken = _decode_block(model, cfg, params, [prompts[b] for b in active],
                              [answers[b] for b in active], n, think_ids)
        still = []
        for b in active:
            steps[b] += taken
            res = _finish(cfg, params, tokenizer, answers[b], steps[b], len(answers[b]) >= params.max_tokens)
            if res.finish_reason:
                results[b] = res
            else:
                still.append(b)
        active = still
    return results  # type: ignore[return-value]


def llada_generate(model, cfg: ModelConfig, prompt: list[int], *, steps: int = 128, gen_length: int = 128,
                   block_length: int = 128, tokenizer=None, **options) -> RefResult:
    """The published LLaDA signature (total `steps` over the whole canvas) mapped onto generate_fixed."""
    if block_length < 1 or gen_length % block_length:
        raise ParamError(
            "block_length", f"gen_length {gen_length} is not divisible by block_length {block_length}"
        )
    num_blocks = gen_length // block_length
    if steps < 1 or steps % num_blocks:
        raise ParamError("steps", f"steps {steps} is not divisible by the number of blocks {num_blocks}")
    params = DiffusionParams(max_tokens=gen_length, canvas="fixed", block_length=block_length,
                             steps=steps // num_blocks, cache="none", **options)
    return generate_fixed(model, cfg, [prompt], params, tokenizer)[0]
