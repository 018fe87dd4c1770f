"""Model runner: all tensors of a step are built here, one forward runs, new blocks come back.

Flat batch layout (N query tokens): paged segments (prefix-cache sequences) first, then dense
segments (exact mode), then the unconditional copies of exact sequences with cfg_scale > 0.
The LM head runs only on the hidden rows that predict a masked position of a current block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention import AttentionBackend, Segment
from .denoise import Denoiser
from .device import to_device
from .model_config import ModelConfig
from .scoring import row_scores
from .sequence import Sequence, StepPlan


@dataclass
class StepResult:
    # per batch entry: the block after this step (None: prefill only); for a scoring entry, the
    # (log-prob, is-argmax) pair of each of its `plan.score_rows`
    new_blocks: list[list | None]
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
        canvases: dict[tuple, int] = {}  # exact-mode canvas -> its first flat row
        for i in order:
            seq, plan = batch[i]
            if not plan.paged and plan.uncond_token_ids is None and not plan.extra_keys:
                # Identical exact-mode canvases (the candidates of one multiple-choice question all
                # start as prompt + masks) are computed once and their rows read by each entry.
                key = (plan.start_pos, tuple(plan.token_ids))
                if key in canvases:
                    starts[i] = canvases[key]
                    continue
                canvases[key] = len(ids)
            starts[i] = len(ids)
            ids += plan.token_ids
            positions += range(plan.start_pos, plan.start_pos + len(plan.token_ids))
            segments.append(Segment(len(plan.token_ids), plan.paged, plan.num_cached, seq.pages,
                                    plan.extra_keys))
        for i in order:
            plan = batch[i][1]
            if plan.uncond_token_ids is not None:
                uncond_starts[i] = len(ids)
                ids += plan.uncond_token_ids
                positions += range(plan.start_pos, plan.start_pos + len(plan.uncond_token_ids))
                segments.append(Segment(len(plan.uncond_token_ids), False))

        dev = self.device
        work_idx = [i for i in range(len(batch)) if batch[i][1].denoise]
        work = [batch[i] for i in work_idx]
        # Every host-to-device copy of the step happens here, before the forward.
        self.backend.prepare(segments, dev)
        ids_t = to_device(ids, torch.long, dev)
        pos_t = to_device(positions, torch.long, dev)
        if work:
            head_rows, cfg_rows = self._head_rows(batch, work_idx, starts, uncond_starts)
            # Only the LM head's rows leave the last layer: cond rows, then cfg's twins.
            out_rows = head_rows if cfg_rows is None else torch.cat([head_rows, cfg_rows[1]])
            rows = self.denoiser.prepare(work)
        else:
            out_rows = torch.empty(0, dtype=torch.long, device=dev)  # prefill only: no output rows
        score_idx = [i for i in range(len(batch)) if batch[i][1].score_rows is not None]
        if score_idx:  # scoring rows leave the last layer after the denoising ones
            score_rows = to_device([starts[i] + r for i in score_idx for r in batch[i][1].score_rows],
                                   torch.long, dev)
            score_targets = to_device([t for i in score_idx for t in batch[i][1].score_targets],
                                      torch.long, dev)
            out_rows = torch.cat([out_rows, score_rows])
        hidden = self.model.forward_flat(ids_t, pos_t, self.backend.attend, out_rows)  # (len(out_rows), d)
        if score_idx:
            n_score = score_rows.numel()
            hidden, score_hidden = hidden[: hidden.shape[0] - n_score], hidden[hidden.shape[0] - n_score :]
            scored = row_scores(self.model.full_logits(score_hidden), score_targets, self.cfg.mask_token_id)

        new_blocks: list[list[int] | None] = [None] * len(batch)
        failed: list[str | None] = [None] * len(batch)
        if work:
            logits = self._masked_logits(hidden, head_rows.numel(), cfg_rows)
            canvas, row_bad = self.denoiser.commit(logits, rows)
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
        if score_idx:
            # A second, small host copy (the canvas copy above already waited for the device).
            scored_h = scored.cpu().tolist()
            r0 = 0
            for i in score_idx:
                r = len(batch[i][1].score_rows)
                rows = [(lp, g > 0.5) for lp, g in scored_h[r0 : r0 + r]]
                if any(lp != lp for lp, _ in rows):  # NaN
                    failed[i] = "non-finite logits (NaN) in the model output"
                new_blocks[i] = rows
                r0 += r
        return StepResult(new_blocks, failed, len(ids))

    def _head_rows(self, batch, work_idx, starts, uncond_starts):
        """Index tensors for the LM head: hidden rows predicting masked positions `(R,)`, and for
        cfg the rows (of those R) with an unconditional twin, the twins' hidden rows, the scales."""
        rows: list[int] = []
        un_rows: list[int] = []
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
        if not un_rows:
            return to_device(rows, torch.long, dev), None
        return to_device(rows, torch.long, dev), (
            to_device(un_rows, torch.long, dev), to_device(un_src, torch.long, dev),
            to_device(scales, torch.float32, dev)[:, None],
        )

    def _masked_logits(self, hidden, n_rows: int, cfg_rows) -> torch.Tensor:
        """Logits `(R, V)` of the rows predicting masked positions (cfg mixed in where asked).
        `hidden` holds the R head rows, then (cfg) the unconditional twins."""
        logits = self.model.logits(hidden[:n_rows])  # (R, V)
        if cfg_rows is None:
            return logits
        # cfg: logits = un + (s + 1) * (cond - un), in float32 as the reference sampler does.
        idx, _un_src, s = cfg_rows
        logits = logits.float()
        un = self.model.logits(hidden[n_rows:]).float()
        logits[idx] = un + (s + 1) * (logits[idx] - un)
        return logits
