"""The denoising row pass over vocabulary-parallel logits, with no rank ever holding a whole row.

Each rank reduces its slice `(R, V / N)` to a few numbers per row and the ranks combine them:
- candidate: each rank's best (noised) score and its global id; the ranks all-gather those and
  take the best, the lowest rank on ties (ranks hold increasing ids, so this is the lowest id,
  as `torch.argmax` on a whole row). The Gumbel noise is keyed by the global vocabulary id, so
  every rank draws exactly its slice of the single-process noise.
- confidence softmax(x)[candidate]: a MAX all-reduce of the row maxima, then one SUM
  all-reduce of (sum of exp(x - max), exp(x[candidate] - max) on the rank owning it).
Everything else (bias, EOS suppression, the mask token, random remasking, blocked confidences)
is the single-process row pass of `kernels.torch_kernels.row_chunk`, applied to the slice.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ...kernels import select_commit
from ...kernels.noise import remask_scores_rows, uniform_rows
from ..denoise import Denoiser, StepRows


class VocabParallelDenoiser(Denoiser):
    def __init__(self, cfg, device: torch.device, vocab: tuple[int, int], world: int, group):
        super().__init__(cfg, device)
        self.start, self.end = vocab
        self.world, self.group = world, group

    def _local(self, ids: torch.Tensor) -> torch.Tensor:
        """The ids of this rank's slice, as local column indices."""
        return ids[(ids >= self.start) & (ids < self.end)] - self.start

    def commit(self, logits: torch.Tensor, rows: StepRows) -> tuple[torch.Tensor, torch.Tensor]:
        opts = rows.options
        x = logits.to(torch.float32, copy=True)  # (R, n) this rank's slice
        n = x.shape[1]
        if self.start <= self.mask_id < self.end:
            x[:, self.mask_id - self.start] = float("-inf")
        own_bias = (opts.bias_token >= self.start) & (opts.bias_token < self.end)
        x.scatter_add_(1, (opts.bias_token - self.start).clamp(0, n - 1)[:, None],
                       torch.where(own_bias, opts.bias_value, 0.0)[:, None])
        suppress = self._local(opts.suppress_ids)
        if suppress.numel():
            x[:, suppress] = torch.where(opts.suppress_row[:, None], float("-inf"), x[:, suppress])
        if bool((opts.temperature > 0).any()):
            ids = torch.arange(self.start, self.end, device=x.device)[None, :]
            u = uniform_rows(opts.seed[:, None], opts.pos[:, None], opts.step[:, None], ids)
            best, arg = (x + opts.temperature[:, None] * -torch.log(-torch.log(u))).max(dim=1)
        else:
            best, arg = x.max(dim=1)
        row_max = x.amax(dim=1)
        # candidate: the best of the ranks' bests
        bests = [torch.empty_like(best) for _ in range(self.world)]
        args = [torch.empty_like(arg) for _ in range(self.world)]
        dist.all_gather(bests, best, group=self.group)
        dist.all_gather(args, arg + self.start, group=self.group)
        winner = torch.stack(bests).argmax(dim=0)  # (R,) first (lowest) rank on ties
        cand = torch.stack(args).gather(0, winner[None])[0]
        # confidence: softmax over the whole row from per-rank partial sums
        dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=self.group)
        e = torch.exp(x - torch.where(row_max == float("-inf"), 0.0, row_max)[:, None])
        owned = (cand >= self.start) & (cand < self.end)
        e_cand = torch.where(owned, e.gather(1, (cand - self.start).clamp(0, n - 1)[:, None])[:, 0], 0.0)
        sums = torch.stack([e.sum(dim=1), e_cand])
        dist.all_reduce(sums, group=self.group)
        conf = sums[1] / sums[0]
        conf = torch.where(opts.random_conf, remask_scores_rows(opts.seed, opts.pos, opts.step), conf)
        if opts.conf_block_ids.numel():
            blocked = (cand[:, None] == opts.conf_block_ids[None, :]).any(dim=1) & opts.conf_block_row
            conf = torch.where(blocked, float("-inf"), conf)
        select_commit(conf, cand, rows.plan)
        # A NaN logit anywhere in the row makes the all-reduced row maximum NaN.
        row_bad = torch.isnan(conf) | torch.isnan(row_max)
        return rows.plan.canvas, row_bad
