import numpy as np
import pytest

from dlrmprof.dlrm.data import (CLICK_RATE, KaggleSource, RandomSource, TraceSource,
                                bundled_criteo_sample, load_criteo)
from dlrmprof.dlrm.train import accuracy, base_rate_metrics, logloss, roc_auc
from dlrmprof.errors import UserError
from dlrmprof.tracegen import build_profile, synthesize_trace


def make_trace(rows=(50, 300, 7), num_samples=40, seed=0, max_len=3):
    rng = np.random.default_rng(seed)
    profiles = []
    for t, r in enumerate(rows):
        lengths = rng.integers(1, max_len + 1, 200)
        ids = rng.integers(0, r, int(lengths.sum()))
        profiles.append(build_profile(f"T{t}", ids, lengths, rows=r))
    return synthesize_trace(profiles, source={"kind": "test"}, num_samples=num_samples,
                            seed=seed, compute_fidelity=False)


def test_trace_batches_follow_the_trace_and_wrap():
    tr = make_trace()
    rows = [m.rows for m in tr.tables]
    src = TraceSource(tr, 16, 13, rows, [m.name for m in tr.tables], seed=1)
    seen = {t: [] for t in range(3)}
    for _ in range(5):  # 80 samples = 2 passes over the 40-sample trace, wrapping mid-batch
        b = src.next_batch()
        assert b.dense.shape == (16, 13) and b.labels.shape == (16,)
        for t in range(3):
            i, o = b.indices[t], b.offsets[t]
            assert o[0] == 0 and o[-1] == len(i) and len(o) == 17
            seen[t].extend(i[o[k]:o[k + 1]].tolist() for k in range(16))
    for t in range(3):
        ti, to = tr.table_bags(t)
        bags = [ti[to[k]:to[k + 1]].tolist() for k in range(40)]
        assert seen[t] == bags + bags
    assert src.wraps == 2


def test_synthetic_dense_and_labels_are_seeded():
    tr = make_trace()
    rows = [m.rows for m in tr.tables]
    names = [m.name for m in tr.tables]
    a = TraceSource(tr, 40, 13, rows, names, seed=3).next_batch()
    b = TraceSource(tr, 40, 13, rows, names, seed=3).next_batch()
    c = TraceSource(tr, 40, 13, rows, names, seed=4).next_batch()
    assert np.array_equal(a.dense, b.dense) and not np.array_equal(a.dense, c.dense)
    assert a.dense.min() >= 0 and set(np.unique(a.labels)) <= {0.0, 1.0}
    big = RandomSource(4096, 13, [10], seed=0).next_batch()
    assert abs(big.labels.mean() - CLICK_RATE) < 0.03


def test_indices_outside_the_table_name_the_table():
    tr = make_trace()
    rows = [m.rows for m in tr.tables]
    rows[1] = 10  # the model's table T1 is smaller than the trace's indices
    with pytest.raises(UserError, match=r"t\.npz: table T1: index \d+ is outside the table's "
                                        r"10 rows"):
        TraceSource(tr, 8, 13, rows, [m.name for m in tr.tables], where="t.npz")


def test_batch_size_checks():
    tr = make_trace()
    rows = [m.rows for m in tr.tables]
    names = [m.name for m in tr.tables]
    with pytest.raises(UserError, match="--batch-size 41 is larger than the trace's 40"):
        TraceSource(tr, 41, 13, rows, names)
    with pytest.raises(UserError, match="--batch-size must be positive"):
        TraceSource(tr, 0, 13, rows, names)


def test_random_source_is_uniform_with_trace_bag_lengths():
    tr = make_trace()
    rows = [m.rows for m in tr.tables]
    src = RandomSource(40, 13, rows, seed=0, trace=tr)
    b = src.next_batch()
    for t in range(3):
        assert np.array_equal(b.offsets[t], tr.table_bags(t)[1])
        assert b.indices[t].min() >= 0 and b.indices[t].max() < rows[t]
    flat = RandomSource(2000, 13, [5], seed=0).next_batch()
    assert np.bincount(flat.indices[0], minlength=5).min() > 300


def test_kaggle_rows_split_and_batches():
    data = load_criteo([bundled_criteo_sample()])
    n = data.labels.shape[0]
    assert n > 1000 and data.dense.shape == (n, 13) and data.sparse.shape == (n, 26)
    assert data.dense.min() >= 0  # log(1 + max(x, 0))
    assert all(data.sparse[:, t].max() < r for t, r in enumerate(data.table_rows))
    train, test = data.split(0.2)
    assert train.labels.shape[0] + test.labels.shape[0] == n
    assert np.array_equal(test.labels, data.labels[-test.labels.shape[0]:])
    src = KaggleSource(train, 128)
    b = src.next_batch()
    assert b.offsets[0].tolist() == list(range(129)) and np.array_equal(b.labels,
                                                                         train.labels[:128])
    capped = load_criteo([bundled_criteo_sample()], max_rows=300, table_rows=50)
    assert capped.labels.shape[0] == 300 and max(capped.table_rows) <= 50


def test_metrics_against_brute_force():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(float)
    p = np.round(rng.random(300) * 0.5 + 0.4 * y, 2)  # ties on purpose
    pos, neg = p[y == 1], p[y == 0]
    brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) \
        / (len(pos) * len(neg))
    assert roc_auc(y, p) == pytest.approx(brute, rel=1e-12)
    assert roc_auc(np.ones(3), np.ones(3)) is None
    assert logloss([1, 0], [0.5, 0.5]) == pytest.approx(np.log(2))
    assert accuracy([1, 0, 1], [0.9, 0.2, 0.3]) == pytest.approx(2 / 3)
    base = base_rate_metrics(np.array([1, 0, 0, 0.0]), np.array([1, 0.0]))
    assert base["rate"] == 0.25 and base["auc"] == 0.5 and base["accuracy"] == 0.5


def test_batch_at_cuts_any_sample_range_the_same_in_every_source():
    """serve-bench's instances cut batches by position: the same samples as next_batch, the
    same batch for the same (start, n) in any process, wrapping at the trace's end."""
    tr = make_trace()
    rows = [m.rows for m in tr.tables]
    names = [m.name for m in tr.tables]
    src = TraceSource(tr, 16, 13, rows, names, seed=1)
    seq = [src.next_batch() for _ in range(3)]          # samples 0..47, wrapping at 40
    for k, b in enumerate(seq):
        cut = TraceSource(tr, 16, 13, rows, names, seed=1).batch_at(16 * k, 16)
        for t in range(3):
            assert np.array_equal(cut.indices[t], b.indices[t])
            assert np.array_equal(cut.offsets[t], b.offsets[t])
    a, b = src.batch_at(35, 10), TraceSource(tr, 16, 13, rows, names, seed=1).batch_at(35, 10)
    assert np.array_equal(a.dense, b.dense) and np.array_equal(a.labels, b.labels)
    assert a.offsets[0][-1] == len(a.indices[0]) and len(a.offsets[0]) == 11
    with pytest.raises(ValueError):
        src.batch_at(0, 41)
    r1 = RandomSource(8, 13, rows, seed=5, trace=tr).batch_at(100, 7)
    r2 = RandomSource(32, 13, rows, seed=5, trace=tr).batch_at(100, 7)
    assert all(np.array_equal(x, y) for x, y in zip(r1.indices, r2.indices))
    assert np.array_equal(np.diff(r1.offsets[0]),
                          np.diff(tr.table_bags(0)[1])[(100 + np.arange(7)) % 40])
