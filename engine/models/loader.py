"""Load a LLaDA / iLLaDA / Dream checkpoint folder natively.

Reads `config.json` and safetensors (one file or shards listed in
`model.safetensors.index.json`). Never imports code from the checkpoint and
never unpickles: `.bin` / `.pt` weights are refused.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import safe_open

from ..model_config import CheckpointError, ModelConfig
from .bidir_llama import BidirectionalLM
from .weight_maps import IGNORED_SUFFIXES, checkpoint_parts, optional_names

log = logging.getLogger(__name__)

_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]


class LoadedModel(NamedTuple):
    model: BidirectionalLM
    tokenizer: Any  # transformers tokenizer, or None when load_tokenizer=False
    config: ModelConfig


def resolve_model_path(path: str | os.PathLike) -> Path:
    """A local folder as is; an `org/name` hub id through huggingface_hub (weights as safetensors only)."""
    p = Path(path)
    if p.is_dir():
        return p
    text = str(path)
    if text.count("/") == 1 and not text.startswith((".", "/")) and not p.exists():
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, allow_patterns=_HUB_PATTERNS))
    raise CheckpointError(f"model path {text!r} is not a folder")


def read_config(folder: Path) -> dict[str, Any]:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{folder} has no config.json")
    return json.loads(cfg_path.read_text())


def _shard_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file holding it."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: folder / fname for name, fname in weight_map.items()}
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = [f.name for f in folder.iterdir() if f.suffix in (".bin", ".pt", ".pth")]
        hint = f" (found {pickled}; pickled weights are never loaded)" if pickled else ""
        raise CheckpointError(f"{folder} has no .safetensors weights{hint}")
    out: dict[str, Path] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for name in fh.keys():
                out[name] = f
    return out


# A tensor-parallel rank reads only its part of each checkpoint tensor: select(param name, its
# checkpoint parts) -> [(checkpoint name, index into that tensor, rows it gives)], concatenated
# along dim 0 in that order.
Selector = Callable[[str, list[tuple[str, int]]], list[tuple[str, tuple, int]]]


def load_weights(model: BidirectionalLM, folder: Path, select: Selector | None = None) -> None:
    """Copy the checkpoint's tensors into the model; fused parameters (q/k/v, gate/up) are filled
    part by part, so no concatenated copy is ever made. With `select` (tensor parallelism), each
    part is read as the slice `select` names (safetensors reads only that slice)."""
    cfg = model.cfg
    params = dict(model.named_parameters())
    parts = checkpoint_parts(cfg, list(params))
    where = _shard_files(folder)
    wanted = {cname for plist in parts.values() for cname, _ in plist}
    present = {n for n in where if not n.endswith(IGNORED_SUFFIXES)}
    missing = sorted(wanted - present)
    unexpected = sorted(present - wanted - optional_names(cfg))
    if missing:
        raise CheckpointError(f"checkpoint {folder} is missing tensors: {missing[:8]}"
                              f"{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        raise CheckpointError(f"checkpoint {folder} has unexpected tensors: {unexpected[:8]}"
                              f"{' ...' if len(unexpected) > 8 else ''}")
    # file -> [(checkpoint name, index (None: the whole tensor), parameter, first row, rows)]
    by_file: dict[Path, list[tuple[str, tuple | None, str, int, int]]] = {}
    for pname, plist in parts.items():
        rows_total = params[pname].shape[0]
        pieces = [(c, None, rows_total if rows == -1 else rows) for c, rows in plist] if select is None \
            else select(pname, plist)
        row = 0
        for cname, index, rows in pieces:
            by_file.setdefault(where[cname], []).append((cname, index, pname, row, rows))
            row += rows
        if row != rows_total:
            raise CheckpointError(f"parameter {pname!r}: the checkpoint parts give {row} rows, "
                                  f"config.json implies {rows_total}")
    with torch.no_grad():
        for f, items in by_file.items():
            with safe_open(str(f), framework="pt") as fh:
                for cname, index, pname, row, rows in items:
                    tensor = fh.get_tensor(cname) if index is None else fh.get_slice(cname)[index]
                    target = params[pname][row : row + rows]
                    if tuple(tensor.shape) != tuple(target.shape):
                        raise CheckpointError(
                            f"tensor {cname!r} has shape {tuple(tensor.shape)}, "
                            f"config.json implies {tuple(target.shape)}"
                        )
                    target.copy_(tensor.to(target.dtype))


def load_model(
    path: str | os.PathLike | None = None,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
    *,
    mask_token_id: int | None = None,
    stop_token_ids: list[int] | None = None,
    think_end_text: str | None = None,
    load_tokenizer: bool = True,
    tensor_parallel: tuple[int, int] | None = None,
) -> LoadedModel:
    """Load model, tokenizer and frozen config from a checkpoint folder (built-in model when None).

    `tensor_parallel=(rank, world)`: only that rank's shard is built and read (engine/distributed);
    `model.tp_shard` tells what it holds."""
    if path is None:
        from ..assets import builtin_model_path

        path = builtin_model_path()
    folder = resolve_model_path(path)
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    cfg = ModelConfig.from_hf(read_config(folder))
    tokenizer = None
    if load_tokenizer:
        tokenizer = load_tokenizer_from(folder)
        cfg = _with_tokenizer_facts(cfg, tokenizer)
    cfg = cfg.with_overrides(mask_token_id, stop_token_ids, think_end_text)
    with torch.device("meta"):
        model = BidirectionalLM(cfg)
    select = None
    if tensor_parallel is not None:
        from ..distributed.shard import checkpoint_slices, shard_model

        shard = shard_model(model, *tensor_parallel)  # on meta tensors: shapes only
        select = checkpoint_slices(cfg, shard)
    model = model.to_empty(device=device).to(dtype)
    load_weights(model, folder, select)
    model.eval().requires_grad_(False)
    log.info("loaded %s model from %s (%s, %s)", cfg.family, folder, dtype, device)
    return LoadedModel(model, tokenizer, cfg)


def load_tokenizer_from(folder: Path) -> Any:
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    # AutoTokenizer peeks at config.json and warns that it does not know our model_type;
    # the tokenizer itself is a plain fast tokenizer, so that warning is noise.
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as exc:  # transformers raises many types here
        raise CheckpointError(f"cannot load a tokenizer from {folder}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(previous)


def _with_tokenizer_facts(cfg: ModelConfig, tok: Any) -> ModelConfig:
    """Add the tokenizer's EOS / end-of-turn ids to the stop ids (iLLaDA keeps them there)."""
    ids = list(cfg.stop_token_ids)
    candidates = [getattr(tok, "eos_token_id", None)]
    vocab = tok.get_vocab()
    for special in ("<|eot_id|>", "<|endoftext|>", "<|im_end|>"):
        candidates.append(vocab.get(special))
    for t in candidates:
        if t is not None and int(t) not in ids and int(t) < cfg.vocab_size:
            ids.append(int(t))
    return cfg.with_overrides(stop_token_ids=ids)
