"""Pydantic models of `POST /v1/score` (multiple-choice scoring; not an OpenAI endpoint).

Strict: unknown fields and wrong types are refused with a 400 naming the field, since no SDK
sends this body and a typo (say `mc_sample`) would otherwise silently change the result.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from diffuserve.engine.scoring import MAX_MC_SAMPLES
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, StringConstraints

from .protocol import ChatMessage

MAX_CANDIDATES = 128


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: StrictStr | None = Field(None, description="served model name; the only model when omitted")
    prompt: StrictStr | list[StrictInt] | None = Field(
        None, description="text (tokenized with the tokenizer's special tokens) or token ids; "
        "exactly one of prompt and messages")
    messages: list[ChatMessage] | None = Field(
        None, min_length=1, description="chat prompt: rendered by the chat template with the "
        "generation prompt added")
    chat_template_kwargs: dict[str, Any] | None = None
    candidates: list[Annotated[StrictStr, StringConstraints(min_length=1)]] = Field(
        ..., min_length=1, max_length=MAX_CANDIDATES,
        description="continuations to score, tokenized without special tokens")
    method: Literal["confidence", "likelihood"] = Field(
        "confidence", description="'confidence': iLLaDA's reveal-the-most-confident-token score; "
        "'likelihood': Monte-Carlo masked-diffusion bound on log p(candidate | prompt)")
    mc_samples: StrictInt = Field(32, ge=1, le=MAX_MC_SAMPLES,
                                  description="likelihood: samples per candidate")
    seed: StrictInt | None = Field(None, ge=0, lt=2**63, description="likelihood: sampling seed (default 0)")


class CandidateScoreOut(BaseModel):
    index: int
    score: float = Field(description="confidence: sum of revealed log-probs; likelihood: the bound")
    num_tokens: int
    greedy: bool | None = Field(description="confidence: every revealed token was the argmax; "
                                "null for likelihood")
    score_stderr: float | None = Field(description="likelihood: standard error of the estimate")


class ScoreUsage(BaseModel):
    prompt_tokens: int
    candidate_tokens: int
    total_tokens: int
    forward_passes: int = Field(description="model forwards the candidates took part in, summed")


class ScoreResponse(BaseModel):
    id: str = Field(default_factory=lambda: f"score-{uuid.uuid4().hex}")
    object: Literal["score"] = "score"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    method: Literal["confidence", "likelihood"]
    scores: list[CandidateScoreOut]
    best: int = Field(description="index of the highest score")
    usage: ScoreUsage
