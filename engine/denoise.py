"""Denoiser: per-row metadata for the kernels, then candidates, confidences and commits.

The arithmetic lives in `diffuserve.kernels` (`row_pass`: candidate + confidence per masked row;
`select_commit`: per-sequence top-k, threshold or factor rule, scattered into the canvas). This module only
lays out, for one engine step, which row belongs to which request and with which options.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels import CommitPlan, RowOptions, row_pass, select_commit
from .device import to_device
from .model_config import ModelConfig
from .sequence import Sequence, StepPlan


@dataclass(frozen=True)
class StepRows:
    """One step's kernel inputs: the options of every masked row (`row_pass`), and per sequence
    the commit rule and the canvas the commits are written into (`select_commit`)."""

    options: RowOptions
    plan: CommitPlan  # threshold: -1 = none; factor (threshold_factor): -1 = none


class Denoiser:
    def __init__(self, cfg: ModelConfig, device: torch.device):
        self.device = device
        self.mask_id = cfg.mask_token_id
        stop = list(cfg.stop_token_ids)
        # LLaDA `logits_eos_inf` suppresses the first stop id (EOS); confidence suppression
        # covers all the model's stop ids (EOS and EOT).
        self.suppress_ids = torch.tensor(stop[:1], dtype=torch.long, device=device)
        self.conf_block_ids = torch.tensor(stop, dtype=torch.long, device=device)

    def prepare(self, work: list[tuple[Sequence, StepPlan]]) -> StepRows:
        """Per-row kernel inputs for the denoising sequences in `work` (built before the forward,
        so the host-to-device copies overlap the model on CUDA).

        Rows: one per masked block position, sequences in `work` order, columns in
        `plan.mask_cols` order. Canvas `(L,)`: the current blocks of all sequences, concatenated.
        """
        temperature, seed, pos, step, bias_token, bias_value = [], [], [], [], [], []
        suppress, conf_block, random_conf, canvas_index, canvas = [], [], [], [], []
        offsets, ks, thresholds, factors, caps = [0], [], [], [], []
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
            factors.append(p.threshold_factor if p.threshold_factor is not None else -1.0)
            caps.append(p.max_commits_per_step if p.max_commits_per_step is not None else len(seq.block))
        dev = self.device
        options = RowOptions(
            temperature=to_device(temperature, torch.float32, dev), seed=to_device(seed, torch.long, dev),
            pos=to_device(pos, torch.long, dev), step=to_device(step, torch.long, dev),
            bias_token=to_device(bias_token, torch.long, dev),
            bias_value=to_device(bias_value, torch.float32, dev),
            suppress_ids=self.suppress_ids, suppress_row=to_device(suppress, torch.bool, dev),
            conf_block_ids=self.conf_block_ids, conf_block_row=to_device(conf_block, torch.bool, dev),
            random_conf=to_device(random_conf, torch.bool, dev),
        )  # fmt: skip
        plan = CommitPlan(
            offsets=to_device(offsets, torch.long, dev), k=to_device(ks, torch.long, dev),
            threshold=to_device(thresholds, torch.float32, dev), canvas=to_device(canvas, torch.long, dev),
            canvas_index=to_device(canvas_index, torch.long, dev),
            factor=to_device(factors, torch.float32, dev), max_commits=to_device(caps, torch.long, dev),
        )  # fmt: skip
        return StepRows(options, plan)

    def commit(self, logits: torch.Tensor, rows: StepRows) -> tuple[torch.Tensor, torch.Tensor]:
        """logits `(R, V)` for the rows of `prepare`. Returns (canvas `(L,)` with this step's
        commits written in, row_bad `(R,)` bool: rows with non-finite logits)."""
        # The mask token is never a candidate: committing it would leave the position masked forever.
        logits[:, self.mask_id] = float("-inf")
        tokens, conf = row_pass(logits, rows.options)
        select_commit(conf, tokens, rows.plan)
        # A NaN hidden state makes its whole logit row NaN: column 0 tells, without a pass over V.
        # Such a request fails alone (see LLMEngine.step).
        row_bad = torch.isnan(conf) | torch.isnan(logits[:, 0])
        return rows.plan.canvas, row_bad

