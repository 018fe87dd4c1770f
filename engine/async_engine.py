"""AsyncEngine: the narrow interface the server uses.

The LLMEngine runs in one background thread; the event loop never waits on a forward. Requests
and aborts reach that thread through a queue of commands; each request's BlockOutputs come back
through its own asyncio.Queue, fed with `loop.call_soon_threadsafe`. Only the engine thread
touches the LLMEngine after `start()`: `generate` checks a request against the engine's
`RequestLimits` (immutable, so safe from any thread) and `stats()` reads a snapshot the engine
thread publishes after each step.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import torch

from .engine_config import EngineConfig
from .llm_engine import CheckedRequest, LLMEngine
from .outputs import BlockOutput, EngineStats, StepStats
from .params import DiffusionParams
from .scoring import ScoreJob, ScoreParams

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.05
# Fault injection for tests: the engine loop raises (outside any request's step) once it has
# run this many steps, as a bug in the loop itself would.
FAULT_ENV = "DIFFUSERVE_INJECT_ENGINE_LOOP_FAULT_AFTER_STEPS"


class AsyncEngine:
    def __init__(self, engine: LLMEngine):
        self.engine = engine
        if hasattr(engine.runner, "on_lost"):  # tensor parallel: a lost worker is the engine's death
            engine.runner.on_lost = self._die
        self.model_config = engine.cfg
        self.tokenizer = engine.tokenizer
        self.engine_config = engine.econf
        self.limits = engine.limits
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sinks: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._pending_adds = 0  # queued in the inbox, not yet in the scheduler (counted as waiting)
        self._stats = engine.stats()  # published by the engine thread (see _publish)
        self._accepting = False
        self._thread: threading.Thread | None = None
        # Called (from the engine thread) with a message if the loop dies; the server stops on it.
        self.on_fatal: Callable[[str], None] | None = None
        self.fatal_error: str | None = None
        fault = os.environ.get(FAULT_ENV)
        self._fault_after_steps = int(fault) if fault else None
        self._steps_run = 0

    @classmethod
    def from_pretrained(cls, model: str | None = None, engine_config: EngineConfig | None = None,
                        dtype: str = "auto", device: str = "auto", **overrides) -> AsyncEngine:
        """Load the model (built-in when model is None) and build the engine, not yet started."""
        return cls(LLMEngine.from_pretrained(model, engine_config, dtype, device, **overrides))

    # ---- life cycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run_loop, name="diffuserve-engine", daemon=True)
        self._accepting = True
        self._thread.start()

    @property
    def is_ready(self) -> bool:
        return (self._accepting and self.fatal_error is None and self._thread is not None
                and self._thread.is_alive())

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    async def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop accepting, let in-flight requests finish up to timeout_s, abort the rest, join."""
        self._accepting = False
        if self._thread is None:
            return
        deadline = time.monotonic() + max(0.0, timeout_s)
        while self._sinks and time.monotonic() < deadline and self._thread.is_alive():
            await asyncio.sleep(0.02)
        self._stop.set()  # the loop aborts whatever is left, then exits
        self._wake.set()
        await asyncio.to_thread(self._thread.join, max(1.0, deadline - time.monotonic() + 1.0))
        if self._thread.is_alive():  # a forward stuck beyond the deadline: end the streams anyway
            log.error("engine thread did not stop in time; abandoning it")
            for rid in list(self._sinks):
                self._deliver(BlockOutput(rid, [], "", finished=True, finish_reason="abort"))
        await asyncio.sleep(0)  # let call_soon_threadsafe callbacks run

    # ---- requests -----------------------------------------------------------------------------
    def generate(self, request_id: str, prompt_ids: list[int], params: DiffusionParams
                 ) -> AsyncIterator[BlockOutput]:
        """Check now (ParamError raised here), queue the request, return its block stream."""
        if not self.is_ready:
            raise RuntimeError("the engine is not running (call start(), or it is shutting down)")
        # The one model-dependent check of a request. It runs here, in the caller's thread, so a
        # bad request fails before anything is queued (the server answers 400 at once); that is
        # safe because RequestLimits holds only data fixed at construction, never the engine's
        # live state. The engine thread then queues the CheckedRequest without checking again.
        return self._enqueue(request_id, self.limits.check(prompt_ids, params))

    async def _stream(self, request_id: str, q: asyncio.Queue) -> AsyncIterator[BlockOutput]:
        finished = False
        try:
            while True:
                out: BlockOutput = await q.get()
                if out.finished:
                    finished = True
                yield out
                if finished:
                    return
        finally:
            if not finished:  # consumer went away (cancelled, aclose, disconnect): abort
                with self._lock:
                    self._sinks.pop(request_id, None)
                self._post(("abort", request_id))

    def score(self, request_id: str, prompt_ids: list[int], candidate_ids: list[int], params: ScoreParams
              ) -> AsyncIterator[BlockOutput]:
        """Check now (ParamError raised here), queue one candidate to score (`scoring.py`); its
        stream ends with one finished BlockOutput whose `score` is set."""
        if not self.is_ready:
            raise RuntimeError("the engine is not running (call start(), or it is shutting down)")
        params.validate(self.model_config, prompt_ids, candidate_ids)  # immutable config: any thread
        return self._enqueue(request_id, ScoreJob(list(prompt_ids), list(candidate_ids), params))

    def _enqueue(self, request_id: str, work) -> AsyncIterator[BlockOutput]:
        """Open the request's sink and hand `work` (a CheckedRequest or ScoreJob) to the engine thread."""
        with self._lock:
            if request_id in self._sinks:
                raise ValueError(f"request id {request_id!r} is already running")
            q: asyncio.Queue = asyncio.Queue()
            self._sinks[request_id] = (asyncio.get_running_loop(), q)
            self._pending_adds += 1
        self._inbox.put(("add", request_id, work, time.monotonic()))
        self._wake.set()
        return self._stream(request_id, q)

    async def abort(self, request_id: str) -> None:
        self._post(("abort", request_id))

    def stats(self) -> EngineStats:
        with self._lock:
            return replace(self._stats, waiting=self._stats.waiting + self._pending_adds)

    def add_step_listener(self, fn: Callable[[StepStats], None]) -> None:
        self.engine.listeners.append(fn)

    def _post(self, command: tuple) -> None:
        self._inbox.put(command)
        self._wake.set()

    # ---- the engine thread --------------------------------------------------------------------
    def _run_loop(self) -> None:
        try:
            self._loop_until_stopped()
        except BaseException as exc:  # noqa: BLE001 - a bug in the loop itself: never die silently
            self._die(f"{type(exc).__name__}: {exc}")

    def _die(self, message: str) -> None:
        """End every stream with an error (the LLMEngine's state is not trusted any more, so only
        the sinks are used), refuse new requests, and tell the server."""
        if self.fatal_error is not None:  # already dead (e.g. a lost worker, then its failed step)
            return
        log.exception("the engine loop died: %s", message)
        self.fatal_error = message
        self._accepting = False
        with self._lock:
            rids = list(self._sinks)
        for rid in rids:
            self._deliver(BlockOutput(rid, [], "", finished=True, finish_reason="error",
                                      error=f"the engine loop died: {message}"))
        if self.on_fatal is not None:
            try:
                self.on_fatal(message)
            except Exception:  # the loop may be closing already
                log.exception("reporting the engine's death failed")

    def _loop_until_stopped(self) -> None:
        with torch.inference_mode():
            while not self._stop.is_set():
                outputs, added = self._drain_inbox()
                if self.engine.has_unfinished():
                    self._maybe_inject_fault()
                    try:
                        outputs += self.engine.step()
                    except Exception as exc:  # a scheduler bug: fail the requests in flight, keep serving
                        log.exception("engine step failed")
                        failed = [self.engine.abort(rid) for rid in list(self.engine.seqs)]
                        for out in failed:
                            out.finish_reason, out.error = "error", f"engine step failed: {exc}"
                        outputs += failed
                self._publish(outputs, added)
                if not self.engine.has_unfinished() and not outputs:
                    self._wake.wait(IDLE_WAIT_S)
                    self._wake.clear()
            outputs, added = self._drain_inbox()
            outputs += [self.engine.abort(rid) for rid in list(self.engine.seqs)]
            self._publish(outputs, added)

    def _maybe_inject_fault(self) -> None:
        self._steps_run += 1
        if self._fault_after_steps is not None and self._steps_run > self._fault_after_steps:
            raise RuntimeError(f"injected engine loop fault ({FAULT_ENV}={self._fault_after_steps})")

    def _drain_inbox(self) -> tuple[list[BlockOutput], int]:
        """Apply queued adds and aborts; (outputs to deliver, adds taken from the inbox)."""
        outputs: list[BlockOutput] = []
        added = 0
        while True:
            try:
                cmd = self._inbox.get_nowait()
            except queue.Empty:
                return outputs, added
            if cmd[0] == "add":
                _, rid, checked, arrival = cmd
                added += 1
                with self._lock:
                    wanted = rid in self._sinks  # the consumer may have gone already
                if wanted:
                    outputs += self._add(rid, checked, arrival)
            elif cmd[0] == "abort":
                out = self.engine.abort(cmd[1])
                if out is not None:
                    outputs.append(out)

    def _add(self, rid: str, checked: CheckedRequest, arrival: float) -> list[BlockOutput]:
        try:
            if isinstance(checked, ScoreJob):
                self.engine.add_score_request(rid, *checked, arrival_time=arrival)
            else:
                self.engine.add_checked(checked, rid, arrival_time=arrival)
        except Exception as exc:  # checked already; an id clash or a bug
            return [BlockOutput(rid, [], "", finished=True, finish_reason="error",
                                error=f"{type(exc).__name__}: {exc}")]
        return []

    def _publish(self, outputs: list[BlockOutput | None], added: int) -> None:
        """Stats first, then the outputs: a consumer that sees its request finish also sees the
        pages it freed. Adds leave the waiting count only once the snapshot counts them."""
        stats = self.engine.stats()
        with self._lock:
            self._stats = stats
            self._pending_adds -= added
        for out in outputs:
            if out is not None:
                self._deliver(out)

    def _deliver(self, out: BlockOutput) -> None:
        with self._lock:
            sink = self._sinks.pop(out.request_id, None) if out.finished else self._sinks.get(out.request_id)
        if sink is None:
            return
        loop, q = sink
        try:
            loop.call_soon_threadsafe(q.put_nowait, out)
        except RuntimeError:  # the consumer's loop is closed
            pass
