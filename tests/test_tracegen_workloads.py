"""Reference workloads: shapes, determinism, and the structure each one claims to have."""

import numpy as np
import pytest

from dlrmprof.tracegen import reuse, workloads as w


def short_reuse(ids, d):
    dist = reuse.reuse_distances(ids)
    return float(((dist >= 0) & (dist < d)).mean())


def top_share(ids, k=10):
    return float(np.sort(np.bincount(ids))[-k:].sum() / ids.size)


GENERATORS = {
    "irm": lambda seed: w.irm_zipf(5000, 800, 1.0, seed),
    "drift": lambda seed: w.drifting_zipf(5000, 800, 1.0, 0.01, seed),
    "sessions": lambda seed: w.bursty_sessions(5000, 800, 1.0, 8, 16, seed),
    "log": lambda seed: np.concatenate(w.user_item_log(5000, 800, 900, seed)),
    "scans": lambda seed: w.scans(5000, 100, 0.1, seed),
}
UNIVERSE = {"irm": 800, "drift": 800, "sessions": 800, "log": 900, "scans": 800}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_shape_range_and_determinism(name):
    gen = GENERATORS[name]
    a, b, c = gen(1), gen(1), gen(2)
    assert a.dtype == np.int64 and a.ndim == 1
    assert a.size == (10000 if name == "log" else 5000)
    assert a.min() >= 0 and a.max() < UNIVERSE[name]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_no_global_rng():
    np.random.seed(0)
    before = np.random.random()
    np.random.seed(0)
    w.bursty_sessions(1000, 100, 1.0, 5, 4, 3)
    w.user_item_log(1000, 100, 100, 3)
    w.scans(1000, 50, 0.1, 3)
    assert np.random.random() == before


def test_irm_zipf_popularity():
    ids = w.irm_zipf(200_000, 1000, 1.0, 0)
    counts = np.sort(np.bincount(ids, minlength=1000))[::-1]
    p = 1.0 / np.arange(1, 1001)
    p /= p.sum()
    # the top ranks' shares match Zipf(1) within sampling error
    np.testing.assert_allclose(counts[:5] / ids.size, p[:5], rtol=0.05)
    assert np.unique(w.irm_zipf(20_000, 50, 0.0, 1)).size == 50      # a = 0: uniform


def test_sessions_keep_short_reuse_that_irm_lacks():
    s = w.bursty_sessions(60_000, 5000, 1.0, 10, 32, 4)
    shuffled = np.random.default_rng(0).permutation(s)   # same popularity, no time order
    irm = w.irm_zipf(60_000, 5000, 1.0, 4)
    assert short_reuse(s, 64) > 2 * short_reuse(shuffled, 64)
    assert short_reuse(s, 64) > 2 * short_reuse(irm, 64)
    # fewer visits than events: distinct users well below an IRM stream of the same length
    assert np.unique(s).size < 0.6 * np.unique(irm).size
    # longer sessions, more short reuse; more concurrent sessions, the reuse moves further out
    assert short_reuse(w.bursty_sessions(60_000, 5000, 1.0, 40, 32, 4), 64) > short_reuse(s, 64)
    wide = w.bursty_sessions(60_000, 5000, 1.0, 10, 512, 4)
    assert short_reuse(wide, 16) < short_reuse(s, 16)


def test_drifting_zipf():
    still = w.drifting_zipf(50_000, 4000, 1.0, 0.0, 7)
    assert np.array_equal(still, w.irm_zipf(50_000, 4000, 1.0, 7))
    moving = w.drifting_zipf(50_000, 4000, 1.0, 0.002, 7)     # 100 shifts, 10 per window
    # the hottest ids of the first and last tenth differ; each window is still skewed
    first, last = moving[:5000], moving[-5000:]
    top_first = set(np.argsort(np.bincount(first, minlength=4000))[-10:])
    top_last = set(np.argsort(np.bincount(last, minlength=4000))[-10:])
    assert len(top_first & top_last) <= 2
    assert top_share(first) > 0.5 * top_share(still[:5000])
    assert top_share(moving) < 0.7 * top_share(still)
    # in a large universe the hot positions keep reaching ids not yet used
    wide0 = w.drifting_zipf(50_000, 200_000, 1.0, 0.0, 7)
    wide1 = w.drifting_zipf(50_000, 200_000, 1.0, 0.5, 7)
    assert np.unique(wide1).size > 1.5 * np.unique(wide0).size


def test_user_item_log_repeats_and_sessions():
    users, items = w.user_item_log(60_000, 3000, 20_000, 5, repeat=0.5)
    _, items0 = w.user_item_log(60_000, 3000, 20_000, 5, repeat=0.0)
    assert users.shape == items.shape == (60_000,)
    assert users.max() < 3000 and items.max() < 20_000
    # repeats inside a session show up as reuse within a few sessions' worth of events
    assert short_reuse(items, 256) > short_reuse(items0, 256) + 0.15
    assert short_reuse(users, 64) > 2 * short_reuse(np.random.default_rng(1).permutation(users),
                                                    64)
    # a session's first event never repeats: with repeat = 1 every session views one item
    users1, items1 = w.user_item_log(20_000, 3000, 20_000, 5, repeat=1.0, mean_session=5)
    assert np.unique(items1).size < 0.35 * np.unique(items0[:20_000]).size


def test_scans():
    span, ranges = 1000, 8
    clean = w.scans(80_000, span, 0.0, 3, ranges=ranges, jump=0.0)
    # without jumps or noise every scan walks a whole range from its start
    scans_ = clean.reshape(-1, span)
    assert np.all(scans_ % span == np.arange(span))
    assert np.all(scans_ // span == (scans_[:, :1] // span))
    # LRU thrashes below one range and holds everything at the universe's size
    rates = reuse.exact_hit_rates(reuse.reuse_distances(clean), [span // 2, ranges * span])
    assert rates[0] == 0.0 and rates[1] > 0.85
    noisy = w.scans(80_000, span, 0.2, 3, ranges=ranges, jump=0.01)
    breaks = np.mean(np.diff(noisy) != 1)
    assert 0.3 < breaks < 0.45      # about 2 * noise (leaving and rejoining) + jumps + ends


@pytest.mark.parametrize("call, match", [
    (lambda: w.irm_zipf(0, 10, 1.0, 0), "n"),
    (lambda: w.irm_zipf(10, 10, -1.0, 0), "a"),
    (lambda: w.drifting_zipf(10, 10, 1.0, -0.1, 0), "drift"),
    (lambda: w.drifting_zipf(10, 10, 1.0, float("inf"), 0), "drift"),
    (lambda: w.irm_zipf(10, 10, float("nan"), 0), "a"),
    (lambda: w.bursty_sessions(10, 10, 1.0, 0.5, 4, 0), "mean_session"),
    (lambda: w.bursty_sessions(10, 10, 1.0, 3, 0, 0), "concurrent"),
    (lambda: w.user_item_log(10, 10, 10, 0, repeat=1.5), "repeat"),
    (lambda: w.scans(10, 0, 0.1, 0), "span"),
    (lambda: w.scans(10, 5, 2.0, 0), "noise"),
    (lambda: w.irm_zipf(10.5, 10, 1.0, 0), "n"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
