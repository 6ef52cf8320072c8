"""numba CPU sparse SGD of embedding tables: for every lookup (bag b, position p) with
index i, ``weight[i] -= lr * grad[b] * w_p (/ len_b for mean)``, in place, all or nothing.

One thread updates the rows in lookup order, prefetching the rows ahead (a training step
reaches them again only after the MLPs have pushed them out of L2); several threads split
the rows by ``row % nparts``, each scanning all lookups, so no two threads write one row.
`embedding_bag_tables_sgd` updates the tables of one buffer in one call (the layout of
`numba_embedding.embedding_bag_tables`), timing each with the time-stamp counter.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dlrmprof.kernels._simd import cycle_counter, vfma, vload, vstore
from dlrmprof.kernels.numba_prefetch import (L1_BYTES, L2_BYTES, SGD_PREFETCH, _prefetch_row,
                                             _tail_line, prefetch_first_rows)
from dlrmprof.kernels.numba_util import OPTS, PARALLEL_MIN_WORK, num_threads, raise_bad

# the sources these kernels compile in (see numba_util): update when they change
_DEPS = ("_simd.py", "numba_prefetch.py")
_DEPS_SHA256 = "bd17819262b94ecc"


@njit(**OPTS)
def _check_bags(indices, offsets, R):
    """Number of out-of-range indices plus decreasing offsets (0 means all valid)."""
    bad = 0
    for p in range(indices.shape[0]):
        idx = indices[p]
        if idx < 0 or idx >= R:
            bad += 1
    for b in range(offsets.shape[0] - 1):
        if offsets[b + 1] < offsets[b]:
            bad += 1
    return bad


@njit(parallel=True, **OPTS)
def _eb_sgd_par(weight, indices, offsets, grad, psw, mean, lr, nparts, pf_dist):
    """Fused SGD on `nparts` threads.  Rows are partitioned among threads by `row % nparts`:
    each part scans all lookups and updates only its own rows (`_eb_sgd_ser` with its part),
    so no two threads ever write the same row."""
    for t in prange(nparts):
        _eb_sgd_ser(weight, indices, offsets, grad, psw, mean, lr, pf_dist, 0, 0, 0, t, nparts)


@njit(**OPTS)
def _eb_sgd_ser(weight, indices, offsets, grad, psw, mean, lr, pf_dist, row0, p0, gcol, part,
                nparts):
    """The fused SGD on one thread, rows in lookup order; each row `pf_dist` lookups ahead is
    prefetched into L1 (0: no prefetch): a training step reaches these rows again only after
    the MLPs have pushed them out of L2.  As in `numba_embedding._eb_vec_range`, the table
    is rows row0.. of `weight`, its lookups start at indices[p0], and bag b's gradient is
    grad[b, gcol:gcol+D] (one table: 0, 0, 0).  With nparts > 1 only the rows with
    row % nparts == part are updated (one thread's share, see `_eb_sgd_par`).  Indices are
    not checked here: callers validate first."""
    B = offsets.shape[0] - 1
    D = weight.shape[1]
    nnz = offsets[B]
    line = 64 // weight.itemsize
    tail = _tail_line(weight, 1, D)
    base = np.uint64(weight.ctypes.data)
    if pf_dist > 0:
        prefetch_first_rows(base, indices, p0, row0, offsets[0], nnz, pf_dist, 1, tail, D, line)
    for b in range(B):
        s = offsets[b]
        e = offsets[b + 1]
        if e <= s:
            continue
        scale = lr / (e - s) if mean else lr
        for p in range(s, e):
            if pf_dist > 0 and p + pf_dist < nnz:
                _prefetch_row(base, row0 + indices[p0 + p + pf_dist], 1, tail, D, line)
            idx = row0 + indices[p0 + p]
            if nparts > 1 and idx % nparts != part:
                continue
            c = scale if psw is None else scale * psw[p0 + p]
            # 16 lanes at a time as explicit vectors: a plain `for k` loop here gets runtime
            # alias checks between weight and grad on every row (much slower on small
            # tables); w - c g is computed as w + g (-c), the same rounding
            k = 0
            while k + 16 <= D:
                vstore(weight, idx, k, vfma(vload(weight, idx, k, 16),
                                            vload(grad, b, gcol + k, 16), -c))
                k += 16
            while k < D:
                weight[idx, k] -= c * grad[b, gcol + k]
                k += 1


@njit(**OPTS)
def eb_tables_sgd(weight, rows, row_base, means, indices, offsets, B, grad, lr, cycles,
                  pf_dist, l1_bytes):
    """The fused SGD of the tables of `numba_embedding._eb_tables_kernel` (same layout; grad
    [B, T * D]) in one call, one thread, each table timed by the time-stamp counter
    (`cycles[t]`).  All or nothing: every index and offset is checked before the first
    write; returns the number of bad entries (nothing written when > 0).  The rows of every
    table larger than L1 are prefetched, those within L2 too: in a training step the MLPs
    run between the lookup and this update and push the rows out of L2 (the gain:
    docs/performance.md, "Kernel and model choices"); a table within L1 (a few rows, hit
    over and over) gains nothing."""
    T = rows.shape[0]
    D = weight.shape[1]
    bad = 0
    p0 = 0
    for t in range(T):
        o = t * (B + 1)
        if offsets[o] != 0:
            bad += 1
        for b in range(B):
            if offsets[o + b + 1] < offsets[o + b]:
                bad += 1
        n = offsets[o + B]
        if p0 + n > indices.shape[0]:
            return bad + 1
        for p in range(p0, p0 + n):
            if np.uint64(indices[p]) >= np.uint64(rows[t]):
                bad += 1
        p0 += n
    if bad or p0 != indices.shape[0]:
        return bad + (p0 != indices.shape[0])
    p0 = 0
    for t in range(T):
        c0 = cycle_counter()
        o = t * (B + 1)
        pf = pf_dist if rows[t] * D * weight.itemsize > l1_bytes else 0
        _eb_sgd_ser(weight, indices, offsets[o:o + B + 1], grad, None, means[t], lr, pf,
                    row_base[t], p0, t * D, 0, 1)
        p0 += offsets[o + B]
        cycles[t] = cycle_counter() - c0
    return 0


# ------------------------------------------------------------------------------ entry points

def embedding_bag_sgd(weight, indices, offsets, grad_output, lr, mode, per_sample_weights):
    bad = _check_bags(indices, offsets, weight.shape[0])
    if bad:
        raise_bad(bad)   # nothing was written: all-or-nothing
    if not weight.flags.c_contiguous:
        # the kernels load and store rows as vectors: update a contiguous copy, write it back
        # (in place as far as the caller sees; costs a pass over the table)
        dense = np.ascontiguousarray(weight)
        embedding_bag_sgd(dense, indices, offsets, grad_output, lr, mode, per_sample_weights)
        weight[...] = dense
        return
    grad_output = np.ascontiguousarray(grad_output)   # the vector loads need whole rows
    work = indices.shape[0] * weight.shape[1]
    nparts = num_threads() if work >= PARALLEL_MIN_WORK else 1
    pf = SGD_PREFETCH if weight.nbytes > L2_BYTES else 0
    if nparts == 1:  # no parallel launch (a few us a call)
        _eb_sgd_ser(weight, indices, offsets, grad_output, per_sample_weights, mode == "mean",
                    weight.dtype.type(lr), pf, 0, 0, 0, 0, 1)
        return
    _eb_sgd_par(weight, indices, offsets, grad_output, per_sample_weights, mode == "mean",
                weight.dtype.type(lr), nparts, pf)


def embedding_bag_tables_sgd(weight, rows, row_base, means, indices, offsets, batch, grad, lr,
                             cycles):
    """The fused sparse SGD of all tables in one call (`eb_tables_sgd`); all or nothing."""
    bad = eb_tables_sgd(weight, rows, row_base, means, indices, offsets, batch, grad,
                        weight.dtype.type(lr), cycles, SGD_PREFETCH, L1_BYTES)
    if bad:
        raise_bad(bad)   # nothing was written

