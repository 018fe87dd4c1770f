"""The OpenAPI document, made to match what the server does.

FastAPI's generated document is adjusted in three ways:
- request validation errors are answered with 400 and an OpenAI error body (server/errors.py),
  so the 422 responses FastAPI documents by default are removed;
- fields marked with `MODEL_LIMIT` (token ids, token counts) get the served model's bound as
  `maximum` once the model is loaded; before that the document is served uncached without them;
- whole-number bounds stay integers (FastAPI writes them as floats, which rounds 2**63);
- every other limit comes from the pydantic models (engine/params.py BOUNDS).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .protocol import MODEL_LIMIT


def install_openapi(app: FastAPI, model_limits) -> None:
    """`model_limits()` returns {"vocab": vocab_size, "context": max_length}, or None while loading."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        _drop_422(doc)
        _exact_bounds(doc)
        limits = model_limits()
        if limits is None:
            return doc  # not cached: the model's limits are added once it is loaded
        _fill_model_limits(doc, limits)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _drop_422(doc: dict[str, Any]) -> None:
    for path in doc.get("paths", {}).values():
        for op in path.values():
            if isinstance(op, dict):
                op.get("responses", {}).pop("422", None)
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


BOUND_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _exact_bounds(node: Any) -> None:
    """FastAPI's OpenAPI model types bounds as floats; 2**63 (the seed's bound) would be rounded
    in the document. A whole-number bound is written back as the integer it is."""
    if isinstance(node, dict):
        for key in BOUND_KEYS:
            value = node.get(key)
            if isinstance(value, float) and value.is_integer():
                node[key] = int(value)
        for value in node.values():
            _exact_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _exact_bounds(value)


def _fill_model_limits(node: Any, limits: dict[str, int]) -> None:
    if isinstance(node, dict):
        kind = node.pop(MODEL_LIMIT, None)
        if kind is not None:
            # Token ids are < vocab_size; a token count leaves room for at least one prompt token.
            node["maximum"] = limits[kind] - 1
        for value in node.values():
            _fill_model_limits(value, limits)
    elif isinstance(node, list):
        for value in node:
            _fill_model_limits(value, limits)
