"""FIFO / LFU / set-associative LRU hit rates and batch statistics against plain references."""

import numpy as np
import pytest

from dlrmprof.tracegen import batches, policies, reuse

# ---------------------------------------------------------------- plain references
# (policies.reference_hit_rate: set-per-way OrderedDicts, a FIFO list, an LFU dict scanned
# for the (count, last use) minimum; the benchmark checks against the same functions)
def ref_fifo(ids, c):
    return policies.reference_hit_rate("fifo", ids, c)


def ref_lfu(ids, c):
    return policies.reference_hit_rate("lfu", ids, c)


def ref_setassoc(ids, c, ways=32):
    return policies.reference_hit_rate("setassoc", ids, c, ways)


def ref_mix(x):
    return policies._ref_mix(x)


def streams():
    for seed in (0, 1, 2):
        rng = np.random.default_rng(seed)
        yield f"zipf{seed}", (rng.zipf(1.2, 3000) % 400).astype(np.int64)
        yield f"uniform{seed}", rng.integers(0, 90, 3000).astype(np.int64)
    # large, sparse raw ids (exercise the dense remap) with repeats
    rng = np.random.default_rng(7)
    pool = rng.integers(0, 2 ** 62, 150)
    yield "sparse", pool[rng.zipf(1.3, 2000) % 150]


SIZES = list(range(1, 65))


# ---------------------------------------------------------------- simulators
@pytest.mark.parametrize("name, ids", list(streams()))
def test_fifo_lfu_match_reference(name, ids):
    lst = ids.tolist()
    fifo = policies.fifo_hit_rates(ids, SIZES)
    lfu = policies.lfu_hit_rates(ids, SIZES)
    for k, c in enumerate(SIZES):
        assert fifo[k] == pytest.approx(ref_fifo(lst, c), abs=1e-12), (name, "fifo", c)
        assert lfu[k] == pytest.approx(ref_lfu(lst, c), abs=1e-12), (name, "lfu", c)


@pytest.mark.parametrize("name, ids", list(streams()))
def test_setassoc_matches_reference(name, ids):
    lst = ids.tolist()
    sizes = SIZES + [96, 100, 128, 200]
    got = policies.setassoc_hit_rates(ids, sizes)
    for k, c in enumerate(sizes):
        assert got[k] == pytest.approx(ref_setassoc(lst, c), abs=1e-12), (name, c)
    # a small way count exercises many sets below the distinct count
    got4 = policies.setassoc_hit_rates(ids, [4, 8, 12, 64], ways=4)
    for k, c in enumerate([4, 8, 12, 64]):
        assert got4[k] == pytest.approx(ref_setassoc(lst, c, 4), abs=1e-12), (name, c)


def test_setassoc_fully_associative_is_exact_lru():
    rng = np.random.default_rng(3)
    ids = (rng.zipf(1.1, 20000) % 3000).astype(np.int64)
    sizes = [1, 2, 5, 16, 33, 64, 100, 256, 1000]
    lru = reuse.exact_hit_rates(reuse.reuse_distances(ids), sizes)
    got = policies.setassoc_hit_rates(ids, sizes, ways=max(sizes))
    np.testing.assert_allclose(got, lru, rtol=0, atol=1e-12)


def test_mix64_is_splitmix64():
    x = np.array([0, 1, 2, 12345, 2 ** 62 + 17], dtype=np.int64)
    assert policies.mix64(x).tolist() == [ref_mix(int(v)) for v in x]
    # splitmix64's first output from seed 0 is the finaliser of its increment
    gamma = np.array([0x9E3779B97F4A7C15], dtype=np.uint64)
    assert int(policies.mix64(gamma)[0]) == 0xE220A8397B1DCDAF


def test_policy_known_patterns():
    # cycling 3 ids through 2 entries: FIFO and LRU always miss; LFU keeps the first two
    # (count 1 each, ties evicted least recently used, so the newcomer is the next victim)
    ids = np.array([0, 1, 2] * 10)
    assert policies.fifo_hit_rates(ids, [2]).tolist() == [0.0]
    assert policies.setassoc_hit_rates(ids, [2]).tolist() == [0.0]
    assert policies.lfu_hit_rates(ids, [2])[0] == pytest.approx(ref_lfu(ids.tolist(), 2))
    # FIFO does not reorder on a hit: 0 is evicted by the third distinct id though just used
    seq = np.array([0, 1, 0, 2, 0])
    assert policies.fifo_hit_rates(seq, [2]).tolist() == [1 / 5]
    # sizes at or above the distinct count: compulsory misses only
    ids = np.array([5, 6, 5, 7, 6, 5])
    for f in (policies.fifo_hit_rates, policies.lfu_hit_rates, policies.setassoc_hit_rates):
        assert f(ids, [3, 10, 2 ** 40]).tolist() == [0.5, 0.5, 0.5]   # no 2^35-set table


def test_belady_anomaly_fifo():
    # the classic sequence where FIFO with 4 frames misses more than with 3
    seq = np.array([1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5])
    r = policies.fifo_hit_rates(seq, [3, 4])
    assert r[0] * 12 == pytest.approx(3) and r[1] * 12 == pytest.approx(2)


def test_lfu_has_no_inclusion_property():
    """LFU with in-cache frequency is not a stack algorithm: a larger cache can hit less, so
    its curve needs a pass per size (one reuse-style pass for all sizes would be wrong)."""
    seq = np.array([0, 2, 0, 4, 1, 2, 3, 2, 3, 4, 0, 4, 0])
    r = policies.lfu_hit_rates(seq, [2, 3])
    assert r[0] * 13 == pytest.approx(4) and r[1] * 13 == pytest.approx(3)
    assert [policies.reference_hit_rate("lfu", seq, c) * 13 for c in (2, 3)] == \
        pytest.approx([4, 3])


def test_policy_mrcs_and_prefix():
    rng = np.random.default_rng(5)
    ids = (rng.zipf(1.2, 5000) % 700).astype(np.int64)
    sizes = reuse.mrc_sizes(700)
    m = policies.policy_mrcs(ids, sizes)
    assert set(m) == {"fifo", "lfu", "setassoc32"}
    assert m["fifo"] == policies.fifo_hit_rates(ids, sizes).tolist()
    p = policies.policy_mrcs(ids, sizes, max_accesses=1000)
    assert p["lfu"] == policies.lfu_hit_rates(ids[:1000], sizes).tolist()
    assert policies.fifo_hit_rates([], [1, 2]).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("bad", [np.array([1, -2, 3]), np.array([[1, 2]]),
                                 np.array([1.0, 2.0])])
def test_bad_ids(bad):
    for f in (policies.fifo_hit_rates, policies.lfu_hit_rates, policies.setassoc_hit_rates,
              policies.policy_mrcs):
        with pytest.raises(ValueError):
            f(bad, [1, 2])


def test_bad_sizes_and_ways():
    ids = np.arange(10)
    with pytest.raises(ValueError, match="sizes"):
        policies.fifo_hit_rates(ids, [0, 2])
    with pytest.raises(ValueError, match="sizes"):
        policies.lfu_hit_rates(ids, [1.5])
    with pytest.raises(ValueError, match="ways"):
        policies.setassoc_hit_rates(ids, [4], ways=0)
    with pytest.raises(ValueError, match="max_accesses"):
        policies.policy_mrcs(ids, [4], max_accesses=0)


# ---------------------------------------------------------------- batches
def ref_batch(ids, offsets, bs):
    nbags = len(offsets) - 1
    nb = nbags // bs
    sets = [set(ids[offsets[b * bs]:offsets[(b + 1) * bs]]) for b in range(nb)]
    ratios = [len(sets[b] & sets[b - 1]) / len(sets[b]) for b in range(1, nb) if sets[b]]
    return nb, sum(len(s) for s in sets) / nb, (sum(ratios) / len(ratios) if ratios else 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_stats_match_reference(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 6, 3000)
    lengths[rng.integers(0, 3000, 300)] = 0          # empty bags occur
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = rng.integers(0, 2 ** 40, 500)[rng.zipf(1.2, int(offsets[-1])) % 500]
    got = batches.batch_stats(ids, offsets, (1, 7, 128, 1000, 2048))
    assert [g.batch_size for g in got] == [1, 7, 128, 1000]   # 2048: one full batch, left out
    for g in got:
        nb, u, ov = ref_batch(ids.tolist(), offsets.tolist(), g.batch_size)
        assert g.batches == nb
        assert g.unique_mean == pytest.approx(u, rel=1e-12)
        assert g.overlap_mean == pytest.approx(ov, rel=1e-12)
        assert batches.BatchStats.from_json(g.to_json()) == g


def test_batch_stats_one_id_per_bag():
    ids = np.array([0, 1, 1, 2, 2, 3, 9, 9, 9])
    got = batches.batch_stats(ids, None, (3,))
    # batches {0,1}, {2}, {3,9}: unique 2, 1, 2; overlaps 0/1, 0/2
    assert got == (batches.BatchStats(3, 3, 5 / 3, 0.0),)
    got = batches.batch_stats(np.array([4, 5, 4, 5, 4, 6]), None, (2,))
    assert got[0].overlap_mean == pytest.approx((1.0 + 0.5) / 2)


def test_batch_stats_bad_offsets():
    ids = np.arange(10)
    for off in ([0, 5, 9], [1, 5, 10], [0, 6, 4, 10], np.zeros((2, 2), dtype=int),
                [0.0, 10.0]):
        with pytest.raises(ValueError, match="offsets"):
            batches.batch_stats(ids, np.asarray(off), (1,))
    with pytest.raises(ValueError, match="ids"):
        batches.batch_stats(np.array([0, -1]), None, (1,))
    with pytest.raises(ValueError, match="batch_sizes"):
        batches.batch_stats(ids, None, (0,))


def _setassoc_by_lru_pass(ids, sizes, ways):
    """Hits by the plain kernel `_lru_pass` (a search of the ways on every access) on the keys
    dense_id * sets + mix64(id) % sets, one pass per size."""
    dense = reuse.dense_ids(ids)
    h = policies.mix64(ids)
    out = []
    for c in sizes:
        nsets, w = policies.setassoc_geometry(c, ways)
        keys = dense * nsets + (h % np.uint64(nsets)).astype(np.int64)
        out.append(ids.size - policies._lru_pass(keys, nsets, w, np.empty(ids.size, np.int64)))
    return np.array(out)


@pytest.mark.parametrize("seed", range(6))
def test_setassoc_one_pass_kernel_matches_lru_pass(seed):
    """`_setassoc_all` (each id's way, each set's recency list) against `_lru_pass` on random
    streams: skewed and uniform, power-of-two and other set counts, 1 to 32 ways."""
    rng = np.random.default_rng(seed)
    n, nid = int(rng.integers(2000, 20000)), int(rng.integers(5, 3000))
    ids = (rng.zipf(1.05 + 0.1 * seed, n) % nid if seed % 2 else
           rng.integers(0, nid, n)).astype(np.int64) * 7919
    ways = int(rng.choice([1, 3, 8, 32]))
    sizes = sorted({int(x) for x in rng.integers(1, 2 * nid, 12)} | {1, ways, 4 * ways})
    st = policies._Stream(ids)
    g = np.array([policies.setassoc_geometry(c, ways) for c in sizes], dtype=np.int64)
    got = policies._setassoc_all(st.ids, policies.mix64(st.raw), np.ascontiguousarray(g[:, 0]),
                                 np.ascontiguousarray(g[:, 1]), st.nid)
    np.testing.assert_array_equal(got, _setassoc_by_lru_pass(ids, sizes, ways))


@pytest.mark.parametrize("seed", range(4))
def test_lru_depths_match_exact_reuse_distances(seed):
    """`_lru_depths` (the top of the stack only) counts each distance below its depth as the
    exact reuse-distance pass does; set-associative sizes of one set come from it."""
    rng = np.random.default_rng(seed)
    ids = (rng.zipf(1.1 + 0.2 * seed, 5000) % (20 + 300 * seed)).astype(np.int64)
    dense = reuse.dense_ids(ids)
    depth = int(rng.integers(1, 40))
    d = reuse.reuse_distances(ids)
    want = np.bincount(d[(d >= 0) & (d < depth)], minlength=depth)
    np.testing.assert_array_equal(policies.lru_depths(dense, depth, int(dense.max()) + 1), want)
    sizes = [1, 3, 16, 32, 40, 64, 100]
    np.testing.assert_allclose(policies.setassoc_hit_rates(ids, sizes),
                               [ref_setassoc(ids.tolist(), c) for c in sizes], rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_depths_from_reuse_histogram_match_lru_depths(seed):
    """`_depths` (the reuse histogram's exact bins up to 256, `_lru_depths` past them) gives
    `_lru_depths`'s counts: the fully associative set sizes' hits do not depend on which."""
    rng = np.random.default_rng(100 + seed)
    n, nid = int(rng.integers(1, 6000)), int(rng.integers(1, 2000))
    ids = (rng.zipf(1.05 + 0.2 * seed, n) % nid if seed % 2 else
           rng.integers(0, nid, n)).astype(np.int64)
    st = policies._Stream(ids)
    for depth in (1, 2, 17, 32, 256, 257, 300):
        np.testing.assert_array_equal(policies._depths(st, depth),
                                      policies.lru_depths(st.ids, depth, st.nid))


def bursty(rng, n, nid, mean_run):
    """Runs of one id (geometric lengths of mean `mean_run`) over a skewed id draw."""
    runs = rng.geometric(1 / mean_run, n)
    ids = np.repeat(rng.zipf(1.3, n) % nid, runs)[:n]
    return ids.astype(np.int64)


@pytest.mark.parametrize("seed", range(6))
def test_policies_on_bursty_streams_match_reference(seed):
    """FIFO, LFU (counts left with gaps between them: long runs of one id) and set-associative
    LRU against the plain references on bursty streams, one id, a full table (sizes at and
    above the distinct count)."""
    rng = np.random.default_rng(seed)
    nid = int(rng.choice([1, 2, 3, 8, 40]))
    ids = bursty(rng, int(rng.integers(300, 1500)), nid, float(rng.choice([1.5, 4.0, 30.0])))
    if seed == 5:                       # one long run then short ones: gaps between counts
        ids = np.concatenate([np.full(50, 7), np.arange(8, 14), ids, np.full(40, 9)])
    lst = ids.tolist()
    distinct = len(set(lst))
    sizes = sorted({1, 2, 3, max(distinct - 1, 1), distinct, distinct + 1, 2 * distinct + 5})
    st = policies._Stream(ids)
    for pol, got in (("fifo", policies.fifo_hit_rates(ids, sizes)),
                     ("lfu", policies.lfu_hit_rates(ids, sizes))):
        want = [policies.reference_hit_rate(pol, lst, c) for c in sizes]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=pol)
    for ways in (1, 4, 32):
        got = policies.setassoc_hit_rates(ids, sizes, ways=ways)
        want = [ref_setassoc(lst, c, ways) for c in sizes]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"ways {ways}")
    np.testing.assert_array_equal(policies._depths(st, 300),
                                  np.bincount(np.clip(reuse.reuse_distances(ids), -1, 300) + 1,
                                              minlength=302)[1:301])
