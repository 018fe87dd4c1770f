"""API-key check for /v1/*: `Authorization: Bearer KEY`, compared in constant time.

/health, /ready, /metrics and the OpenAPI pages stay open on purpose: load balancers,
Kubernetes probes and Prometheus must reach them without the key, and they expose no
generation. Put the server behind a network policy if even those must be private.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import APIError

PROTECTED_PREFIX = "/v1/"


class APIKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str, count_error) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()
        self.count_error = count_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given.strip(), self.expected):
            await self.app(scope, receive, send)
            return
        error = APIError(
            401,
            "missing API key: send 'Authorization: Bearer <key>'" if not given
            else "incorrect API key provided",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
        self.count_error(error.status, error.finish_reason)
        await error.response()(scope, receive, send)
