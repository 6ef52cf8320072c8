import numpy as np
import pytest

from dlrmprof.profile import cachesim


@pytest.mark.parametrize("size, ways", [(64 * 16, 4), (64 * 64, 8), (64 * 24, 3), (64 * 8, 8),
                                        (64 * 32, 1)])
def test_lru_matches_reference(size, ways):
    rng = np.random.default_rng(size + ways)
    lines = rng.zipf(1.3, size=5000) % 300
    fast = cachesim.lru_misses(lines, size, ways)
    ref = cachesim.reference_lru_misses(lines.tolist(), size, ways)
    assert fast.tolist() == ref


def test_lru_known_pattern():
    # 2 sets x 2 ways: lines 0,2,4 map to set 0; cycling three lines through two ways always
    # misses under LRU; line 1 (set 1) hits after its first touch
    lines = np.array([0, 2, 4, 0, 2, 4, 1, 1, 1])
    assert cachesim.lru_misses(lines, 4 * 64, 2).tolist() == [0, 2, 4, 0, 2, 4, 1]


def test_row_lines_straddles():
    # 48-byte rows: row 1 occupies bytes 48..95 -> lines 0 and 1
    assert cachesim.row_lines(np.array([0, 1, 2]), 48).tolist() == [0, 0, 1, 1, 2]
    assert cachesim.row_lines(np.array([3]), 256, base=4096).tolist() == [76, 77, 78, 79]


def test_fully_associative_agrees_with_one_set_simulation():
    pytest.importorskip("dlrmprof.tracegen.reuse")
    rng = np.random.default_rng(1)
    lines = (rng.zipf(1.2, size=20000) % 5000).astype(np.int64)
    for cap in (16, 128, 1024):
        misses = cachesim.lru_misses(lines, cap * 64, cap)   # one set, cap ways
        rates, cold, _ = cachesim.fully_associative_hit_rates(lines, [cap * 64])
        assert rates[0] == pytest.approx(1 - misses.size / lines.size)
        assert cold == np.unique(lines).size


def test_hierarchy_and_op():
    caches = [{"level": 1, "type": "data", "size_bytes": 1024, "ways": 4, "line_bytes": 64},
              {"level": 1, "type": "instruction", "size_bytes": 1024, "ways": 4},
              {"level": 2, "type": "unified", "size_bytes": 8192, "ways": 8, "line_bytes": 64}]
    rng = np.random.default_rng(2)
    a = rng.integers(0, 50, size=3000)           # hot table: 50 rows x 64 B fits in L2
    b = rng.integers(0, 100000, size=3000)       # cold table: nearly every lookup misses
    res = cachesim.simulate_op([(a, 64, 50), (b, 64, 100000)], caches)
    l1, l2 = res["levels"]
    assert [lv["level"] for lv in res["levels"]] == [1, 2]       # instruction cache skipped
    assert l1["accesses"] == 6000 and l2["accesses"] == 6000 - l1["hits"]
    assert res["dram_lines"] == l2["accesses"] - l2["hits"]
    assert res["dram_bytes"] == res["dram_lines"] * 64
    assert res["row_bytes_total"] == 6000 * 64
    assert 0.4 < res["dram_bytes"] / res["row_bytes_total"] < 0.55
    # sampling only the first lookups scales the DRAM bytes to the whole op
    part = cachesim.simulate_op([(a, 64, 50), (b, 64, 100000)], caches, max_lookups=3000)
    assert part["sampled"] and part["lookups"] == 3000
    assert part["row_bytes_total"] == res["row_bytes_total"]


class _Profile:
    """Minimal stand-in for tracegen.LocalityProfile.mrc (exact, from reuse distances)."""

    def __init__(self, ids):
        from dlrmprof.tracegen import reuse_distances
        self.d = reuse_distances(np.asarray(ids))

    def mrc(self, sizes=None):
        sizes = np.array([1, 2, 4, 8, 16, 32, 64, 128]) if sizes is None else sizes
        return sizes, np.array([(self.d[self.d >= 0] < s).sum() / self.d.size for s in sizes])


class _Meta:
    def __init__(self, name, rows):
        self.name, self.rows = name, rows


class _Trace:
    def __init__(self, tables):
        self.tables = tuple(_Meta(f"C{i + 1}", rows) for i, (_, rows) in enumerate(tables))
        self._ix = [ix for ix, _ in tables]
        self.profiles = tuple(_Profile(ix) for ix in self._ix)

    def table_bags(self, t):
        return self._ix[t], np.arange(self._ix[t].size + 1)


def test_simulate_trace_with_trace_mrc():
    pytest.importorskip("dlrmprof.tracegen.reuse")
    caches = [{"level": 1, "type": "data", "size_bytes": 1024, "ways": 16, "line_bytes": 64},
              {"level": 2, "type": "unified", "size_bytes": 4096, "ways": 64, "line_bytes": 64}]
    rng = np.random.default_rng(3)
    tr = _Trace([(rng.integers(0, 100, 4000), 100), (rng.integers(0, 5000, 4000), 5000)])
    out = cachesim.simulate_trace(tr, caches, dim=16)
    assert set(out) == {"emb.C1", "emb.C2", "emb.all"}
    for name in ("emb.C1", "emb.C2"):
        sim = out[name]
        # 64-byte rows, 64-way sets: row-level MRC == line-level fully-associative rates
        assert sim["trace_mrc"]["hit_rates"] == pytest.approx(
            [lv["fa_cumulative_hit_rate"] for lv in sim["levels"]])
        assert sim["trace_mrc"]["capacities_bytes"] == [1024, 5120]
    assert out["emb.all"]["lookups"] == 8000
    assert out["emb.C1"]["levels"][1]["cumulative_hit_rate"] > \
        out["emb.C2"]["levels"][1]["cumulative_hit_rate"]
