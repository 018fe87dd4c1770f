"""POST /v1/completions: raw prompts (text or token ids, one or a list) -> engine -> text choices."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ..errors import APIError
from .protocol import CompletionRequest, CompletionResponse
from .serving import CLIENT_CLOSED, OpenAIServing, engine_failure, new_request_id
from .sse import SSEResponse
from .streaming import COMPLETION_FORMAT, sse_stream, usage_and_diffusion


class OpenAIServingCompletion(OpenAIServing):
    def prompt_ids(self, req: CompletionRequest) -> list[list[int]]:
        """OpenAI's four prompt forms -> one token list per prompt. Strings get the tokenizer's
        special tokens (BOS), as an HF pipeline would; token ids are taken as given."""
        prompt = req.prompt
        if isinstance(prompt, str):
            prompts: list = [prompt]
        elif not prompt:
            raise APIError(400, "'prompt' is empty", param="prompt", code="invalid_value")
        elif isinstance(prompt[0], int):
            prompts = [prompt]
        else:
            prompts = list(prompt)
        if len(prompts) * req.n > self.settings.max_prompts_times_n:
            raise APIError(400, f"len(prompt) * n = {len(prompts) * req.n} exceeds the limit "
                           f"{self.settings.max_prompts_times_n}", param="prompt", code="invalid_value")
        engine = self.state.engine
        vocab = engine.model_config.vocab_size
        out = []
        for i, p in enumerate(prompts):
            if isinstance(p, str):
                out.append(list(engine.tokenizer(p)["input_ids"]))
                continue
            bad = next((t for t in p if not 0 <= t < vocab), None)
            if bad is not None:
                raise APIError(400, f"token id {bad} is outside the vocabulary [0, {vocab})",
                               param=f"prompt[{i}]" if len(prompts) > 1 else "prompt", code="invalid_value")
            out.append(list(p))
        return out

    async def create(self, req: CompletionRequest, raw_request: Request) -> Response:
        self.check_request(req)
        prompts = self.prompt_ids(req)
        default = self.settings.default_completion_max_tokens
        params = [self.make_params(req, req.max_tokens, default, len(ids)) for ids in prompts]
        request_id = new_request_id("cmpl")
        runs = self.choice_runs(request_id, prompts, params, req.n)
        model = self.settings.served_model_name
        num_prompt_tokens = sum(len(ids) for ids in prompts)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return SSEResponse(sse_stream(self, runs, COMPLETION_FORMAT, request_id, model,
                                          num_prompt_tokens, include_usage))
        done = await self.collect(raw_request, runs)
        if done is None:
            return Response(status_code=CLIENT_CLOSED)
        failure = engine_failure(done)
        if failure is not None:
            raise failure
        body = CompletionResponse(
            id=request_id,
            model=model,
            choices=[
                {"index": r.index, "text": "".join(r.text), "finish_reason": r.finish_reason} for r in done
            ],
            **usage_and_diffusion(done, num_prompt_tokens),
        )
        return JSONResponse(body.model_dump())
