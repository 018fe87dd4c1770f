"""Request-size guard (413) and the admission check (429 queue full / 503 not ready)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError
from .state import ServerSettings, ServerState


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body exceeds the limit of {limit} bytes (--max-body-bytes)")


class BodySizeLimitMiddleware:
    """Refuse bodies over `max_bytes`: at once from Content-Length, else while a chunked body streams.

    The streaming case raises an HTTPException from inside `receive`; FastAPI re-raises
    HTTPExceptions from body parsing unchanged, so the app's handler renders the 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, count_error) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.count_error = count_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            exc = BodyTooLarge(self.max_bytes)
            error = APIError(413, exc.detail, code="request_too_large")
            self.count_error(error.status, error.finish_reason)
            await error.response()(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)


def check_admission(state: ServerState, settings: ServerSettings, num_requests: int = 1) -> None:
    """Raise 503 while loading or stopping, 429 when the engine queue is full."""
    retry = {"Retry-After": str(settings.retry_after_s)}
    if state.shutting_down:
        raise APIError(503, "the server is shutting down", code="server_shutting_down", headers=retry)
    if state.engine_error:
        raise APIError(503, f"the engine failed and the server is stopping: {state.engine_error}",
                       code="engine_dead", headers=retry)
    if not state.ready:
        why = f"loading the model failed: {state.load_error}" if state.load_error else "the model is loading"
        raise APIError(503, f"not ready: {why}", code="model_not_ready", headers=retry)
    waiting = state.engine.stats().waiting
    if waiting + num_requests > settings.max_queue:
        raise APIError(
            429, f"the request queue is full ({waiting} waiting, limit {settings.max_queue}); retry later",
            code="queue_full", headers=retry,
        )
