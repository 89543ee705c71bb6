"""How many torch CPU threads a job gets when the user has not said.

torch starts with one intra-op thread per core. For the small molecules mlff runs, a second
thread costs more in synchronisation than it gains, and far more when another process keeps the
cores busy (a 9-atom MD job ran 14x slower on 2 threads than on 1 on a loaded 2-core machine).
So below `SECOND_THREAD_MIN_ATOMS` atoms per potential call a job runs on one thread, and from
there on with torch's own count.

The user's choice always wins: `mlff --threads N` (`set_user_threads`) or OMP_NUM_THREADS /
MKL_NUM_THREADS in the environment. Nothing happens at import; the CLI and `run_md` apply the
policy when they know the system size, and `MLFFCalculator` when it first sees its atoms.
"""

import os

THREAD_ENV_VARS: tuple[str, ...] = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

# Atoms per potential call from which a second intra-op thread may pay. Measured with the shipped
# ethanol potential (float32, EGNN 64 x 4, cutoff 5 A) on one batch of k ethanol replicas, energy +
# forces, torch 2.12, 2 cores with two training processes keeping both busy; rounds alternate
# 1 and 2 threads; medians per call (wall ms, process CPU ms):
#   atoms           9     18     45     90    180    360    720   1440   2880   5760
#   wall 1 thread  7.6    8.5   32.2   37.8   54.9    117    159    401   1494   2735
#   wall 2 threads  91    100    399    336    486   1255    377   2839   5493   6138
#   2t / 1t        12.1   11.1   15.4    8.1   10.1    8.5    2.3    4.0    3.6    2.2
#   CPU 1 thread   5.4    6.3   10.3   17.7   27.7   55.0    107    167    348    711
#   CPU 2 threads   66     96    165    193    268    422    311   1140   1754   2548
# No measured size paid for its second thread (the ratio falls towards 1 only slowly), so the
# threshold lies above 5760 atoms on a loaded machine; 10,000 keeps every MD17 molecule and every
# batch of replicas mlff runs on one thread. An idle many-core machine may gain sooner; that was
# not measured (no such machine was available): pass --threads there.
# Command: mlff bench threads ethanol --replicas 1,2,5,10,20,40,80,160,320,640 (mlff.bench.threads).
SECOND_THREAD_MIN_ATOMS = 10_000

_user_threads: int | None = None
_torch_default_threads: int | None = None


def set_user_threads(count: int) -> None:
    """Run torch on `count` CPU threads from now on, as the user's explicit choice (the policy then
    leaves the count alone).

    Raises:
        ValueError: count < 1.
    """
    import torch

    global _user_threads
    if count < 1:
        raise ValueError(f"the thread count must be >= 1, got {count}")
    _user_threads = int(count)
    torch.set_num_threads(_user_threads)


def user_chose_threads() -> bool:
    """True when the thread count is the user's: `set_user_threads` was called or the environment
    sets OMP_NUM_THREADS or MKL_NUM_THREADS."""
    return _user_threads is not None or any(os.environ.get(name, "").strip() for name in THREAD_ENV_VARS)


def threads_for_atoms(num_atoms: int, default_threads: int) -> int:
    """The intra-op thread count for potential calls on `num_atoms` atoms in all (the sum over a
    batch of replicas): 1 below SECOND_THREAD_MIN_ATOMS, else `default_threads` (torch's own)."""
    return 1 if num_atoms < SECOND_THREAD_MIN_ATOMS else max(1, int(default_threads))


def apply_thread_policy(num_atoms: int) -> int | None:
    """Set torch's thread count for `num_atoms` atoms per potential call unless the user chose one.

    Returns:
        the count set, or None when the user's choice was left in place.
    """
    import torch

    global _torch_default_threads
    if user_chose_threads():
        return None
    if _torch_default_threads is None:
        _torch_default_threads = torch.get_num_threads()
    count = threads_for_atoms(num_atoms, _torch_default_threads)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
