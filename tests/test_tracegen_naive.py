"""The naive baseline's kernel (`naive.naive_core`) against `synth._synth_core` run with the
naive model's arguments: the same ids, first touches and clamps on random histograms,
including tables too small for the stream's first touches and an empty histogram."""

import numpy as np
import pytest

from dlrmprof.tracegen import reuse, synth
from dlrmprof.tracegen.naive import naive_core
from dlrmprof.tracegen.profile import build_profile


def _by_synth_core(n, cold, hist, seed, rows):
    cdf = np.cumsum(hist)[None, :] if hist.size else np.zeros((1, 0), dtype=np.int64)
    return synth._synth_core(
        n, np.array([0, n], dtype=np.int64), np.zeros((0, 1), dtype=np.int64),
        np.zeros((0, 0), dtype=np.int64), reuse.bin_edges(0),
        np.array([cold], dtype=np.int64), np.ascontiguousarray(cdf),
        reuse.bin_edges(hist.size), np.ascontiguousarray(cdf[0]), seed, rows, 1, True, 0)


@pytest.mark.parametrize("case", range(8))
def test_naive_core_matches_synth_core(case):
    rng = np.random.default_rng(case)
    n = int(rng.integers(1, 60_000))
    nb = [0, 1, 5, 40, 300, 700, 300, 80][case]
    hist = rng.integers(0, 50, nb).astype(np.int64) * (rng.random(nb) < 0.7)
    cold = int(rng.integers(0, n + 1)) if case != 5 else 3
    rows = [10 ** 6, 5, 1, 200, 10 ** 6, 40, 3000, 10 ** 6][case]
    seed = int(rng.integers(0, 2 ** 63))
    want = _by_synth_core(n, cold, hist, seed, rows)
    got = naive_core(n, cold, np.cumsum(hist), reuse.bin_edges(hist.size), seed, rows)
    np.testing.assert_array_equal(got[0], want[0])
    assert tuple(int(x) for x in got[1:]) == tuple(int(x) for x in want[1:])


def test_synthesize_naive_is_deterministic_and_follows_the_histogram():
    rng = np.random.default_rng(9)
    ids = (rng.zipf(1.2, 40_000) % 3000).astype(np.int64)
    prof = build_profile("t", ids)
    a = synth.synthesize_naive(prof, seed=3)
    assert np.array_equal(a, synth.synthesize_naive(prof, seed=3))
    assert abs(np.unique(a).size - prof.cold) < 0.05 * prof.cold    # first touches kept
