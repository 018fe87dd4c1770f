"""FastAPI app factory: routes, error bodies, auth, limits, metrics, and the engine's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI

from .auth import APIKeyMiddleware
from .errors import install_error_handlers
from .limits import BodySizeLimitMiddleware
from .metrics import ServerMetrics
from .openai.router import router
from .openai.schema import install_openapi
from .openai.serving_chat import OpenAIServingChat
from .openai.serving_completion import OpenAIServingCompletion
from .openai.serving_score import OpenAIServingScore
from .state import ServerSettings, ServerState

log = logging.getLogger(__name__)


def create_app(engine_factory: Callable[[], Any], settings: ServerSettings) -> FastAPI:
    """`engine_factory()` builds an AsyncEngine (not started); it runs in a background thread
    when the app starts, so /health answers while the model loads and /ready turns 200 after."""
    state = ServerState(engine_factory, settings.shutdown_timeout_s)
    metrics = ServerMetrics(settings.served_model_name, state.stats)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.get_running_loop().create_task(
            state.load(lambda engine: engine.add_step_listener(metrics.on_step))
        )
        try:
            yield
        finally:
            shutdown = state.begin_shutdown()
            if shutdown is not None:
                await shutdown
            if not loading.done():
                loading.cancel()  # the loader thread is a daemon: it never delays the exit

    app = FastAPI(
        title="diffuserve",
        summary="OpenAI-compatible server for masked diffusion language models",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.server_state = state
    app.state.metrics = metrics
    app.state.serving_chat = OpenAIServingChat(state, settings, metrics)
    app.state.serving_completion = OpenAIServingCompletion(state, settings, metrics)
    app.state.serving_score = OpenAIServingScore(state, settings, metrics)
    app.include_router(router)
    install_openapi(app, state.model_limits)
    install_error_handlers(app, metrics.count)
    # Added last = outermost: a 413 never reads the body, a 401 never parses it.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes, count_error=metrics.count)
    if settings.api_key:
        app.add_middleware(APIKeyMiddleware, api_key=settings.api_key, count_error=metrics.count)
    return app
