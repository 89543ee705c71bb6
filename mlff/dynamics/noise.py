"""Counter-based Gaussian noise for the batched Langevin integrator: one draw for the whole batch.

Drawn from each replica's own `torch.Generator`, a batch of R replicas costs R `randn` launches
per step (1,024 at x1,024 on a GPU, most of the eager step there). Here each number is a hash of
(replica seed, step, atom of the replica, component): a replica's noise depends on nothing else,
so its trajectory is the same whether it runs alone or in any batch (the engine's promise), the
same on every device (integer arithmetic), and a step can be repeated exactly (no generator state
to save or rewind). Each element takes two 32-bit hashes, turned into one standard normal by
Box-Muller; its tails stop at sqrt(-2 ln 2^-33) = 6.8 sigma, far beyond what MD samples.

The hash is Wellons' `lowbias32` (a bijection of 32-bit integers with near-ideal avalanche). The
key of a (replica, step) is two 32-bit words, so that two steps share a block of numbers only if
64 bits coincide. Torch has no unsigned multiply: a constant above 2^31 is used as its negative
twin (equal mod 2^32), so every product of a 32-bit value stays inside int64.
"""

import math

import torch

MASK32 = 0xFFFFFFFF
LOWBIAS32 = (0x7FEB352D, 0x846CA68B)
# Odd constants that make the two words of a key differ.
WORD_SALTS = (0x9E3779B9, 0x85EBCA6B)


def _signed(constant: int) -> int:
    """The constant in (-2^31, 2^31] equal to it mod 2^32."""
    return constant - (1 << 32) if constant >= 1 << 31 else constant


def mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 of int64 x in [0, 2^32) (elementwise), in [0, 2^32)."""
    first, second = (_signed(c) for c in LOWBIAS32)
    x = x ^ (x >> 16)
    x = (x * first) & MASK32
    x = x ^ (x >> 15)
    x = (x * second) & MASK32
    return x ^ (x >> 16)


def _mix32_int(x: int) -> int:
    """lowbias32 of a Python int in [0, 2^32)."""
    x ^= x >> 16
    x = (x * LOWBIAS32[0]) & MASK32
    x ^= x >> 15
    x = (x * LOWBIAS32[1]) & MASK32
    return x ^ (x >> 16)


def replica_keys(seeds: torch.Tensor) -> torch.Tensor:
    """[B, 2] int64 words in [0, 2^32): the key of each replica (seeds [B] int64, >= 0)."""
    low, high = seeds & MASK32, (seeds >> 32) & MASK32
    return torch.stack([mix32(mix32(high ^ salt) ^ low) for salt in WORD_SALTS], dim=-1)


def step_words(step: int) -> tuple[int, int]:
    """Two 32-bit words of `step` (>= 0), each a different hash of its 64 bits."""
    low, high = step & MASK32, (step >> 32) & MASK32
    return tuple(_mix32_int(_mix32_int(high ^ salt) ^ low) for salt in WORD_SALTS)


def element_counters(batch: torch.Tensor) -> torch.Tensor:
    """[N, 3, 2] int64: the two counters of each (atom, component), numbered within the atom's
    replica (batch [N] long, non-decreasing)."""
    counts = torch.bincount(batch)
    local = torch.arange(batch.numel(), device=batch.device) - (torch.cumsum(counts, 0) - counts)[batch]
    element = local[:, None] * 3 + torch.arange(3, device=batch.device)
    return torch.stack((2 * element, 2 * element + 1), dim=-1)


def counter_normal(
    keys: torch.Tensor, step: int, batch: torch.Tensor, counters: torch.Tensor, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Standard normal noise [N, 3] for `step`: a function of (replica key, step, atom, component) alone.

    Args:
        keys: [B, 2] int64, `replica_keys` of the replicas' seeds.
        step: the integration step the noise is for (>= 0).
        batch: [N] long, the replica of each atom.
        counters: [N, 3, 2] int64, `element_counters(batch)`.
        dtype: of the result (the device is the keys').
    """
    first, second = step_words(step)
    atom_first = (keys[:, 0] ^ first)[batch][:, None, None]
    atom_second = (keys[:, 1] ^ second)[batch][:, None, None]
    bits = mix32(atom_first ^ mix32(atom_second ^ counters)).to(torch.float64)
    scale = 2.0**-32
    radius = torch.sqrt(-2.0 * torch.log((bits[..., 0] + 0.5) * scale))
    return (radius * torch.cos((2.0 * math.pi * scale) * bits[..., 1])).to(dtype)
