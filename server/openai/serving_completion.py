"""POST /v1/completions: raw prompts (text or token ids, one or a list) -> engine -> text choices."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ..errors import APIError
from .protocol import CompletionRequest, CompletionResponse
from .serving import CLIENT_CLOSED, OpenAIServing, new_request_id
from .sse import SSEResponse
from .streaming import COMPLETION_FORMAT, sse_stream, usage_and_diffusion


class OpenAIServingCompletion(OpenAIServing):
    @staticmethod
    def prompt_list(req: CompletionRequest) -> list[str | list[int]]:
        """OpenAI's four prompt forms -> one entry per prompt (text, or token ids taken as given)."""
        prompt = req.prompt
        if isinstance(prompt, str):
            return [prompt]
        if not prompt:
            raise APIError(400, "'prompt' is empty", param="prompt", code="invalid_value")
        if isinstance(prompt[0], int):
            return [prompt]
        return list(prompt)

    def prompt_ids(self, prompts: list[str | list[int]], n: int) -> list[list[int]]:
        """Token ids per prompt. Strings get the tokenizer's special tokens (BOS), as an HF
        pipeline would; token ids are checked against the vocabulary by the engine."""
        if len(prompts) * n > self.settings.max_prompts_times_n:
            raise APIError(400, f"len(prompt) * n = {len(prompts) * n} exceeds the limit "
                           f"{self.settings.max_prompts_times_n}", param="prompt", code="invalid_value")
        return [self.text_ids(p) if isinstance(p, str) else list(p) for p in prompts]

    def text_ids(self, text: str) -> list[int]:
        """A text prompt's token ids; a text with no tokens (the empty string) is the start of a
        document, as in OpenAI's API: the BOS token, or EOS for models without one."""
        tokenizer = self.state.engine.tokenizer
        ids = list(tokenizer(text)["input_ids"])
        if ids:
            return ids
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return [] if start is None else [start]  # [] -> the engine answers "the prompt is empty"

    async def create(self, req: CompletionRequest, raw_request: Request) -> Response:
        texts_or_ids = self.prompt_list(req)
        self.check_request(req, num_requests=len(texts_or_ids) * req.n)
        prompts = self.prompt_ids(texts_or_ids, req.n)
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
        body = CompletionResponse(
            id=request_id,
            model=model,
            choices=[
                {"index": r.index, "text": "".join(r.text), "finish_reason": r.finish_reason} for r in done
            ],
            **usage_and_diffusion(done, num_prompt_tokens),
        )
        return JSONResponse(body.model_dump())
