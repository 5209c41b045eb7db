"""Keep freed memory in the process instead of handing it back to the OS.

Detection allocates and frees large Arrow and numpy buffers on every step. glibc maps
each buffer over 128 KB afresh and unmaps it when freed, and mimalloc purges freed pages,
so the next step page-faults the same memory in again: on this project's 2-core VMs
first touch costs about 2 ms per MB, more than the step's own work on it. Glibc with a
high mmap threshold and no trimming keeps the pages, and Arrow allocates through it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit
_kept = False
_frozen = False


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Once per process; False where the C library is not glibc (nothing changes)."""
    global _kept
    if _kept:
        return True
    import pyarrow as pa

    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    ok = all(mallopt(option, value) == 1 for option, value in (
        (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX),
        (_M_TRIM_THRESHOLD, (1 << 31) - 1),
        (_M_TOP_PAD, 1 << 30)))
    if not ok:
        logging.getLogger(__name__).warning("mallopt refused a setting; memory is returned "
                                            "to the OS as usual")
        return False
    pa.set_memory_pool(pa.system_memory_pool())
    _kept = True
    return True


def release_freed_memory() -> None:
    """Hands the memory kept by keep_freed_memory back to the OS, for when a bounded
    pipeline has ended and the process goes on to other work (train's fit: 1.2 GB of
    freed pages stayed resident after `features` on 1M rows)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def freeze_startup_objects() -> None:
    """Once per process: what is alive now (modules, classes, the pipeline's graph) moves
    out of the cyclic collector's reach, so a full collection walks only what the work
    made since. In `stream` at 1,000 tx/s full collections stopped every thread for
    190-270 ms of CPU each; 20-70 ms after."""
    global _frozen
    if not _frozen:
        gc.freeze()
        _frozen = True
