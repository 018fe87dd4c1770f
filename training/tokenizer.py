"""Byte-level BPE tokenizer for the built-in model, saved so `transformers.AutoTokenizer` loads it.

The special tokens come first so their ids are fixed (the mask id 5 matches
iLLaDA's, which the loader assumes for the family because iLLaDA's config lacks it).
Every digit is its own token (a `Digits` pre-tokenizer runs before the byte-level
split): column arithmetic is not learnable when BPE merges "57" into one symbol.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = [
    "<|startoftext|>",  # 0 BOS
    "<|endoftext|>",  # 1 EOS
    "<|eot_id|>",  # 2 end of turn
    "<|start_header_id|>",  # 3
    "<|end_header_id|>",  # 4
    "<|mdm_mask|>",  # 5 mask
    "<think>",  # 6
    "</think>",  # 7
    "<|pad|>",  # 8
]
BOS_ID, EOS_ID, EOT_ID, MASK_ID, PAD_ID = 0, 1, 2, 5, 8
# Reasoning delimiters stay visible in decoded text, as in real reasoning models.
NON_SPECIAL = {"<think>", "</think>"}

# Llama-3 / LLaDA style. Content is inserted verbatim (no `| trim`): code indentation matters.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> Any:
    """Train a byte-level BPE `tokenizers.Tokenizer` on `texts` (deterministic for fixed input)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, f"special token {t} got id {tok.token_to_id(t)}, expected {i}"
    return tok


def save_tokenizer(tok: Any, folder: Path, model_max_length: int) -> None:
    """Write tokenizer.json, tokenizer_config.json (with the chat template) and special_tokens_map.json."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = json.loads(tok.to_str())
    for added in spec["added_tokens"]:
        if added["content"] in NON_SPECIAL:
            added["special"] = False
    (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False, indent=1))
    specials = {"bos_token": SPECIAL_TOKENS[BOS_ID], "eos_token": SPECIAL_TOKENS[EOS_ID],
                "pad_token": SPECIAL_TOKENS[PAD_ID]}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "mask_token": SPECIAL_TOKENS[MASK_ID],
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    specials["mask_token"] = SPECIAL_TOKENS[MASK_ID]
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")


def load_hf_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def chat_prompt_ids(hf_tokenizer: Any, prompt: str) -> list[int]:
    """What the server sends for a one-message chat: the same template, with the generation prompt."""
    messages = [{"role": "user", "content": prompt}]
    ids = hf_tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    return list(_as_ids(ids))


def _as_ids(out: Any) -> list[int]:
    # transformers 5 may return a BatchEncoding-like mapping instead of a plain list.
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)
