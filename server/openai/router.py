"""Thin HTTP routes: parse, hand to the serving objects on app.state, return."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from .protocol_score import ScoreRequest, ScoreResponse

ERRORS = {s: {"model": ErrorResponse} for s in (400, 401, 404, 413, 429, 500, 503)}
# Open API 3.1: an event stream's `schema` describes one event.
SSE_EVENT = {"type": "object", "required": ["data"], "properties": {"data": {
    "type": "string", "description": "a JSON chunk, an OpenAI error body, or [DONE] (the last event)"}}}
STREAM = {200: {"content": {"text/event-stream": {"schema": SSE_EVENT}},
                "description": "JSON, or Server-Sent Events when stream=true (chunks, then `data: [DONE]`)"}}

router = APIRouter()


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses={**ERRORS, **STREAM})
async def chat_completions(req: ChatCompletionRequest, raw_request: Request) -> Response:
    return await raw_request.app.state.serving_chat.create(req, raw_request)


@router.post("/v1/completions", response_model=CompletionResponse, responses={**ERRORS, **STREAM})
async def completions(req: CompletionRequest, raw_request: Request) -> Response:
    return await raw_request.app.state.serving_completion.create(req, raw_request)


@router.post("/v1/score", response_model=ScoreResponse, responses=ERRORS)
async def score(req: ScoreRequest, raw_request: Request) -> Response:
    """Score candidate continuations of a prompt (multiple choice): iLLaDA confidence scoring or
    the masked-diffusion likelihood bound. Not an OpenAI endpoint."""
    return await raw_request.app.state.serving_score.create(req, raw_request)


@router.get("/v1/models", response_model=ModelList, responses={401: ERRORS[401]})
async def models(raw_request: Request) -> ModelList:
    settings = raw_request.app.state.settings
    engine = raw_request.app.state.server_state.engine
    max_len = engine.model_config.max_length if engine is not None else None
    return ModelList(data=[ModelCard(id=settings.served_model_name, root=settings.model_path,
                                     max_model_len=max_len)])


@router.get("/health", responses={503: ERRORS[503]})
async def health(raw_request: Request) -> JSONResponse:
    """Liveness: the process answers and its engine thread has not died (503 then: the process is
    about to exit non-zero). Open without an API key."""
    state = raw_request.app.state.server_state
    if state.engine_error:
        return _unavailable(raw_request, f"the engine thread died: {state.engine_error}", "engine_dead")
    return JSONResponse({"status": "ok"})


@router.get("/ready", responses={503: ERRORS[503]})
async def ready(raw_request: Request) -> JSONResponse:
    """Readiness: the model is loaded and the engine loop runs. Open without an API key."""
    state = raw_request.app.state.server_state
    if state.ready:
        return JSONResponse({"status": "ready", "model": raw_request.app.state.settings.served_model_name})
    if state.engine_error:
        why, code = f"the engine thread died: {state.engine_error}", "engine_dead"
    elif state.shutting_down:
        why, code = "the server is shutting down", "server_shutting_down"
    elif state.load_error:
        why, code = f"loading the model failed: {state.load_error}", "model_load_failed"
    else:
        why, code = "the model is loading", "model_not_ready"
    return _unavailable(raw_request, f"not ready: {why}", code)


def _unavailable(raw_request: Request, message: str, code: str) -> JSONResponse:
    retry = str(raw_request.app.state.settings.retry_after_s)
    body = {"error": {"message": message, "type": "service_unavailable", "param": None, "code": code}}
    return JSONResponse(body, status_code=503, headers={"Retry-After": retry})


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(raw_request: Request) -> Response:
    """Prometheus text format. Open without an API key."""
    registry = raw_request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
