"""Typed results of the diffuserve client: plain dataclasses built from OpenAI-shaped JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Usage | None:
        if not data:
            return None
        prompt = int(data.get("prompt_tokens", 0))
        completion = int(data.get("completion_tokens", 0))
        return cls(prompt, completion, int(data.get("total_tokens", prompt + completion)))


@dataclass(frozen=True)
class DiffusionStats:
    """The server's `diffusion` extra: how the answer was denoised."""

    steps: int  # denoising steps (forward passes) the request took part in
    tokens_per_step: float  # generated tokens / steps: > 1 means parallel decoding paid off
    blocks: int

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> DiffusionStats | None:
        if not data:
            return None
        return cls(
            steps=int(data.get("steps", 0)),
            tokens_per_step=float(data.get("tokens_per_step", 0.0)),
            blocks=int(data.get("blocks", 0)),
        )

    @property
    def steps_per_block(self) -> float:
        return self.steps / self.blocks if self.blocks else 0.0


@dataclass(frozen=True)
class Choice:
    index: int
    text: str  # message content for chat, text for completions
    finish_reason: str | None
    role: str | None = None  # "assistant" for chat, None for completions


@dataclass(frozen=True)
class Completion:
    """A non-streaming answer of /v1/chat/completions or /v1/completions."""

    id: str
    model: str
    created: int
    choices: list[Choice]
    usage: Usage | None
    diffusion: DiffusionStats | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def text(self) -> str:
        return self.choices[0].text if self.choices else ""

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason if self.choices else None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Completion:
        choices = []
        for i, c in enumerate(data.get("choices") or []):
            message = c.get("message")
            text = (message or {}).get("content") if message is not None else c.get("text")
            choices.append(
                Choice(
                    index=int(c.get("index", i)),
                    text=text or "",
                    finish_reason=c.get("finish_reason"),
                    role=(message or {}).get("role") if message is not None else None,
                )
            )
        return cls(
            id=str(data.get("id", "")),
            model=str(data.get("model", "")),
            created=int(data.get("created", 0)),
            choices=choices,
            usage=Usage.from_json(data.get("usage")),
            diffusion=DiffusionStats.from_json(data.get("diffusion")),
            raw=data,
        )


@dataclass(frozen=True)
class BlockDelta:
    """One SSE chunk of a stream: the server sends one per decoded block.

    The first chunk of a chat stream carries only the role; the last ones carry
    `finish_reason` and, when asked for, `usage` (with `choices` empty).
    """

    text: str
    finish_reason: str | None = None
    index: int = 0
    role: str | None = None
    usage: Usage | None = None
    diffusion: DiffusionStats | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BlockDelta:
        choices = data.get("choices") or []
        c = choices[0] if choices else {}
        delta = c.get("delta")
        text = (delta or {}).get("content") if delta is not None else c.get("text")
        return cls(
            text=text or "",
            finish_reason=c.get("finish_reason"),
            index=int(c.get("index", 0)),
            role=(delta or {}).get("role"),
            usage=Usage.from_json(data.get("usage")),
            diffusion=DiffusionStats.from_json(data.get("diffusion")),
            raw=data,
        )


@dataclass(frozen=True)
class CandidateScore:
    index: int
    score: float  # confidence: sum of revealed log-probs; likelihood: the Monte-Carlo bound
    num_tokens: int
    greedy: bool | None  # confidence: every revealed token was the model's argmax
    score_stderr: float | None  # likelihood: standard error of the estimate


@dataclass(frozen=True)
class ScoreResult:
    """The answer of /v1/score."""

    model: str
    method: str
    scores: list[CandidateScore]
    best: int
    usage: dict[str, int] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoreResult:
        scores = [CandidateScore(int(s["index"]), float(s["score"]), int(s["num_tokens"]), s.get("greedy"),
                                 s.get("score_stderr")) for s in data["scores"]]
        return cls(str(data.get("model", "")), str(data.get("method", "")), scores, int(data["best"]),
                   dict(data.get("usage") or {}))


@dataclass(frozen=True)
class ModelInfo:
    id: str
    owned_by: str = ""
    created: int = 0
    max_model_len: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelInfo:
        max_len = data.get("max_model_len")
        return cls(
            id=str(data["id"]),
            owned_by=str(data.get("owned_by", "")),
            created=int(data.get("created", 0)),
            max_model_len=int(max_len) if max_len is not None else None,
        )


@dataclass(frozen=True)
class Health:
    ok: bool
    status_code: int
    body: dict[str, Any] = field(default_factory=dict, compare=False)
