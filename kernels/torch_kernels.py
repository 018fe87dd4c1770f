"""The denoising kernels in PyTorch: the production path on the CPU, and the specification the
Triton kernels are tested against.

`row_pass_torch` gives each masked row its candidate token and confidence; `select_commit_torch`
picks, per sequence, the rows to commit and writes their tokens into the canvas. The Triton
kernels in `triton_row.py` / `triton_select.py` compute the same functions.
"""

from __future__ import annotations

import torch

from .noise import gumbel_rows, remask_scores_rows
from .row_options import CommitPlan, RowOptions

# Rows are processed in chunks of about this many logits, so the float32 copy and the int64
# noise temporaries stay bounded (a 1024 x 155136 batch would otherwise need several GB), and on
# the CPU each chunk's passes (bias, max, exp, sum) run while it is still in cache: 1M elements
# (4 MB) ran 400 x 8192 rows in 9.5 ms against 17.6 ms for 4M-element chunks (one core).
_CHUNK_ELEMS = 1 << 20


def softmax_at(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """softmax(x, dim=1)[i, index[i]] for float32 `x` `(r, V)`: `(r,)` float32.

    exp(x[c] - max) / sum(exp(x - max)) with torch.sum's cascaded summation: within about 1e-7
    of the float64 value, where torch.softmax's running float32 sum drifts by up to ~1e-5 at
    V = 155136 for logits of spread 3. The samplers share this function so their
    confidences (and so their top-k order) agree to the bit.
    """
    m = x.amax(dim=1, keepdim=True)
    e = torch.exp(x - torch.where(m == float("-inf"), 0.0, m))  # (r, V); an all -inf row gives 0/0
    return e.gather(1, index[:, None])[:, 0] / e.sum(dim=1)


def row_chunk(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    seed: torch.Tensor,
    pos: torch.Tensor,
    step: torch.Tensor,
    bias_token: torch.Tensor,
    bias_value: torch.Tensor,
    suppress_ids: torch.Tensor,
    suppress_row: torch.Tensor,
    conf_block_ids: torch.Tensor,
    conf_block_row: torch.Tensor,
    random_conf: torch.Tensor,
    noisy: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`row_pass_torch` on all rows at once, with no host sync (so torch.compile takes it whole).

    noisy=False skips the Gumbel noise: only right when every temperature is 0.
    """
    # float32 copy (a copy even for float32: the caller's logits are not modified)
    x = logits.to(torch.float32, copy=True)  # (r, V)
    has_bias = bias_token >= 0
    x.scatter_add_(1, bias_token.clamp(min=0)[:, None], torch.where(has_bias, bias_value, 0.0)[:, None])
    if suppress_ids.numel():
        x[:, suppress_ids] = torch.where(suppress_row[:, None], float("-inf"), x[:, suppress_ids])
    if noisy:
        noise = gumbel_rows(seed, pos, step, x.shape[1])  # (r, V)
        cand = torch.argmax(x + temperature[:, None] * noise, dim=1)
    else:
        # max(dim) returns the first maximal index, as argmax does, and runs 3x faster on the CPU.
        cand = x.max(dim=1).indices
    conf = softmax_at(x, cand)
    conf = torch.where(random_conf, remask_scores_rows(seed, pos, step), conf)
    if conf_block_ids.numel():
        blocked = (cand[:, None] == conf_block_ids[None, :]).any(dim=1) & conf_block_row
        conf = torch.where(blocked, float("-inf"), conf)
    return cand, conf


def row_pass_torch(
    logits: torch.Tensor,
    opts: RowOptions,
    *,
    out_token: torch.Tensor | None = None,
    out_conf: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate token `(R,)` int64 and confidence `(R,)` float32 for logits `(R, V)`.

    biased = float32 logits + bias_value at bias_token (when >= 0), then suppress_ids -> -inf on
    suppress_row rows. token = argmax(biased + temperature * gumbel(seed, pos, step)), lowest id on
    ties (plain argmax at temperature 0). confidence = softmax(biased)[token], or the remask score
    on random_conf rows; -inf when token is in conf_block_ids on conf_block_row rows.
    """
    n_rows, vocab = logits.shape
    device = logits.device
    token = out_token if out_token is not None else torch.empty(n_rows, dtype=torch.long, device=device)
    conf = out_conf if out_conf is not None else torch.empty(n_rows, dtype=torch.float32, device=device)
    chunk = max(1, _CHUNK_ELEMS // max(vocab, 1))
    for start in range(0, n_rows, chunk):
        rows = slice(start, min(start + chunk, n_rows))
        part = opts.take(rows)
        noisy = bool((part.temperature > 0).any())  # host sync: skips the noise at temperature 0
        token[rows], conf[rows] = row_chunk(logits[rows], *part.tensors(), noisy=noisy)
    return token, conf


def select_commit_torch(
    confidence: torch.Tensor,
    tokens: torch.Tensor,
    plan: CommitPlan,
    out_committed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Committed mask `(R,)` bool; writes tokens[i] to canvas[canvas_index[i]] for committed rows.

    Rows of sequence b are offsets[b]:offsets[b+1]. Rank rows inside a sequence by confidence,
    higher first, lower row index first on ties. threshold[b] >= 0: commit rank 0 and every row
    with confidence >= threshold[b]; else factor[b] > 0 (Fast-dLLM's factor rule): commit rank 0
    and every row of rank r (the n = r + 1 best) with (n + 1) * (1 - confidence) < factor[b],
    which holds for a prefix of the ranks since confidence falls as the rank grows; otherwise
    commit the k[b] best ranks. Then at most max(max_commits[b], 1) rows (the best ranks) stay
    committed. factor / max_commits None: no factor rule / no cap. (Names as in `CommitPlan`.)
    """
    offsets, k, threshold, canvas, canvas_index = (plan.offsets, plan.k, plan.threshold, plan.canvas,
                                                   plan.canvas_index)
    factor, max_commits = plan.factor, plan.max_commits
    n_rows = confidence.numel()
    device = confidence.device
    committed = (
        out_committed if out_committed is not None else torch.empty(n_rows, dtype=torch.bool, device=device)
    )
    if n_rows == 0:
        return committed
    lengths = offsets[1:] - offsets[:-1]  # (B,)
    seq = torch.repeat_interleave(torch.arange(lengths.numel(), device=device), lengths, output_size=n_rows)
    # Two stable sorts: by confidence (descending), then by sequence; ties keep row order.
    order = torch.sort(confidence, descending=True, stable=True).indices
    order = order[torch.sort(seq[order], stable=True).indices]
    rank = torch.empty(n_rows, dtype=torch.long, device=device)
    rank[order] = torch.arange(n_rows, device=device) - offsets[seq[order]]
    thr = threshold[seq]
    by_threshold = (confidence >= thr) | (rank == 0)
    chosen = rank < k[seq]
    if factor is not None:
        f = factor[seq]
        by_factor = ((rank + 2) * (1.0 - confidence) < f) | (rank == 0)
        chosen = torch.where(f > 0, by_factor, chosen)
    chosen = torch.where(thr >= 0, by_threshold, chosen)
    if max_commits is not None:
        chosen &= rank < max_commits[seq].clamp(min=1)
    committed.copy_(chosen)
    # Rows not committed write the canvas's current value back: no host sync for a boolean index.
    canvas[canvas_index] = torch.where(committed, tokens, canvas[canvas_index])
    return committed
