"""Python client for diffuserve (and any OpenAI-compatible server), plus `diffuserve chat` / `bench`.

    from diffuserve.clients import DiffuserveClient
    with DiffuserveClient("http://127.0.0.1:8000") as client:
        for block in client.stream_chat([{"role": "user", "content": "Hi"}], max_tokens=64):
            print(block.text, end="", flush=True)
"""

from .async_client import AsyncDiffuserveClient
from .errors import DiffuserveAPIError, DiffuserveConnectionError, DiffuserveError, DiffuserveTimeoutError
from .sync_client import DiffuserveClient
from .types import (
    BlockDelta,
    CandidateScore,
    Choice,
    Completion,
    DiffusionStats,
    Health,
    ModelInfo,
    ScoreResult,
    Usage,
)

__all__ = [
    "AsyncDiffuserveClient",
    "BlockDelta",
    "CandidateScore",
    "Choice",
    "Completion",
    "DiffuserveAPIError",
    "DiffuserveClient",
    "DiffuserveConnectionError",
    "DiffuserveError",
    "DiffuserveTimeoutError",
    "DiffusionStats",
    "Health",
    "ModelInfo",
    "ScoreResult",
    "Usage",
]
