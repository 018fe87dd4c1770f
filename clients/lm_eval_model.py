"""lm-evaluation-harness model `diffuserve`: evaluates whatever model a diffuserve server serves.

    diffuserve eval --tasks ... --base-url http://127.0.0.1:8000 --method confidence

or from Python (importing this module registers the model with the harness):

    import diffuserve.clients.lm_eval_model, lm_eval
    lm_eval.simple_evaluate(model="diffuserve", model_args="base_url=http://127.0.0.1:8000", tasks=[...])

- `loglikelihood` -> `POST /v1/score`: the requests sharing a context go in one call, its
  continuations as candidates; `method` = confidence (iLLaDA Eq. 2, the default) or likelihood
  (the Monte-Carlo bound; `mc_samples`, `seed`). Returns (score, greedy); the likelihood method
  cannot tell greediness and reports False.
- `loglikelihood_rolling` -> the likelihood bound of the whole text after an empty prompt.
- `generate_until` -> `POST /v1/completions` (or chat completions) with the stop strings.
- With lm-eval's `--apply_chat_template`, contexts travel as chat messages and the server
  renders its own chat template (generation prompt added).

Calls run `num_concurrent` at a time from a thread pool, so the server batches them; 429 and
503 answers are retried after the server's Retry-After.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.models.api_models import JsonChatStr

from .sync_client import DiffuserveClient

log = logging.getLogger(__name__)

# Diffusion sampling extras that model_args may set for generate_until.
GENERATION_EXTRAS = ("block_length", "steps", "threshold", "cache", "cache_refresh", "canvas")


@register_model("diffuserve")
class DiffuserveLM(LM):
    def __init__(self, base_url: str = "http://127.0.0.1:8000", model: str | None = None,
                 api_key: str | None = None, method: str = "confidence", mc_samples: int = 32,
                 rolling_mc_samples: int | None = None, seed: int = 0, num_concurrent: int = 16,
                 max_gen_toks: int = 256, timeout: float = 600.0, max_retries: int = 20,
                 **extra: Any):
        super().__init__()
        if method not in ("confidence", "likelihood"):
            raise ValueError(f"method must be 'confidence' or 'likelihood', got {method!r}")
        self.method = method
        self.mc_samples = int(mc_samples)
        self.rolling_mc_samples = int(rolling_mc_samples or mc_samples)
        self.seed = int(seed)
        self.num_concurrent = max(1, int(num_concurrent))
        self.max_gen_toks = int(max_gen_toks)
        # lm-eval passes batch_size / device / max_batch_size to every model: meaningless here.
        self.gen_extras = {k: v for k, v in extra.items() if k in GENERATION_EXTRAS}
        ignored = sorted(set(extra) - set(GENERATION_EXTRAS) - {"batch_size", "max_batch_size", "device"})
        if ignored:
            raise ValueError(f"unknown diffuserve model_args: {', '.join(ignored)}")
        self.client = DiffuserveClient(base_url, api_key=api_key, timeout=timeout, max_retries=max_retries,
                                       max_retry_wait=60.0, model=model)
        if model is None:  # the server's one model: ask it, so results name it
            self.client.model = self.client.models()[0].id

    # ---- lm-eval API ------------------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        groups: dict[Any, list[int]] = {}  # context -> indexes of its requests
        for i, req in enumerate(requests):
            groups.setdefault(req.args[0], []).append(i)
        results: list[tuple[float, bool] | None] = [None] * len(requests)

        def run(context: Any) -> None:
            idx = groups[context]
            res = self._score(context, [requests[i].args[1] for i in idx], self.method, self.mc_samples)
            for i, s in zip(idx, res.scores, strict=True):
                results[i] = (s.score, bool(s.greedy))
                self.cache_hook.add_partial("loglikelihood", requests[i].args, results[i])

        self._map(run, list(groups))
        return results  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        results: list[float | None] = [None] * len(requests)

        def run(i: int) -> None:
            (text,) = requests[i].args[:1]
            res = self._score("", [text], "likelihood", self.rolling_mc_samples)
            results[i] = res.scores[0].score
            self.cache_hook.add_partial("loglikelihood_rolling", requests[i].args, results[i])

        self._map(run, range(len(requests)))
        return results  # type: ignore[return-value]

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        results: list[str | None] = [None] * len(requests)

        def run(i: int) -> None:
            context, gen_kwargs = requests[i].args[:2]
            kwargs = dict(gen_kwargs or {})
            until = kwargs.pop("until", None) or []
            stop = [until] if isinstance(until, str) else list(until)
            fields = {**self.gen_extras, "stop": stop or None,
                      "temperature": float(kwargs.pop("temperature", 0.0) or 0.0)}
            if kwargs.get("do_sample") is False:
                fields["temperature"] = 0.0
            if fields["temperature"] > 0:
                fields["seed"] = self.seed + i
            max_tokens = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
            if isinstance(context, JsonChatStr):
                out = self.client.chat(json.loads(context.prompt), max_tokens=max_tokens, **fields)
            else:
                out = self.client.complete(context, max_tokens=max_tokens, **fields)
            text = out.text
            for s in stop:  # the server already stops there; cut again as lm-eval's own models do
                text = text.split(s)[0]
            results[i] = text
            self.cache_hook.add_partial("generate_until", requests[i].args, text)

        self._map(run, range(len(requests)))
        return results  # type: ignore[return-value]

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
                            ) -> JsonChatStr:
        """Keep the messages: the server renders its own template, generation prompt included."""
        if not add_generation_prompt:
            raise ValueError("diffuserve renders chats with the generation prompt; continuing the last "
                             "assistant message (gen_prefix) is not supported")
        return JsonChatStr(json.dumps(chat_history, ensure_ascii=False))

    @property
    def tokenizer_name(self) -> str:
        return f"diffuserve:{self.client.model}"

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return "server" if chat_template else None

    # ---- plumbing -----------------------------------------------------------------------------
    def _score(self, context: Any, continuations: list[str], method: str, mc_samples: int):
        extra = {"mc_samples": mc_samples, "seed": self.seed} if method == "likelihood" else {}
        if isinstance(context, JsonChatStr):
            return self.client.score(continuations, messages=json.loads(context.prompt), method=method,
                                     **extra)
        return self.client.score(continuations, prompt=context, method=method, **extra)

    def _map(self, fn: Callable[[Any], None], items: Iterable[Any]) -> None:
        """Run fn over items, `num_concurrent` at a time; the first failure is raised."""
        with ThreadPoolExecutor(self.num_concurrent) as pool:
            for future in [pool.submit(fn, item) for item in items]:
                future.result()
