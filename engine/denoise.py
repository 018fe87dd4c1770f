"""Denoiser: per-row metadata for the kernels, then candidates, confidences and commits.

The arithmetic lives in `diffuserve.kernels` (`row_pass`: candidate + confidence per masked row;
`select_commit`: per-sequence top-k or threshold, scattered into the canvas). This module only
lays out, for one engine step, which row belongs to which request and with which options.
"""

from __future__ import annotations

import torch

from ..kernels import row_pass, select_commit
from .config import ModelConfig
from .sequence import Sequence, StepPlan


class Denoiser:
    def __init__(self, cfg: ModelConfig, device: torch.device):
        self.device = device
        self.mask_id = cfg.mask_token_id
        stop = list(cfg.stop_token_ids)
        # LLaDA `logits_eos_inf` suppresses the first stop id (EOS); confidence suppression
        # covers all the model's stop ids (EOS and EOT).
        self.suppress_ids = torch.tensor(stop[:1], dtype=torch.long, device=device)
        self.conf_block_ids = torch.tensor(stop, dtype=torch.long, device=device)

    def commit(self, logits: torch.Tensor, work: list[tuple[Sequence, StepPlan]]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Commit tokens for each denoising sequence.

        logits `(R, V)`: one row per masked block position, sequences in `work` order, columns in
        `plan.mask_cols` order. Returns (canvas `(L,)`: the current blocks of all sequences,
        concatenated, with this step's commits written in; row_bad `(R,)` bool: non-finite rows).
        """
        temperature, seed, pos, step, bias_token, bias_value = [], [], [], [], [], []
        suppress, conf_block, random_conf, canvas_index, canvas = [], [], [], [], []
        offsets, ks, thresholds = [0], [], []
        for seq, plan in work:
            p = seq.params
            base = len(canvas)
            canvas.extend(seq.block)
            n = len(plan.mask_cols)
            first = plan.mask_cols[0] if n else -1
            a0 = len(seq.answer)
            for j in plan.mask_cols:
                pos.append(a0 + j)
                canvas_index.append(base + j)
                if plan.bias is not None and j == first:
                    bias_token.append(plan.bias[0])
                    bias_value.append(plan.bias[1])
                else:
                    bias_token.append(-1)
                    bias_value.append(0.0)
            temperature += [p.temperature] * n
            seed += [p.effective_seed] * n
            step += [seq.block_step] * n
            suppress += [p.suppress_eos] * n
            conf_block += [p.suppress_eos_confidence] * n
            random_conf += [p.remasking == "random"] * n
            offsets.append(offsets[-1] + n)
            ks.append(plan.k)
            thresholds.append(p.threshold if p.threshold is not None else -1.0)

        dev = self.device
        # The mask token is never a candidate: committing it would leave the position masked forever.
        logits[:, self.mask_id] = float("-inf")

        def t(values, dtype):
            return torch.tensor(values, dtype=dtype).to(dev, non_blocking=True)

        tokens, conf = row_pass(
            logits,
            temperature=t(temperature, torch.float32), seed=t(seed, torch.long), pos=t(pos, torch.long),
            step=t(step, torch.long), bias_token=t(bias_token, torch.long),
            bias_value=t(bias_value, torch.float32), suppress_ids=self.suppress_ids,
            suppress_row=t(suppress, torch.bool), conf_block_ids=self.conf_block_ids,
            conf_block_row=t(conf_block, torch.bool), random_conf=t(random_conf, torch.bool),
        )  # fmt: skip
        canvas_t = t(canvas, torch.long)
        select_commit(conf, t(offsets, torch.long), t(ks, torch.long), t(thresholds, torch.float32),
                      tokens, canvas_t, t(canvas_index, torch.long))
        # A NaN hidden state makes its whole logit row NaN: column 0 tells, without a pass over V.
        # Such a request fails alone (see LLMEngine.step).
        row_bad = torch.isnan(conf) | torch.isnan(logits[:, 0])
        return canvas_t, row_bad
