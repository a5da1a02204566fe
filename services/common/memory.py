"""Memory settings for long-running processes: the C allocator's, for processes that move
multi-MiB images, and the cycle collector's, for processes that answer within milliseconds.

glibc serves an allocation above its mmap threshold with a fresh mapping and gives it back
to the kernel when freed, so every 5 MiB image buffer (a gRPC message, its protobuf copy,
the bytes handed to Python) is page-faulted in again, a page at a time, on every request.
Profiled, that was most of an Upload's time (bench/RESULTS.md, "Image bytes"): a 5 MiB
message between two processes took 22 ms with the defaults and 6.5 ms with these.

Large blocks are taken from the heap instead, and up to TRIM_THRESHOLD of freed memory at
its top is kept for the next image rather than returned at once: resident memory stays up
to that much above its low point after a burst, which is what makes the next one cheap.

Python's cycle collector, in its oldest generation, walks every object the process holds:
the modules, classes and functions of gRPC, pydantic, the openai client and the rest. In
the pipeline benchmark such a pass stopped imagegen for 60-100 ms and the status, storage
and gateway processes for 20-35 ms, in the middle of a run, every few hundred calls: a
provider's answer that came meanwhile waited that long (bench/RESULTS.md, "Pauses"). What
was loaded at start is kept out of those passes (settle_heap), so each is short."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
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


def settle_heap() -> None:
    """Once started, before the first call: what start-up loaded (and survives a full
    collection) is moved out of the collector's generations for good, so that a full pass
    later walks only what calls have left, not every module, class and function."""
    gc.collect()
    gc.freeze()
