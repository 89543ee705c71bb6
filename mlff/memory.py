"""Keep freed tensor memory in the process (glibc's allocator), for CPU training and MD.

A training step of aspirin at batch 64 allocates and frees a few hundred tensors of about 5 MB
([19,000 edges, 64] float32) per step. glibc returns such blocks to the kernel (mmap above its
threshold, heap trimming above twice that), so the next step faults every page of them in again:
the kernel's share of a short benchmark's CPU time (start-up included) was 15-17%. With the
thresholds raised, freed blocks are reused. Alternating runs of `mlff --threads 1 bench train
potentials/configs/aspirin.yaml --set train.batch_size=64 --steps 10` (2-core machine, both cores
busy with other runs), 8 pairs at this setting: 0.84-0.97x the CPU time per step (mean 0.90x); the
kernel's time per run fell from 1.4-2.6 to 0.7-1.1 s. (With the mmap threshold at 32 MiB instead,
3 pairs gave 0.88-0.97x.) The price is a resident size that stays at its peak instead of shrinking
between steps. `MLFF_MALLOC=default` in the environment leaves glibc's settings alone. Other
allocators (macOS, musl, jemalloc preloaded) are left as they are.
"""

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap and stay there once freed.
MMAP_THRESHOLD_BYTES = 1024 * 1024 * 1024
# Free memory at the top of the heap kept rather than returned to the kernel.
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True if it was done.

    Call once, early, from an entry point (the CLI does); never at import.
    """
    if os.environ.get("MLFF_MALLOC", "").lower() == "default" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
