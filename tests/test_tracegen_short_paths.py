"""The short-stream paths that spare a selection work or a cold start a kernel: each gives
what the general path gives."""

from __future__ import annotations

import numpy as np
import pytest

from dlrmprof.tracegen import reuse, windows
from dlrmprof.tracegen.profile import build_profile


@pytest.mark.parametrize("seed", range(4))
def test_short_histogram_matches_bin_counts_kernel(seed):
    """`reuse.histogram` below SHORT_HISTOGRAM (a search of the bin edges) gives the
    kernel's bins and cold count: exact bins, sub-bins, first touches, the top of int64."""
    rng = np.random.default_rng(seed)
    for _ in range(50):
        n = int(rng.integers(0, 3000))
        d = rng.integers(-1, 2 ** int(rng.integers(1, 63)), n)
        d[rng.random(n) < 0.3] = -1
        d[: min(n, 300)] = np.arange(min(n, 300)) - 1
        if n and seed == 3:
            d[-1] = 2 ** 63 - 1
        assert d.shape[0] < reuse.SHORT_HISTOGRAM
        hist, cold = reuse.histogram(d)
        want, want_cold = reuse._bin_counts(d, reuse.MAX_BINS)
        nz = np.flatnonzero(want)
        np.testing.assert_array_equal(hist, want[: int(nz[-1]) + 1 if nz.size else 0])
        assert cold == want_cold and hist.dtype == np.int64


def _profile(seed: int, n: int = 3000, hot: int = 16):
    ids = np.random.default_rng(seed).zipf(1.2, n) % 500
    return build_profile("t", ids, windows=8, hot=hot)


def test_window_tables_kept_for_the_same_profile_and_length():
    """The last tables come back for the same profile and length (a finalist's seeds), and
    equal a fresh build; another profile, length or a too-large table builds anew."""
    p, q = _profile(0), _profile(1)
    a = windows.window_tables(p, p.accesses)
    assert windows.window_tables(p, p.accesses) is a
    fresh = windows._build_tables(p, p.accesses)
    for x, y in zip(a, fresh):
        np.testing.assert_array_equal(x, y)
    assert windows.window_tables(q, q.accesses) is not a
    assert windows.window_tables(p, p.accesses) is not a       # one entry: rebuilt
    b = windows.window_tables(p, p.accesses * 2)
    assert b.bounds[-1] == p.accesses * 2 and windows.window_tables(p, p.accesses) is not b


def test_window_tables_too_large_not_kept(monkeypatch):
    monkeypatch.setattr(windows, "CACHED_TABLE_BYTES", 0)
    p = _profile(2)
    assert windows.window_tables(p, p.accesses) is not windows.window_tables(p, p.accesses)


def test_window_tables_source_length_path_matches_scaled_path():
    """At the source's own length `plan_windows` skips the scaling: the source's own
    windows, hot counts and first touches (copies), as the scaling by 1 gives them."""
    for seed in range(3):
        p = _profile(seed, n=2000 + 37 * seed, hot=4 + 20 * seed)
        bounds, hot, cold, src_w = windows.plan_windows(p, p.accesses)
        np.testing.assert_array_equal(src_w, np.arange(p.num_windows))
        np.testing.assert_array_equal(hot, p.hot_win)
        np.testing.assert_array_equal(cold, p.tail_cold)
        assert hot is not p.hot_win and cold is not p.tail_cold     # copies
        assert bounds[-1] == p.accesses and np.all(np.diff(bounds) <= p.window_size)


def test_selection_mean_is_numpy_mean():
    """The selection's record averages its figures as `np.mean` does, to the bit (its
    records are part of the trace file's bytes)."""
    from dlrmprof.tracegen.selection import _mean

    rng = np.random.default_rng(5)
    for n in range(1, 11):
        for _ in range(2000):
            x = (rng.standard_normal(n) * 10.0 ** rng.integers(-6, 6, n)).tolist()
            assert _mean(x) == float(np.mean(x))
    for x in ([-0.0], [-0.0, -0.0], [0.0, -0.0], [-0.0, 1e-300, -1e-300], [1e300, -1e300, 1.0]):
        assert str(_mean(x)) == str(float(np.mean(x)))
