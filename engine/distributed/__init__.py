"""Tensor parallelism on torch.distributed (gloo on the CPU, NCCL on CUDA): `shard` splits the
model, `rows` runs the denoising row pass over vocabulary slices, `launch` starts the ranks."""

from .launch import start_tensor_parallel
from .shard import TensorParallelError, check_split

__all__ = ["TensorParallelError", "check_split", "start_tensor_parallel"]
