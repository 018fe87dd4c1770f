"""POST /v1/chat/completions: chat template -> engine -> one message (or one SSE chunk per block)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ..errors import APIError
from .protocol import ChatCompletionRequest, ChatCompletionResponse, ChatMessage
from .serving import CLIENT_CLOSED, OpenAIServing, new_request_id
from .sse import SSEResponse
from .streaming import CHAT_FORMAT, sse_stream, usage_and_diffusion


def message_text(msg: ChatMessage, index: int) -> str:
    if msg.content is None or isinstance(msg.content, str):
        return msg.content or ""
    texts = []
    for j, part in enumerate(msg.content):
        if part.type != "text" or part.text is None:
            raise APIError(400, f"content part type '{part.type}' is not supported (text only)",
                           param=f"messages[{index}].content[{j}].type", code="unsupported_parameter")
        texts.append(part.text)
    return "".join(texts)


class OpenAIServingChat(OpenAIServing):
    def prompt_ids(self, req: ChatCompletionRequest) -> list[int]:
        tokenizer = self.state.engine.tokenizer
        messages = [{"role": m.role, "content": message_text(m, i)} for i, m in enumerate(req.messages)]
        kwargs: dict[str, Any] = dict(req.chat_template_kwargs or {})
        try:
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, **kwargs
            )
        except Exception as e:  # no template, or the template rejects the conversation
            raise APIError(400, f"the chat template could not render these messages: {e}",
                           param="messages", code="invalid_messages") from e
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    async def create(self, req: ChatCompletionRequest, raw_request: Request) -> Response:
        self.check_request(req, num_requests=req.n)
        self.check_token_counts(req, "max_tokens", "max_completion_tokens")
        ids = self.prompt_ids(req)
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        params = self.make_params(req, max_tokens, self.settings.default_chat_max_tokens, len(ids))
        request_id = new_request_id("chatcmpl")
        runs = self.choice_runs(request_id, [ids], [params], req.n)
        model = self.settings.served_model_name
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            stream = sse_stream(self, runs, CHAT_FORMAT, request_id, model, len(ids), include_usage)
            return SSEResponse(stream)
        done = await self.collect(raw_request, runs)
        if done is None:
            return Response(status_code=CLIENT_CLOSED)  # nobody is listening; keeps logs honest
        body = ChatCompletionResponse(
            id=request_id,
            model=model,
            choices=[
                {"index": r.index, "message": {"content": "".join(r.text)}, "finish_reason": r.finish_reason}
                for r in done
            ],
            **usage_and_diffusion(done, len(ids)),
        )
        return JSONResponse(body.model_dump())
