"""Model runner: all tensors of a step are built here, one forward runs, new blocks come back.

Flat batch layout (N query tokens): paged segments (prefix-cache sequences) first, then dense
segments (exact mode), then the unconditional copies of exact sequences with cfg_scale > 0.
The LM head runs only on the hidden rows that predict a masked position of a current block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention import AttentionBackend, Segment
from .config import ModelConfig
from .denoise import Denoiser
from .sequence import Sequence, StepPlan


@dataclass
class StepResult:
    new_blocks: list[list[int] | None]  # per batch entry: the block after this step (None: prefill only)
    failed: list[str | None]  # per batch entry: why it failed (non-finite logits), else None
    num_query_tokens: int


class ModelRunner:
    def __init__(self, model, cfg: ModelConfig, backend: AttentionBackend, device: torch.device):
        self.model = model
        self.cfg = cfg
        self.backend = backend
        self.device = device
        self.denoiser = Denoiser(cfg, device)

    @torch.inference_mode()
    def run(self, batch: list[tuple[Sequence, StepPlan]]) -> StepResult:
        order = sorted(range(len(batch)), key=lambda i: not batch[i][1].paged)  # stable: paged first
        ids: list[int] = []
        positions: list[int] = []
        segments: list[Segment] = []
        starts: dict[int, int] = {}  # batch index -> first flat row
        uncond_starts: dict[int, int] = {}
        for i in order:
            seq, plan = batch[i]
            starts[i] = len(ids)
            ids += plan.token_ids
            positions += range(plan.start_pos, plan.start_pos + len(plan.token_ids))
            segments.append(Segment(len(plan.token_ids), plan.paged, plan.num_cached, seq.pages))
        for i in order:
            plan = batch[i][1]
            if plan.uncond_token_ids is not None:
                uncond_starts[i] = len(ids)
                ids += plan.uncond_token_ids
                positions += range(plan.start_pos, plan.start_pos + len(plan.uncond_token_ids))
                segments.append(Segment(len(plan.uncond_token_ids), False))

        dev = self.device
        self.backend.prepare(segments, dev)
        ids_t = torch.tensor(ids, dtype=torch.long).to(dev, non_blocking=True)
        pos_t = torch.tensor(positions, dtype=torch.long).to(dev, non_blocking=True)
        hidden = self.model.forward_flat(ids_t, pos_t, self.backend.attend)  # (N, hidden)

        work = [batch[i] for i in range(len(batch)) if batch[i][1].denoise]
        work_idx = [i for i in range(len(batch)) if batch[i][1].denoise]
        new_blocks: list[list[int] | None] = [None] * len(batch)
        failed: list[str | None] = [None] * len(batch)
        if work:
            logits = self._masked_logits(hidden, batch, work_idx, starts, uncond_starts)
            canvas, row_bad = self.denoiser.commit(logits, work)
            # The one host copy of the step: committed canvases and per-row failure flags.
            host = torch.cat([canvas, row_bad.long()]).cpu().tolist()
            canvas_h, bad_h = host[: canvas.numel()], host[canvas.numel() :]
            c0 = r0 = 0
            for i in work_idx:
                seq, plan = batch[i]
                n, r = len(seq.block), len(plan.mask_cols)
                new_blocks[i] = canvas_h[c0 : c0 + n]
                if any(bad_h[r0 : r0 + r]):
                    failed[i] = "non-finite logits (NaN) in the model output"
                c0, r0 = c0 + n, r0 + r
        return StepResult(new_blocks, failed, len(ids))

    def _masked_logits(self, hidden, batch, work_idx, starts, uncond_starts) -> torch.Tensor:
        """Logits `(R, V)` of the rows predicting masked positions (cfg mixed in where asked)."""
        rows: list[int] = []
        un_rows: list[int] = []  # rows of `rows` (by index) that have an unconditional twin
        un_src: list[int] = []
        scales: list[float] = []
        for i in work_idx:
            plan = batch[i][1]
            base = starts[i]
            if i in uncond_starts:
                ub = uncond_starts[i]
                for r in plan.mask_rows:
                    un_rows.append(len(rows))
                    un_src.append(ub + r)
                    rows.append(base + r)
                scales += [batch[i][0].params.cfg_scale] * len(plan.mask_rows)
            else:
                rows += [base + r for r in plan.mask_rows]
        dev = self.device
        logits = self.model.logits(hidden[torch.tensor(rows, dtype=torch.long).to(dev)])  # (R, V)
        if not un_rows:
            return logits
        # cfg: logits = un + (s + 1) * (cond - un), in float32 as the reference sampler does.
        logits = logits.float()
        idx = torch.tensor(un_rows, dtype=torch.long).to(dev)
        un = self.model.logits(hidden[torch.tensor(un_src, dtype=torch.long).to(dev)]).float()
        s = torch.tensor(scales, dtype=torch.float32).to(dev)[:, None]
        logits[idx] = un + (s + 1) * (logits[idx] - un)
        return logits
