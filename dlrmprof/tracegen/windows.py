"""The windows of a synthesis: how the source's W windows stretch or shrink to the requested
length (the distinct ids growing along the source's fitted curve), and the tables a windowed
stack synthesis draws from (shared by `synth.py`'s model and `budgets.py`).
"""

from __future__ import annotations

import functools
import weakref
from typing import NamedTuple

import numpy as np

from dlrmprof.tracegen import reuse as _reuse
from dlrmprof.tracegen.profile import LocalityProfile


def distinct_growth(profile: LocalityProfile) -> dict:
    """The source's distinct-id growth curve, fitted: D(n) = a * n**b (Heaps' law) by least
    squares on log-log over the cumulative distinct count at the ends of its windows (the
    first quarter left out: start-up is steeper than the regime a longer trace continues).
    Returns {"a", "b", "rmse_log", "points"}; b is kept in [0, 1]."""
    W, wsize, n_src = profile.num_windows, profile.window_size, profile.accesses
    hot = profile.hot_win > 0
    first = np.where(hot.any(axis=1), hot.argmax(axis=1), W)
    firsts = np.bincount(first[first < W], minlength=W)[:W] + profile.tail_cold
    D = np.cumsum(firsts).astype(np.float64)
    n = np.minimum(np.arange(1, W + 1, dtype=np.float64) * wsize, n_src)
    keep = (np.arange(W) >= W // 4) & (D > 0)
    if keep.sum() < 2 or np.ptp(np.log(n[keep])) == 0:
        return {"a": float(D[-1]) / max(n_src, 1), "b": 1.0 if D[-1] >= n_src else 0.0,
                "rmse_log": 0.0, "points": int(keep.sum())}
    x, y = np.log(n[keep]), np.log(D[keep])
    b, loga = np.polyfit(x, y, 1)
    b = float(min(max(b, 0.0), 1.0))
    loga = float(np.mean(y - b * x))
    return {"a": float(np.exp(loga)), "b": b,
            "rmse_log": float(np.sqrt(np.mean((y - (loga + b * x)) ** 2))),
            "points": int(keep.sum())}


def plan_windows(profile: LocalityProfile, length: int):
    """Per synthetic window: (bounds [W'+1], hot counts [K, W'], tail first touches [W'],
    source window of each).  A shorter trace follows the source's prefix (its first windows,
    the last one cut); a longer one continues with the source's last full window repeated
    (its hot counts and reuse histogram), and its first touches follow the source's fitted
    growth curve (`distinct_growth`), anchored at the source's own distinct count: D(n) =
    distinct * (n / accesses) ** b."""
    n_src, n = profile.accesses, int(length)
    wsize = profile.window_size
    W = profile.num_windows
    Wn = max(1, -(-n // wsize))
    bounds = np.minimum(np.arange(Wn + 1, dtype=np.int64) * wsize, n)
    bounds[-1] = n
    win_len = np.diff(bounds)
    if n == n_src and Wn == W:      # the source's own length (a selection's): its windows
        hot = profile.hot_win.astype(np.int64)            # a copy, as below
        cold = profile.tail_cold.astype(np.int64)
        _fit(hot, cold, win_len)
        return bounds, hot, cold, np.arange(W)
    src_len = np.diff(np.minimum(np.arange(W + 1, dtype=np.int64) * wsize, n_src))
    last_full = W - 1 if src_len[-1] == wsize or W == 1 else W - 2
    src_w = np.minimum(np.arange(Wn), W - 1)
    src_w[np.arange(Wn) >= W] = last_full
    src_w[(np.arange(Wn) == W - 1) & (Wn > W)] = last_full   # a cut last window is not reused
    factor = win_len / np.maximum(src_len[src_w], 1)
    hot = profile.hot_win[:, src_w]                   # [K, W'] int64: the one big array
    cut = np.flatnonzero(factor != 1.0)               # windows of another length: scaled
    if cut.size:
        hot[:, cut] = np.floor(hot[:, cut] * factor[cut][None, :] + 0.5).astype(np.int64)
    cold = np.floor(profile.tail_cold[src_w] * factor + 0.5).astype(np.int64)
    beyond = bounds[:-1] >= n_src
    if beyond.any() and n_src:
        b = distinct_growth(profile)["b"]
        grown = profile.distinct * (bounds / n_src) ** b
        cold[beyond] = np.minimum(np.floor(np.diff(grown)[beyond] + 0.5).astype(np.int64),
                                  win_len[beyond])
        # new ids take their share of the window from the repeated hot counts
        room = np.maximum(win_len - cold, 0)
        hsum = hot.sum(axis=0)
        squeeze = beyond & (hsum > room)
        if squeeze.any():                             # in place: no [K, W'] temporaries
            hot *= np.where(squeeze, room, 1)[None, :]
            hot //= np.maximum(np.where(squeeze, hsum, 1), 1)[None, :]
    _fit(hot, cold, win_len)
    return bounds, hot, cold, src_w


def _fit(hot: np.ndarray, cold: np.ndarray, win_len: np.ndarray) -> None:
    """Counts that must fit their windows after rounding: a window's excess taken from its
    first touches, then from its largest hot count (in place)."""
    over_all = hot.sum(axis=0) + cold - win_len
    for w in np.flatnonzero(over_all > 0):
        over = int(over_all[w])
        while over > 0:
            if cold[w] > 0:
                cold[w] -= 1
            else:
                hot[int(np.argmax(hot[:, w])), w] -= 1
            over -= 1


@functools.lru_cache(maxsize=64)
def planned_distinct(profile: LocalityProfile, length: int) -> int:
    _, hot, cold, _ = plan_windows(profile, length)
    return int((hot.sum(axis=1) > 0).sum() + cold.sum())


def default_rows(profile: LocalityProfile, length: int) -> int:
    """Rows of a synthetic table of `length` accesses when none are given: the source's, grown
    (never shrunk) to hold the planned distinct count."""
    if profile.accesses == 0:
        return profile.rows
    if length == profile.accesses:        # the source's own length plans its own distinct
        return max(profile.rows, profile.distinct)
    return max(profile.rows, planned_distinct(profile, length))


def tail_cap(profile: LocalityProfile, length: int) -> int:
    """Most accesses one tail id may get in a synthesis of `length` accesses: the source's
    most accessed tail id's count (the (K+1)-th largest; an upper bound when K is past the
    stored top counts), scaled by the length; 0 (no cap) without a hot set."""
    K, top = profile.hot_k, profile.top_counts
    if not K or not top.size or not profile.accesses:
        return 0
    c = int(top[min(K, top.size - 1)])
    return max(1, -(-c * int(length) // profile.accesses))


class WindowTables(NamedTuple):
    """What a windowed stack synthesis of n accesses draws from (`window_tables`)."""
    bounds: np.ndarray      # [W + 1] the windows' first accesses
    hot: np.ndarray         # [K, W] each hot id's accesses per window
    cold: np.ndarray        # [W] first touches per window
    cdf: np.ndarray         # [W, nb] each window's tail reuse-distance cdf
    fallback: np.ndarray    # [nb] their sum, for a window without tail reuses
    edges: np.ndarray       # [nb + 1] the reuse bins' edges
    gap_cdf: np.ndarray     # the hot ids' gap-histogram cdfs (rows as profile.hot_gap's)
    gap_edges: np.ndarray   # [ng + 1] their bins' edges


# the last small tables `window_tables` built, (weak reference to their profile, n, tables):
# a selection synthesizes each finalist several times in a row (seeds), from the same tables
_LAST_TABLES: list = [None]
CACHED_TABLE_BYTES = 1 << 22      # larger tables (long syntheses) are not kept


def window_tables(profile: LocalityProfile, n: int) -> WindowTables:
    """The tables of a windowed stack synthesis of `n` accesses of `profile`: its windows
    and counts (`plan_windows`), each source window's tail-distance cdf, and the hot ids'
    gap cdfs, contiguous int64 (shared by this module's model and `budgets.py`, whose
    kernels only read them).  The last small tables are kept and returned again for the
    same profile and length (`_LAST_TABLES`)."""
    last = _LAST_TABLES[0]
    if last is not None and last[0]() is profile and last[1] == n:
        return last[2]
    wt = _build_tables(profile, n)
    size = sum(a.nbytes for a in (wt.bounds, wt.hot, wt.cold, wt.cdf, wt.fallback, wt.gap_cdf))
    _LAST_TABLES[0] = (weakref.ref(profile), int(n), wt) if size <= CACHED_TABLE_BYTES else None
    return wt


def _build_tables(profile: LocalityProfile, n: int) -> WindowTables:
    bounds, hot, cold, src_w = plan_windows(profile, n)
    th = np.asarray(profile.tail_hist, dtype=np.int64)[src_w]
    nb = th.shape[1]
    cdf = np.cumsum(th, axis=1) if nb else np.zeros((len(src_w), 0), dtype=np.int64)
    fallback = cdf.sum(axis=0) if nb else np.zeros(0, dtype=np.int64)
    gap = np.asarray(profile.hot_gap, dtype=np.int64)
    gap_cdf = np.cumsum(gap, axis=1) if gap.size else np.zeros((0, 0), dtype=np.int64)
    c = np.ascontiguousarray
    return WindowTables(c(bounds), c(hot), c(cold), c(cdf), c(fallback), _reuse.bin_edges(nb),
                        c(gap_cdf), _reuse.bin_edges(gap_cdf.shape[1]))
