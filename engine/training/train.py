"""Training run for the built-in model: tokenizer, pretraining, SFT, export.

One fixed seed drives the file split, the data order, the init, the masks and the
windows, so a rerun with the same arguments on the same Python version repeats
the run (up to floating-point nondeterminism of multi-threaded CPU kernels).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ..config import ModelConfig
from ..models.bidir_llama import BidirectionalLM
from .corpus import pretrain_stream, sample_windows, sft_stream
from .data import corpus_fingerprint, extract_pairs, load_split
from .export import ModelShape, count_parameters, hf_config, init_weights, save_checkpoint
from .objective import diffusion_loss, random_split_layout
from .tokenizer import MASK_ID, load_hf_tokenizer, save_tokenizer, train_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhaseConfig:
    steps: int
    lr: float
    warmup_steps: int
    decay_fraction: float  # last share of steps with linear decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    out_dir: str = "runs/builtin"
    seed: int = 0
    val_fraction: float = 0.1
    vocab_size: int = 8192
    shape: ModelShape = field(default_factory=ModelShape)
    seq_len: int = 256
    batch_size: int = 8
    split_prob: float = 0.3  # random-length training: share of rows cut in two
    t_min: float = 1e-3
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    pretrain: PhaseConfig = PhaseConfig(steps=2000, lr=1.5e-3, warmup_steps=60, decay_fraction=0.2)
    sft: PhaseConfig = PhaseConfig(steps=500, lr=7.5e-4, warmup_steps=20, decay_fraction=0.3)
    sft_block_length: int = 32
    threads: int = 2
    snapshot_every: int = 100  # steps between interim checkpoints in <out_dir>/snapshot (0: none)


def lr_at(step: int, phase: PhaseConfig) -> float:
    """Warmup (linear) -> constant -> linear decay over the last `decay_fraction` of the phase."""
    if step < phase.warmup_steps:
        return phase.lr * (step + 1) / phase.warmup_steps
    decay_start = int(phase.steps * (1.0 - phase.decay_fraction))
    if step < decay_start:
        return phase.lr
    frac = (step - decay_start) / max(1, phase.steps - decay_start)
    return phase.lr * (1.0 - (1.0 - phase.min_lr_ratio) * frac)


def make_optimizer(model: BidirectionalLM, lr: float, weight_decay: float) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]  # norm weights
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=True)


def run_phase(
    name: str, model: BidirectionalLM, stream: torch.Tensor, phase: PhaseConfig, cfg: TrainConfig,
    gen: torch.Generator, log_file, t0: float, snapshot=None,
) -> dict[str, float]:
    opt = make_optimizer(model, phase.lr, cfg.weight_decay)
    model.train()
    ema = None
    bar = tqdm(range(phase.steps), desc=name, dynamic_ncols=True, mininterval=2.0)
    for step in bar:
        lr = lr_at(step, phase)
        for g in opt.param_groups:
            g["lr"] = lr
        tokens = sample_windows(stream, cfg.batch_size, cfg.seq_len, gen)  # (B, T)
        layout = random_split_layout(cfg.batch_size, cfg.seq_len, cfg.split_prob, gen)
        loss, stats = diffusion_loss(model, tokens, layout, MASK_ID, gen, cfg.t_min)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item()
        opt.step()
        value = loss.item()
        ema = value if ema is None else 0.98 * ema + 0.02 * value
        record = {"phase": name, "step": step, "loss": round(value, 4), "loss_ema": round(ema, 4),
                  "lr": lr, "grad_norm": round(grad_norm, 3), "elapsed_s": round(time.time() - t0, 1),
                  **{k: round(v, 4) for k, v in stats.items()}}
        log_file.write(json.dumps(record) + "\n")
        if step % 20 == 0:
            log_file.flush()
        bar.set_postfix(loss=f"{ema:.3f}", acc=f"{stats['masked_acc']:.3f}", lr=f"{lr:.1e}")
        if snapshot is not None and cfg.snapshot_every and (step + 1) % cfg.snapshot_every == 0:
            snapshot(f"{name} step {step + 1}")
    bar.close()
    model.eval()
    return {"final_loss_ema": ema or float("nan")}


def train(cfg: TrainConfig) -> Path:
    """Run everything; returns the folder holding the finished checkpoint."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    out = Path(cfg.out_dir)
    ckpt_dir = out / "checkpoint"
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    train_files, val_files = load_split(cfg.val_fraction, cfg.seed)
    log.info("data: %d train / %d validation files, fingerprint %s", len(train_files), len(val_files),
             corpus_fingerprint(train_files + val_files))
    fast_tok = train_tokenizer((f.text for f in train_files), cfg.vocab_size)
    save_tokenizer(fast_tok, ckpt_dir, cfg.shape.max_position_embeddings)
    hf_tok = load_hf_tokenizer(ckpt_dir)

    pre_stream = pretrain_stream(train_files, fast_tok, cfg.seed)
    pairs = extract_pairs(train_files)
    sft_ids, n_sft = sft_stream(pairs, hf_tok, cfg.seed, cfg.seq_len, cfg.sft_block_length)
    log.info("pretraining stream %d tokens; SFT stream %d tokens from %d/%d pairs",
             pre_stream.numel(), sft_ids.numel(), n_sft, len(pairs))

    config = hf_config(cfg.shape)
    model = BidirectionalLM(ModelConfig.from_hf(config))
    init_weights(model)
    n_params = count_parameters(model)
    log.info("model: %d parameters (%.2fM)", n_params, n_params / 1e6)

    def snapshot(tag: str) -> None:
        # Interim weights, so a run cut short still leaves a usable model behind.
        save_checkpoint(model, config, ckpt_dir, out / "snapshot", {"snapshot.json": {"at": tag}})

    gen = torch.Generator().manual_seed(cfg.seed)
    results: dict[str, object] = {}
    with open(out / "train_log.jsonl", "w") as log_file:
        results["pretrain"] = run_phase("pretrain", model, pre_stream, cfg.pretrain, cfg, gen, log_file, t0,
                                        snapshot)
        if cfg.sft.steps > 0:
            results["sft"] = run_phase("sft", model, sft_ids, cfg.sft, cfg, gen, log_file, t0, snapshot)
    wall = time.time() - t0
    meta = {
        "train_config": asdict(cfg),
        "parameters": n_params,
        "wall_time_s": round(wall, 1),
        "torch_threads": cfg.threads,
        "data": {"train_files": len(train_files), "validation_files": len(val_files),
                 "fingerprint": corpus_fingerprint(train_files + val_files),
                 "pretrain_tokens": pre_stream.numel(), "sft_tokens": sft_ids.numel(),
                 "sft_pairs": n_sft,
                 "tokens_seen": (cfg.pretrain.steps + cfg.sft.steps) * cfg.batch_size * cfg.seq_len},
        "results": results,
    }
    save_checkpoint(model, config, ckpt_dir, ckpt_dir, {"training_meta.json": meta})
    log.info("done in %.1f min; checkpoint in %s", wall / 60, ckpt_dir)
    return ckpt_dir


def steps_for_minutes(minutes: float, seconds_per_step: float) -> int:
    return max(1, math.floor(minutes * 60 / seconds_per_step))
