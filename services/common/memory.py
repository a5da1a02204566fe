"""The C allocator's settings for processes that move multi-MiB images.

glibc serves an allocation above its mmap threshold with a fresh mapping and gives it back
to the kernel when freed, so every 5 MiB image buffer (a gRPC message, its protobuf copy,
the bytes handed to Python) is page-faulted in again, a page at a time, on every request.
Profiled, that was most of an Upload's time (bench/RESULTS.md, "Image bytes"): a 5 MiB
message between two processes took 22 ms with the defaults and 6.5 ms with these.

Large blocks are taken from the heap instead, and up to TRIM_THRESHOLD of freed memory at
its top is kept for the next image rather than returned at once: resident memory stays up
to that much above its low point after a burst, which is what makes the next one cheap."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Above the largest image (5 MiB) and its gRPC message; glibc accepts at most 32 MiB.
MMAP_THRESHOLD = 16 * 1024 * 1024
TRIM_THRESHOLD = 64 * 1024 * 1024


def tune_allocator() -> bool:
    """Apply the settings above; False (and nothing changed) where the C library is not
    glibc (musl, macOS), whose allocators have no such knobs."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    if not applied:
        log.warning("the C allocator refused the large-buffer settings; images will cost more CPU")
    return applied
