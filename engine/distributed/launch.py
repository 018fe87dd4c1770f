"""Start a tensor-parallel engine: rank 0 is the calling process (scheduler, requests, outputs),
ranks 1..N-1 are worker processes it spawns. Each rank loads the checkpoint, keeps its shard
(`shard.py`) and builds the same engine; every step, rank 0 broadcasts the step's batch and all
ranks run the same forward and row pass, meeting in the collectives.

Failure: a worker that dies fails the step in flight on rank 0 (its collectives error), every
later step fails at once, and the process exits with status 1 after `EXIT_DELAY_S` (time for the
failed requests' error answers to go out), so an orchestrator restarts it. Collectives time out
after `COLLECTIVE_TIMEOUT_S`, so a hung worker fails the step in bounded time too.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..engine_config import EngineConfig, resolve_device, resolve_dtype
from ..kv_cache import kv_pool_pages
from ..model_config import ModelConfig
from .rows import VocabParallelDenoiser
from .shard import check_split, local_config, shard_model

log = logging.getLogger(__name__)

COLLECTIVE_TIMEOUT_S = 120.0
EXIT_DELAY_S = 3.0
WATCH_PERIOD_S = 0.5


class WorkerLost(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_device(device: str, rank: int) -> torch.device:
    dev = resolve_device(device)
    if dev.type == "cuda":
        if torch.cuda.device_count() <= rank:
            raise RuntimeError(f"tensor parallel rank {rank} needs GPU {rank}; "
                               f"{torch.cuda.device_count()} visible")
        return torch.device("cuda", rank)
    return dev


def _build_rank(engine_cls, rank: int, world: int, model: str | None, econf: EngineConfig, dtype: str,
                device: str, overrides: dict[str, Any], obj_group):
    """Load, shard and build this rank's engine (every rank runs this, in the same order of
    collectives)."""
    from ..models.loader import load_model

    dev = _rank_device(econf.device if device == "auto" else device, rank)
    dt = resolve_dtype(econf.dtype if dtype == "auto" else dtype, dev)
    # Load on the CPU and move only the shard to the device.
    if isinstance(model, dict):
        loaded = _random_model(model, dt, overrides)
    else:
        loaded = load_model(model, dtype=dt, device="cpu", **overrides)
    shard = shard_model(loaded.model, rank, world, group=None)
    net = loaded.model.to(dev)
    cfg = local_config(loaded.config, shard)
    # Every rank must see the same number of KV pages (the scheduler on rank 0 hands them out).
    pages = torch.tensor([kv_pool_pages(cfg, econf, dt, dev)], dtype=torch.long)
    dist.all_reduce(pages, op=dist.ReduceOp.MIN, group=obj_group)
    elem = torch.empty((), dtype=dt).element_size()
    page_bytes = cfg.kv_bytes_per_token * elem * econf.kv_page_size
    econf = econf.replace(kv_cache_memory=int(pages.item()) * page_bytes)
    engine = engine_cls(net, cfg, loaded.tokenizer, econf)
    engine.runner.denoiser = VocabParallelDenoiser(cfg, dev, shard.vocab, world, None)
    return engine


def _random_model(shape: dict[str, Any], dtype: torch.dtype, overrides: dict[str, Any]):
    """Random weights of a model shape (an HF config dict), the same on every rank: benchmarks
    of real model sizes without a checkpoint (`bench offline --shape`)."""
    from ..models.bidir_llama import BidirectionalLM
    from ..models.loader import LoadedModel

    cfg = ModelConfig.from_hf(shape).with_overrides(
        overrides.get("mask_token_id"), overrides.get("stop_token_ids"), overrides.get("think_end_text"))
    with torch.device("meta"):
        model = BidirectionalLM(cfg)
    model = model.to_empty(device="cpu").to(dtype).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, prm in model.named_parameters():
            prm.fill_(1.0) if "norm" in name else prm.normal_(0.0, 0.02, generator=g)
    return LoadedModel(model, None, cfg)


def _init_group(backend: str, init_method: str, rank: int, world: int):
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world,
                            timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    # Step inputs are Python objects: they travel on a CPU (gloo) group whatever the backend.
    return dist.new_group(backend="gloo", timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))


def _worker_main(rank: int, world: int, init_method: str, backend: str, model, econf, dtype, device,
                 overrides, log_level: int) -> None:
    fmt = f"%(asctime)s %(levelname)s tp-rank{rank} %(name)s: %(message)s"
    logging.basicConfig(level=log_level, format=fmt)
    from ..llm_engine import LLMEngine

    obj_group = _init_group(backend, init_method, rank, world)
    engine = _build_rank(LLMEngine, rank, world, model, econf, dtype, device, overrides, obj_group)
    log.info("tensor parallel worker %d/%d ready", rank, world)
    while True:
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0, group=obj_group)
        if box[0] is None:  # rank 0 closes
            break
        try:
            engine.runner.run(box[0])
        except Exception:  # rank 0 runs the same step and fails the same requests
            log.exception("step failed on tensor parallel rank %d", rank)
    dist.destroy_process_group()


class BroadcastRunner:
    """Rank 0's runner: sends each step's batch to the workers, then runs its own part."""

    def __init__(self, runner, procs: list, obj_group):
        self.inner = runner
        self.procs = procs
        self.obj_group = obj_group
        self.lost: str | None = None
        self.closing = False

    def __getattr__(self, name: str):  # model, backend, denoiser... of the wrapped runner
        return getattr(self.inner, name)

    def run(self, batch):
        if self.lost is not None:
            raise WorkerLost(self.lost)
        dist.broadcast_object_list([batch], src=0, group=self.obj_group)
        return self.inner.run(batch)

    def close(self) -> None:
        """Stop the workers and leave the process group (offline use; `serve` just exits)."""
        if self.closing:
            return
        self.closing = True
        if self.lost is None:
            dist.broadcast_object_list([None], src=0, group=self.obj_group)
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        dist.destroy_process_group()


def _watch(procs: list, state: dict, exit_on_loss: bool) -> None:
    """Rank 0's watchdog thread: a worker gone -> steps fail, then the process exits 1."""
    while True:
        time.sleep(WATCH_PERIOD_S)
        runner = state.get("runner")
        if runner is not None and runner.closing:
            return
        dead = [(i + 1, p.exitcode) for i, p in enumerate(procs) if not p.is_alive()]
        if not dead:
            continue
        message = ", ".join(f"tensor parallel worker {r} exited (status {c})" for r, c in dead)
        log.error("%s: failing requests and stopping", message)
        if runner is not None:
            runner.lost = message
        state["lost"] = message
        if exit_on_loss:
            time.sleep(EXIT_DELAY_S)
            logging.shutdown()
            os._exit(1)
        return


def start_tensor_parallel(engine_cls, model: str | dict | None, econf: EngineConfig, dtype: str = "auto",
                          device: str = "auto", overrides: dict[str, Any] | None = None,
                          exit_on_loss: bool = True):
    """Rank 0's engine for `econf.tensor_parallel_size` ranks, for a checkpoint (`model`: folder, hub
    id, None = built-in) or random weights of a shape (`model`: an HF config dict). The workers run until
    `engine.runner.close()` or the process exits. `exit_on_loss=False` (tests) keeps a process
    whose worker died alive, with every step failing."""
    from ..models.loader import read_config, resolve_model_path

    world = econf.tensor_parallel_size
    overrides = dict(overrides or {})
    if isinstance(model, dict):  # a shape: random weights
        hf_config = model
    else:
        folder = model
        if folder is None:
            from ..assets import builtin_model_path

            folder = builtin_model_path()
        hf_config = read_config(resolve_model_path(folder))
    check_split(ModelConfig.from_hf(hf_config), world)  # before any process starts
    dev = resolve_device(econf.device if device == "auto" else device)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    init_method = f"tcp://127.0.0.1:{_free_port()}"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, name=f"diffuserve-tp{rank}", daemon=True,
                         args=(rank, world, init_method, backend, model, econf, dtype, device, overrides,
                               logging.getLogger().getEffectiveLevel()))
             for rank in range(1, world)]
    for p in procs:
        p.start()
    state: dict[str, Any] = {}
    threading.Thread(target=_watch, args=(procs, state, exit_on_loss), name="diffuserve-tp-watch",
                     daemon=True).start()
    obj_group = _init_group(backend, init_method, 0, world)
    engine = _build_rank(engine_cls, 0, world, model, econf, dtype, device, overrides, obj_group)
    runner = BroadcastRunner(engine.runner, procs, obj_group)
    if "lost" in state:
        runner.lost = state["lost"]
    state["runner"] = runner
    engine.runner = runner
    # At interpreter exit multiprocessing terminates the daemon workers: not a failure.
    atexit.register(lambda: setattr(runner, "closing", True))
    log.info("tensor parallel engine: %d ranks (%s)", world, backend)
    return engine
