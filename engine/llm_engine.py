"""The synchronous engine core: add_request, step(), abort. One step = one forward over the query
tokens of every scheduled sequence, each at its own block and denoising step."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .attention import select_backend
from .decoding import think_token_ids
from .engine_config import EngineConfig, resolve_device, resolve_dtype
from .kv_cache import KVCache, kv_pool_pages, pages_for
from .model_config import ModelConfig
from .outputs import BlockOutput, EngineStats, StepStats
from .params import DiffusionParams, ParamError
from .runner import ModelRunner, StepResult
from .scheduler import Scheduler
from .scoring import ScoreParams, ScoringSequence
from .sequence import Sequence, StepPlan

log = logging.getLogger(__name__)


@dataclass
class RequestResult:
    """Everything a request produced, gathered from its BlockOutputs (offline use and tests)."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    error: str | None = None
    steps: int = 0
    blocks: int = 0


@dataclass(frozen=True)
class CheckedRequest:
    """A prompt and its parameters that passed `RequestLimits.check` (the only way to build one
    that the engine trusts: `add_checked` does not check again)."""

    prompt_ids: tuple[int, ...]
    params: DiffusionParams


@dataclass(frozen=True)
class RequestLimits:
    """The model-dependent checks of a request, on data fixed when the engine is built.

    Nothing here changes after construction (the model config is frozen, the KV pool's size is
    fixed), so any thread may call `check`: the AsyncEngine runs it in the event-loop thread and
    raises ParamError at once, before anything is queued, while the LLMEngine itself stays the
    engine thread's alone. Whether a request fits next to the others *now* is the scheduler's
    business (it waits, or preempts), not a reason to refuse it.
    """

    model: ModelConfig
    page_size: int
    num_pages: int

    def check(self, prompt_ids: list[int], params: DiffusionParams) -> CheckedRequest:
        params.validate(self.model, len(prompt_ids))
        vocab = self.model.vocab_size
        bad = next((t for t in prompt_ids if not (isinstance(t, int) and 0 <= t < vocab)), None)
        if bad is not None:
            raise ParamError("prompt", f"token id {bad} is outside the vocabulary [0, {vocab})")
        if params.cache != "none":
            need = pages_for(len(prompt_ids) + params.max_tokens, self.page_size)
            if need > self.num_pages:
                raise ParamError(
                    "max_tokens", f"prompt ({len(prompt_ids)} tokens) + max_tokens ({params.max_tokens}) "
                    f"needs {need} KV pages; the whole cache has {self.num_pages} "
                    f"(raise --kv-cache-memory)", code="context_length_exceeded")
        return CheckedRequest(tuple(prompt_ids), params)


class LLMEngine:
    def __init__(self, model, cfg: ModelConfig, tokenizer=None, engine_config: EngineConfig | None = None):
        self.model = model
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.econf = econf = engine_config or EngineConfig()
        shard = getattr(model, "tp_shard", None)
        if econf.tensor_parallel_size != (1 if shard is None else shard.world):
            raise ValueError(f"tensor_parallel_size={econf.tensor_parallel_size} needs a model split by "
                             "LLMEngine.from_pretrained (engine/distributed), not a whole one")
        weight = model.embed.weight
        self.device, dtype = weight.device, weight.dtype
        num_pages = kv_pool_pages(cfg, econf, dtype, self.device)
        self.kv = KVCache(cfg, num_pages, econf.kv_page_size, dtype, self.device)
        self.runner = ModelRunner(model, cfg, select_backend(econf.attention_backend, self.kv, self.device),
                                  self.device)
        self.scheduler = Scheduler(econf, self.kv)
        self.limits = RequestLimits(cfg, self.kv.page_size, self.kv.num_pages)
        self.think_ids = think_token_ids(cfg, tokenizer)
        self.seqs: dict[str, Sequence] = {}
        self.listeners: list[Callable[[StepStats], None]] = []
        self.num_forwards = 0
        self.num_committed = 0

    @classmethod
    def from_pretrained(cls, model: str | None = None, engine_config: EngineConfig | None = None,
                        dtype: str = "auto", device: str = "auto", **overrides) -> LLMEngine:
        from .models.loader import load_model

        econf = engine_config or EngineConfig()
        if econf.tensor_parallel_size > 1:  # rank 0 here, workers in their own processes
            from .distributed import start_tensor_parallel

            return start_tensor_parallel(cls, model, econf, dtype, device, overrides)
        dev = resolve_device(econf.device if device == "auto" else device)
        dt = resolve_dtype(econf.dtype if dtype == "auto" else dtype, dev)
        loaded = load_model(model, dtype=dt, device=dev, **overrides)
        return cls(loaded.model, loaded.config, loaded.tokenizer, econf)

    # ---- requests ---------------------------------------------------------------------------
    def add_request(self, request_id: str, prompt_ids: list[int], params: DiffusionParams,
                    arrival_time: float | None = None) -> Sequence:
        """Check the request against the model and the cache (ParamError), then queue it."""
        return self.add_checked(self.limits.check(prompt_ids, params), request_id, arrival_time)

    def add_checked(self, request: CheckedRequest, request_id: str,
                    arrival_time: float | None = None) -> Sequence:
        """Queue a request `limits.check` already accepted (the AsyncEngine checks in the caller's
        thread, then hands it here on the engine thread); ValueError for an id already running."""
        if request_id in self.seqs:
            raise ValueError(f"request id {request_id!r} is already running")
        seq = Sequence(request_id, list(request.prompt_ids), request.params, self.cfg, self.think_ids,
                       arrival_time)
        self.seqs[request_id] = seq
        self.scheduler.add(seq)
        return seq

    def add_score_request(self, request_id: str, prompt_ids: list[int], candidate_ids: list[int],
                          params: ScoreParams, arrival_time: float | None = None) -> ScoringSequence:
        """Queue one candidate continuation to score (`scoring.py`); it is scheduled with the
        generation requests, in exact mode. ParamError for bad input, ValueError for a reused id."""
        params.validate(self.cfg, prompt_ids, candidate_ids)
        if request_id in self.seqs:
            raise ValueError(f"request id {request_id!r} is already running")
        seq = ScoringSequence(request_id, prompt_ids, candidate_ids, params, self.cfg, arrival_time)
        self.seqs[request_id] = seq
        self.scheduler.add(seq)
        return seq

    def abort(self, request_id: str) -> BlockOutput | None:
        """Finish a request now with "abort" and free its pages; None when it is unknown."""
        seq = self.seqs.get(request_id)
        if seq is None:
            return None
        seq.finish("abort")
        return self._retire(seq, [], "")

    def has_unfinished(self) -> bool:
        return bool(self.seqs)

    def stats(self) -> EngineStats:
        s = self.scheduler
        return EngineStats(len(s.running), len(s.waiting), self.kv.allocator.num_used, self.kv.num_pages,
                           s.num_preemptions)

    # ---- the step ---------------------------------------------------------------------------
    def step(self) -> list[BlockOutput]:
        t0 = time.perf_counter()
        batch = self.scheduler.schedule()
        if not batch:
            return []
        # Read before the bookkeeping below: a block finishing in this step bumps seq.num_blocks.
        paged = [(seq, plan) for seq, plan in batch if plan.paged]
        num_cache_tokens = sum(plan.num_to_cache for _, plan in paged)
        num_recomputes = sum(plan.start_pos == 0 and seq.num_blocks > 0 for seq, plan in paged)
        result = self._run_isolated(batch)
        self.num_forwards += 1
        outputs: list[BlockOutput] = []
        committed: list[int] = []
        for i, (seq, plan) in enumerate(batch):
            if result.failed[i] is not None:
                outputs.append(self._fail(seq, result.failed[i]))
                continue
            try:
                if plan.score_rows is not None:  # a scoring sequence (scoring.py)
                    if seq.apply(plan, result.new_blocks[i]):
                        outputs.append(self._score_done(seq))
                    continue
                masks_before = seq.block.count(seq.mask_id)
                done = seq.apply(plan, result.new_blocks[i])
                if plan.denoise:
                    committed.append(masks_before - seq.block.count(seq.mask_id))
                if done:
                    out = self._block_done(seq)
                    outputs.append(out)
            except Exception as exc:  # a bug in one request's bookkeeping fails that request only
                log.exception("request %s failed after the step", seq.request_id)
                outputs.append(self._fail(seq, f"{type(exc).__name__}: {exc}"))
        self.num_committed += sum(committed)
        stats = StepStats(time.perf_counter() - t0, len(batch), result.num_query_tokens, committed,
                          num_cache_tokens=num_cache_tokens, num_recomputes=num_recomputes)
        for fn in self.listeners:
            try:
                fn(stats)
            except Exception:  # a metrics bug must not stop the engine
                log.exception("step listener %r failed", fn)
        return outputs

    def _run_isolated(self, batch: list[tuple[Sequence, StepPlan]]) -> StepResult:
        """Run the batch; if it raises, rerun each request alone so only the culprits fail."""
        try:
            return self.runner.run(batch)
        except Exception as exc:
            if len(batch) == 1:
                log.exception("request %s failed in the step", batch[0][0].request_id)
                return StepResult([None], [f"{type(exc).__name__}: {exc}"], 0)
            log.warning("a step of %d requests raised (%s); rerunning them one by one", len(batch), exc)
        blocks, failed, n_tokens = [], [], 0
        for entry in batch:
            one = self._run_isolated([entry])
            blocks += one.new_blocks
            failed += one.failed
            n_tokens += one.num_query_tokens
        return StepResult(blocks, failed, n_tokens)

    def _block_done(self, seq: Sequence) -> BlockOutput:
        kept, hit_stop_id = seq.complete_block()
        if seq.first_block_time is None:
            seq.first_block_time = time.monotonic()
        delta, hit_stop_text = seq.text_delta(self.tokenizer, final=hit_stop_id or seq.answer_done)
        if hit_stop_id or hit_stop_text:
            seq.finish("stop")
        elif seq.answer_done:
            seq.finish("length")
        if seq.is_finished:
            return self._retire(seq, kept, delta)
        seq.start_block()
        return self._output(seq, kept, delta)

    def _score_done(self, seq: ScoringSequence) -> BlockOutput:
        seq.first_block_time = time.monotonic()
        seq.finish("stop")
        out = self._retire(seq, [], "")
        out.score = seq.result
        return out

    def _fail(self, seq: Sequence, error: str) -> BlockOutput:
        seq.finish("error", error)
        return self._retire(seq, [], "")

    def _retire(self, seq: Sequence, kept: list[int], delta: str) -> BlockOutput:
        self.scheduler.remove(seq)
        self.seqs.pop(seq.request_id, None)
        return self._output(seq, kept, delta)

    def _output(self, seq: Sequence, kept: list[int], delta: str) -> BlockOutput:
        start = seq.first_scheduled_time
        return BlockOutput(
            request_id=seq.request_id, new_token_ids=list(kept), text=delta, finished=seq.is_finished,
            finish_reason=seq.finish_reason, error=seq.error, num_prompt_tokens=len(seq.prompt_ids),
            num_generated_tokens=len(seq.answer), steps=seq.num_steps, blocks=seq.num_blocks,
            queue_time_s=(start - seq.arrival_time) if start is not None else 0.0,
            first_block_time_s=(seq.first_block_time - seq.arrival_time) if seq.first_block_time else None,
        )

    # ---- offline helper ---------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], params: DiffusionParams | list[DiffusionParams],
                 prefix: str = "req") -> list[RequestResult]:
        """Run prompts to completion (all queued at once); results in prompt order."""
        plist = params if isinstance(params, list) else [params] * len(prompts)
        ids = [f"{prefix}-{i}" for i in range(len(prompts))]
        for rid, p, pr in zip(ids, prompts, plist, strict=True):
            self.add_request(rid, p, pr)
        results = {rid: RequestResult() for rid in ids}
        while any(r.finish_reason is None for r in results.values()):
            if not self.scheduler.has_work:
                raise RuntimeError("requests unfinished but nothing is scheduled")
            for out in self.step():
                collect(results[out.request_id], out)
        return [results[rid] for rid in ids]


def collect(res: RequestResult, out: BlockOutput) -> None:
    res.token_ids += out.new_token_ids
    res.text += out.text
    res.steps, res.blocks = out.steps, out.blocks
    if out.finished:
        res.finish_reason, res.error = out.finish_reason, out.error
