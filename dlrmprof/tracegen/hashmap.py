"""The one open-addressing hash map of the trace toolkit: int64 keys to int64 values >= 0 in
two parallel arrays (a value < 0 marks an empty slot), linear probing from a Fibonacci hash,
kept at most half full by its users (who double it with `rehash`).  The Criteo reader's
per-table id maps, `reuse.DenseMap` and SHARDS' set of heavy ids all probe with `slot`."""

from __future__ import annotations

import numpy as np
from numba import njit

_MULT = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, inline="always")
def slot(keys, vals, k, mask):
    """The slot holding key k, or else the empty slot where k goes (vals[slot] < 0)."""
    p = np.int64((np.uint64(k) * _MULT) >> np.uint64(20)) & mask
    while vals[p] >= 0 and keys[p] != k:
        p = (p + 1) & mask
    return p


def empty(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(keys, vals) of an empty map of `size` slots (a power of two)."""
    return np.zeros(size, dtype=np.int64), np.full(size, -1, dtype=np.int64)


@njit(cache=True, no_cfunc_wrapper=True)
def _rehash(keys, vals, nkeys, nvals):
    mask = nkeys.shape[0] - 1
    for q in range(keys.shape[0]):
        if vals[q] >= 0:
            p = slot(nkeys, nvals, keys[q], mask)
            nkeys[p] = keys[q]
            nvals[p] = vals[q]


def doubled(keys: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same entries in a map of twice the slots."""
    nkeys, nvals = empty(2 * keys.shape[0])
    _rehash(keys, vals, nkeys, nvals)
    return nkeys, nvals
