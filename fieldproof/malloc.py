"""Large buffers kept for reuse by the C allocator, instead of handed back to the kernel after each use.

The dock moves a file as 1 MiB chunks: each is read into a new ``bytes`` and copied into a new packet,
both freed once sent. With glibc's defaults a thread other than the main one gets such buffers from
its own arena, and every time the arena's top grows past the trim threshold when they are freed, glibc
gives the pages back (``madvise(MADV_DONTNEED)``), so the next chunk faults them in again, page by page.
Measured with ``perf`` on the sync bench's dock: page faults 16 % and ``madvise`` 4 % of its CPU.

``keep_large_buffers`` raises both thresholds once, at start: allocations up to ``mmap_threshold`` come
from the heap, and up to ``trim_threshold`` of freed memory stays mapped for the next ones. What the
process holds at its peak (the chunk window, a few dozen MiB) simply stays mapped. Only glibc has
``mallopt``; elsewhere (musl) this does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Final

log = logging.getLogger(__name__)

#: glibc's ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD: Final = -1
M_MMAP_THRESHOLD: Final = -3
#: glibc's documented largest mmap threshold (DEFAULT_MMAP_THRESHOLD_MAX): 32 MiB on 64-bit, 16 on 32.
MMAP_THRESHOLD: Final = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)
TRIM_THRESHOLD: Final = 256 * 1024 * 1024


def keep_large_buffers(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds for this process; True if the C library took both."""
    for value in (mmap_threshold, trim_threshold):
        if not 0 <= value < 2**31:
            raise ValueError(f"a malloc threshold is an int of 0 to 2**31 - 1 bytes, not {value}")
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.info("no mallopt in the C library (%s): large buffers are left to its defaults", name)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    took: bool = (
        mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
    )
    if not took:
        log.warning("mallopt refused thresholds %d / %d", mmap_threshold, trim_threshold)
    return took
