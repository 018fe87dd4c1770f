"""Start a tensor-parallel engine: rank 0 is the calling process (scheduler, requests, outputs),
ranks 1..N-1 are worker processes it spawns. Each rank loads the checkpoint, keeps its shard
(`shard.py`) and builds the same engine; every step, rank 0 broadcasts the step's batch and all
ranks run the same forward and row pass, meeting in the collectives.

Failure: a worker that dies (seen by rank 0's watchdog, or as a closed connection) or hangs
(a step's collective waits past `COLLECTIVE_TIMEOUT_S`) fails the step in flight on rank 0,
every later step fails at once, and the process exits with status 1 after `EXIT_DELAY_S`
(time for the failed requests' error answers to go out), so an orchestrator restarts it.
Start-up (rendezvous, loading) has its own, longer `SETUP_TIMEOUT_S`; between steps the
workers wait for the next batch without a deadline.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
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
from ..outputs import EngineFatalError
from .rows import VocabParallelDenoiser
from .shard import check_split, local_config, shard_model

log = logging.getLogger(__name__)

COLLECTIVE_TIMEOUT_S = 60.0  # one step's collectives, once running
SETUP_TIMEOUT_S = 1800.0  # rendezvous and the first collective after every rank loaded the model
IDLE_TIMEOUT = timedelta(days=3650)  # workers waiting for the next step: an idle server is fine
EXIT_DELAY_S = 3.0
WATCH_PERIOD_S = 0.5


class WorkerLost(EngineFatalError):
    """A worker died or hangs: no later step can run (see EngineFatalError)."""


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
    if isinstance(model, dict):  # random weights: built whole on the CPU, then cut
        loaded = _random_model(model, dt, overrides)
        shard = shard_model(loaded.model, rank, world)
    else:  # only this rank's slices are read, straight onto its device
        loaded = load_model(model, dtype=dt, device=dev, tensor_parallel=(rank, world), **overrides)
        shard = loaded.model.tp_shard
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
                            timeout=timedelta(seconds=SETUP_TIMEOUT_S))
    # Step inputs are Python objects: they travel on a CPU (gloo) group whatever the backend.
    return dist.new_group(backend="gloo", timeout=timedelta(seconds=SETUP_TIMEOUT_S))


def _arm_timeouts(obj_group, rank: int) -> None:
    """After start-up: a step's collectives get COLLECTIVE_TIMEOUT_S, and so does rank 0's send of
    a step (gloo waits for the receiver); a worker's wait for the next step has no deadline.
    Timeouts are per process, so the same group gets both."""
    from torch.distributed.distributed_c10d import _set_pg_timeout

    step = timedelta(seconds=COLLECTIVE_TIMEOUT_S)
    _set_pg_timeout(step, None)
    _set_pg_timeout(step if rank == 0 else IDLE_TIMEOUT, obj_group)


def is_collective_failure(exc: BaseException) -> bool:
    """A failed or timed-out collective (a peer died or hangs), as opposed to a request's error."""
    return isinstance(exc, dist.DistError) or bool(re.search(r"gloo|nccl", str(exc), re.IGNORECASE))


def _worker_main(rank: int, world: int, init_method: str, backend: str, model, econf, dtype, device,
                 overrides, log_level: int) -> None:
    fmt = f"%(asctime)s %(levelname)s tp-rank{rank} %(name)s: %(message)s"
    logging.basicConfig(level=log_level, format=fmt)
    from ..llm_engine import LLMEngine

    obj_group = _init_group(backend, init_method, rank, world)
    engine = _build_rank(LLMEngine, rank, world, model, econf, dtype, device, overrides, obj_group)
    _arm_timeouts(obj_group, rank)
    log.info("tensor parallel worker %d/%d ready", rank, world)
    while True:
        box: list[Any] = [None]
        try:
            dist.broadcast_object_list(box, src=0, group=obj_group)
        except Exception:  # rank 0 is gone: nothing left to serve
            log.exception("lost rank 0")
            raise SystemExit(1) from None
        if box[0] is None:  # rank 0 closes
            break
        try:
            engine.runner.run(box[0])
        except Exception as exc:  # rank 0 runs the same step and fails the same requests
            log.exception("step failed on tensor parallel rank %d", rank)
            if is_collective_failure(exc):
                raise SystemExit(1) from None
    dist.destroy_process_group()


class BroadcastRunner:
    """Rank 0's runner: sends each step's batch to the workers, then runs its own part. Once a
    worker is lost (`fail`), every step raises at once and the process is stopped."""

    def __init__(self, runner, procs: list, obj_group, exit_on_loss: bool):
        self.inner = runner
        self.procs = procs
        self.obj_group = obj_group
        self.exit_on_loss = exit_on_loss
        self.lost: str | None = None
        self.closing = False
        # Told at once when a worker is lost, even while rank 0 is blocked in a collective that
        # has not timed out yet: the AsyncEngine ends its streams and the server turns 503.
        self.on_lost = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str):  # model, backend, denoiser... of the wrapped runner
        return getattr(self.inner, name)

    def run(self, batch):
        if self.lost is not None:
            raise WorkerLost(self.lost)
        try:
            dist.broadcast_object_list([batch], src=0, group=self.obj_group)
            return self.inner.run(batch)
        except Exception as exc:
            if is_collective_failure(exc):
                self.fail(wait_dead_workers(self.procs) or f"tensor parallel collective failed: {exc}")
                raise WorkerLost(self.lost) from exc
            raise

    def fail(self, message: str) -> None:
        """Fail every later step; unless told not to (tests), exit 1 after EXIT_DELAY_S."""
        with self._lock:
            if self.lost is not None or self.closing:
                return
            self.lost = message
        log.error("%s: failing requests and stopping", message)
        if self.on_lost is not None:
            self.on_lost(message)
        if self.exit_on_loss:
            threading.Thread(target=_exit_soon, name="diffuserve-tp-exit", daemon=True).start()

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


def wait_dead_workers(procs: list, timeout_s: float = 2.0) -> str:
    """`dead_workers`, after giving a peer that broke the collective a moment to be reaped: the
    message should name the worker that died, not just the collective that noticed."""
    deadline = time.monotonic() + timeout_s
    while not (message := dead_workers(procs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return message


def dead_workers(procs: list) -> str:
    """'tensor parallel worker 1 exited (status -9)', ... for the workers gone; '' if none."""
    return ", ".join(f"tensor parallel worker {i + 1} exited (status {p.exitcode})"
                     for i, p in enumerate(procs) if not p.is_alive())


def _exit_soon() -> None:
    time.sleep(EXIT_DELAY_S)
    logging.shutdown()
    os._exit(1)


def _watch(procs: list, state: dict) -> None:
    """Rank 0's watchdog thread: a worker process gone -> the runner fails (or, while the model
    loads, the process exits)."""
    while True:
        time.sleep(WATCH_PERIOD_S)
        runner = state.get("runner")
        if runner is not None and (runner.closing or runner.lost is not None):
            return
        message = dead_workers(procs)
        if not message:
            continue
        if runner is not None:
            runner.fail(message)
        else:  # still starting: rank 0 would wait for the dead peer in its first collective
            state["lost"] = message
            log.error("%s while loading", message)
            if state["exit_on_loss"]:
                _exit_soon()
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
    state: dict[str, Any] = {"exit_on_loss": exit_on_loss}
    threading.Thread(target=_watch, args=(procs, state), name="diffuserve-tp-watch", daemon=True).start()
    obj_group = _init_group(backend, init_method, 0, world)
    engine = _build_rank(engine_cls, 0, world, model, econf, dtype, device, overrides, obj_group)
    _arm_timeouts(obj_group, 0)
    runner = BroadcastRunner(engine.runner, procs, obj_group, exit_on_loss)
    state["runner"] = runner
    if "lost" in state:
        runner.fail(state["lost"])
    engine.runner = runner
    # At interpreter exit multiprocessing terminates the daemon workers: not a failure.
    atexit.register(lambda: setattr(runner, "closing", True))
    log.info("tensor parallel engine: %d ranks (%s)", world, backend)
    return engine
