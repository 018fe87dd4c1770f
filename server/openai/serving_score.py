"""POST /v1/score: one engine scoring request per candidate, batched by the engine like choices.

The prompt is tokenized once; each candidate is tokenized alone (no special tokens) and appended.
Every candidate of a request gets the same seed, so likelihood scores of one question share their
mask ratios (common random numbers: their differences are less noisy than the scores).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from diffuserve.engine.outputs import BlockOutput
from diffuserve.engine.params import ParamError
from diffuserve.engine.scoring import ScoreParams
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ..errors import APIError
from ..limits import check_admission
from .protocol_score import ScoreRequest, ScoreResponse
from .serving import CLIENT_CLOSED, ChoiceRun, OpenAIServing, _aclose, new_request_id
from .serving_chat import message_text


@dataclass
class CandidateRun(ChoiceRun):
    candidate_ids: list[int] = field(default_factory=list)


class OpenAIServingScore(OpenAIServing):
    def prompt_ids(self, req: ScoreRequest) -> list[int]:
        tokenizer = self.state.engine.tokenizer
        if (req.prompt is None) == (req.messages is None):
            raise APIError(400, "give exactly one of 'prompt' and 'messages'", param="prompt",
                           code="invalid_value")
        if req.messages is None:
            if isinstance(req.prompt, str):
                return list(tokenizer(req.prompt)["input_ids"])
            return list(req.prompt)
        messages = [{"role": m.role, "content": message_text(m, i)} for i, m in enumerate(req.messages)]
        kwargs: dict[str, Any] = dict(req.chat_template_kwargs or {})
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                 **kwargs)
        except Exception as e:  # no template, or the template rejects the conversation
            raise APIError(400, f"the chat template could not render these messages: {e}",
                           param="messages", code="invalid_messages") from e
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def check_score_request(self, req: ScoreRequest) -> None:
        if req.model is not None and req.model != self.settings.served_model_name:
            raise APIError(404, f"the model '{req.model}' does not exist; this server serves "
                           f"'{self.settings.served_model_name}'", param="model", code="model_not_found")
        check_admission(self.state, self.settings, num_requests=len(req.candidates))

    async def create(self, req: ScoreRequest, raw_request: Request) -> Response:
        self.check_score_request(req)
        prompt = self.prompt_ids(req)
        tokenizer = self.state.engine.tokenizer
        candidates = [list(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in req.candidates]
        try:
            params = ScoreParams(req.method, req.mc_samples, req.seed)
        except ParamError as e:
            raise APIError.from_param_error(e) from e
        request_id = new_request_id("score")
        arrival = time.monotonic()
        runs = [CandidateRun(i, f"{request_id}-{i}", prompt, params, arrival, candidate_ids=c)
                for i, c in enumerate(candidates)]
        done = await self.collect(raw_request, runs)
        if done is None:
            return Response(status_code=CLIENT_CLOSED)
        results = [r.last.score for r in done]
        scores = [{"index": r.index, "score": s.score, "num_tokens": s.num_tokens, "greedy": s.greedy,
                   "score_stderr": s.stderr} for r, s in zip(done, results, strict=True)]
        n_cand = sum(len(c) for c in candidates)
        body = ScoreResponse(
            id=request_id, model=self.settings.served_model_name, method=req.method, scores=scores,
            best=max(range(len(results)), key=lambda i: results[i].score),
            usage={"prompt_tokens": len(prompt), "candidate_tokens": n_cand,
                   "total_tokens": len(prompt) + n_cand,
                   "forward_passes": sum(s.num_forwards for s in results)},
        )
        return JSONResponse(body.model_dump())

    def _start(self, runs: list[CandidateRun], on_output: Callable[[ChoiceRun, BlockOutput], None]
               ) -> list[asyncio.Task]:
        # As for generation: every engine iterator exists before any task runs, so a ParamError
        # from the engine's check is a 400 and nothing is left half-started.
        iterators = []
        try:
            for run in runs:
                iterators.append(self.state.engine.score(run.request_id, run.prompt_ids,
                                                         run.candidate_ids, run.params))
        except ParamError as e:
            for it in iterators:
                self._spawn(_aclose(it))
            error = APIError.from_param_error(e)
            if e.param == "candidates":
                error.param = f"candidates[{len(iterators)}]"
            raise error from e
        return [self._spawn(self._drive(run, it, on_output)) for run, it in zip(runs, iterators, strict=True)]
