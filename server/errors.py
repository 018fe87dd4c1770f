"""OpenAI-shaped error bodies with the real HTTP status, and the app's exception handlers.

Every failure a client can see has the body `{"error": {"message", "type", "param", "code"}}`,
which the official `openai` client turns into its typed exceptions (BadRequestError,
AuthenticationError, NotFoundError, RateLimitError, InternalServerError, ...).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from diffuserve.engine.params import ParamError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

# HTTP status -> OpenAI error `type` (the strings OpenAI's own API returns where it has one).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """An error answer: raised anywhere below a route, rendered by `api_error_handler`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        finish_reason: str = "none",  # metrics label: "none" for requests rejected before generation
        counted: bool = False,  # already counted in the requests metric (per choice, by the serving layer)
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        fallback = "server_error" if status >= 500 else "invalid_request_error"
        self.type = type or ERROR_TYPES.get(status, fallback)
        self.headers = headers or {}
        self.finish_reason = finish_reason
        self.counted = counted

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    @classmethod
    def from_param_error(cls, e: ParamError) -> APIError:
        return cls(400, str(e), param=e.param, code=e.code)


def sse_error_event(error: APIError) -> str:
    """An error in the middle of a stream: OpenAI's body shape as one SSE event (then [DONE])."""
    return f"data: {json.dumps(error.body())}\n\n"


_TYPE_TAGS = {"str", "int", "float", "bool", "none", "dict", "list"}


def _param_from_loc(loc: tuple) -> str | None:
    # pydantic locations look like ("body", "messages", 0, "content"); OpenAI names params
    # "messages[0].content". Union members add their type as a step ("stop", "list[str]"):
    # the path ends before such a tag (field names here are lower-case identifiers).
    text = ""
    for p in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(p, int):
            text += f"[{p}]"
            continue
        if p in _TYPE_TAGS or "[" in p or "-" in p or p[:1].isupper():
            break
        text += f".{p}" if text else p
    return text or None


def validation_error(exc: RequestValidationError) -> APIError:
    errors = exc.errors()
    if not errors:
        return APIError(400, "invalid request body", code="invalid_request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return APIError(400, f"the body is not valid JSON: {first.get('msg')}", code="invalid_json")
    # Union types (e.g. prompt: str | list[int] | ...) produce one error per branch; the
    # location of the first names the field, which is what a user needs.
    param = _param_from_loc(tuple(first.get("loc", ())))
    if first.get("type") == "missing":
        return APIError(400, f"missing required parameter: '{param}'", param=param,
                        code="missing_required_parameter")
    detail = "; ".join(
        f"{_param_from_loc(tuple(e.get('loc', ())))}: {e.get('msg')}" for e in errors[:3]
    )
    return APIError(400, f"invalid value for '{param}': {detail}", param=param, code="invalid_value")


def install_error_handlers(app: FastAPI, count_error) -> None:
    """Register handlers; `count_error(status, finish_reason)` feeds the requests metric."""

    def render(error: APIError) -> JSONResponse:
        if not error.counted:
            count_error(error.status, error.finish_reason)
        return error.response()

    @app.exception_handler(APIError)
    async def api_error_handler(_: Request, exc: APIError) -> JSONResponse:
        return render(exc)

    @app.exception_handler(ParamError)
    async def param_error_handler(_: Request, exc: ParamError) -> JSONResponse:
        return render(APIError.from_param_error(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error_handler(_: Request, exc: RequestValidationError) -> JSONResponse:
        return render(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error_handler(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # 404 unknown route, 405 wrong method, 413 from the body-size guard.
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status_code)
        return render(APIError(exc.status_code, str(exc.detail), code=code,
                               headers=dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def unexpected_error_handler(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error while serving a request")
        return render(APIError(500, f"internal server error: {type(exc).__name__}: {exc}",
                               code="internal_error", finish_reason="error"))
