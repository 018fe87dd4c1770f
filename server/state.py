"""Server settings and the live state one app shares between its routes: the engine and its phase."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diffuserve.engine.outputs import EngineStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    served_model_name: str
    model_path: str | None = None  # shown as the model card's root
    api_key: str | None = None  # None: no authentication
    max_queue: int = 256  # 429 when the engine already has this many requests waiting
    max_body_bytes: int = 4 * 2**20
    retry_after_s: int = 1  # Retry-After on 429 and on 503 while loading
    shutdown_timeout_s: float = 30.0  # in-flight requests get this long to finish on SIGTERM
    default_chat_max_tokens: int = 512  # OpenAI chat default is "the rest of the context"; we cap it
    default_completion_max_tokens: int = 16  # OpenAI's documented default for /v1/completions
    max_prompts_times_n: int = 64  # /v1/completions: len(prompt list) * n
    default_cache_refresh: int | str | None = None  # for requests without cache_refresh; None: the engine's
    # Parallel decoding for requests that choose no rule (engine/params.py, with_served_rule);
    # None: one token a step. `serve --threshold` sets it; the CLI default is SERVED_THRESHOLD.
    default_threshold: float | None = None


# Fault injection for tests: the load thread first runs torch ops for this many seconds, so a
# signal can be sent while it is inside torch (where an interpreter teardown used to abort).
SLOW_LOAD_ENV = "DIFFUSERVE_INJECT_SLOW_LOAD_S"
# After the engine thread dies, the server answers /health and /ready with 503 this long (so
# probes and in-flight clients see why) before it stops with exit status 1.
ENGINE_DEATH_EXIT_DELAY_S = 2.0


class ServerState:
    """Phase machine: loading -> ready -> shutting down (or failed). The engine loads in a daemon
    thread so /health answers at once, /ready says 503 until the model is up, and SIGTERM never
    waits on a load. A failed load or a dead engine thread is fatal: `on_fatal` stops the process."""

    def __init__(self, engine_factory: Callable[[], Any], shutdown_timeout_s: float = 30.0):
        self._factory = engine_factory
        self.shutdown_timeout_s = shutdown_timeout_s
        self.engine: Any = None  # AsyncEngine once loaded and started
        self.load_error: str | None = None
        self.engine_error: str | None = None  # the engine thread died: the process is stopping
        self.shutting_down = False
        self._load_thread: threading.Thread | None = None
        self._shutdown_task: asyncio.Task | None = None
        self.on_fatal: Callable[[str], None] | None = None  # serve_cmd stops the process on a failed load

    @property
    def ready(self) -> bool:
        return (self.engine is not None and not self.shutting_down and self.engine_error is None
                and bool(self.engine.is_ready))

    def lingering_threads(self) -> list[threading.Thread]:
        """Threads that may still run torch code (the model load, an engine loop stuck past the
        shutdown timeout): the interpreter must not tear down under them (serve_cmd.run)."""
        threads = [self._load_thread, getattr(self.engine, "thread", None)]
        return [t for t in threads if t is not None and t.is_alive()]

    def model_limits(self) -> dict[str, int] | None:
        """The served model's bounds for the OpenAPI document; None until it is loaded."""
        if self.engine is None:
            return None
        cfg = self.engine.model_config
        return {"vocab": cfg.vocab_size, "context": cfg.max_length}

    def stats(self) -> EngineStats | None:
        return None if self.engine is None else self.engine.stats()

    async def load(self, on_loaded: Callable[[Any], None]) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def build() -> None:
            try:
                _slow_load_for_tests()
                engine = self._factory()
            except BaseException as e:  # noqa: BLE001 - reported to the loop, not lost in a thread
                loop.call_soon_threadsafe(_settle, done, None, e)
            else:
                loop.call_soon_threadsafe(_settle, done, engine, None)

        self._load_thread = threading.Thread(target=build, name="diffuserve-load", daemon=True)
        self._load_thread.start()
        try:
            engine = await done
            if self.shutting_down:
                return
            on_loaded(engine)
            engine.on_fatal = lambda message: loop.call_soon_threadsafe(self._engine_died, message)
            await engine.start()
            self.engine = engine
            log.info("engine ready")
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.load_error = f"{type(e).__name__}: {e}"
            log.exception("loading the model failed")
            if self.on_fatal is not None:
                self.on_fatal(self.load_error)

    def _engine_died(self, message: str) -> None:
        """On the event loop: the engine thread ended with an exception (its streams got the error)."""
        self.engine_error = message
        log.error("the engine thread died (%s); stopping in %.0f s", message, ENGINE_DEATH_EXIT_DELAY_S)
        if self.on_fatal is not None:
            on_fatal = self.on_fatal
            asyncio.get_running_loop().call_later(ENGINE_DEATH_EXIT_DELAY_S, on_fatal,
                                                  f"the engine thread died: {message}")

    def begin_shutdown(self) -> asyncio.Task | None:
        """Refuse new requests (503), let in-flight ones finish up to the timeout, abort the rest.
        Idempotent; safe to call from SIGTERM handling and again from the lifespan."""
        self.shutting_down = True
        if self._shutdown_task is None and self.engine is not None:
            self._shutdown_task = asyncio.get_running_loop().create_task(self._shutdown_engine())
        return self._shutdown_task

    async def _shutdown_engine(self) -> None:
        log.info("shutting down the engine (in-flight requests get %.0f s)", self.shutdown_timeout_s)
        await self.engine.shutdown(timeout_s=self.shutdown_timeout_s)
        log.info("engine stopped")


def _slow_load_for_tests() -> None:
    seconds = float(os.environ.get(SLOW_LOAD_ENV) or 0)
    if seconds <= 0:
        return
    import torch

    log.warning("%s=%s: busy in torch before the load", SLOW_LOAD_ENV, seconds)
    a = torch.randn(128, 128)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        a = torch.tanh(a @ a)  # each op leaves and re-takes the GIL from C++


def _settle(fut: asyncio.Future, value: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)
