"""Counter-based noise keyed by (seed, answer position, step, vocabulary index).

A request's Gumbel noise and random-remasking scores depend only on its own seed
and counters, never on a generator shared by the batch, so a seeded request
gives the same tokens alone or beside others. The Triton row kernel computes the
same hash inline; this PyTorch version is the specification and the oracle.

All arithmetic is on 32-bit values held in int64 tensors; `_mul32` splits the
multiply so no intermediate product leaves the int64 range.
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B1
C_STEP = 0x85EBCA77
C_VOCAB = 0xC2B2AE3D
# Salt used in place of the vocabulary index for random-remasking scores.
REMASK_SALT = 0x7FFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _M32


def fmix32(h: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def hash32(seed: int, pos: torch.Tensor, step: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """32-bit hash of broadcastable int64 counters; `seed` may be any Python int."""
    seed_lo, seed_hi = seed & _M32, (seed >> 32) & _M32
    h = fmix32(_mul32(pos + 1, GOLDEN) ^ seed_lo)
    h = fmix32(h ^ _mul32(step + 1, C_STEP) ^ seed_hi)
    return fmix32(h ^ _mul32(idx + 1, C_VOCAB))


def uniform(seed: int, pos: torch.Tensor, step: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Uniform float32 in the open interval (0, 1).

    23 hash bits plus one half: every value is exact in float32, so u never rounds to 1.
    """
    h = hash32(seed, pos.long(), step.long(), idx.long())
    return ((h >> 9).float() + 0.5) * (1.0 / 8388608.0)


def gumbel(seed: int, pos: torch.Tensor, step: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Gumbel noise `(N, V)` for rows at answer positions `pos` `(N,)` and steps `step` `(N,)`."""
    idx = torch.arange(vocab_size, device=pos.device)[None, :]
    u = uniform(seed, pos.long()[:, None], step.long()[:, None], idx)
    return -torch.log(-torch.log(u))


def remask_scores(seed: int, pos: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Uniform confidences `(N,)` for `random` remasking."""
    return uniform(seed, pos, step, torch.full_like(pos, REMASK_SALT))


# Per-row versions: one seed per row (an int64 tensor), the same values as the scalar-seed
# functions above for the same (seed, pos, step, idx). The batched samplers use these.


def hash32_rows(seed: torch.Tensor, pos: torch.Tensor, step: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """`hash32` with a tensor of seeds in 0..2**63-1, broadcast against the counters."""
    seed = seed.long()
    seed_lo, seed_hi = seed & _M32, (seed >> 32) & _M32
    h = fmix32(_mul32(pos.long() + 1, GOLDEN) ^ seed_lo)
    h = fmix32(h ^ _mul32(step.long() + 1, C_STEP) ^ seed_hi)
    return fmix32(h ^ _mul32(idx.long() + 1, C_VOCAB))


def uniform_rows(
    seed: torch.Tensor, pos: torch.Tensor, step: torch.Tensor, idx: torch.Tensor
) -> torch.Tensor:
    h = hash32_rows(seed, pos, step, idx)
    return ((h >> 9).float() + 0.5) * (1.0 / 8388608.0)


def gumbel_rows(seed: torch.Tensor, pos: torch.Tensor, step: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Gumbel noise `(N, V)` with one seed, answer position and step per row `(N,)`."""
    idx = torch.arange(vocab_size, device=pos.device)[None, :]
    u = uniform_rows(seed[:, None], pos.long()[:, None], step.long()[:, None], idx)
    return -torch.log(-torch.log(u))


def remask_scores_rows(seed: torch.Tensor, pos: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """`remask_scores` with one seed per row: `(N,)` float32."""
    return uniform_rows(seed, pos, step, torch.full_like(pos, REMASK_SALT, dtype=torch.long))
