"""The streaming capture (tracegen.onepass) against the in-memory exact profiles, and its
pieces (WindowState, BatchStream, ShardsStream) against plain references, on random and
real inputs fed in random chunks."""

import json

import numpy as np
import pytest

from dlrmprof.tracegen import generate, onepass, selection
from dlrmprof.tracegen import reuse as _reuse
from dlrmprof.tracegen.batches import BatchStream, batch_stats
from dlrmprof.tracegen.profile import (GAP_SCALE, LocalityProfile, WindowState, build_profile,
                                       gap_row, hot_ranks)
from dlrmprof.tracegen.readers import BUNDLED_SAMPLE, read_criteo


def _chunks(ids, rng, most=700):
    lo = 0
    while lo < len(ids):
        k = int(rng.integers(1, most))
        yield ids[lo:lo + k]
        lo += k


def _stream(rng, n=None):
    n = int(rng.integers(1, 6000)) if n is None else n
    u = int(rng.integers(1, 900))
    if rng.random() < 0.5:
        return rng.integers(0, u, n).astype(np.int64)
    return ((rng.zipf(1.05 + 0.4 * rng.random(), n) - 1) % u).astype(np.int64)


def _same_profile(a: LocalityProfile, b: LocalityProfile) -> None:
    for f in LocalityProfile.ARRAYS:
        x, y = getattr(a, f), getattr(b, f)
        assert x.shape == y.shape and (x == y).all(), f
    for f in LocalityProfile.SCALARS:
        if f == "extra":
            assert json.dumps(a.extra) == json.dumps(b.extra)      # same keys, order, values
        else:
            assert getattr(a, f) == getattr(b, f), f


# ------------------------------------------------------------------ plain reference of the windows
def _reference_windows(ids, hot, windows):
    """The windowed model from its definition, one window at a time in plain Python."""
    n = len(ids)
    counts = np.bincount(ids)
    order = np.argsort(-counts, kind="stable")
    distinct = int((counts > 0).sum())
    k = min(hot, distinct)
    hot_ids = {int(x): r for r, x in enumerate(order[:k])}
    W = max(1, min(windows, n))
    wsize = -(-n // W)
    W = -(-n // wsize)
    hot_win = np.zeros((k, W), np.int64)
    tail_cold = np.zeros(W, np.int64)
    tail_d = {}                                    # window -> list of tail distances
    gaps = {}                                      # (row, bin) -> count
    stack = []                                     # LRU stack of tail ids (all windows)
    for w in range(W):
        seg = [int(x) for x in ids[w * wsize:(w + 1) * wsize]]
        L = len(seg)
        where = {}
        for i, x in enumerate(seg):
            if x in hot_ids:
                hot_win[hot_ids[x], w] += 1
                where.setdefault(x, []).append(i)
            elif x in stack:
                j = stack.index(x)
                tail_d.setdefault(w, []).append(len(stack) - 1 - j)
                stack.pop(j)
                stack.append(x)
            else:
                tail_cold[w] += 1
                stack.append(x)
        for pos in where.values():
            c = len(pos)
            if c < 2:
                continue
            gs = [b - a for a, b in zip(pos, pos[1:])] + [L - (pos[-1] - pos[0])]
            for g in gs:
                key = (gap_row(c), int(_reuse.dist_bin(GAP_SCALE * g * c // L)))
                gaps[key] = gaps.get(key, 0) + 1
    return hot_win, tail_cold, tail_d, gaps, wsize


def test_window_state_matches_the_plain_reference():
    rng = np.random.default_rng()
    for _ in range(25):
        ids = _stream(rng, int(rng.integers(1, 3000)))
        hot, windows = int(rng.choice([0, 4, 16, 64])), int(rng.choice([1, 5, 32]))
        counts = np.bincount(ids)
        distinct = int((counts > 0).sum())
        _, hot_rank, k = hot_ranks(counts, distinct, hot)
        win = WindowState(hot_rank, k, len(ids), windows, len(counts))
        for c in _chunks(ids, rng):
            win.feed(c)
        hot_win, tail_cold, tail_hist, hot_gap = win.arrays()
        r_hot, r_cold, r_dist, r_gaps, r_wsize = _reference_windows(ids, hot, windows)
        assert win.wsize == r_wsize
        np.testing.assert_array_equal(hot_win, r_hot)
        np.testing.assert_array_equal(tail_cold, r_cold)
        for w in range(len(r_cold)):
            h, _ = _reuse.histogram(np.array(r_dist.get(w, []), np.int64))
            got = tail_hist[w]
            np.testing.assert_array_equal(got[:len(h)], h)
            assert not got[len(h):].any()
        got_gaps = {(int(r), int(b)): int(hot_gap[r, b]) for r, b in zip(*np.nonzero(hot_gap))}
        assert got_gaps == r_gaps


# ------------------------------------------------------------------ the two-pass capture
def _capture(columns, rng, prefix, sample_rate=None, hot=None, windows=32, keep_bytes=0):
    """profiles_from_rows over the columns fed in random row chunks (read twice unless
    `keep_bytes` holds their int32 copy)."""
    sp = np.stack(columns, axis=1)
    reads = []

    def read():
        reads.append(1)
        return list(_chunks(sp, rng))

    rows = [int(c.max()) + 1 for c in columns]
    profs = onepass.profiles_from_rows(read, [f"C{i}" for i in range(len(columns))], rows,
                                       windows, hot, sample_rate=sample_rate, prefix=prefix,
                                       in_memory=prefix, keep_bytes=keep_bytes)
    return profs, rows, len(reads)


@pytest.mark.parametrize("hot,sample_rate", [(None, None), (16, 0.25)])
def test_two_pass_capture_equals_the_in_memory_profiles(monkeypatch, hot, sample_rate):
    """Streams longer than the prefix take the two-pass path; every profile (figures, windows,
    selection record, source extras, SHARDS) equals the in-memory one of the whole column."""
    rng = np.random.default_rng()
    prefix = 700
    monkeypatch.setattr(selection, "HOT_PREFIX", prefix)
    n = int(rng.integers(prefix + 1, 5000))
    columns = [_stream(rng, n) for _ in range(3)]
    profs, rows, reads = _capture(columns, rng, prefix, sample_rate, hot)
    assert reads == 2
    for col, r, got in zip(columns, rows, profs):
        ref = generate._profile(got.name, col, None, r, 32, hot, sample_rate)
        _same_profile(got, ref)
        got.validate()


@pytest.mark.parametrize("hot,sample_rate", [(None, None), (16, 0.25)])
def test_kept_copy_reads_once_and_equals_the_in_memory_profiles(monkeypatch, hot, sample_rate):
    """A stream longer than the prefix whose int32 copy fits: read once, pass 2 over the copy
    (in blocks smaller than the stream, so it crosses block boundaries), same profiles."""
    rng = np.random.default_rng()
    prefix = 700
    monkeypatch.setattr(selection, "HOT_PREFIX", prefix)
    monkeypatch.setattr(onepass, "_BLOCK_BYTES", 4 * 3 * 1000)     # blocks of 4096 rows
    n = int(rng.integers(4 * 4096 + 1, 30_000))
    columns = [_stream(rng, n) for _ in range(3)]
    profs, rows, reads = _capture(columns, rng, prefix, sample_rate, hot, keep_bytes=12 * n)
    assert reads == 1
    for col, r, got in zip(columns, rows, profs):
        _same_profile(got, generate._profile(got.name, col, None, r, 32, hot, sample_rate))


def test_kept_copy_over_budget_is_dropped_and_the_input_read_again(monkeypatch):
    rng = np.random.default_rng()
    monkeypatch.setattr(selection, "HOT_PREFIX", 700)
    columns = [_stream(rng, 3000) for _ in range(2)]
    # a byte an id short of the narrowest copy (a column kept at 1 byte until an id outgrows
    # it counts its earlier rows at 1 byte, so its final width does not bound the bytes)
    profs, rows, reads = _capture(columns, rng, prefix=700, keep_bytes=len(columns) * 3000 - 1)
    assert reads == 2
    kept = onepass._Kept(2, 2 * 100)
    kept.add(np.zeros((60, 2), dtype=np.int64))
    kept.add(np.zeros((41, 2), dtype=np.int64))           # 101 rows > the budget: dropped
    assert not kept.ok and kept.blocks == []
    wide = onepass._Kept(2, 2 * 100 + 60)
    wide.add(np.zeros((60, 2), dtype=np.int64))
    wide.add(np.full((40, 2), 300, dtype=np.int64))       # two bytes an id from here: dropped
    assert not wide.ok
    big = onepass._Kept(1, 1 << 20)
    big.add(np.array([[2**31]], dtype=np.int64))         # not an int32: dropped
    assert not big.ok
    for col, r, got in zip(columns, rows, profs):
        _same_profile(got, generate._profile(got.name, col, None, r, 32, None, None))


def test_short_streams_are_read_once_and_equal():
    rng = np.random.default_rng()
    columns = [_stream(rng, 900) for _ in range(2)]
    profs, rows, reads = _capture(columns, rng, prefix=1000)
    assert reads == 1
    for col, r, got in zip(columns, rows, profs):
        _same_profile(got, generate._profile(got.name, col, None, r, 32, None, None))


@pytest.mark.parametrize("keep", [0, onepass.KEEP_BYTES])
def test_criteo_capture_on_the_real_sample_equals_in_memory(monkeypatch, tmp_path, keep):
    """The bundled real rows, with a prefix shorter than the stream: the same profiles as the
    in-memory path, read twice (no copy kept) or once (the int32 copy), and nothing written to
    the temporary directory."""
    monkeypatch.setattr(selection, "HOT_PREFIX", 600)
    monkeypatch.setattr(onepass, "IN_MEMORY", 600)          # two passes: 1999 rows > 600
    monkeypatch.setattr(onepass, "KEEP_BYTES", keep)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    tables = ["C1", "C3", "C9", "C20"]
    seen, again = [], []
    reader = read_criteo(BUNDLED_SAMPLE, tables=tables)
    monkeypatch.setattr(reader, "again", lambda progress: again.append(1) or
                        read_criteo(BUNDLED_SAMPLE, tables=tables))
    profs = generate.profiles_from_criteo(reader, on_rows=seen.append)
    assert sum(seen) == 1999 and again == ([] if keep else [1])
    assert list(tmp_path.iterdir()) == []
    sp = np.concatenate([c.sparse for c in read_criteo(BUNDLED_SAMPLE, tables=tables)])
    for j, got in enumerate(profs):
        col = np.ascontiguousarray(sp[:, j])
        ref = generate._profile(tables[j], col, None, int(col.max()) + 1, 32, None, None)
        _same_profile(got, ref)


def test_pass_one_state_is_o_distinct_not_o_rows():
    """Ten times the accesses over the same ids: the state (all but the fixed prefix) does not
    grow."""
    rng = np.random.default_rng()

    def state_bytes(n):
        t = onepass.TablePass("t", prefix=1024, probe=True)
        ids = rng.integers(0, 300, n)
        for c in np.array_split(ids, 50):
            t.feed(c)
        arrays = [t.counts, t.probe, t.hist, t.state.last, t.state.bits, t.state.tree,
                  t.batches.last, t.batches.pending]
        return sum(a.nbytes for a in arrays)

    small, large = state_bytes(20_000), state_bytes(200_000)
    assert large <= small * 1.01 and large < 1 << 20


# ------------------------------------------------------------------ streaming pieces
def test_dist_bin_equals_its_definition():
    """dist_bin against the bin edges: bin i holds distances in [e[i], e[i+1]), on every
    power of two and its neighbours and on random distances of every size."""
    rng = np.random.default_rng()
    edges = _reuse.bin_edges(_reuse.MAX_BINS)
    p = 2 ** np.arange(63, dtype=np.int64)
    ds = np.concatenate([np.arange(1024), p, p - 1, p[1:] + 1,
                         rng.integers(0, 2 ** 62, 5000), rng.integers(0, 1 << 20, 5000)])
    ref = np.searchsorted(edges, ds, side="right") - 1
    got = np.array([_reuse.dist_bin(np.int64(d)) for d in ds])
    np.testing.assert_array_equal(got, ref)
    hist, cold = _reuse.histogram(np.concatenate([ds, [-1, -1]]))
    assert cold == 2 and hist.sum() == ds.size
    np.testing.assert_array_equal(hist, np.bincount(ref)[:hist.size])



def test_gap_bin_equals_dist_bin():
    """The window pass's branch-free bin of a normalised gap against reuse.dist_bin, on 0,
    every power of two and its neighbours, and random values of every size."""
    from dlrmprof.tracegen.profile import _gap_bin

    rng = np.random.default_rng()
    p = 2 ** np.arange(63, dtype=np.int64)
    qs = np.concatenate([np.arange(4096), p, p - 1, p[1:] + 1, rng.integers(0, 2 ** 62, 5000),
                         rng.integers(0, 1 << 20, 5000)])
    for q in qs:
        assert _gap_bin(np.int64(q)) == _reuse.dist_bin(np.int64(q)), q


def test_window_state_with_every_id_hot_matches_the_plain_reference():
    """Every id hot (as on Criteo columns of a few hundred ids): many accesses per id and
    window, so each gap row and the wrap gaps are exercised; windows spanning many chunks
    (the open window's hot accesses carried across feeds) and chunks spanning windows."""
    rng = np.random.default_rng()
    for _ in range(12):
        u = int(rng.choice([1, 2, 7, 60, 400]))
        ids = _stream(rng, int(rng.integers(1, 20_000))) % u
        windows = int(rng.choice([1, 3, 7, 40]))
        counts = np.bincount(ids)
        distinct = int((counts > 0).sum())
        hot = int(rng.choice([distinct, distinct - 1, 4096]))
        _, hot_rank, k = hot_ranks(counts, distinct, hot)
        win = WindowState(hot_rank, k, len(ids), windows, len(counts))
        for c in _chunks(ids, rng, int(rng.choice([30, 700, 9000]))):
            win.feed(c)
        hot_win, tail_cold, tail_hist, hot_gap = win.arrays()
        r_hot, r_cold, r_dist, r_gaps, _ = _reference_windows(ids, hot, windows)
        np.testing.assert_array_equal(hot_win, r_hot)
        np.testing.assert_array_equal(tail_cold, r_cold)
        assert tail_hist.sum() == sum(len(v) for v in r_dist.values())
        got_gaps = {(int(r), int(b)): int(hot_gap[r, b]) for r, b in zip(*np.nonzero(hot_gap))}
        assert got_gaps == r_gaps


def test_pass_two_widens_kept_columns_as_numpy_does():
    """onepass._int64 (a narrow kept column widened into one reused buffer) against numpy's
    int64 copy, over columns of every kept width, growing and shrinking lengths, and int64
    columns (used as they are when contiguous)."""
    rng = np.random.default_rng()
    buf = np.empty(0, dtype=np.int64)
    for _ in range(40):
        dt = rng.choice([np.uint8, np.uint16, np.int32, np.int64])
        col = rng.integers(0, np.iinfo(dt).max, int(rng.integers(0, 3000))).astype(dt)
        if rng.random() < 0.3:
            col = col[::2]
        got, buf = onepass._int64(col, buf)
        assert got.dtype == np.int64 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, np.ascontiguousarray(col, dtype=np.int64))

def test_batch_stream_equals_batch_stats():
    rng = np.random.default_rng()
    for _ in range(10):
        ids = _stream(rng, int(rng.integers(1, 60_000)))
        s = BatchStream()
        for c in _chunks(ids, rng, 20_000):
            s.feed(c)
        assert s.result() == batch_stats(ids)


def test_shards_stream_equals_shards_histogram():
    rng = np.random.default_rng()
    for _ in range(8):
        ids = _stream(rng, int(rng.integers(1, 40_000)))
        rate = float(rng.choice([0.5, 0.1]))
        ref = _reuse.shards_histogram(ids, rate)
        s = _reuse.ShardsStream(_reuse.shards_heavy(np.bincount(ids[::64])), rate)
        for c in _chunks(ids, rng, 5000):
            s.feed(c)
        got = s.result()
        np.testing.assert_array_equal(got[0], ref[0])
        assert got[1:] == ref[1:]


def test_build_profile_matches_windows_fed_in_chunks():
    rng = np.random.default_rng()
    ids = _stream(rng, 4000)
    prof = build_profile("x", ids, hot=16)
    counts = np.bincount(ids)
    _, hot_rank, k = hot_ranks(counts, prof.distinct, 16)
    win = WindowState(hot_rank, k, len(ids), 32, len(counts))
    for c in _chunks(ids, rng, 50):
        win.feed(c)
    for a, b in zip(win.arrays(), (prof.hot_win, prof.tail_cold, prof.tail_hist, prof.hot_gap)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("placement,hot", [("classes", 0), ("half-octave classes", 0),
                                           ("budgets", 0), ("hot set and budgets", 4)])
@pytest.mark.parametrize("keep", [True, False])
def test_two_pass_capture_of_the_class_model_equals_the_in_memory_profile(monkeypatch,
                                                                          placement, hot, keep):
    """Where the selection chooses the class model, pass 2 measures its classes
    (`classes.ClassState`), or the budget model, pass 2 builds it from the whole stream's
    counts; the profile equals the in-memory path's (which builds it from the whole column):
    every array, the selection record, the model; read once or twice."""
    from dlrmprof.tracegen.budgets import PLACEMENTS as BUDGETS
    from dlrmprof.tracegen.classes import PLACEMENTS

    real = selection.select_hot

    def forced(name, sub, sub_lengths, rows, windows, sub_hc, candidates=(0,), seed=12345):
        prof, sel = real(name, sub, sub_lengths, rows, windows, sub_hc, (0,), seed)
        return prof, dict(sel, chosen=hot, placement=placement)

    monkeypatch.setattr(selection, "select_hot", forced)
    monkeypatch.setattr(selection, "HOT_PREFIX", 700)
    rng = np.random.default_rng()
    n = int(rng.integers(1500, 6000))
    columns = []
    while len(columns) < 2:     # the selection offers a hot set only below the distinct count
        col = _stream(rng, n)
        if np.unique(col).size > hot:
            columns.append(col)
    profs, rows, reads = _capture(columns, rng, 700, keep_bytes=12 * n if keep else 0)
    assert reads == (1 if keep else 2)
    for col, r, got in zip(columns, rows, profs):
        if placement in BUDGETS:
            assert got.extra["model"] == "budgets" and got.count_values.size >= 1
            assert got.hot_k == hot
        else:
            assert got.extra["model"] == "classes" and got.class_cold.shape[1] >= 1
            assert got.extra["hot_selection"]["placement"] in PLACEMENTS
        _same_profile(got, generate._profile(got.name, col, None, r, 32, None, None))
        got.validate()


def _width(top: int) -> int:
    return 1 if top < 1 << 8 else 2 if top < 1 << 16 else 4


@pytest.mark.parametrize("seed", range(4))
def test_kept_copy_gives_back_its_columns_across_blocks(monkeypatch, seed):
    """Random chunks straddling blocks of 4096 rows, each table's ids growing past one and two
    bytes at random rows (the block then takes no more rows and the next is wider), one table
    constant: the columns come back equal, each at the narrowest width that held its ids,
    and the bytes counted against the budget are those widths'."""
    rng = np.random.default_rng(seed)
    monkeypatch.setattr(onepass, "_BLOCK_BYTES", 1)            # the smallest blocks
    n, tables = int(rng.integers(1, 20_000)), int(rng.integers(1, 5))
    rows = np.zeros((n, tables), dtype=np.int64)
    for t in range(tables - 1):
        for top in sorted(rng.choice([1 << 8, 1 << 16, 1 << 31], int(rng.integers(0, 3)))):
            at = int(rng.integers(0, n))
            rows[at:, t] = rng.integers(0, top, n - at)
    rows[:, -1] = 7
    kept = onepass._Kept(tables, 1 << 30)
    lo, used = 0, 0
    while lo < n:
        hi = min(n, lo + int(rng.integers(1, 3000)))
        kept.add(rows[lo:hi])
        used += (hi - lo) * sum(_width(int(m)) for m in rows[:hi].max(axis=0))
        lo = hi
    assert kept.ok and kept.used == used
    blocks = list(kept.columns())
    got = np.concatenate([np.stack([c.astype(np.int64) for c in blk]) for blk in blocks], axis=1)
    assert np.array_equal(got, rows.T)
    assert [c.dtype.itemsize for c in blocks[-1]] == [_width(int(m)) for m in rows.max(axis=0)]
    assert all(c.dtype.kind in "ui" for blk in blocks for c in blk) and not kept.blocks
