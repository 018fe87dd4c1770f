"""Kernel tests run the Triton kernels on the CPU through Triton's interpreter. The variable
must be set before triton is first imported (the kernels are decorated at import time)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
