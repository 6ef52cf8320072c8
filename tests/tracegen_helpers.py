"""Helpers shared by the tracegen model tests."""

import numpy as np
import pytest

from dlrmprof.tracegen import reuse as _reuse
from dlrmprof.tracegen.profile import LocalityProfile, build_profile, gap_row
from dlrmprof.tracegen.synth import _below, _draw_bin, _uniform, synthesize_bags
from dlrmprof.tracegen.tracefile import Trace


def round_trip(tmp_path, prof: LocalityProfile, num_samples: int, needs: int):
    """Save a trace of `prof` and a plain profile, load it back and check that `prof`'s
    arrays, model and synthesis come back; older format versions (below `needs`, the first
    that holds its model's arrays) are refused and write nothing.  Returns (trace, loaded,
    the plain profile)."""
    from dlrmprof.tracegen import synthesize_trace

    plain = build_profile("u", np.arange(300) % 50, hot=4)
    tr = synthesize_trace([prof, plain], source={"kind": "test"}, num_samples=num_samples,
                          seed=3, compute_fidelity=False)
    tr.save(tmp_path / "t.npz")
    back = Trace.load(tmp_path / "t.npz")
    for f in LocalityProfile.ARRAYS:
        assert np.array_equal(getattr(back.profiles[0], f), getattr(prof, f)), f
    assert back.profiles[0].extra["model"] == prof.extra["model"]
    assert np.array_equal(back.indices, tr.indices)
    assert np.array_equal(synthesize_bags(back.profiles[0], seed=9)[0],
                          synthesize_bags(prof, seed=9)[0])
    assert back.header["version"] == 4
    # an older format, which a reader of that version would take without the model
    for version in range(1, needs):
        with pytest.raises(ValueError, match=f"version {needs} can"):
            tr.save(tmp_path / f"v{version}.npz", version=version)
        assert not (tmp_path / f"v{version}.npz").exists()
    return tr, back, plain


def ref_place_hot(state, L, hot_cnt, w, gap_cdf, gap_edges):
    """A window's schedule (hot rank, or -1 for a stack event) from `synth._place_hot`'s
    definition: a hot id's accesses spaced by its class's gaps from a uniform start, a taken
    slot moving an access to the next free one (cyclically), then the other events shuffled
    into the free slots."""
    sched, rest = [None] * L, []
    for k in range(hot_cnt.shape[0]):
        c = int(hot_cnt[k, w])
        cl = gap_row(c) if c else 0
        tot = int(gap_cdf[cl, -1]) if c >= 2 and cl < gap_cdf.shape[0] else 0
        if c and not tot:
            rest += [k] * c
            continue
        gaps = [_draw_bin(state, gap_cdf[cl], tot, gap_edges) + _uniform(state)
                for _ in range(c)]
        start, acc = _below(state, L), 0.0
        for g in gaps:
            p = (start + int(L * acc / sum(gaps))) % L
            while sched[p] is not None:
                p = (p + 1) % L
            sched[p], acc = k, acc + g
    free = [i for i in range(L) if sched[i] is None]
    rest += [-1] * (len(free) - len(rest))
    for i in range(len(free) - 1, 0, -1):
        j = _below(state, i + 1)
        rest[i], rest[j] = rest[j], rest[i]
    for i, r in zip(free, rest):
        sched[i] = r
    return sched


def hot_schedule(rng, case, bounds):
    """Hot counts [K, W] (K = 0 in even cases; a few ids with up to a fifth of each window)
    and their gap histograms by count class (one class without gaps: placed independently)."""
    W = bounds.shape[0] - 1
    K = 0 if case % 2 == 0 else int(rng.integers(1, 6))
    hot = np.array([[int(rng.integers(0, (bounds[w + 1] - bounds[w]) // (5 * K) + 1))
                     for w in range(W)] for k in range(K)], dtype=np.int64).reshape(K, W)
    C, nbg = gap_row(int(hot.max()) if hot.size else 1) + 1, int(rng.integers(2, 30))
    gap = rng.integers(0, 9, (C, nbg)) * (rng.random((C, nbg)) < 0.6)
    gap[C // 2] = 0
    return hot, np.cumsum(gap, axis=1).astype(np.int64), _reuse.bin_edges(nbg)


class RefWalk:
    """The windows of `synth._synth_core` and `budgets._budget_core` walked in plain Python as
    their kernels walk them: each window's hot schedule (`ref_place_hot`) and hot accesses (an
    item at a hot id's first access, a random id once the table is full), and for each tail
    event the schedule's first-touch draw, yielded; the caller handles the event (its item
    appended to `out`, `new_item` for a first touch) and may move the window's first touches
    and reuses left (`rc`, `rw`)."""

    def __init__(self, seed, max_ids):
        self.state = np.full(1, seed, dtype=np.uint64)
        self.max_ids = max_ids
        self.out, self.hot_gid, self.items = [], {}, 0

    def new_item(self) -> int:
        self.items += 1
        return self.items - 1

    def tail_events(self, bounds, hot_cnt, gap_cdf, gap_edges, cold_cnt, cdf):
        for w in range(len(cold_cnt)):
            L = int(bounds[w + 1] - bounds[w])
            sched = (ref_place_hot(self.state, L, hot_cnt, w, gap_cdf, gap_edges)
                     if len(hot_cnt) else [])
            self.rc = int(cold_cnt[w])
            self.rw = L - self.rc - int(hot_cnt[:, w].sum())
            self.wcdf = cdf[w] if cdf[w, -1] else cdf.sum(axis=0)
            self.wtot = int(self.wcdf[-1])
            for pos in range(L):
                if sched and sched[pos] >= 0:
                    k = sched[pos]
                    if k not in self.hot_gid:
                        self.hot_gid[k] = (self.new_item() if self.items < self.max_ids
                                           else _below(self.state, self.max_ids))
                    self.out.append(self.hot_gid[k])
                    continue
                cold = _below(self.state, self.rc + self.rw) < self.rc
                self.rc, self.rw = (self.rc - 1, self.rw) if cold else (self.rc, self.rw - 1)
                yield cold
