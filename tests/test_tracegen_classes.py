"""The class model (tracegen/classes.py): its profile pass against a plain reference, its
synthesis against what it promises, its place in the selection and in the trace file."""

import numpy as np
import pytest

from dlrmprof.tracegen import classes, selection, workloads
from dlrmprof.tracegen import reuse as _reuse
from dlrmprof.tracegen.fidelity import errors, fidelity, source_extras
from dlrmprof.tracegen.profile import CLASS_MODEL, build_profile
from dlrmprof.tracegen.synth import synthesize_stream
from dlrmprof.tracegen.tracefile import Trace
from tracegen_helpers import round_trip


def _stream(rng, n):
    u = int(rng.integers(20, 900))
    return ((rng.zipf(1.05 + 0.4 * rng.random(), n) - 1) % u).astype(np.int64)


def _reference(ids, windows, per_octave):
    """Per window and class: first touches and class-local reuse distances (binned), and
    each class's largest count, from the definitions, in plain Python."""
    counts = np.bincount(ids)
    cls = {x: int(np.floor(per_octave * np.log2(c) + 1e-9)) for x, c in enumerate(counts) if c}
    C = max(cls.values()) + 1
    n = len(ids)
    W = max(1, min(windows, n))
    wsize = -(-n // W)
    W = -(-n // wsize)
    cold = np.zeros((W, C), np.int64)
    hist = {}
    stacks = [[] for _ in range(C)]           # most recent last
    for i, x in enumerate(ids.tolist()):
        c, w, st = cls[x], i // wsize, stacks[cls[x]]
        if x in st:
            j = st.index(x)
            b = _reuse.dist_bin(len(st) - 1 - j)
            hist[(w * C + c, b)] = hist.get((w * C + c, b), 0) + 1
            st.pop(j)
        else:
            cold[w, c] += 1
        st.append(x)
    largest = np.zeros(C, np.int64)
    for x, c in cls.items():
        largest[c] = max(largest[c], counts[x])
    return cold, hist, largest


@pytest.mark.parametrize("per_octave", [1, 2])
def test_class_state_in_chunks_equals_the_plain_reference(per_octave):
    rng = np.random.default_rng()
    for _ in range(4):
        n = int(rng.integers(50, 4000))
        ids = _stream(rng, n)
        counts = np.bincount(ids)
        st = classes.ClassState(counts, n, 32, per_octave)
        lo = 0
        while lo < n:
            k = int(rng.integers(1, 500))
            st.feed(ids[lo:lo + k])
            lo += k
        cold, hist, largest = st.arrays()
        want_cold, want_hist, want_largest = _reference(ids, 32, per_octave)
        assert np.array_equal(cold, want_cold) and np.array_equal(largest, want_largest)
        got = {(int(r), int(b)): int(hist[r, b]) for r, b in zip(*np.nonzero(hist))}
        assert got == want_hist


def test_count_classes_follow_their_definition():
    counts = np.array([0, 1, 2, 3, 4, 7, 8, 11, 12, 1 << 20, (1 << 21) - 1])
    assert classes.count_classes(counts).tolist() == [-1, 0, 1, 1, 2, 2, 3, 3, 3, 20, 20]
    # half octaves: 2^(c/2) <= count < 2^((c+1)/2)
    assert classes.count_classes(counts, 2).tolist() == [-1, 0, 2, 3, 4, 5, 6, 6, 7, 40, 41]


def _class_prof(ids, per_octave=1, windows=16):
    ids = _reuse.dense_ids(np.asarray(ids, dtype=np.int64))
    p = build_profile("t", ids, rows=int(ids.max()) + 1, windows=windows, hot=0)
    cp = classes.class_profile(p, ids, per_octave)
    cp.extra["source_extras"] = source_extras(ids, None, cp.distinct)
    return ids, cp


@pytest.mark.parametrize("per_octave", [1, 2])
def test_class_synthesis_keeps_the_schedules_and_the_caps(per_octave):
    """Same seed, same bytes; per window the source's first touches (its classes' sum); ids
    not used more often than the source's most accessed id (but a few accesses); top-10
    share within 20%; LFU closer to the source than the model without a hot set on a
    drifting stream."""
    src, cp = _class_prof(workloads.drifting_zipf(40_000, distinct=8_000, a=1.0, drift=0.05,
                                                  seed=2), per_octave)
    cp.validate()
    a, facts = synthesize_stream(cp, seed=5)
    assert np.array_equal(a, synthesize_stream(cp, seed=5)[0])
    assert not np.array_equal(a, synthesize_stream(cp, seed=6)[0])
    assert a.shape[0] == cp.accesses
    first = np.zeros(a.shape[0], bool)
    first[np.unique(a, return_index=True)[1]] = True
    per_win = np.add.reduceat(first, np.arange(0, a.shape[0], cp.window_size))
    want = cp.class_cold.sum(axis=1)
    assert np.abs(per_win - want).sum() <= facts["extra_cold"] and facts["extra_cold"] <= 10
    # caps are kept but where no id within synth.NEAREST depths is under its cap
    over = np.maximum(np.bincount(a) - cp.class_max.max(), 0).sum()
    assert over <= 0.001 * a.shape[0]
    f = fidelity(cp, a)
    assert abs(f["top10_share_synthetic"] / f["top10_share_source"] - 1) < 0.2
    plain = build_profile("t", src, rows=cp.rows, windows=16, hot=0)
    plain.extra["source_extras"] = cp.extra["source_extras"]
    e_cls = errors(fidelity(cp, a))
    e_plain = errors(fidelity(plain, synthesize_stream(plain, seed=5)[0]))
    assert e_cls["lfu_mae"] < 0.6 * e_plain["lfu_mae"]
    assert e_cls["mrc_mae"] < 0.006


@pytest.mark.parametrize("factor", [0.3, 2.5])
def test_class_synthesis_at_other_lengths(factor):
    _, cp = _class_prof(workloads.drifting_zipf(20_000, distinct=4_000, a=1.0, drift=0.05,
                                                seed=3))
    n = int(cp.accesses * factor)
    ids, facts = synthesize_stream(cp, length=n, seed=1)
    assert ids.shape[0] == n and facts["items"] == len(np.unique(ids))
    bounds, acc, ccold, cap, _ = classes.plan_classes(cp, n)
    assert (acc.sum(axis=1) == np.diff(bounds)).all() and (ccold <= acc).all()
    if factor > 1:
        assert len(np.unique(ids)) > cp.distinct


@pytest.mark.parametrize("rows", [1, 3, 500])
def test_class_synthesis_into_fewer_rows_than_ids(rows):
    _, cp = _class_prof(workloads.drifting_zipf(20_000, distinct=4_000, a=1.0, drift=0.05,
                                                seed=3))
    ids, facts = synthesize_stream(cp, rows=rows, seed=2)
    assert ids.shape[0] == cp.accesses and 0 <= ids.min() and ids.max() < rows
    assert facts["items"] <= rows


def test_the_selection_picks_the_class_model_where_popularity_drifts_not_on_sessions():
    users, items = workloads.user_item_log(60_000, users=20_000, items=50_000, seed=3)
    for ids, want in ((items, True), (users, False)):
        ids = _reuse.dense_ids(np.asarray(ids, dtype=np.int64))
        prof, sel = selection.choose_hot("t", ids, None, int(ids.max()) + 1, 32,
                                         _reuse.histogram(_reuse.reuse_distances(ids)))
        assert (sel["placement"] in classes.PLACEMENTS) == want, sel["placement"]
        assert (prof.extra.get("model") == CLASS_MODEL) == want
        prof.validate()
    # short streams never measure it
    ids = _reuse.dense_ids(np.asarray(items[:selection.CLASS_MIN - 1], dtype=np.int64))
    _, sel = selection.select_hot("t", ids, None, int(ids.max()) + 1, 32, None)
    assert not any(c["placement"] in classes.PLACEMENTS for c in sel["candidates"])


def test_class_profiles_round_trip_through_the_trace_file(tmp_path):
    from dlrmprof.tracegen import synthesize_trace

    _, cp = _class_prof(workloads.drifting_zipf(8_000, distinct=2_000, a=1.0, drift=0.05,
                                                seed=4), per_octave=2)
    _, back, plain = round_trip(tmp_path, cp, 8_000, needs=3)
    assert back.profiles[1].class_cold.shape == (0, 0)
    plain_tr = synthesize_trace([plain], source={"kind": "test"}, num_samples=300, seed=3,
                                compute_fidelity=False)
    plain_tr.save(tmp_path / "v2.npz", version=2)
    assert Trace.load(tmp_path / "v2.npz").header["version"] == 2


@pytest.mark.parametrize("break_it,what", [
    (lambda p: {"class_cold": p.class_cold[:-1]}, "class_cold of shape"),
    (lambda p: {"class_max": p.class_max[:-1]}, "class_max of shape"),
    (lambda p: {"class_hist": p.class_hist * 2}, "class accesses == accesses"),
    (lambda p: {"class_cold": -p.class_cold}, "non-negative class counts"),
    (lambda p: {"extra": {}}, "class arrays only with the class model"),
])
def test_inconsistent_class_arrays_are_refused(break_it, what):
    from dataclasses import replace

    _, cp = _class_prof(workloads.drifting_zipf(3_000, distinct=500, a=1.0, drift=0.05,
                                                seed=5))
    with pytest.raises(ValueError, match=what):
        replace(cp, **break_it(cp)).validate("t.npz profile 0")
