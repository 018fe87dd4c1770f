"""Token streams for pretraining and SFT, and packed windows sampled from them.

Both phases use the same packing (iLLaDA): documents (source files, or formatted
instruction examples) are concatenated into one stream, and each training row is
a window of T tokens starting at a random offset, so rows cross document borders.
"""

from __future__ import annotations

import random

import torch

from .data import FunctionPair, SourceFile
from .tokenizer import BOS_ID, EOS_ID, format_sft_example


def pretrain_stream(files: list[SourceFile], fast_tokenizer, seed: int) -> torch.Tensor:
    """`<|startoftext|> file <|endoftext|>` for every file, in a seeded shuffled order: `(N,)` int64."""
    order = list(files)
    random.Random(seed).shuffle(order)
    encoded = fast_tokenizer.encode_batch([f.text for f in order], add_special_tokens=False)
    ids: list[int] = []
    for enc in encoded:
        ids.append(BOS_ID)
        ids.extend(enc.ids)
        ids.append(EOS_ID)
    return torch.tensor(ids, dtype=torch.long)


def sft_stream(
    pairs: list[FunctionPair], hf_tokenizer, seed: int, max_example_tokens: int, block_length: int = 32
) -> tuple[torch.Tensor, int]:
    """Formatted examples (chat template + answer + EOS), shuffled and concatenated; (stream, n kept)."""
    order = list(pairs)
    random.Random(seed).shuffle(order)
    ids: list[int] = []
    kept = 0
    for p in order:
        ex = format_sft_example(hf_tokenizer, p.prompt, p.body, block_length)
        if len(ex) <= max_example_tokens:
            ids.extend(ex)
            kept += 1
    return torch.tensor(ids, dtype=torch.long), kept


def sample_windows(stream: torch.Tensor, batch: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """`batch` windows of `length` tokens at uniform random offsets: `(B, T)`."""
    starts = torch.randint(0, stream.numel() - length, (batch,), generator=gen)  # (B,)
    return stream[starts[:, None] + torch.arange(length)[None, :]]


def chunk_stream(stream: torch.Tensor, length: int, max_rows: int | None = None) -> torch.Tensor:
    """Consecutive non-overlapping windows (for evaluation): `(R, T)`."""
    rows = stream.numel() // length
    if max_rows is not None:
        rows = min(rows, max_rows)
    return stream[: rows * length].view(rows, length)
