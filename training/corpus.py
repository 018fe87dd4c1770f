"""The instruction corpus of the built-in model: task examples formatted and packed (iLLaDA SFT).

Each example is its prompt exactly as the server will see it (chat template with
the generation prompt, or the raw completion prompt), then the response, then the
terminal end of text, and all examples are concatenated into one continuous token
stream; training rows are windows at random offsets, so rows cross example borders.

One refinement of the single terminal EOS: the EOS run is padded to the next
multiple of `block_length` answer tokens. In variable-length generation the whole
last block is decoded before the engine cuts at the first stop token, so the
positions after EOS must be predicted too; with EOS padding they are predicted
with near-certainty, which is what lets threshold decoding finish that block in
one step. (With a single EOS they would be the next example's random prompt.)
A per-token flag marks prompt tokens, for the rows trained with the prompt visible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..tasks.suite import SHIPPED_MC_REPLY, TASKS, Problem, sample_split
from .tokenizer import EOS_ID, EOT_ID, chat_prompt_ids

# Share of each form in the corpus (of the examples, not the tokens). A multiple-choice example
# with its digit checks is 152 corpus tokens (prompt, reply, EOS padding) against 56 for an
# addition, so its 18% of the examples is 37% of the tokens. In 7,200-step trials, at 27% (50%
# of the tokens) the arithmetic was never learned and at 15% (32%) subtraction was not (model
# card, "What was tried"), so subtraction gets the largest share. Completion (the sum with no
# trace, not among the targets) gets a small one.
DEFAULT_MIX = {"add": 0.25, "sub": 0.3, "sort": 0.2, "mc": 0.18, "complete": 0.07}
SENTINEL = "\x00PROMPT\x00"


def training_problems(n: int, seed: int, mix: dict[str, float] | None = None,
                      mc_reply: str = SHIPPED_MC_REPLY) -> list[Problem]:
    """`n` problems from the training side of the split, forms drawn by `mix` (deterministic);
    multiple-choice replies in the form `mc_reply` (`tasks.suite.MC_REPLIES`)."""
    mix = mix or DEFAULT_MIX
    unknown = set(mix) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown tasks in the mix: {sorted(unknown)}")
    rng = random.Random(f"corpus:{seed}")
    names, weights = zip(*sorted(mix.items()), strict=False)
    return [sample_split(rng.choices(names, weights)[0], rng, held_out=False, mc_reply=mc_reply)
            for _ in range(n)]


@dataclass(frozen=True)
class ChatFrame:
    """The chat template split around the user message, rendered once (see `chat_prompt_ids`)."""

    before: str
    after: str

    @classmethod
    def from_tokenizer(cls, hf_tokenizer) -> ChatFrame:
        text = hf_tokenizer.apply_chat_template(
            [{"role": "user", "content": SENTINEL}], tokenize=False, add_generation_prompt=True
        )
        before, after = text.split(SENTINEL)
        return cls(before, after)

    def render(self, prompt: str) -> str:
        return self.before + prompt + self.after


def prompt_text(problem: Problem, frame: ChatFrame) -> str:
    return frame.render(problem.prompt) if problem.chat else problem.prompt


def answer_ids(problem: Problem, response_ids: list[int], block_length: int) -> list[int]:
    """Response, `<|eot_id|>` for chat turns (what the template puts after a message), EOS run."""
    ids = list(response_ids) + ([EOT_ID] if problem.chat else [])
    # At least one EOS, up to the next whole block (a full block of EOS when the reply fills one).
    n_eos = block_length - len(ids) % block_length if block_length > 0 else 1
    return ids + [EOS_ID] * n_eos


def example_ids(problem: Problem, hf_tokenizer, block_length: int = 32) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of one example through `transformers` (the slow, obvious route)."""
    if problem.chat:
        prompt = chat_prompt_ids(hf_tokenizer, problem.prompt)
    else:
        prompt = hf_tokenizer.encode(problem.prompt, add_special_tokens=False)
    response = hf_tokenizer.encode(problem.response, add_special_tokens=False)
    return prompt, answer_ids(problem, response, block_length)


def build_stream(
    problems: list[Problem], fast_tokenizer, frame: ChatFrame, block_length: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated examples `(N,)` int64 and a prompt-token flag `(N,)` bool.

    Tokenizes with the Rust tokenizer in batches; `example_ids` is the reference it
    must equal (tested), since the server tokenizes with `transformers`.
    """
    prompts = fast_tokenizer.encode_batch([prompt_text(p, frame) for p in problems], add_special_tokens=False)
    responses = fast_tokenizer.encode_batch([p.response for p in problems], add_special_tokens=False)
    ids: list[int] = []
    is_prompt: list[bool] = []
    for p, pe, re_ in zip(problems, prompts, responses, strict=False):
        answer = answer_ids(p, re_.ids, block_length)
        ids.extend(pe.ids)
        ids.extend(answer)
        is_prompt.extend([True] * len(pe.ids) + [False] * len(answer))
    return torch.tensor(ids, dtype=torch.long), torch.tensor(is_prompt, dtype=torch.bool)


def sample_windows(
    stream: torch.Tensor, flags: torch.Tensor, batch: int, length: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` windows of `length` tokens at uniform random offsets, with their flags: `(B, T)` each."""
    starts = torch.randint(0, stream.numel() - length, (batch,), generator=gen)  # (B,)
    idx = starts[:, None] + torch.arange(length)[None, :]
    return stream[idx], flags[idx]
