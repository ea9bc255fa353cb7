"""Where large CPU tensor buffers come from: kept in the process heap while it is small, handed
back to the system (on huge pages) once it is large.

glibc serves allocations above a threshold (128 kB to 32 MB) with ``mmap`` and returns them to
the system on ``free``. A model evaluation allocates and frees many [pairs × features] buffers of
tens of MB, so every new buffer pays page faults: measured here on 2 cores, an element-wise
multiply of two 44k × 128 float32 tensors took 1.2–2.8 ms with the default and 0.5–0.6 ms with
mmap disabled. Turning mmap off and never trimming the heap lets freed buffers be reused: the
process keeps its peak heap between calls (which the next call needs again). A trim threshold
of 1 GB was not enough: at l_max = 2, a NequIP call on 2048 atoms frees more than that at once,
and the trimmed pages faulted back in at every call (3.4 M page faults in 8 calls against 1.1 M
without trimming; 14 % of the call time).
This is the same advice as "use jemalloc/tcmalloc with PyTorch on CPU", without a dependency.

A heap that is never trimmed fragments: the calls after the first place the same buffers in
the holes the last one left, and the heap grows by 20–45 % over the first few calls before it
settles (SchNet, 16 384 Cu atoms: 2.3 GB after the first call, 3.4 GB after the fifth). At
moderate sizes that is the price of speed; for the largest cells it is the difference between
fitting in memory and not. So once the heap exceeds half of the machine's memory
(``release_large_buffers_if_heap_is_large``, after each calculator call), buffers above 32 MiB
go back to ``mmap`` and the heap's free pages are returned: memory per atom then stays what one
call needs. Their page faults cost less because nnpot asks PyTorch for transparent huge pages
on buffers of 2 MB and more (``THP_MEM_ALLOC_ENABLE=1``, set in ``nnpot/__init__.py`` before
torch is imported), but still cost: SchNet on 16 384 atoms took 4.8 s per call that way, 8.3 s
with 4 kB pages and 3.5 s with the heap kept, and an HDNNP on 131 072 atoms 9.1 s against 5.3 s
(2 threads, 2-core AMD EPYC, 24 GB, 2026-12-04). Hence half the memory, not less: the switch is
for cells that would otherwise not fit.

The settings are process-wide and only change where memory comes from; set the environment
variable ``NNPOT_KEEP_MALLOC=1`` to leave the allocator alone (``THP_MEM_ALLOC_ENABLE=0`` for
PyTorch's huge pages).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_MMAP_THRESHOLD_MAX = 32 * 2**20   # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
_MMAP_MAX_DEFAULT = 65536
HEAP_FRACTION = 0.5                # of the physical memory, beyond which large buffers go back

_libc = None
_state = "untouched"               # → "keep" (heap kept) → "release" (large buffers returned)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]


def _glibc():
    """glibc with mallopt and mallinfo2 (2.33+), or None (not Linux, musl, older glibc)."""
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                libc.mallopt, libc.malloc_trim, libc.mallinfo2   # noqa: B018 (all must exist)
                libc.mallinfo2.restype = _MallInfo2
                _libc = libc
            except (OSError, AttributeError):
                pass
    return _libc or None


def keep_buffers_in_heap() -> bool:
    """Apply the setting once (Linux/glibc only). Returns True if it is in effect."""
    global _state
    if _state == "keep":
        return True
    libc = _glibc()
    if _state != "untouched" or libc is None or os.environ.get("NNPOT_KEEP_MALLOC") == "1":
        return False
    if libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, -1):  # -1: never
        _state = "keep"
    return _state == "keep"


@functools.cache
def _physical_bytes() -> int:
    """The machine's memory, bytes (read once: this is asked after every calculator call)."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def heap_bytes() -> int:
    """Bytes of the main heap (glibc's ``mallinfo2().arena``), in use or free; 0 if unknown."""
    libc = _glibc()
    return int(libc.mallinfo2().arena) if libc is not None else 0


def release_large_buffers_if_heap_is_large(fraction: float | None = None) -> bool:
    """Switch from keeping the heap to returning buffers above 32 MiB once the heap is larger
    than ``fraction`` of the physical memory (default ``HEAP_FRACTION``), and hand its free
    pages back. Call it between evaluations. Returns True if the switch happened on this call."""
    global _state
    if _state != "keep":
        return False
    fraction = HEAP_FRACTION if fraction is None else fraction
    if heap_bytes() <= fraction * _physical_bytes():
        return False
    libc = _glibc()
    libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
    libc.mallopt(_M_MMAP_MAX, _MMAP_MAX_DEFAULT)
    libc.malloc_trim(0)
    _state = "release"
    return True


def policy() -> str:
    """'untouched', 'keep' or 'release': what this process's allocator does now."""
    return _state
