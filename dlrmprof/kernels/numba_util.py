"""What the numba CPU kernel modules share: compile options, output allocation, the error
for bad bags, the thread count, and the digest that ties a module's numba cache to the
sources its kernels compile in.

numba's on-disk cache (``cache=True``) keys compiled code on the content of the file that
defines a kernel alone, not on the files of the intrinsics and inlined helpers it compiles
in: a kernel compiled with an older `_simd` stays in use after `_simd` changes.  So each
kernel module carries ``_DEPS_SHA256``, the digest of the sources it compiles in
(`deps_digest`, as `dlrmprof.jitdeps` says); tests/test_kernels.py fails until it is
updated, and the edit of the module itself makes numba recompile its kernels.
"""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np

from dlrmprof import jitdeps

OPTS = dict(cache=True, nogil=True, boundscheck=False, error_model="numpy")
# reductions (dot products) only vectorize when LLVM may reassociate
FAST = dict(OPTS, fastmath={"reassoc", "contract", "nsz", "arcp"})

# below this many gathered elements (nnz * D) the parallel launch costs more than it saves
PARALLEL_MIN_WORK = 1 << 16


class BadIndexError(IndexError):
    pass


def raise_bad(bad):
    raise BadIndexError(f"{bad} out-of-range indices or decreasing offsets")


def alloc(shape, dtype):
    """Output allocation (uninitialised; tests swap in a NaN-poisoned allocator)."""
    return np.empty(shape, dtype=dtype)


_THREADS = []


def num_threads() -> int:
    """numba.get_num_threads() (this thread's setting) without the public call's checks (a
    fraction of its cost, on every kernel call): numba's own accessor behind it, once the
    public call has started the pool and agreed with it; the public call wherever that
    accessor is missing (another numba version)."""
    if not _THREADS:
        n = numba.get_num_threads()
        fast = getattr(numba.np.ufunc.parallel, "_get_num_threads", None)
        try:
            ok = fast is not None and int(fast()) == n
        except Exception:  # noqa: BLE001 - any failure means: use the public call
            ok = False
        _THREADS.append(fast if ok else numba.get_num_threads)
    return _THREADS[0]()


def deps_digest(*names: str) -> str:
    """16 hex digits of sha256 over the named files of this package, in order
    (`dlrmprof.jitdeps`)."""
    return jitdeps.deps_digest(Path(__file__).parent, *names)
