"""The short-stream paths that spare a selection work or a cold start a kernel: each gives
what the general path gives."""

from __future__ import annotations

import numpy as np

from dlrmprof.tracegen import windows
from dlrmprof.tracegen.profile import build_profile


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
