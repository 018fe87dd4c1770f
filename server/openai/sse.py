"""Server-Sent Events response that always watches for the client going away."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

DONE = "data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"


class SSEResponse(StreamingResponse):
    """Streams `content` while listening for `http.disconnect`; a disconnect cancels the stream.

    Starlette only listens concurrently under ASGI spec < 2.4; with 2.4 it would notice a gone
    client at the next write, which for a diffusion stream is one whole block later. Cancelling
    the body iterator runs its `finally`, which aborts the engine requests.
    """

    media_type = "text/event-stream"

    def __init__(self, content, status_code: int = 200):
        super().__init__(content, status_code=status_code, headers=SSE_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tg:

            async def run_then_cancel(fn) -> None:
                try:
                    await fn()
                except OSError:  # the socket is gone: same as a disconnect
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(run_then_cancel, partial(self.stream_response, send))
            await run_then_cancel(partial(self.listen_for_disconnect, receive))
