"""The budget model (tracegen/budgets.py): its kernel against a plain-Python reference on
random inputs, its synthesis against what it promises, its place in the selection and in
the trace file."""

import math
from dataclasses import replace

import numpy as np
import pytest

from dlrmprof.tracegen import budgets, selection, shortband, workloads
from dlrmprof.tracegen import reuse as _reuse
from dlrmprof.tracegen.fidelity import errors, fidelity, source_extras
from dlrmprof.tracegen.profile import BUDGET_MODEL, LocalityProfile, build_profile
from dlrmprof.tracegen.synth import (_below, _draw_bin, synthesize_bags,
                                     synthesize_naive, synthesize_stream)
from dlrmprof.tracegen.windows import planned_distinct
from dlrmprof.tracegen.tracefile import Trace
from tracegen_helpers import RefWalk, hot_schedule, round_trip


def test_fenwick_helpers_match_prefix_sums():
    rng = np.random.default_rng(0)
    for _ in range(20):
        size = 1 << int(rng.integers(1, 9))
        owner = np.arange(size + 1, dtype=np.int32)      # slot s holds item s, or nothing
        owner[0] = -1
        owner[1:][rng.random(size) < 0.2] = -1
        left = rng.integers(-2, 5, size + 1)              # spent items (<= 0) weigh nothing
        tw = budgets._weights(owner, size, left, size)
        pref = np.cumsum(np.where(owner >= 0, np.maximum(left, 0), 0))
        # row 1 of two trees (row 0 other weights), after an add
        two = np.stack((budgets._weights(owner, size, left[::-1].copy(), size), tw))
        s, delta = int(rng.integers(1, size + 1)), int(rng.integers(1, 4))
        budgets.fenwick_add_row(two, 1, s, size + 1, delta)
        pref[s:] += delta
        for s in range(size + 1):
            assert budgets.fenwick_prefix(two, 1, s) == pref[s]
        for target in range(int(pref[-1])):
            assert budgets.fenwick_find(two, 1, target) == int(np.searchsorted(pref, target,
                                                                             side="right"))


def _ref_bucket(d, exact, per_octave):
    j = math.floor(per_octave * math.log2(d) + 1e-9)
    lo = math.ceil(2.0 ** (j / per_octave) - 1e-9)
    hi = math.ceil(2.0 ** ((j + 1) / per_octave) - 1e-9)
    return max(min(lo, d), exact), max(hi, d + 1)


def _ref_short(b, unit, weights):
    """An id's short-band weight: its class floor(log2(b x unit)) (0 under 1)'s entry."""
    x = b * unit
    return int(weights[min(math.floor(math.log2(x)) if x >= 1 else 0, len(weights) - 1)])


def _ref_pick(state, stack, d, D, exact, per_octave, weigh):
    """The stack index a reuse at drawn depth d takes: among d's bucket, by `weigh`."""
    if d < exact or d == 0:
        return d
    lo, hi = _ref_bucket(d, exact, per_octave)
    order = list(range(min(hi, D) - 1, lo - 1, -1))        # oldest first
    weights = [weigh(stack[e]) for e in order]
    if sum(weights) == 0:
        return d
    u = _below(state, sum(weights))
    return order[int(np.searchsorted(np.cumsum(weights), u, side="right"))]


def _ref_fine_from(short):
    """The lower edge of the half-octave bucket ([ceil(2^(j/2)), ceil(2^((j+1)/2))))
    before the one holding the band's depth `short`."""
    edges = [math.ceil(2 ** (j / 2) - 1e-9) for j in range(64)]
    j = max(i for i, e in enumerate(edges) if e <= short)
    return edges[j - 1]


def _reference(n, bounds, hot_cnt, gap_cdf, gap_edges, cold_cnt, cdf, edges, seed, max_ids,
               vals, num, scale, exact, per_octave, run_depth, band=None):
    """The budget model from its definition: a Python list as the LRU stack (most recent
    first), the hot ids off it, the same random draws in the same order as the kernel.
    `band`: (short depth, class weights, head weights, unit) or None."""
    short, sweights, head, unit = band if band else (0, [1], [1] * budgets.HEAD, 1.0)
    walk = RefWalk(seed, max_ids)
    state = walk.state
    stack, left, budget_left, run, sw = [], {}, [0] * len(vals), {}, {}
    short_w = lambda g: sw[g] if left[g] > 0 else 0       # noqa: E731
    deep_w = lambda g: max(left[g], 0) * (1 + run[g])      # noqa: E731
    extra = clamped = 0
    for cold in walk.tail_events(bounds, hot_cnt, gap_cdf, gap_edges, cold_cnt, cdf):
        wcdf, wtot, D = walk.wcdf, walk.wtot, len(stack)
        if (not cold and short and walk.rc > 0 and D > 0 and wtot > 0
                and walk.items < max_ids and _draw_bin(state, wcdf, wtot, edges) >= D):
            cold, walk.rc, walk.rw = True, walk.rc - 1, walk.rw + 1   # a first touch, early
        if not cold and (D == 0 or wtot == 0):
            cold, extra = True, extra + 1
        if cold and walk.items >= max_ids:
            assert D > 0
            cold, d = False, D - 1
        elif not cold:
            for _try in range(8):
                d = _draw_bin(state, wcdf, wtot, edges)
                if d < D:
                    break
            if d >= D:
                d, clamped = D - 1, clamped + 1
        if cold:
            g = walk.new_item()
            weights = [v * k for v, k in zip(vals, budget_left)]
            if sum(weights) == 0:
                budget_left = list(num)
                weights = [v * k for v, k in zip(vals, budget_left)]
            u = _below(state, sum(weights))
            i = int(np.searchsorted(np.cumsum(weights), u, side="right"))
            budget_left[i] -= 1
            left[g] = max(1, int(vals[i] * scale + _below(state, 1 << 20) / (1 << 20)))
            run[g] = 0
            sw[g] = _ref_short(int(vals[i]), unit, sweights) if short else 0
        else:
            pick = -1
            if short and d < budgets.HEAD:             # the head: one of the top ids
                hw = [int(head[j]) * short_w(stack[j]) for j in range(min(budgets.HEAD, D))]
                if sum(hw):
                    u = _below(state, sum(hw))
                    pick = int(np.searchsorted(np.cumsum(hw), u, side="right"))
            if pick < 0:
                fine = short and d >= _ref_fine_from(short)
                pick = _ref_pick(state, stack, d, D, exact,
                                 budgets.FINE_PER_OCTAVE if fine else per_octave,
                                 short_w if d < short else deep_w)
            g = stack.pop(pick)
            run[g] = run[g] + 1 if d < run_depth else 0
        left[g] -= 1
        stack.insert(0, g)
        walk.out.append(g)
    return np.array(walk.out), walk.items, extra, clamped


@pytest.mark.parametrize("case", range(8))      # runs under 0 (none), 16 and 300 depths;
#                                                 a short band in cases 1, 2, 5, 6
def test_kernel_matches_the_reference_on_random_inputs(case):
    rng = np.random.default_rng(100 + case)
    n = int(rng.integers(2_000, 25_000))       # the longer ones compact the time axis
    W = int(rng.integers(1, 6))
    bounds = np.linspace(0, n, W + 1).astype(np.int64)
    hot, gap_cdf, gap_edges = hot_schedule(rng, case, bounds)
    cold_cnt = np.array([int(rng.integers(0, (bounds[w + 1] - bounds[w]) // 3 + 1))
                         for w in range(W)], dtype=np.int64)
    cold_cnt[0] = max(cold_cnt[0], 1)
    nb = int(rng.integers(20, 400))
    hist = rng.integers(0, 50, (W, nb)) * (rng.random((W, nb)) < 0.5)
    hist[:, 0] += 1
    cdf = np.cumsum(hist, axis=1).astype(np.int64)
    if W > 1 and case % 2:
        cdf[1] = 0                                  # a window falls back to the sum
    vals = np.unique(rng.integers(1, 300, int(rng.integers(1, 12)))).astype(np.int64)
    num = rng.integers(1, 40, vals.shape[0]).astype(np.int64)
    # a full table too (with a hot set, one whose hot ids take random rows)
    max_ids = int(cold_cnt.sum()) + (case == 5) * len(hot) if case in (3, 5) else 10 ** 6
    args = (n, bounds, hot, gap_cdf, gap_edges, cold_cnt, cdf, _reuse.bin_edges(nb),
            12345 + case, max_ids, vals, num, float(rng.uniform(0.5, 2.0)),
            [0, 4, 64][case % 3], 1 + case % 2, [0, 16, 300][case // 3])
    band = (int(rng.integers(4, 80)), rng.integers(1, 1000, int(rng.integers(1, 9))),
            rng.integers(0, 100, budgets.HEAD), float(rng.uniform(0.01, 1.0)))
    band = band if case % 4 in (1, 2) else (0, np.ones(1, np.int64), np.ones(budgets.HEAD,
                                                                             np.int64), 1.0)
    got = budgets._budget_core(*args[:8], np.ascontiguousarray(cdf.sum(axis=0)), *args[8:],
                               band[0], band[1].astype(np.int64), band[2].astype(np.int64),
                               band[3], budgets.fine_from(band[0]))
    want = _reference(*args, band if band[0] else None)
    if band[0]:                                     # the band is not a no-op
        plain = budgets._budget_core(*args[:8], np.ascontiguousarray(cdf.sum(axis=0)),
                                     *args[8:], 0, band[1], band[2], band[3], 0)
        assert not np.array_equal(got[0], plain[0])
        coarse = budgets._budget_core(*args[:8], np.ascontiguousarray(cdf.sum(axis=0)),
                                      *args[8:], *band, 0)     # no finer buckets past it
        assert args[13] or not np.array_equal(got[0], coarse[0])   # (exact 0, as shipped)
    assert np.array_equal(got[0], want[0])
    assert tuple(int(x) for x in got[1:]) == tuple(want[1:])



@pytest.mark.parametrize("case", range(4))
def test_kernel_matches_the_reference_where_every_budget_is_spent(case):
    """Every id's budget is one access (count 1, scaled down): spent at its first touch, so
    every depth bucket weighs nothing and each reuse takes the id at its drawn depth, in the
    small buckets walked over their slots (`_pick_small`) and in the large ones alike."""
    rng = np.random.default_rng(200 + case)
    n = int(rng.integers(5_000, 20_000))
    W = 1 + case % 2
    bounds = np.linspace(0, n, W + 1).astype(np.int64)
    hot, gap_cdf, gap_edges = hot_schedule(rng, case, bounds)
    cold_cnt = np.array([(bounds[w + 1] - bounds[w]) // 4 for w in range(W)], dtype=np.int64)
    nb = [24, 300][case // 2]                       # halving and guided draws
    cdf = np.cumsum(rng.integers(1, 30, (W, nb)), axis=1).astype(np.int64)
    args = (n, bounds, hot, gap_cdf, gap_edges, cold_cnt, cdf, _reuse.bin_edges(nb),
            777 + case, 10 ** 6, np.array([1], np.int64), np.array([n], np.int64), 0.5, 0,
            2, 0)
    got = budgets._budget_core(*args[:8], np.ascontiguousarray(cdf.sum(axis=0)), *args[8:],
                               0, np.ones(1, np.int64), np.ones(budgets.HEAD, np.int64), 1.0, 0)
    want = _reference(*args, None)
    assert np.array_equal(got[0], want[0])
    assert tuple(int(x) for x in got[1:]) == tuple(want[1:])

def _profiled(ids, name):
    """(dense ids, their profile without a hot set, with the source's figures)."""
    ids = _reuse.dense_ids(np.asarray(ids, dtype=np.int64))
    prof = build_profile(name, ids, None, rows=int(ids.max()) + 1, windows=32, hot=0)
    prof.extra["source_extras"] = source_extras(ids, None, prof.distinct)
    return ids, prof


def _sessions(n=60_000):
    return _profiled(workloads.bursty_sessions(n, users=5_000, zipf_a=1.0, mean_session=8,
                                               concurrent=32, seed=1), "s")


def test_synthesis_keeps_length_distinct_and_counts():
    ids, prof = _sessions()
    bp = budgets.budget_profile(prof, ids)
    bp.validate()
    src = np.sort(np.bincount(ids))[::-1]
    assert int(bp.count_ids.sum()) == prof.distinct
    assert int((bp.count_values * bp.count_ids).sum()) == prof.accesses
    syn, offs, facts = synthesize_bags(bp, seed=7)
    assert syn.shape == ids.shape and offs[-1] == ids.shape[0]
    assert 0 <= syn.min() and syn.max() < prof.rows
    # the schedule's first touches, and one more where a window's first event is a reuse
    # on an empty stack (as in the windowed model)
    assert np.unique(syn).shape[0] == facts["items"] == prof.distinct + facts["extra_cold"]
    assert facts["extra_cold"] <= 1
    c = np.sort(np.bincount(syn))[::-1]
    # popularity: the top ids' counts follow the source's (their budgets)
    assert abs(c[:10].sum() / src[:10].sum() - 1) < 0.1
    # same seed, same ids
    assert np.array_equal(syn, synthesize_bags(bp, seed=7)[0])


@pytest.mark.parametrize("factor", [0.3, 2.5])
def test_synthesis_at_other_lengths(factor):
    ids, prof = _sessions(20_000)
    bp = budgets.budget_profile(prof, ids)
    n = int(bp.accesses * factor)
    syn, facts = synthesize_stream(bp, length=n, seed=1)
    assert syn.shape[0] == n and facts["items"] == len(np.unique(syn))
    assert abs(facts["items"] - planned_distinct(bp, n)) <= 1
    # budgets scale with the length: the ten most popular ids keep their share (the goal's
    # 20%)
    def top10(x):
        return np.sort(np.bincount(x))[::-1][:10].sum() / x.shape[0]
    assert abs(top10(syn) / top10(ids) - 1) < 0.2


@pytest.mark.parametrize("rows", [1, 3, 500])
def test_synthesis_into_fewer_rows_than_ids(rows):
    ids, prof = _sessions(20_000)
    syn, facts = synthesize_stream(budgets.budget_profile(prof, ids), rows=rows, seed=4)
    assert syn.shape[0] == prof.accesses and syn.min() >= 0 and syn.max() < rows
    assert facts["items"] <= rows


def test_sessions_keep_their_lru_curve_and_their_popularity():
    ids, prof = _sessions()
    bp = budgets.budget_profile(prof, ids)
    fb = errors(fidelity(bp, synthesize_bags(bp, seed=3)[0]))
    fw = errors(fidelity(prof, synthesize_bags(prof, seed=3)[0]))   # the same stack, no budgets
    fn = errors(fidelity(prof, synthesize_naive(prof, seed=3)))
    assert fb["mrc_mae"] <= fn["mrc_mae"]
    assert fb["top10_share"] < 0.2 < fw["top10_share"]
    assert fb["lfu_mae"] < 0.6 * fw["lfu_mae"]


def test_the_selection_measures_and_picks_it_on_sessions():
    ids, _ = _sessions(50_000)
    prof, sel = selection.choose_hot("s", ids, None, int(ids.max()) + 1, 32,
                                     _reuse.histogram(_reuse.reuse_distances(ids)))
    assert {c["placement"] for c in sel["candidates"]} >= set(budgets.PLACEMENTS)
    assert sel["placement"] in budgets.PLACEMENTS and prof.extra["model"] == BUDGET_MODEL
    prof.validate()
    # short streams never measure it
    short = ids[:selection.BUDGET_MIN - 1]
    _, sel = selection.select_hot("t", short, None, int(short.max()) + 1, 32, None)
    assert not any(c["placement"] in budgets.PLACEMENTS for c in sel["candidates"])


def test_budget_profiles_round_trip_through_the_trace_file(tmp_path):
    ids, prof = _sessions(8_000)
    _, back, _ = round_trip(tmp_path, budgets.budget_profile(prof, ids), 8_000, needs=4)
    assert back.profiles[1].count_values.shape == (0,)


@pytest.mark.parametrize("break_it,what", [
    (lambda p: {"count_ids": p.count_ids[:-1]}, "equal 1-D shape"),
    (lambda p: {"count_ids": p.count_ids * 2}, "summing to distinct"),
    (lambda p: {"count_values": p.count_values[::-1].copy()}, "ascending positive"),
    (lambda p: {"extra": {}}, "count arrays only with the budget model"),
    (lambda p: {"extra": dict(p.extra, budget_per_octave=0)}, "budget_per_octave one in"),
    (lambda p: {"extra": dict(p.extra, budget_exact=-1)}, "budget_exact an integer"),
    (lambda p: {"extra": dict(p.extra, budget_run_depth=1.5)}, "budget_run_depth an integer"),
    (lambda p: {"extra": dict(p.extra, budget_short_depth=-4)}, "budget_short_depth an integer"),
    (lambda p: {"extra": dict(p.extra, budget_short_depth=46, budget_short_weights=[3, 0],
                              budget_short_head=[1, 1, 1])}, "budget_short_weights a list"),
    (lambda p: {"extra": dict(p.extra, budget_short_depth=46, budget_short_weights=[3],
                              budget_short_head=[1, 1])}, "budget_short_head a list of 3"),
])
def test_inconsistent_budget_arrays_are_refused(break_it, what):
    ids, prof = _sessions(3_000)
    bp = budgets.budget_profile(prof, ids)
    with pytest.raises(ValueError, match=what):
        replace(bp, **break_it(bp)).validate("t.npz profile 0")


def test_a_damaged_budget_array_in_a_file_is_one_line(tmp_path):
    from dlrmprof.errors import UserError
    from dlrmprof.tracegen import synthesize_trace
    from dlrmprof.tracegen.tracefile import _write_npz

    ids, prof = _sessions(3_000)
    bp = budgets.budget_profile(prof, ids)
    tr = synthesize_trace([bp], source={"kind": "test"}, num_samples=3_000, seed=3,
                          compute_fidelity=False)
    tr.save(tmp_path / "t.npz")
    with np.load(tmp_path / "t.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["p0_count_ids"] = arrays["p0_count_ids"] + 1
    import json

    header = json.loads(str(arrays.pop("header")))
    _write_npz(tmp_path / "bad.npz", header, arrays)
    with pytest.raises(UserError) as e:
        Trace.load(tmp_path / "bad.npz")
    assert "bad.npz" in str(e.value) and "count_ids" in str(e.value)
    assert "\n" not in str(e.value)


def test_the_capture_builds_it_from_counts_as_from_the_stream():
    # the one-pass capture has each id's count, not the stream, when it adds the model
    ids, prof = _sessions(5_000)
    a = selection.with_placement(prof, BUDGET_MODEL, counts=np.bincount(ids, minlength=9_000))
    b = selection.with_placement(prof, BUDGET_MODEL, ids=ids)
    for f in LocalityProfile.ARRAYS:
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert a.extra == b.extra
    assert np.array_equal(synthesize_bags(a, seed=2)[0], synthesize_bags(b, seed=2)[0])


def _drifting(n=60_000):
    return _profiled(workloads.drifting_zipf(n, distinct=15_000, a=1.0, drift=0.05, seed=2),
                     "d")


def test_budget_runs_keep_fifo_where_popularity_drifts():
    # ids popular for a while stay in use longer than a FIFO cycle; plain budgets reuse
    # them in short chains and FIFO hits too often (the LRU curve is the same)
    ids, prof = _drifting()
    plain = budgets.budget_profile(prof, ids, BUDGET_MODEL)
    runs = budgets.budget_profile(prof, ids, budgets.BUDGET_RUNS)
    assert runs.extra["budget_run_depth"] > 0 and "budget_run_depth" not in plain.extra
    runs.validate()
    ep = errors(fidelity(plain, synthesize_bags(plain, seed=3)[0]))
    er = errors(fidelity(runs, synthesize_bags(runs, seed=3)[0]))
    assert er["fifo_mae"] < 0.75 * ep["fifo_mae"]
    assert er["mrc_mae"] < ep["mrc_mae"] + 0.0005
    assert er["lfu_mae"] < ep["lfu_mae"] * 1.1 and er["top10_share"] < 0.2


def test_run_depth_zero_is_the_plain_budget_model():
    ids, prof = _drifting(20_000)
    plain = budgets.budget_profile(prof, ids, BUDGET_MODEL)
    zero = budgets.budget_profile(prof, ids, budgets.BUDGET_RUNS)
    zero.extra["budget_run_depth"] = 0
    assert np.array_equal(synthesize_bags(plain, seed=5)[0], synthesize_bags(zero, seed=5)[0])


def test_a_hot_set_with_budgets_keeps_counts_and_the_hot_ids_exact(tmp_path):
    # the windowed model's hot ids (their per-window counts exact) and budgets for the rest
    ids, prof = _sessions()
    hc = _reuse.histogram(_reuse.reuse_distances(ids))
    hp = build_profile("s", ids, None, rows=prof.rows, windows=32, hot=8, hist_cold=hc)
    bp = selection.with_placement(hp, budgets.BUDGET_HOT, ids=ids)
    bp.validate()
    src = np.sort(np.bincount(ids))[::-1]
    assert bp.hot_k == 8 and int(bp.count_ids.sum()) == prof.distinct - 8
    assert int((bp.count_values * bp.count_ids).sum()) == prof.accesses - src[:8].sum()
    assert int(bp.count_values.max()) == src[8]
    syn, offs, facts = synthesize_bags(bp, seed=7)
    assert syn.shape == ids.shape and facts["items"] == np.unique(syn).shape[0]
    assert facts["items"] - facts["extra_cold"] == prof.distinct
    c = np.sort(np.bincount(syn))[::-1]
    assert np.array_equal(c[:8], src[:8])          # the hot ids' counts are the source's
    assert abs(c[:10].sum() / src[:10].sum() - 1) < 0.05
    # the counts less the hot ids' are the budget model's, which a damaged profile breaks
    with pytest.raises(ValueError, match="less the hot ids"):
        replace(bp, count_ids=bp.count_ids + (np.arange(bp.count_ids.size) == 0)).validate()
    assert np.array_equal(syn, synthesize_bags(bp, seed=7)[0])
    _, back, _ = round_trip(tmp_path, bp, prof.accesses, needs=4)
    assert back.profiles[0].hot_k == 8 and back.profiles[0].extra["model"] == BUDGET_MODEL


def _ref_band_counts(ids, cls, C, every):
    """`shortband._band_counts` from its definition: reuse distances by a list LRU stack, the
    stack's composition listed every `every` accesses."""
    reuses = np.zeros((shortband.BAND_BUCKETS, C))
    residents = np.zeros((shortband.BAND_BUCKETS, C))
    key = lambda d: 0 if d == 0 else 1 + math.floor(2 * math.log2(d) + 1e-9)   # noqa: E731
    stack = []
    for t, g in enumerate(ids):
        if t % every == 0:
            for r, h in enumerate(stack):
                residents[key(r), cls[h]] += every
        if g in stack:
            d = stack.index(g)
            reuses[key(d), cls[g]] += 1
            stack.pop(d)
        stack.insert(0, g)
    return reuses, residents


@pytest.mark.parametrize("seed", range(4))
def test_band_counts_match_a_plain_reference(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, int(rng.integers(2, 300)), int(rng.integers(50, 3_000)))
    ids = np.where(rng.random(ids.shape[0]) < 0.3, np.roll(ids, 1), ids).astype(np.int64)
    C = int(rng.integers(1, 6))
    cls = rng.integers(0, C, int(ids.max()) + 1).astype(np.int64)
    every = int(rng.integers(1, 40))
    got = shortband._band_counts(ids, _reuse.reuse_distances(ids), cls, C, every)
    want = _ref_band_counts(ids.tolist(), cls, C, every)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_a_short_band_is_found_on_sessions_not_on_independent_references():
    ids, _ = _sessions(60_000)
    depth, weights, head = shortband.short_band(ids)
    assert 16 <= depth <= 128            # the sessions' reuses: 32 concurrent, mean 8 each
    assert weights[-1] > 2 * weights[2] and len(head) == budgets.HEAD
    irm = _reuse.dense_ids(workloads.irm_zipf(60_000, 5_000, 1.0, seed=3))
    assert shortband.short_band(irm) == budgets.NO_BAND
    assert np.isnan(shortband.band_slopes(np.zeros((4, 3)), np.ones((4, 3)))).all()   # no reuses


def test_the_short_band_lowers_lfu_error_on_sessions_and_keeps_lru():
    ids, prof = _sessions(60_000)
    banded = budgets.budget_profile(prof, ids)
    plain = budgets.budget_profile(prof, ids, band=budgets.NO_BAND)
    assert budgets.band_of(banded)[0] > 0 and budgets.band_of(plain) == budgets.NO_BAND
    banded.validate()

    def mean(p, synth):
        return {k: float(np.mean([errors(fidelity(p, synth(p, s)))[k] for s in (5, 6)]))
                for k in ("mrc_mae", "lfu_mae", "top10_share")}
    fb = mean(banded, lambda p, s: synthesize_bags(p, seed=s)[0])
    fp = mean(plain, lambda p, s: synthesize_bags(p, seed=s)[0])
    fn = mean(prof, lambda p, s: synthesize_naive(p, length=p.accesses, seed=s))
    assert fb["lfu_mae"] < 0.8 * fp["lfu_mae"]
    assert fb["mrc_mae"] <= fn["mrc_mae"] and fb["top10_share"] < 0.2
