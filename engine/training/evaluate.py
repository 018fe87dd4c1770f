"""Quality figures of the built-in model, measured on data it never trained on.

1. Masked-token accuracy on the validation files: rows of T tokens, exactly
   round(ratio * T) positions per row masked (seeded), argmax prediction per masked
   position from one forward. Baseline: the unigram-frequency predictor, which
   answers the single most frequent token of the *training* stream at every
   masked position (the argmax of the unigram distribution); its accuracy is the
   share of masked validation positions holding that token. Same masks for both.
2. Held-out function bodies: for functions from validation files, the chat-formatted
   signature + docstring is the prompt and the model writes the body with the
   reference variable-length sampler (one block at a time, temperature 0). A body
   counts as parsing when `ast.parse(prompt + "\\n" + body)` succeeds AND the first
   function of the parsed module has at least one statement after its docstring
   (so an empty or dedented-away answer does not count). No repair is applied.
"""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import asdict, dataclass

import torch

from ..params import DiffusionParams
from .corpus import chunk_stream
from .data import FunctionPair
from .objective import masked_logits, plain_layout
from .tokenizer import chat_prompt_ids


@dataclass(frozen=True)
class AccuracyRow:
    mask_ratio: float
    model_accuracy: float
    unigram_accuracy: float
    masked_tokens: int


def fixed_ratio_masks(rows: int, length: int, ratio: float, seed: int) -> torch.Tensor:
    """`(R, T)` bool with exactly round(ratio * T) (at least 1) masked positions per row."""
    k = max(1, round(ratio * length))
    gen = torch.Generator().manual_seed(seed)
    scores = torch.rand(rows, length, generator=gen)
    idx = scores.topk(k, dim=-1).indices
    return torch.zeros(rows, length, dtype=torch.bool).scatter_(1, idx, True)


def most_frequent_token(train_ids: torch.Tensor) -> int:
    """Argmax of the unigram distribution of the training stream `(N,)`."""
    return int(torch.bincount(train_ids).argmax())


@torch.no_grad()
def masked_accuracy(
    model, rows: torch.Tensor, ratio: float, mask_id: int, unigram_token: int, seed: int = 0, batch: int = 8
) -> AccuracyRow:
    """Model and unigram-baseline accuracy on the same masks, for `rows` `(R, T)` of clean tokens."""
    masks = fixed_ratio_masks(rows.shape[0], rows.shape[1], ratio, seed)
    correct = baseline = total = 0
    for s in range(0, rows.shape[0], batch):
        x, m = rows[s : s + batch], masks[s : s + batch]
        noisy = torch.where(m, torch.full_like(x, mask_id), x)
        logits = masked_logits(model, noisy, plain_layout(*x.shape), m)  # (M, V)
        targets = x[m]
        correct += int((logits.argmax(-1) == targets).sum())
        baseline += int((targets == unigram_token).sum())
        total += targets.numel()
    return AccuracyRow(ratio, correct / total, baseline / total, total)


def accuracy_table(
    model, val_stream: torch.Tensor, train_stream: torch.Tensor, mask_id: int, seq_len: int = 256,
    max_rows: int = 200, ratios: tuple[float, ...] = (0.15, 0.5, 0.9), seed: int = 0,
) -> tuple[list[AccuracyRow], int]:
    rows = chunk_stream(val_stream, seq_len, max_rows)
    unigram = most_frequent_token(train_stream)
    return [masked_accuracy(model, rows, r, mask_id, unigram, seed) for r in ratios], unigram


def body_parses(prompt: str, body: str) -> bool:
    """The generated body completes the function: parses, and adds a statement after the docstring."""
    if not body.strip():
        return False
    try:
        tree = ast.parse(prompt + "\n" + body.rstrip())
    except (SyntaxError, ValueError):
        return False
    func = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    return func is not None and len(func.body) >= 2


@dataclass(frozen=True)
class GenerationRecord:
    source: str
    prompt: str
    reference_body: str
    generated: str
    generated_tokens: int
    finish_reason: str
    parses: bool
    exact_match: bool


def generate_bodies(
    model, cfg, tokenizer, pairs: list[FunctionPair], params: DiffusionParams, batch: int = 10,
    progress: bool = True,
) -> list[GenerationRecord]:
    from tqdm import tqdm

    from ..reference import generate_variable

    out: list[GenerationRecord] = []
    bar = tqdm(total=len(pairs), desc="generate", disable=not progress, mininterval=2.0)
    for s in range(0, len(pairs), batch):
        chunk = pairs[s : s + batch]
        prompts = [chat_prompt_ids(tokenizer, p.prompt) for p in chunk]
        results = generate_variable(model, cfg, prompts, params, tokenizer=tokenizer)
        for p, r in zip(chunk, results, strict=True):
            out.append(GenerationRecord(
                p.source, p.prompt, p.body, r.text, len(r.token_ids), r.finish_reason,
                body_parses(p.prompt, r.text), r.text.strip() == p.body.strip(),
            ))
        bar.update(len(chunk))
    bar.close()
    return out


def summarize_generations(records: list[GenerationRecord]) -> dict[str, float | str]:
    n = len(records)
    # A parse rate means little if one stock answer fits every prompt: report how repetitive they are.
    answers = Counter(r.generated.strip() for r in records)
    top_answer, top_count = answers.most_common(1)[0]
    return {
        "distinct_answers": len(answers),
        "most_common_answer": top_answer,
        "most_common_answer_share": top_count / n,
        "parse_rate_without_most_common": (
            sum(r.parses for r in records if r.generated.strip() != top_answer) / max(1, n - top_count)
        ),
        "functions": n,
        "parse_rate": sum(r.parses for r in records) / n,
        "exact_match_rate": sum(r.exact_match for r in records) / n,
        "stopped_rate": sum(r.finish_reason == "stop" for r in records) / n,
        "mean_generated_tokens": sum(r.generated_tokens for r in records) / n,
    }


def records_as_dicts(records: list[GenerationRecord]) -> list[dict]:
    return [asdict(r) for r in records]
