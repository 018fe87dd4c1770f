"""What chat and completions share: admission, parameters, and running choices on the engine.

One HTTP request becomes one engine request per choice (prompts x n). Each choice runs in
its own task (`OpenAIServing._drive`) that drains the engine's BlockOutput stream; the handler
either collects them (non-streaming, racing a disconnect watcher) or turns them into SSE
chunks. Whatever way a handler ends, unfinished choices are cancelled, which aborts them
in the engine and frees their KV pages at the next step.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from diffuserve.engine.outputs import BlockOutput
from diffuserve.engine.params import DiffusionParams, ParamError, with_served_rule
from fastapi import Request

from ..errors import APIError
from ..limits import check_admission
from ..metrics import ServerMetrics
from ..state import ServerSettings, ServerState
from .protocol import DiffusionFields, SamplingRequest, unsupported_fields

log = logging.getLogger(__name__)

# Request fields passed to DiffusionParams under the same name.
DIFFUSION_KEYS = tuple(k for k in DiffusionFields.model_fields if k not in ("stop_token_ids", "ignore_eos"))
CLIENT_CLOSED = 499  # nginx's status for "client closed request", used as a metrics label only


@dataclass
class ChoiceRun:
    """One engine request: a prompt and one seed."""

    index: int
    request_id: str
    prompt_ids: list[int]
    params: DiffusionParams
    arrival: float  # time.monotonic() when the HTTP request arrived
    prompt_param: str = "prompt"  # how an error about this choice's prompt names it
    text: list[str] = field(default_factory=list)
    last: BlockOutput | None = None
    client_gone: bool = False

    @property
    def finish_reason(self) -> str | None:
        return self.last.finish_reason if self.last else None


class OpenAIServing:
    def __init__(self, state: ServerState, settings: ServerSettings, metrics: ServerMetrics):
        self.state = state
        self.settings = settings
        self.metrics = metrics
        self._tasks: set[asyncio.Task] = set()  # strong refs: asyncio keeps only weak ones

    # ------------------------------------------------------------------ admission and params
    def check_request(self, req: SamplingRequest, num_requests: int) -> None:
        """Checks that need no tokenizer, run once per HTTP request: model name, unsupported
        fields, then admission (503 not ready, 429 queue full) for all `num_requests` choices."""
        if req.model is not None and req.model != self.settings.served_model_name:
            raise APIError(404, f"the model '{req.model}' does not exist; this server serves "
                           f"'{self.settings.served_model_name}'", param="model", code="model_not_found")
        bad = unsupported_fields(req)
        if bad is not None:
            raise APIError(400, bad[1], param=bad[0], code="unsupported_parameter")
        ignored = sorted(set(req.model_extra or {}) - {"top_k", "min_p", "repetition_penalty"})
        if ignored:
            log.warning("ignoring unknown request fields: %s", ", ".join(ignored))
        check_admission(self.state, self.settings, num_requests=num_requests)

    def check_token_counts(self, req: SamplingRequest, *names: str) -> None:
        """Token counts the request gives (even one another field overrides) are below the
        context length, as the OpenAPI document says (server/openai/schema.py)."""
        limit = self.state.engine.model_config.max_length - 1
        for name in names:
            value = getattr(req, name)
            if value is not None and value > limit:
                raise APIError(400, f"{name} ({value}) must be < the model's context length {limit + 1}",
                               param=name, code="context_length_exceeded")

    def make_params(self, req: SamplingRequest, max_tokens: int | None, default_max: int,
                    prompt_len: int) -> DiffusionParams:
        """DiffusionParams for one prompt (seed filled per choice by `choice_runs`). Building them
        runs the range checks; the model-dependent ones run once, in `AsyncEngine.generate`."""
        if max_tokens is None:
            # Cap the default by what the context has left; a too-long prompt then fails
            # with context_length_exceeded rather than an opaque max_tokens error.
            max_tokens = max(1, min(default_max, self.state.engine.model_config.max_length - prompt_len))
        extras = {k: getattr(req, k) for k in DIFFUSION_KEYS if getattr(req, k) is not None}
        if "cache_refresh" not in extras and self.settings.default_cache_refresh is not None:
            extras["cache_refresh"] = self.settings.default_cache_refresh
        extras = with_served_rule(extras, self.settings.default_threshold)
        try:
            return DiffusionParams(
                max_tokens=max_tokens,
                temperature=0.0 if req.temperature is None else req.temperature,
                seed=req.seed,
                stop=tuple(req.stop_list()),
                stop_token_ids=tuple(req.stop_token_ids or ()),
                suppress_eos=bool(req.ignore_eos),
                **extras,
            )
        except ParamError as e:
            raise APIError.from_param_error(e) from e

    def choice_runs(self, request_id: str, prompts: list[list[int]], params: list[DiffusionParams],
                    n: int) -> list[ChoiceRun]:
        """prompts x n choices, index = prompt * n + j (OpenAI's order). Choice j gets seed + j;
        without a seed, sampling (temperature > 0) draws a fresh one so answers vary as in OpenAI."""
        arrival = time.monotonic()
        runs = []
        for p, (ids, base) in enumerate(zip(prompts, params, strict=True)):
            seed = base.seed
            if seed is None and base.temperature > 0:
                seed = secrets.randbits(62)
            for j in range(n):
                s = None if seed is None else (seed + j) % 2**63
                i = p * n + j
                runs.append(ChoiceRun(i, f"{request_id}-{i}", ids, base.replace(seed=s), arrival,
                                      prompt_param=f"prompt[{p}]" if len(prompts) > 1 else "prompt"))
        return runs

    # ---------------------------------------------------------------------------- running
    def _start(self, runs: list[ChoiceRun], on_output: Callable[[ChoiceRun, BlockOutput], None]
               ) -> list[asyncio.Task]:
        # Create every engine iterator before any task runs, so a synchronous ParamError from
        # generate() (the engine's one model-dependent check) still becomes a 400 and nothing is
        # left half-started.
        iterators = []
        try:
            for run in runs:
                iterators.append(self.state.engine.generate(run.request_id, run.prompt_ids, run.params))
        except ParamError as e:
            for it in iterators:
                self._spawn(_aclose(it))
            error = APIError.from_param_error(e)
            if e.param == "prompt":
                error.param = runs[len(iterators)].prompt_param
            raise error from e
        return [self._spawn(self._drive(run, it, on_output)) for run, it in zip(runs, iterators, strict=True)]

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _drive(self, run: ChoiceRun, outputs: AsyncIterator[BlockOutput],
                     on_output: Callable[[ChoiceRun, BlockOutput], None]) -> None:
        try:
            async for out in outputs:
                if run.last is None:
                    self.metrics.on_first_block(time.monotonic() - run.arrival)
                run.last = out
                run.text.append(out.text)
                on_output(run, out)
        except asyncio.CancelledError:
            run.client_gone = True
            await _aclose(outputs)
            await self.state.engine.abort(run.request_id)
            raise
        except Exception as e:  # an engine failure ends this choice alone
            log.exception("request %s failed in the engine", run.request_id)
            run.last = _failed(run, f"{type(e).__name__}: {e}")
            on_output(run, run.last)
        finally:
            self._record(run)

    def _record(self, run: ChoiceRun) -> None:
        last = run.last or _failed(run, "no output")
        if run.client_gone:
            last = _copy_finished(last, "abort")
            status = CLIENT_CLOSED
        else:
            status = {"error": 500, "abort": 503}.get(last.finish_reason or "", 200)
        self.metrics.on_finished(last, status, time.monotonic() - run.arrival)

    async def collect(self, raw_request: Request, runs: list[ChoiceRun]) -> list[ChoiceRun] | None:
        """Run all choices to the end; None if the client disconnected first (choices aborted).
        An engine failure of any choice is raised as its APIError (the whole request fails)."""
        tasks = self._start(runs, lambda run, out: None)
        everything = asyncio.gather(*tasks)
        watcher = asyncio.ensure_future(_wait_disconnect(raw_request))
        try:
            await asyncio.wait({everything, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            if not everything.done():
                everything.cancel()  # cancels each choice task -> engine abort
        if not everything.done() or everything.cancelled():
            return None
        everything.result()
        failure = engine_failure(runs)
        if failure is not None:
            raise failure
        return runs

    async def stream_outputs(self, runs: list[ChoiceRun]) -> AsyncIterator[tuple[ChoiceRun, BlockOutput]]:
        """Yield (choice, block) as blocks land, until every choice has finished."""
        queue: asyncio.Queue[tuple[ChoiceRun, BlockOutput]] = asyncio.Queue()
        tasks = self._start(runs, lambda run, out: queue.put_nowait((run, out)))
        remaining = len(runs)
        try:
            while remaining:
                run, out = await queue.get()
                if out.finished:
                    remaining -= 1
                yield run, out
        finally:
            for t in tasks:
                t.cancel()  # no-op for finished choices; aborts the rest (disconnect, error)


def new_request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def engine_failure(runs: list[ChoiceRun]) -> APIError | None:
    """The error a finished set of choices must answer with, if any."""
    for run in runs:
        if run.finish_reason == "error":
            return APIError(500, f"the engine failed on this request: {run.last.error}",
                            code="engine_error", finish_reason="error", counted=True)
        if run.finish_reason == "abort":
            return APIError(503, "the request was aborted because the server is shutting down",
                            code="server_shutting_down", finish_reason="abort", counted=True)
    return None


async def _wait_disconnect(request: Request) -> None:
    # The body is already read, so the next ASGI message is http.disconnect: when the client
    # goes away, or when the response completes (then this task is cancelled first).
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _aclose(it) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # noqa: BLE001 - closing a broken iterator must not mask the real error
            log.debug("closing an engine iterator failed", exc_info=True)


def _failed(run: ChoiceRun, message: str) -> BlockOutput:
    prev = run.last
    return BlockOutput(
        request_id=run.request_id, new_token_ids=[], text="", finished=True, finish_reason="error",
        error=message, num_prompt_tokens=prev.num_prompt_tokens if prev else len(run.prompt_ids),
        num_generated_tokens=prev.num_generated_tokens if prev else 0,
        steps=prev.steps if prev else 0, blocks=prev.blocks if prev else 0,
    )


def _copy_finished(out: BlockOutput, reason: str) -> BlockOutput:
    return replace(out, finished=True, finish_reason=reason)
