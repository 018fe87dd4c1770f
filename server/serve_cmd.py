"""`diffuserve serve`: the OpenAI-compatible HTTP server on uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from .app import create_app
from .state import ServerSettings, ServerState

HELP = (
    "Serve a masked diffusion LM over an OpenAI-compatible API (/v1/chat/completions, /v1/completions, "
    "/v1/models), with /health, /ready and Prometheus /metrics. Without --model it serves the built-in model."
)
BUILTIN_NAME = "diffuserve-builtin"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint folder or hub id (default: the built-in model)")
    p.add_argument("--served-model-name", default=None,
                   help=f"name clients pass as `model` (default: the folder name, or {BUILTIN_NAME})")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("DIFFUSERVE_API_KEY") or None,
                   help="require `Authorization: Bearer KEY` on /v1/* (/health, /ready, /metrics stay open); "
                   "default: $DIFFUSERVE_API_KEY, which keeps the key out of the process list")
    p.add_argument("--max-queue", type=int, default=256,
                   help="answer 429 when this many requests already wait in the engine")
    p.add_argument("--max-body-bytes", type=int, default=4 * 2**20, help="answer 413 above this body size")
    p.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="on SIGTERM, seconds in-flight requests get to finish before they are aborted")
    p.add_argument("--cache-refresh", default=None,
                   help="cache_refresh of requests that leave it out: 'auto' (the default: refresh once "
                   "the denoising work since the last refresh reaches its cost), N (every N finished "
                   "blocks) or 0 (never: faster, further from exact)")
    from diffuserve.engine.params import SERVED_THRESHOLD

    p.add_argument("--threshold", type=threshold_default, default=SERVED_THRESHOLD, metavar="T|none",
                   help="parallel decoding for requests that set none of threshold, threshold_factor, "
                   f"steps and do not ask for exact mode (cache 'none'): commit every token with "
                   f"confidence >= T (default {SERVED_THRESHOLD}, the fastest threshold as accurate as "
                   "one token a step on the task suite, see BENCHMARKS.md); 'none': one token a step")
    # Engine and model flags come from the config dataclasses: their defaults cannot drift.
    from diffuserve.engine.cli_args import add_engine_args, add_model_args

    add_engine_args(p)
    add_model_args(p)


def served_name(args: argparse.Namespace) -> str:
    if args.served_model_name:
        return args.served_model_name
    if args.model is None:
        return BUILTIN_NAME
    path = Path(args.model)
    return path.name if path.exists() else str(args.model)  # a hub id keeps its org/name


def make_engine_factory(args: argparse.Namespace):
    """A zero-argument callable that loads the model and builds the (not started) AsyncEngine.
    The engine flags are checked here, before anything loads: a bad value stops the command."""
    from diffuserve.engine.cli_args import engine_config_from_args, model_overrides_from_args

    try:
        engine_config = engine_config_from_args(args)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    overrides = model_overrides_from_args(args).given()

    def factory():
        from diffuserve.engine.async_engine import AsyncEngine

        return AsyncEngine.from_pretrained(args.model, engine_config, **overrides)

    return factory


def cache_refresh_default(text: str | None) -> int | str | None:
    """--cache-refresh: None (the engine's default), 'auto' or a block count >= 0."""
    if text is None:
        return None
    from diffuserve.engine.params import parse_cache_refresh

    try:
        return parse_cache_refresh(text)
    except ValueError:
        raise SystemExit(f"--cache-refresh must be 'auto' or a block count >= 0, got {text!r}") from None


def threshold_default(text: str) -> float | None:
    """--threshold: a confidence in (0, 1], or 'none'; a bad value is a usage error that says why."""
    from diffuserve.engine.params import parse_threshold

    try:
        return parse_threshold(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    settings = ServerSettings(
        served_model_name=served_name(args),
        model_path=None if args.model is None else str(args.model),
        api_key=args.api_key,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        shutdown_timeout_s=args.shutdown_timeout,
        default_cache_refresh=cache_refresh_default(args.cache_refresh),
        default_threshold=args.threshold,
    )
    app = create_app(make_engine_factory(args), settings)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=logging.getLogger().getEffectiveLevel(),
        # Backstop only: the engine aborts what is left after shutdown_timeout, which ends the streams.
        timeout_graceful_shutdown=int(args.shutdown_timeout) + 10,
        log_config=None,  # keep the CLI's logging format
    )
    server = GracefulServer(config, app.state.server_state)
    log.info("serving %s on http://%s:%d", settings.served_model_name, args.host, args.port)
    server.run()
    status = 1 if server.failed else 0
    exit_now_if_threads_linger(app.state.server_state, status)
    return status


def exit_now_if_threads_linger(state: ServerState, status: int) -> None:
    """Exit at once, skipping the interpreter's teardown, while a daemon thread may still be in
    torch (SIGTERM/SIGINT during the model load; an engine step stuck past the shutdown timeout).

    In a normal exit the interpreter finalizes under that thread; when the thread comes back from
    a torch op and asks for the GIL, Python ends it with pthread_exit, whose forced unwinding
    through torch's C++ frames calls std::terminate: the process aborts ("terminate called
    without an active exception", exit status 134) instead of ending with `status`."""
    lingering = state.lingering_threads()
    if not lingering:
        return
    log.info("exiting while %s still runs", ", ".join(t.name for t in lingering))
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


class GracefulServer(uvicorn.Server):
    """Starts the engine's graceful shutdown the moment SIGTERM/SIGINT arrives, in parallel with
    uvicorn closing its sockets (uvicorn alone would first wait for open streams to end)."""

    def __init__(self, config: uvicorn.Config, state: ServerState):
        super().__init__(config)
        self.state = state
        self.failed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        self.state.on_fatal = self._fatal
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            # The shutdown was graceful: exit with 0 rather than let uvicorn re-raise SIGTERM
            # (which would report "killed by signal" to the supervisor).
            self._captured_signals.clear()

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.state.begin_shutdown)

    def _fatal(self, message: str) -> None:
        log.error("stopping: %s", message)
        self.failed = True
        self.should_exit = True
