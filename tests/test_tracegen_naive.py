"""The naive baseline's fidelity figures kept from its draws (`naive.naive_figures`) against
the same figures measured on its stream of ids (`synthesize_naive`, `fidelity.stream_figures`)."""

from __future__ import annotations

import numpy as np
import pytest

from dlrmprof.tracegen.fidelity import (POLICY_PREFIX, fidelity, id_counts, source_extras,
                                        stream_figures)
from dlrmprof.tracegen.generate import _naive_fidelity
from dlrmprof.tracegen.naive import MTF_ITEMS, naive_figures
from dlrmprof.tracegen.batches import batch_stats
from dlrmprof.tracegen.profile import build_profile, stream_histogram
from dlrmprof.tracegen.synth import synthesize_naive


def _source(trial: int, with_bags: bool):
    rng = np.random.default_rng(trial)
    n, nid = int(rng.integers(1, 30_000)), int(rng.integers(1, 3_000))
    lengths = None
    if with_bags:               # bags of 0-3 ids: batches of small sizes may be empty
        lengths = rng.integers(0, 4, size=n).astype(np.int64)
        lengths[0] += 1
        n = int(lengths.sum())
    ids = (rng.zipf(1.1 + rng.random(), n) % nid).astype(np.int64)
    prof = build_profile("t", ids, lengths=lengths, rows=nid, windows=4, hot=0)
    prof.extra["source_extras"] = source_extras(ids, lengths, prof.distinct)
    off = None if lengths is None else np.concatenate([[0], np.cumsum(lengths)])
    return rng, prof, off


@pytest.mark.parametrize("trial", range(10))
def test_naive_figures_are_the_naive_streams(trial):
    """Histogram, distinct count, each id's count, the first ids and per-batch figures (bags
    of one id, or of 0-3 ids with empty batches; batch sizes with fewer than two full batches
    left out) equal those measured on `synthesize_naive`'s ids, for shorter and longer
    streams, fewer rows than distinct ids and one row (the table-full reuse); stacks on the
    move-to-front array (up to its MTF_ITEMS items) and (more than MTF_ITEMS rows and
    accesses) on the Fenwick stack; batch sizes from 1 (every depth changes its figures) to
    past the stream."""
    rng, prof, off = _source(trial, with_bags=trial % 2 == 1)
    n = prof.accesses
    sizes = (1, 3, 16, 128, 5000, 2 * n + 1)
    for length, rows in ((None, None), (n // 2 + 1, None), (2 * n, None),
                         (n, max(1, prof.distinct // 50)), (n, 1), (0, None),
                         (n, MTF_ITEMS + 1 + trial), (n, MTF_ITEMS)):
        m = n if length is None else length
        bags = off if (off is not None and m == n) else None
        head = int(rng.integers(0, m + 2))
        ids = synthesize_naive(prof, length=length, rows=rows, seed=trial)
        got = naive_figures(prof, length=length, rows=rows, seed=trial, head=head,
                            offsets=bags, batch_sizes=sizes)
        hist, cold = stream_histogram(ids)
        assert got.accesses == m and got.cold == cold and np.array_equal(got.hist, hist)
        assert np.array_equal(got.head, ids[:head])
        counts = id_counts(ids)
        assert np.array_equal(np.sort(got.counts), np.sort(counts[counts > 0]))
        assert got.batches == batch_stats(ids, bags, sizes)


@pytest.mark.parametrize("trial", range(4))
def test_naive_fidelity_from_its_draws_is_its_streams(trial):
    """The whole fidelity record of the naive baseline (LRU, shares, FIFO/LFU/set-associative
    on the prefix, per-batch figures) from its draws equals the one measured on its ids."""
    _, prof, off = _source(trial, with_bags=trial % 2 == 1)
    seed = np.random.SeedSequence(trial)
    ids = synthesize_naive(prof, rows=prof.rows, seed=seed)
    assert _naive_fidelity(prof, prof.rows, seed, off) == fidelity(prof, ids, offsets=off)
    figs = stream_figures(prof, ids, off)
    assert fidelity(prof, None, figures=figs) == fidelity(prof, ids, offsets=off)
    assert POLICY_PREFIX >= prof.extra["source_extras"]["policies"]["accesses"]


def test_naive_figures_refuse_bags_of_another_length_and_no_rows():
    _, prof, _ = _source(0, with_bags=False)
    with pytest.raises(ValueError, match="offsets"):
        naive_figures(prof, offsets=np.array([0, 1, 2]), batch_sizes=(1,))
    with pytest.raises(ValueError, match="rows"):
        naive_figures(prof, rows=0)
