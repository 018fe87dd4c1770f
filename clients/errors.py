"""Exceptions of the diffuserve client; API errors keep the fields of OpenAI's error body."""

from __future__ import annotations

import json
from typing import Any

import httpx


class DiffuserveError(Exception):
    """Base class of every error the client raises."""


class DiffuserveConnectionError(DiffuserveError):
    """The server could not be reached (refused, reset, DNS) after all retries."""


class DiffuserveTimeoutError(DiffuserveError):
    """No answer within the client's timeout."""


class DiffuserveAPIError(DiffuserveError):
    """The server answered with an error status: `{"error": {message, type, param, code}}`."""

    def __init__(
        self,
        status_code: int,
        message: str,
        type: str | None = None,
        param: str | None = None,
        code: str | int | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ):
        super().__init__(f"{status_code} {type or 'error'}: {message}")
        self.status_code = status_code
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after
        self.body = body

    @classmethod
    def from_response(cls, response: httpx.Response, body: bytes | None = None) -> DiffuserveAPIError:
        raw = response.content if body is None else body
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        err = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(err, dict):
            message = str(err.get("message", ""))
            etype, param, code = err.get("type"), err.get("param"), err.get("code")
        else:  # not an OpenAI body (a proxy's HTML page, FastAPI's {"detail": ...})
            message = raw.decode("utf-8", "replace")[:500] if raw else response.reason_phrase
            etype, param, code = None, None, None
        from .retry import parse_retry_after  # local import: retry imports nothing from here

        return cls(
            status_code=response.status_code,
            message=message,
            type=etype,
            param=param,
            code=code,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            body=parsed,
        )


def transport_error(method: str, path: str, e: httpx.TransportError) -> DiffuserveError:
    """The client error for a transport failure: a timeout, or a connection that failed."""
    if isinstance(e, httpx.TimeoutException):
        return DiffuserveTimeoutError(f"{method} {path} timed out: {e!r}")
    return DiffuserveConnectionError(f"{method} {path} failed: {e!r}")


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The response body as a JSON object ({} when it is not JSON; a non-object is wrapped)."""
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {"value": data}
