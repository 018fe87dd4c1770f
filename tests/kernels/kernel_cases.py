"""Random row-pass inputs shared by the kernel tests (never zeros: ties only where a test asks)."""

from __future__ import annotations

import torch


def make_rows(
    n_rows: int,
    vocab: int,
    dtype: torch.dtype = torch.float32,
    *,
    gen_seed: int = 0,
    temperature: float | list[float] = 0.0,
    scale: float = 3.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits `(R, V)` drawn from N(0, scale) and the row-pass keyword tensors (no options on)."""
    g = torch.Generator().manual_seed(gen_seed)
    logits = (torch.randn(n_rows, vocab, generator=g) * scale + 0.5).to(dtype)
    temps = temperature if isinstance(temperature, list) else [temperature] * n_rows
    opts = dict(
        temperature=torch.tensor(temps, dtype=torch.float32),
        seed=torch.randint(0, 2**63 - 1, (n_rows,), generator=g),
        pos=torch.randint(0, 4096, (n_rows,), generator=g),
        step=torch.randint(0, 64, (n_rows,), generator=g),
        bias_token=torch.full((n_rows,), -1, dtype=torch.long),
        bias_value=torch.zeros(n_rows, dtype=torch.float32),
        suppress_ids=torch.empty(0, dtype=torch.long),
        suppress_row=torch.zeros(n_rows, dtype=torch.bool),
        conf_block_ids=torch.empty(0, dtype=torch.long),
        conf_block_row=torch.zeros(n_rows, dtype=torch.bool),
        random_conf=torch.zeros(n_rows, dtype=torch.bool),
    )
    return logits, opts


def take_rows(opts: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-row options of rows `index` (the id lists are shared, not per row)."""
    shared = ("suppress_ids", "conf_block_ids")
    return {k: (v if k in shared else v[index].contiguous()) for k, v in opts.items()}
