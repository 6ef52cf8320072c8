"""Embedding-table memory: 64-byte-aligned CPU tensors backed by 2 MiB pages where the OS
allows.

A lookup into a table bigger than the TLB's reach (a few MiB of 4 KiB pages) pays a page
walk for nearly every row, and a software prefetch that misses the TLB pays it too. With
transparent huge pages in ``madvise`` mode (the usual Linux default) only memory advised
``MADV_HUGEPAGE`` gets 2 MiB pages; numpy advises its big arrays itself, torch does not.
`empty_table` allocates with torch (64-byte aligned: a row of 64k bytes spans k lines, not k
+ 1 as in numpy's 16-byte-aligned arrays) and advises the range before anything touches it.
`benchmarks/bench_row_prefetch.py --table dlrm` against `--table torch` measures what the
alignment and the 2 MiB pages gain (docs/performance.md).
"""

from __future__ import annotations

import ctypes
import mmap
import sys

import torch

HUGE_PAGE = 2 << 20
MIN_ADVISED_BYTES = 4 * HUGE_PAGE   # smaller tables fit the TLB's reach anyway


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc() if sys.platform.startswith("linux") else None


def advise_huge_pages(ptr: int, nbytes: int) -> bool:
    """Ask the kernel for 2 MiB pages over the whole huge pages inside [ptr, ptr + nbytes).
    True when the advice was taken; False where it cannot be given (not Linux, no
    MADV_HUGEPAGE, THP off, a range too small), which changes nothing but speed."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if _LIBC is None or advice is None or nbytes < MIN_ADVISED_BYTES:
        return False
    lo = (ptr + HUGE_PAGE - 1) // HUGE_PAGE * HUGE_PAGE
    hi = (ptr + nbytes) // HUGE_PAGE * HUGE_PAGE
    if hi <= lo:
        return False
    madvise = _LIBC.madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    return madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), ctypes.c_int(advice)) == 0


def empty_table(rows: int, dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialised [rows, dim] CPU tensor from torch's allocator (64-byte aligned),
    advised into 2 MiB pages before first touch (see the module note)."""
    t = torch.empty(rows, dim, dtype=dtype)
    advise_huge_pages(t.data_ptr(), t.numel() * t.element_size())
    return t


def huge_page_share(ptr: int, nbytes: int) -> float | None:
    """Share of [ptr, ptr + nbytes) that the kernel backs with huge pages now (Linux
    /proc/self/smaps, AnonHugePages of the mappings that overlap the range), or None where
    that cannot be read.  An approximation when a mapping extends beyond the range."""
    lo, hi = ptr, ptr + nbytes
    huge, inside = 0, False
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                head = line.split(None, 1)[0]
                if not head.endswith(":") and "-" in head:
                    a, b = (int(x, 16) for x in head.split("-"))
                    inside = a < hi and b > lo
                elif inside and head == "AnonHugePages:":
                    huge += int(line.split()[1]) << 10
    except (OSError, ValueError, IndexError):
        return None
    return min(1.0, huge / nbytes) if nbytes else None
