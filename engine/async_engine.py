"""AsyncEngine: the narrow interface the server uses (see the lead's async_engine_api).

The LLMEngine runs in one background thread; the event loop never waits on a forward. Requests
and aborts reach that thread through a queue of commands; each request's BlockOutputs come back
through its own asyncio.Queue, fed with `loop.call_soon_threadsafe`. Only the engine thread
touches the LLMEngine after `start()`.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable

import torch

from .engine_config import EngineConfig
from .llm_engine import LLMEngine
from .outputs import BlockOutput, EngineStats, StepStats
from .params import DiffusionParams

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.05


class AsyncEngine:
    def __init__(self, engine: LLMEngine):
        self.engine = engine
        self.model_config = engine.cfg
        self.tokenizer = engine.tokenizer
        self.engine_config = engine.econf
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sinks: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._pending_adds = 0
        self._accepting = False
        self._thread: threading.Thread | None = None

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
        return self._accepting and self._thread is not None and self._thread.is_alive()

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
        """Validate now (ParamError raised here), queue the request, return its block stream."""
        if not self.is_ready:
            raise RuntimeError("the engine is not running (call start(), or it is shutting down)")
        with self._lock:
            if request_id in self._sinks:
                raise ValueError(f"request id {request_id!r} is already running")
            self.engine.check_request("", prompt_ids, params)  # ParamError before anything is queued
            q: asyncio.Queue = asyncio.Queue()
            self._sinks[request_id] = (asyncio.get_running_loop(), q)
            self._pending_adds += 1
        self._inbox.put(("add", request_id, list(prompt_ids), params, time.monotonic()))
        self._wake.set()
        return self._stream(request_id, q)

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

    async def abort(self, request_id: str) -> None:
        self._post(("abort", request_id))

    def stats(self) -> EngineStats:
        s = self.engine.stats()
        s.waiting += self._pending_adds
        return s

    def add_step_listener(self, fn: Callable[[StepStats], None]) -> None:
        self.engine.listeners.append(fn)

    def _post(self, command: tuple) -> None:
        self._inbox.put(command)
        self._wake.set()

    # ---- the engine thread --------------------------------------------------------------------
    def _run_loop(self) -> None:
        with torch.inference_mode():
            while not self._stop.is_set():
                self._drain_inbox()
                if not self.engine.has_unfinished():
                    self._wake.wait(IDLE_WAIT_S)
                    self._wake.clear()
                    continue
                try:
                    outputs = self.engine.step()
                except Exception as exc:  # a scheduler bug: fail the requests in flight, keep serving
                    log.exception("engine step failed")
                    outputs = [self.engine.abort(rid) for rid in list(self.engine.seqs)]
                    for out in outputs:
                        out.finish_reason, out.error = "error", f"engine step failed: {exc}"
                for out in outputs:
                    if out is not None:
                        self._deliver(out)
            self._drain_inbox()
            for rid in list(self.engine.seqs):
                out = self.engine.abort(rid)
                if out is not None:
                    self._deliver(out)

    def _drain_inbox(self) -> None:
        while True:
            try:
                cmd = self._inbox.get_nowait()
            except queue.Empty:
                return
            if cmd[0] == "add":
                _, rid, prompt, params, arrival = cmd
                with self._lock:
                    self._pending_adds -= 1
                    wanted = rid in self._sinks  # the consumer may have gone already
                if not wanted:
                    continue
                try:
                    self.engine.add_request(rid, prompt, params, arrival_time=arrival)
                except Exception as exc:  # validated already; an id clash or a bug
                    self._deliver(BlockOutput(rid, [], "", finished=True, finish_reason="error",
                                              error=f"{type(exc).__name__}: {exc}"))
            elif cmd[0] == "abort":
                out = self.engine.abort(cmd[1])
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
