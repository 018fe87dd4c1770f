"""A tiny random iLLaDA-format checkpoint with a real character-level tokenizer and the built-in
model's chat template: `diffuserve serve --model <folder>` runs it in seconds, so HTTP tests of
the server can use a model whose outputs are meaningless but whose files are the real formats."""

from __future__ import annotations

import string
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "engine"))
from checkpoint_factory import VOCAB, family_config, write_checkpoint  # noqa: E402

SPECIAL = ["<|startoftext|>", "<|endoftext|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
           "<|mdm_mask|>", "<unk>"]
MASK_ID = SPECIAL.index("<|mdm_mask|>")
CHARS = string.ascii_letters + string.digits + " \n.,:?+-=()"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' }}{{ message['content'] + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def write_tiny_chat_checkpoint(folder: Path, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL + list(CHARS))}
    assert len(vocab) <= VOCAB
    # A BPE model without merges is a character tokenizer; Fuse joins the characters back.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.add_special_tokens(SPECIAL)
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=SPECIAL[0], eos_token=SPECIAL[1], unk_token="<unk>",
        mask_token="<|mdm_mask|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )
    config = {**family_config("illada"), "mask_token_id": MASK_ID, "bos_token_id": 0, "eos_token_id": 1}
    write_checkpoint(folder, "illada", config=config)
    fast.save_pretrained(str(folder))
    return folder
