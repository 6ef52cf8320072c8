"""Per-table locality profile: what a synthetic trace is made from (never raw IDs).

A `LocalityProfile` holds, for one table:

* counts: accesses, distinct ids, bags (samples), the pooling-factor (bag length) histogram;
* the reuse-distance histogram of all accesses (exact for distances < 256, 16 log-spaced
  bins per power of two beyond; cold = first touches counted apart) -> the exact LRU
  miss-ratio curve at every power-of-two cache size;
* a popularity summary: the access counts of the most popular ids (sorted, no ids);
* the generator's model, per window of the stream (W windows of equal access count):
  - the K hottest ids ("hot set") as access counts per window, and the histogram of the gaps
    between consecutive accesses of one hot id inside a window, normalised by that id's mean
    gap there and kept by the id's count in the window (2-3, 4-7, 8-15, ...): the synthesizer
    spaces a hot id's accesses by such gaps, so a hot id keeps its own short-range reuse (a
    user's session) as well as its count, and independent references stay independent,
  - the other ids ("tail") as an LRU stack model: per window, the number of tail first
    touches (the cold schedule, so the distinct count is kept exactly) and the histogram of
    tail reuse distances measured among tail ids only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from dlrmprof.tracegen import reuse as _reuse

# numba's cache keys kernels on this file only: the files they compile in (dlrmprof.jitdeps)
_DEPS = ('hashmap.py', 'reuse.py')
_DEPS_SHA256 = 'd80456446d1b32a7'

DEFAULT_WINDOWS = 32
DEFAULT_HOT = 16
TOP_COUNTS = 1024
CLASS_MODEL = "classes"     # extra["model"] of a profile carrying the class model (classes.py)
BUDGET_MODEL = "budgets"    # ... carrying the budget model's counts (budgets.py)
BUDGET_HEAD = 3     # the budget model's short band draws among its top BUDGET_HEAD ids as one


@dataclass(frozen=True, eq=False)
class LocalityProfile:
    name: str
    rows: int                      # rows of the table (ids are < rows)
    accesses: int
    distinct: int
    num_bags: int
    bag_len_values: np.ndarray     # int64 [L]   pooling factors seen
    bag_len_counts: np.ndarray     # int64 [L]   how many bags had each
    hist: np.ndarray               # int64 [nbins] warm reuse distances of all accesses (binned)
    cold: int                      # first touches (= distinct)
    top_counts: np.ndarray         # int64 [<=1024] access counts of the most popular ids, desc
    window_size: int               # accesses per window (the last may be shorter)
    hot_win: np.ndarray            # int64 [K, W] accesses of hot id k in window w
    tail_cold: np.ndarray          # int64 [W] tail first touches per window
    tail_hist: np.ndarray          # int64 [W, nbins_t] tail-only reuse distances per window
    # int64 [C, nbins_g] normalised gaps (see _window_pass) between consecutive accesses of one
    # hot id inside a window, row gap_row(the id's count there);
    # shape [0, 0] when absent (older files): hot ids are then placed independently
    hot_gap: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    # the class model (`classes.py`), stored only where the selection chose it (extra["model"]
    # "classes"): per window and count class the first touches [W, C], the class-local reuse
    # distances [W * C, nbins_c] (row w * C + c) and each class's largest count [C];
    # [0, 0] / [0, 0] / [0] when absent
    class_cold: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    class_hist: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    class_max: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # the budget model (`budgets.py`), stored only where the selection chose it (extra["model"]
    # "budgets"): the source's distinct access counts ascending [V] and how many ids had each
    # [V]; [0] / [0] when absent
    count_values: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    count_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    extra: dict = field(default_factory=dict)   # free-form JSON-able facts (e.g. sampling)

    # -------------------------------------------------------------- derived figures
    @property
    def num_windows(self) -> int:
        return int(self.tail_cold.shape[0])

    @property
    def hot_k(self) -> int:
        return int(self.hot_win.shape[0])

    def mrc(self, sizes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(cache sizes, LRU hit rate) from the histogram; sizes default 2^0..2^k."""
        if sizes is None:
            sizes = _reuse.mrc_sizes(self.distinct)
        return sizes, _reuse.hit_rates(self.hist, self.cold, sizes)

    def top_share(self, n: int) -> float:
        if self.accesses == 0:
            return 0.0
        return float(self.top_counts[:n].sum()) / self.accesses

    def summary(self) -> dict:
        return {"name": self.name, "rows": self.rows, "accesses": self.accesses,
                "distinct": self.distinct, "bags": self.num_bags,
                "windows": self.num_windows, "hot_ids": self.hot_k,
                "top10_share": self.top_share(10),
                "top1pct_share": self.top_share(max(1, self.distinct // 100))}

    # -------------------------------------------------------------- (de)serialisation
    ARRAYS = ("bag_len_values", "bag_len_counts", "hist", "top_counts", "hot_win", "tail_cold",
              "tail_hist", "hot_gap", "class_cold", "class_hist", "class_max", "count_values",
              "count_ids")
    # arrays older files lack, and their empty shape
    OPTIONAL = {"hot_gap": (0, 0), "class_cold": (0, 0), "class_hist": (0, 0), "class_max": (0,),
                "count_values": (0,), "count_ids": (0,)}
    SCALARS = ("name", "rows", "accesses", "distinct", "num_bags", "cold", "window_size",
               "extra")

    def to_arrays(self, prefix: str) -> tuple[dict, dict]:
        """(arrays named prefix + field, JSON-able scalars)."""
        arrays = {prefix + a: np.ascontiguousarray(getattr(self, a), dtype=np.int64)
                  for a in self.ARRAYS}
        scalars = {s: getattr(self, s) for s in self.SCALARS}
        return arrays, scalars

    @classmethod
    def from_arrays(cls, arrays: dict, prefix: str, scalars: dict) -> "LocalityProfile":
        kw = {a: np.asarray(arrays[prefix + a] if prefix + a in arrays
                            else np.zeros(cls.OPTIONAL[a]), dtype=np.int64)
              if a in cls.OPTIONAL else np.asarray(arrays[prefix + a], dtype=np.int64)
              for a in cls.ARRAYS}
        for s in cls.SCALARS:
            kw[s] = scalars[s]
        return cls(**kw)

    def validate(self, where: str = "profile") -> None:
        """Raise ValueError (the caller turns it into a UserError with the file name)."""
        def need(cond, what):
            if not cond:
                raise ValueError(f"{where}: {what}")
        need(self.rows >= 1, "rows >= 1")
        need(0 <= self.distinct <= self.accesses, "0 <= distinct <= accesses")
        need(self.distinct <= self.rows or self.rows == 0, "distinct <= rows")
        need(self.bag_len_values.ndim == 1 and self.bag_len_values.shape == self.bag_len_counts.shape,
             "bag_len_values and bag_len_counts of equal 1-D shape")
        need((self.bag_len_values >= 0).all() and (self.bag_len_counts >= 0).all(),
             "non-negative bag lengths and counts")
        need(int(self.bag_len_counts.sum()) == self.num_bags, "bag length counts summing to bags")
        need(int((self.bag_len_values * self.bag_len_counts).sum()) == self.accesses,
             "bag lengths summing to accesses")
        need(self.hist.ndim == 1 and (self.hist >= 0).all(), "a non-negative 1-D histogram")
        need(int(self.hist.sum()) + self.cold == self.accesses,
             "histogram + cold == accesses")
        need(self.cold == self.distinct, "cold == distinct")
        W = self.num_windows
        need(self.tail_cold.ndim == 1 and W >= 1, "at least one window")
        need(self.hot_win.ndim == 2 and self.hot_win.shape[1] == W, "hot_win of shape [K, W]")
        need(self.tail_hist.ndim == 2 and self.tail_hist.shape[0] == W, "tail_hist of shape [W, n]")
        need((self.hot_win >= 0).all() and (self.tail_cold >= 0).all()
             and (self.tail_hist >= 0).all(), "non-negative window counts")
        per_win = self.hot_win.sum(axis=0) + self.tail_cold + self.tail_hist.sum(axis=1)
        need(int(per_win.sum()) == self.accesses, "window counts summing to accesses")
        need(self.hot_k + int(self.tail_cold.sum()) == self.distinct,
             "hot ids + tail first touches == distinct")
        need(self.window_size >= 1, "window_size >= 1")
        need(self.hot_gap.ndim == 2 and (self.hot_gap >= 0).all(),
             "a non-negative 2-D hot gap histogram")
        need(int(self.hot_gap.sum()) <= int(self.hot_win.sum()),
             "no more hot gaps than hot accesses")
        self._validate_classes(need)
        self._validate_budgets(need)

    def _validate_budgets(self, need) -> None:
        v, k = self.count_values, self.count_ids
        if self.extra.get("model") != BUDGET_MODEL:
            need(v.size == 0 and k.size == 0, "count arrays only with the budget model")
            return
        need(v.ndim == 1 and v.shape == k.shape and v.size >= 1,
             "count_values and count_ids of equal 1-D shape")
        need((v >= 1).all() and (k >= 1).all() and (np.diff(v) > 0).all(),
             "ascending positive counts, each held by at least one id")
        exact, per = self.extra.get("budget_exact", 0), self.extra.get("budget_per_octave", 2)
        need(type(exact) is int and exact >= 0 and type(per) is int and 1 <= per <= 16,
             "extra.budget_exact an integer >= 0 and extra.budget_per_octave one in 1..16")
        run = self.extra.get("budget_run_depth", 0)
        need(type(run) is int and run >= 0, "extra.budget_run_depth an integer >= 0")
        short = self.extra.get("budget_short_depth", 0)
        need(type(short) is int and short >= 0, "extra.budget_short_depth an integer >= 0")
        if short:
            w = self.extra.get("budget_short_weights")
            h = self.extra.get("budget_short_head")
            need(isinstance(w, list) and len(w) >= 1
                 and all(type(x) is int and x >= 1 for x in w),
                 "extra.budget_short_weights a list of integers >= 1")
            need(isinstance(h, list) and len(h) == BUDGET_HEAD
                 and all(type(x) is int and x >= 0 for x in h),
                 f"extra.budget_short_head a list of {BUDGET_HEAD} integers >= 0")
        need(int(k.sum()) + self.hot_k == self.distinct
             and int((v * k).sum()) + int(self.hot_win.sum()) == self.accesses,
             "count_ids summing to distinct and counts to accesses (less the hot ids')")

    def _validate_classes(self, need) -> None:
        if self.extra.get("model") != CLASS_MODEL:
            need(self.class_cold.size == 0, "class arrays only with the class model")
            return
        cc, ch, cm = self.class_cold, self.class_hist, self.class_max
        need(cc.ndim == 2 and cc.shape[0] == self.num_windows and cc.shape[1] >= 1,
             "class_cold of shape [W, C]")
        need(ch.ndim == 2 and ch.shape[0] == cc.size and cm.shape == (cc.shape[1],),
             "class_hist of shape [W * C, n] and class_max of shape [C]")
        need((cc >= 0).all() and (ch >= 0).all() and (cm >= 0).all(),
             "non-negative class counts")
        need(self.hot_k == 0, "no hot set with the class model")
        need(int(cc.sum()) == self.distinct and int(cc.sum() + ch.sum()) == self.accesses,
             "class first touches == distinct and class accesses == accesses")


# ------------------------------------------------------------------ building a profile
@njit(cache=True, no_cfunc_wrapper=True)
def gap_row(count):
    """Gap histogram row of a hot id with `count` accesses in a window: floor(log2(count))
    (counts 2-3 -> 1, 4-7 -> 2, ...; a single access has no gap).  Conditioning the gaps on
    the id's own count keeps their sum near the window's length whatever the id's rank."""
    row = 0
    while (count >> (row + 1)) > 0:
        row += 1
    return row


GAP_SCALE = 256      # gaps are stored as floor(GAP_SCALE * gap / mean gap of the id there)


def _pooling(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vals, counts = np.unique(np.asarray(lengths, dtype=np.int64), return_counts=True)
    return vals.astype(np.int64), counts.astype(np.int64)


CHUNK = 1 << 22


def _chunks(ids, size: int = CHUNK):
    for lo in range(0, int(ids.shape[0]), size):
        yield np.ascontiguousarray(ids[lo:lo + size], dtype=np.int64)


def id_bound(ids) -> int:
    """1 + the largest id (ids are dense, >= 0), chunk by chunk (works on memmaps)."""
    top = -1
    for c in _chunks(ids):
        if c.size:
            lo = int(c.min())
            if lo < 0:
                raise ValueError("ids must be non-negative (dense)")
            top = max(top, int(c.max()))
    return top + 1


def stream_histogram(ids, bound: int | None = None) -> tuple[np.ndarray, int]:
    """(binned warm reuse-distance histogram, cold count) of a dense id stream, in chunks:
    memory O(distinct + chunk) whatever the stream length."""
    bound = id_bound(ids) if bound is None else bound
    state = _reuse.ReuseState(max(bound, 1))
    hist = np.zeros(_reuse.MAX_BINS, dtype=np.int64)
    cold = 0
    for c in _chunks(ids):
        cold += state.feed_hist(c, hist)
    nz = np.flatnonzero(hist)
    return hist[: int(nz[-1]) + 1 if nz.size else 0].copy(), cold


@njit(cache=True, no_cfunc_wrapper=True)
def count_ids(ids, counts):
    """counts[x] += 1 for every id (counts long enough)."""
    for i in range(ids.shape[0]):
        counts[ids[i]] += 1


@njit(cache=True, inline="always")
def _gap_bin(q):
    """`reuse.dist_bin(q)` without its branch on q < 2^EXACT_BITS: a normalised gap falls on
    either side of that edge about as often (its mean is GAP_SCALE), so the branch would
    mispredict; both forms are computed and one is selected."""
    k = 0                                  # the top set bit (0 for q = 0)
    x = q
    for step in (32, 16, 8, 4, 2, 1):
        if x >> step:
            k += step
            x >>= step
    sh = k - _reuse.SUB_BITS
    sh = sh if sh > 0 else 0
    big = ((1 << _reuse.EXACT_BITS) + (k - _reuse.EXACT_BITS) * (1 << _reuse.SUB_BITS)
           + ((q >> sh) & ((1 << _reuse.SUB_BITS) - 1)))
    return big + (q - big) * np.int64(q < (1 << _reuse.EXACT_BITS))


@njit(cache=True, no_cfunc_wrapper=True)
def _split_hot(ids, hot_rank, start, wsize, hot_win, tail_ids, tail_at):
    """One pass over a chunk (stream positions start ..): each hot access (hot_rank >= 0)
    counted in hot_win at its window, each tail access's id and chunk offset appended to
    tail_ids / tail_at.  Returns the tail accesses.  The window by a running boundary, not
    a division per access."""
    w = start // wsize
    end = (w + 1) * wsize - start          # chunk offset where window w ends
    nt = 0
    for i in range(ids.shape[0]):
        if i == end:
            w += 1
            end += wsize
        x = ids[i]
        r = hot_rank[x]
        if r >= 0:
            hot_win[r, w] += 1
        else:
            tail_ids[nt] = x
            tail_at[nt] = i
            nt += 1
    return nt


@njit(cache=True, no_cfunc_wrapper=True)
def _tail_pass(dist, at, start, wsize, rows, cold):
    """A chunk's tail reuse distances (`dist`, at chunk offsets `at`, the chunk starting at
    stream position `start`) added to their window's histogram row, first touches to its
    cold count."""
    w = start // wsize
    end = (w + 1) * wsize - start
    for i in range(dist.shape[0]):
        while at[i] >= end:
            w += 1
            end += wsize
        if dist[i] < 0:
            cold[w] += 1
        else:
            rows[w, _reuse.dist_bin(dist[i])] += 1


@njit(cache=True, inline="always")
def _wrap_gaps(state, ns, L, flat, nb):
    """The wrap gap (from its last access round to its first) of each of the ns ranks seen
    in a window of L accesses, for those seen twice or more."""
    first, last, scale, row, seen = state[1], state[2], state[3], state[4], state[5]
    for j in range(ns):
        r = np.uint64(seen[j])
        if last[r] != first[r]:
            g = _gap_bin(scale[r] * (L - (last[r] - first[r])) // L)
            if g < nb:
                flat[np.uint64(row[r] + g)] += 1


@njit(cache=True, no_cfunc_wrapper=True)
def _hot_gaps(ids, p0, hot_rank, wsize, n, hot_win, gap_rows, state, nseen):
    """The hot gaps of the accesses at stream positions p0 .. p0 + len(ids) - 1, whose
    windows' counts hot_win holds whole; a window is closed (its wrap gaps added) when the
    positions reach its end, so one window's accesses may come in two calls.  Each hot id
    with c >= 2 accesses in a window of L has c gaps, the c - 1 between its consecutive
    accesses and the wrap from its last round to its first (they add up to L), each added
    to gap_rows[gap_row(c)] as floor(GAP_SCALE * gap * c / L), binned like reuse distances.
    Independent references give exponential normalised gaps, sessions many small ones and a
    few large ones.  state: int64 [6, K] (per rank: the window it was last seen in, its
    first and last position there, GAP_SCALE * c, its row's offset in gap_rows; the ranks
    seen in the open window, nseen[0] of them)."""
    nb = gap_rows.shape[1]
    flat = gap_rows.reshape(-1)
    stamp, first, last, scale, row, seen = state[0], state[1], state[2], state[3], state[4], \
        state[5]
    w = p0 // wsize
    wend = min((w + 1) * wsize, n)
    L = wend - w * wsize
    ns = nseen[0]
    for i in range(ids.shape[0]):
        p = p0 + i
        if p == wend:                      # window w is whole: its wrap gaps, the next one
            _wrap_gaps(state, ns, L, flat, nb)
            ns = 0
            w += 1
            wend = min(wend + wsize, n)
            L = wend - w * wsize
        r = hot_rank[ids[i]]
        if r < 0:
            continue
        r = np.uint64(r)                   # unsigned: no negative-index fix-up per access
        if stamp[r] != w:                  # the id's first access in this window
            stamp[r] = w
            first[r] = p
            seen[ns] = r
            ns += 1
            c = hot_win[r, w]
            scale[r] = GAP_SCALE * c
            row[r] = gap_row(c) * nb
        else:
            g = _gap_bin(scale[r] * (p - last[r]) // L)
            if g < nb:
                flat[np.uint64(row[r] + g)] += 1
        last[r] = p
    if p0 + ids.shape[0] == wend:
        _wrap_gaps(state, ns, L, flat, nb)
        ns = 0
    nseen[0] = ns


class WindowState:
    """The windowed part of a profile, fed the stream chunk by chunk: per window the hot ids'
    access counts and normalised gaps, the tail's first touches and its reuse distances among
    tail ids only.  The hot ids (`hot_rank`: rank of each id, -1 for tail ids) and the window
    length come from the whole stream, so they are known before the first chunk.  Memory:
    O(distinct ids) plus the chunk's tail accesses and the ids of the window not closed yet.
    A chunk may span any number of windows: it is one pass of each kernel below, with no
    per-window Python step (short streams have windows of a few dozen accesses)."""

    def __init__(self, hot_rank: np.ndarray, k: int, n: int, windows: int, bound: int):
        W = max(1, min(int(windows), n))
        self.wsize = max(1, -(-n // W))
        self.W = max(1, -(-n // self.wsize))
        self.k, self.n = int(k), int(n)
        self.hot_rank = hot_rank
        self.hot_win = np.zeros((k, self.W), dtype=np.int64)
        self.tail_cold = np.zeros(self.W, dtype=np.int64)
        self.tail_rows = np.zeros((self.W, _reuse.MAX_BINS), dtype=np.int64)
        self.gap_rows = np.zeros((gap_row(max(self.wsize, 1)) + 1 if k else 0, _reuse.MAX_BINS),
                                 dtype=np.int64)
        self.tstate = _reuse.ReuseState(max(bound, 1))
        self.state = np.full((6, max(k, 1)), -1, dtype=np.int64)     # _hot_gaps' scratch
        self.nseen = np.zeros(1, dtype=np.int64)
        self.pos = 0                         # accesses fed so far
        self.held = np.zeros(0, dtype=np.int64)   # ids of the open window fed so far (hot set)

    def feed(self, ids: np.ndarray) -> None:
        """Feed the next accesses (any number of windows at once: a chunk is a pass of each
        kernel below, the windows it covers are handled inside them)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        m = ids.shape[0]
        if m == 0:
            return
        start = self.pos
        # tail buffers as long as the chunk: pages a chunk of hot ids never writes are never
        # touched
        tail_ids = np.empty(m, dtype=np.int64)
        tail_at = np.empty(m, dtype=np.int64)
        nt = _split_hot(ids, self.hot_rank, start, self.wsize, self.hot_win, tail_ids, tail_at)
        if nt:
            _tail_pass(self.tstate.feed(tail_ids[:nt]), tail_at[:nt], start, self.wsize,
                       self.tail_rows, self.tail_cold)
        self.pos = end = start + m
        if not self.k:
            return
        done = end // self.wsize if end < self.n else self.W      # windows closed now
        if done * self.wsize <= start:                 # none: the chunk joins the open window
            self.held = np.concatenate([self.held, ids]) if self.held.size else ids.copy()
            return
        cut = min(done * self.wsize, end) - start
        if self.held.size:
            _hot_gaps(self.held, start - self.held.shape[0], self.hot_rank, self.wsize, self.n,
                      self.hot_win, self.gap_rows, self.state, self.nseen)
        _hot_gaps(ids[:cut], start, self.hot_rank, self.wsize, self.n, self.hot_win,
                  self.gap_rows, self.state, self.nseen)
        self.held = ids[cut:].copy()

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(hot_win, tail_cold, tail_hist, hot_gap), histograms trimmed."""
        used = np.flatnonzero(self.tail_rows.sum(axis=0))
        nb = int(used[-1]) + 1 if used.size else 0
        tail_hist = self.tail_rows[:, :nb].copy()
        g = self.gap_rows
        used = np.flatnonzero(g.sum(axis=0))
        rows_used = np.flatnonzero(g.sum(axis=1))
        hot_gap = g[:int(rows_used[-1]) + 1 if rows_used.size else 0,
                    :int(used[-1]) + 1 if used.size else 0].copy()
        return self.hot_win, self.tail_cold, tail_hist, hot_gap


def hot_ranks(counts: np.ndarray, distinct: int, hot: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(access counts of the TOP_COUNTS most popular ids, descending; rank of each id among
    the `hot` most accessed, -1 for the others; the hot count K).  Ties go to the smaller id."""
    order = np.argsort(-counts, kind="stable")
    top = counts[order[: min(TOP_COUNTS, distinct)]].astype(np.int64)
    k = min(int(hot), distinct)
    hot_rank = np.full(counts.shape[0], -1, dtype=np.int64)
    hot_rank[order[:k]] = np.arange(k)
    return top, hot_rank, k


def build_profile(name: str, ids, lengths: np.ndarray | None = None,
                  rows: int | None = None, windows: int = DEFAULT_WINDOWS,
                  hot: int = DEFAULT_HOT, dist: np.ndarray | None = None,
                  hist_cold: tuple | None = None) -> LocalityProfile:
    """Profile one table's access stream (ids dense, >= 0; an array or a memmap).

    Works in chunks: memory is O(distinct ids + chunk) whatever the stream length.  `dist`
    (per-access reuse distances) or `hist_cold` (their histogram) skip the full pass."""
    n = int(ids.shape[0])
    if lengths is None:
        lengths = np.ones(n, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if int(lengths.sum()) != n:
        raise ValueError("bag lengths must sum to the number of accesses")
    bound = id_bound(ids)
    if hist_cold is not None:
        hist, cold = hist_cold
    elif dist is not None:
        hist, cold = _reuse.histogram(dist)
    else:
        hist, cold = stream_histogram(ids, bound)
    counts = np.zeros(max(bound, 1), dtype=np.int64)
    for c in _chunks(ids):
        count_ids(c, counts)
    top, hot_rank, k = hot_ranks(counts, int(cold), hot)
    win = WindowState(hot_rank, k, n, windows, bound)
    for c in _chunks(ids):
        win.feed(c)
    return assemble(name, rows if rows is not None else max(bound, 1), n, hist, int(cold),
                    _pooling(lengths), top, win)


def assemble(name: str, rows: int, n: int, hist: np.ndarray, cold: int, pooling: tuple,
             top: np.ndarray, win: WindowState) -> LocalityProfile:
    """The profile from its parts: whole-stream figures and the fed `WindowState`."""
    hot_win, tail_cold, tail_hist, hot_gap = win.arrays()
    bl_vals, bl_counts = pooling
    return LocalityProfile(
        name=str(name), rows=int(rows), accesses=n, distinct=int(cold),
        num_bags=int(bl_counts.sum()), bag_len_values=bl_vals, bag_len_counts=bl_counts,
        hist=hist, cold=int(cold), top_counts=top, window_size=int(win.wsize),
        hot_win=hot_win, tail_cold=tail_cold, tail_hist=tail_hist, hot_gap=hot_gap, extra={})
