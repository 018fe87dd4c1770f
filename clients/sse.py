"""Server-Sent Events framing: lines in, JSON payloads out, `[DONE]` ends the stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

DONE = object()  # sentinel returned by SSEDecoder.feed for `data: [DONE]`


class SSEDecoder:
    """Collects `data:` lines into events; an empty line ends an event (per the SSE spec)."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> dict[str, Any] | object | None:
        line = line.rstrip("\r\n")
        if not line:
            if not self._data:
                return None
            payload, self._data = "\n".join(self._data), []
            if payload.strip() == "[DONE]":
                return DONE
            return json.loads(payload)
        if line.startswith(":"):  # comment / keep-alive
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None  # event:, id:, retry: carry nothing the OpenAI protocol uses


def iter_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    decoder = SSEDecoder()
    for line in lines:
        event = decoder.feed(line)
        if event is DONE:
            return
        if event is not None:
            yield event  # type: ignore[misc]
    event = decoder.feed("")  # a stream cut without a trailing blank line
    if event is not None and event is not DONE:
        yield event  # type: ignore[misc]


async def aiter_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    decoder = SSEDecoder()
    async for line in lines:
        event = decoder.feed(line)
        if event is DONE:
            return
        if event is not None:
            yield event  # type: ignore[misc]
    event = decoder.feed("")
    if event is not None and event is not DONE:
        yield event  # type: ignore[misc]
