"""How close a synthetic stream is to its source, from the source's profile.

Per table:

* LRU: hit-rate mean absolute error over cache sizes 2^0..2^k (k covers both distinct counts,
  exact from the two reuse-distance histograms) and the total-variation distance between the
  histograms (same bins, cold as its own bin);
* popularity: the distinct-id ratio (synthetic / source), the top-10 and top-1% share of
  accesses (source vs synthetic);
* the caches users size (when the profile carries the source's curves, see
  `source_extras`): FIFO, LFU and 32-way set-associative LRU hit-rate MAE at the same sizes,
  simulated exactly on the first POLICY_PREFIX accesses of both streams;
* across batches: per-batch unique-id count and batch-to-batch overlap at 128 / 2048 / 16384
  samples per batch (relative error, source vs synthetic);
* the naive baseline (`synth.synthesize_naive`: i.i.d. draws from the whole reuse-distance
  histogram on one LRU stack) measured the same way, so a report shows what the model adds;
  `loses_to_naive` names the figures where the model's error is the larger.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlrmprof.tracegen import batches as _bat
from dlrmprof.tracegen import policies as _pol
from dlrmprof.tracegen import reuse as _reuse
from dlrmprof.tracegen.profile import LocalityProfile, stream_histogram

POLICY_PREFIX = 1 << 18        # accesses of each stream the FIFO/LFU/set-associative runs see
POLICIES = ("fifo", "lfu", f"setassoc{_pol.SETASSOC_WAYS}")


def top_share(ids: np.ndarray, n: int) -> float:
    return top_shares(ids, (n,))[0]


def id_counts(ids: np.ndarray) -> np.ndarray:
    """Each id's access count (in some order; zeros for ids absent below the largest)."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    # ids of a short stream drawn from many rows: count the ids present, not every row
    return (np.unique(ids, return_counts=True)[1] if int(ids.max()) > 4 * ids.size
            else np.bincount(ids))


def top_shares(ids: np.ndarray, ns) -> list[float]:
    """Share of the accesses that go to the n most accessed ids, for each n in ns (one count
    of the ids for all)."""
    return shares_of_counts(id_counts(ids), len(ids), ns)


def shares_of_counts(counts: np.ndarray, total: int, ns) -> list[float]:
    """`top_shares` from the ids' access counts (any order) and the number of accesses."""
    if total == 0:
        return [0.0] * len(ns)
    m = min(max(ns), counts.size)
    # a full sort, not np.partition: counts are mostly ties (ids seen once or twice), where
    # partition's introselect is many times slower than numpy's sort (docs/performance.md)
    top = np.sort(counts)[::-1][:m]
    cum = np.cumsum(top)
    return [float(cum[min(n, m) - 1]) / total if n > 0 else 0.0 for n in ns]


@dataclass(frozen=True)
class StreamFigures:
    """What `fidelity` reads of a synthetic stream: measured from its ids (`stream_figures`)
    or kept while it is drawn (`naive.naive_figures`, the naive baseline: no stream)."""
    accesses: int
    hist: np.ndarray            # binned warm reuse-distance histogram
    cold: int                   # first touches (= distinct ids)
    counts: np.ndarray          # each id's access count, any order (top shares)
    head: np.ndarray            # ids of its first accesses (>= POLICY_PREFIX, or all)
    batches: tuple | None       # batches.BatchStats at the source's batch sizes, or None


def stream_figures(profile: LocalityProfile, ids: np.ndarray, offsets: np.ndarray | None = None,
                   dist: np.ndarray | None = None, hist: tuple | None = None) -> StreamFigures:
    """`StreamFigures` of `ids` (offsets [bags + 1]: its bags, None = one id per bag): the
    reuse histogram from `hist` ((binned, cold)) or `dist` (reuse distances) when known, else
    a reuse pass; per-batch figures at the sizes of the profile's source (`source_extras`)
    when the stream has the source's length."""
    ids = np.asarray(ids, dtype=np.int64)
    if hist is not None:
        h, cold = hist
    elif dist is not None:
        h, cold = _reuse.histogram(dist)
    else:
        h, cold = stream_histogram(ids)
    extras = profile.extra.get("source_extras")
    batches = None
    if extras and len(ids) == profile.accesses:
        sizes = tuple(b["batch_size"] for b in extras["batches"])
        batches = _bat.batch_stats(ids, offsets, sizes) if sizes else ()
    return StreamFigures(len(ids), h, int(cold), id_counts(ids), ids, batches)


def _offsets(lengths: np.ndarray | None, n: int) -> np.ndarray | None:
    if lengths is None:
        return None
    off = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.asarray(lengths, dtype=np.int64), out=off[1:])
    if int(off[-1]) != n:
        raise ValueError("bag lengths must sum to the number of accesses")
    return off


def source_extras(ids, lengths: np.ndarray | None, distinct: int,
                  batches: tuple | None = None, policies: tuple = POLICIES) -> dict:
    """What fidelity needs of the source beyond its profile, measured once at capture:
    FIFO/LFU/set-associative hit rates on the first POLICY_PREFIX accesses (sizes 2^0 up to
    twice the distinct count) and per-batch statistics.  JSON-able (kept in profile.extra).
    `batches`: the stream's `batch_stats` when measured elsewhere (a streaming capture, which
    passes only the stream's first POLICY_PREFIX accesses as `ids`); `policies`: the caches
    simulated (a selection compares only some)."""
    n = int(ids.shape[0])
    m = min(n, POLICY_PREFIX)
    head = np.ascontiguousarray(ids[:m], dtype=np.int64)
    sizes = _reuse.mrc_sizes(2 * max(distinct, 1))
    if not m:
        curves = {p: [0.0] * len(sizes) for p in policies}
    elif tuple(policies) == POLICIES:
        curves = _pol.policy_mrcs(head, sizes)          # one remap for all three
    else:
        curves = {p: _POLICY_FNS[p](head, sizes).tolist() for p in policies}
    if batches is None:
        arr = np.ascontiguousarray(ids, dtype=np.int64)
        batches = _bat.batch_stats(arr, _offsets(lengths, n)) if n else ()
    return {"policies": {"sizes": sizes.tolist(), "accesses": m, **curves},
            "batches": [s.to_json() for s in batches]}


def _rel(src: float, syn: float) -> float:
    return abs(syn / src - 1) if src else abs(syn)


_POLICY_FNS = {"fifo": _pol.fifo_hit_rates, "lfu": _pol.lfu_hit_rates,
               f"setassoc{_pol.SETASSOC_WAYS}": _pol.setassoc_hit_rates}


def _policy_errors(extras: dict, ids: np.ndarray, policies=POLICIES) -> dict:
    pol = extras["policies"]
    sizes = np.asarray(pol["sizes"], dtype=np.int64)
    m = min(int(pol["accesses"]), len(ids))
    if not m:
        syn = {p: [0.0] * len(sizes) for p in policies}
    elif tuple(policies) == POLICIES:
        syn = _pol.policy_mrcs(ids[:m], sizes)          # one remap for all three
    else:
        syn = {p: _POLICY_FNS[p](ids[:m], sizes).tolist() for p in policies}
    out = {}
    for p in policies:
        out[f"{p}_mae"] = float(np.abs(np.asarray(pol[p]) - np.asarray(syn[p])).mean())
        out[f"{p}_synthetic_hit_rate"] = syn[p]
    out["policy_accesses"] = m
    return out


def _batch_errors(extras: dict, syn: tuple) -> list[dict]:
    """Per-batch relative errors of the synthetic stream's `syn` (`batches.BatchStats` at
    the source's batch sizes, those with >= 2 full batches)."""
    src = {b["batch_size"]: b for b in extras["batches"]}
    rows = []
    for s in syn:
        b = src[s.batch_size]
        rows.append({"batch_size": s.batch_size,
                     "unique_source": b["unique_mean"], "unique_synthetic": s.unique_mean,
                     "unique_rel_error": _rel(b["unique_mean"], s.unique_mean),
                     "overlap_source": b["overlap_mean"], "overlap_synthetic": s.overlap_mean,
                     "overlap_rel_error": _rel(b["overlap_mean"], s.overlap_mean)})
    return rows


# the last source histogram's LRU hit rates: (its hist array, cold count, {largest size: rates})
_LAST_SOURCE: list = [None]


def _source_curve(profile: LocalityProfile, sizes: np.ndarray) -> np.ndarray:
    """The source's LRU hit rates at `sizes`, kept for the last source histogram (the same
    array in every candidate profile of a selection, each measured several times)."""
    last = _LAST_SOURCE[0]
    if last is None or last[0] is not profile.hist or last[1] != profile.cold:
        last = _LAST_SOURCE[0] = (profile.hist, profile.cold, {})
    key = int(sizes[-1])
    if key not in last[2]:
        last[2][key] = _reuse.hit_rates(profile.hist, profile.cold, sizes)
    return last[2][key]


def fidelity(profile: LocalityProfile, synthetic_ids: np.ndarray | None,
             synthetic_dist: np.ndarray | None = None, offsets: np.ndarray | None = None,
             policies: tuple = POLICIES, synthetic_hist: tuple | None = None,
             figures: StreamFigures | None = None) -> dict:
    """Fidelity of `synthetic_ids` (same length as the source for the comparison to mean
    anything; `offsets` [bags + 1] its bags, None = one id per bag); `policies`: which of
    the other caches to simulate (when the profile carries the source's curves).  The
    stream's reuse distances (`synthetic_dist`) or their histogram (`synthetic_hist`:
    (binned warm histogram, cold count)) when known, else measured here; or, instead of the
    ids, what is read of them (`figures`)."""
    if figures is None:
        figures = stream_figures(profile, synthetic_ids, offsets, synthetic_dist,
                                 synthetic_hist)
    hist, cold, n = figures.hist, figures.cold, figures.accesses
    distinct_syn = int(cold)
    sizes = _reuse.mrc_sizes(max(profile.distinct, distinct_syn))
    src = _source_curve(profile, sizes)
    syn = _reuse.hit_rates(hist, cold, sizes)
    nb = max(len(hist), len(profile.hist))
    a = np.zeros(nb + 1)
    b = np.zeros(nb + 1)
    a[: len(profile.hist)] = profile.hist
    a[nb] = profile.cold
    b[: len(hist)] = hist
    b[nb] = cold
    tv = 0.5 * float(np.abs(a / max(a.sum(), 1) - b / max(b.sum(), 1)).sum())
    n1 = max(1, profile.distinct // 100)
    syn_top = shares_of_counts(figures.counts, n, (10, n1))
    out = {
        "sizes": sizes.tolist(),
        "source_hit_rate": src.tolist(),
        "synthetic_hit_rate": syn.tolist(),
        "mrc_mae": float(np.abs(src - syn).mean()),
        "mrc_max_error": float(np.abs(src - syn).max()),
        "distinct_source": int(profile.distinct),
        "distinct_synthetic": distinct_syn,
        "distinct_ratio": distinct_syn / profile.distinct if profile.distinct else 1.0,
        "top10_share_source": profile.top_share(10),
        "top10_share_synthetic": syn_top[0],
        "top1pct_share_source": profile.top_share(n1),
        "top1pct_share_synthetic": syn_top[1],
        "hist_tv_distance": tv,
        "accesses_synthetic": int(n),
    }
    extras = profile.extra.get("source_extras")
    if extras and n == profile.accesses:
        out.update(_policy_errors(extras, figures.head, policies))
        out["batches"] = _batch_errors(extras, figures.batches)
    return out


def selection_figures(profile: LocalityProfile, synthetic_ids: np.ndarray | None,
                      offsets: np.ndarray | None = None,
                      figures: StreamFigures | None = None) -> dict:
    """The figures of `fidelity(..., policies=())` that a selection's objective reads (LRU
    MRC error, distinct ratio, top-10 / top-1% shares, per-batch errors), with the same
    values: without the curves, the histogram distance and the lists a report stores, and
    with one count of the ids for the distinct count and the shares; or, instead of the ids,
    what is read of them (`figures`, per-batch figures at the source's batch sizes).  A
    selection measures hundreds of candidates; this is its per-candidate cost."""
    if figures is None:
        ids = np.asarray(synthetic_ids, dtype=np.int64)
        hist, cold = stream_histogram(ids)
        n, counts = len(ids), id_counts(ids)
    else:
        hist, cold, n, counts = figures.hist, figures.cold, figures.accesses, figures.counts
    sizes = _reuse.mrc_sizes(max(profile.distinct, int(cold)))
    src = _source_curve(profile, sizes)
    syn = _reuse.hit_rates(hist, cold, sizes)
    n1 = max(1, profile.distinct // 100)
    syn_top = shares_of_counts(counts, n, (10, n1))
    out = {"mrc_mae": float(np.abs(src - syn).mean()),
           "distinct_ratio": int(cold) / profile.distinct if profile.distinct else 1.0,
           "top10_share_source": profile.top_share(10), "top10_share_synthetic": syn_top[0],
           "top1pct_share_source": profile.top_share(n1), "top1pct_share_synthetic": syn_top[1]}
    extras = profile.extra.get("source_extras")
    if extras and n == profile.accesses:
        if figures is None:
            sizes = tuple(b["batch_size"] for b in extras["batches"])
            batches = _bat.batch_stats(ids, offsets, sizes) if sizes else ()
        else:
            batches = figures.batches
        out["batches"] = _batch_errors(extras, batches)
    return out


def policy_figures(profile: LocalityProfile, ids: np.ndarray, policies=POLICIES) -> dict:
    """The `policies` caches' figures of `ids` against the source's curves (as `fidelity`
    gives them; empty when the profile has none or the lengths differ)."""
    extras = profile.extra.get("source_extras")
    if not extras or len(ids) != profile.accesses:
        return {}
    return _policy_errors(extras, np.asarray(ids, dtype=np.int64), policies)


# the figures compared with the naive baseline, and how each is turned into an error
COMPARED = {"mrc_mae": lambda f: f["mrc_mae"],
            "distinct": lambda f: abs(f["distinct_ratio"] - 1),
            "top10_share": lambda f: _rel(f["top10_share_source"], f["top10_share_synthetic"]),
            **{f"{p}_mae": (lambda f, p=p: f.get(f"{p}_mae")) for p in POLICIES}}


def errors(f: dict) -> dict:
    """The compared errors of one fidelity record (None where not measured), batch errors
    as the worst over batch sizes."""
    out = {k: fn(f) for k, fn in COMPARED.items()}      # None where not measured
    b = f.get("batches") or []
    out["batch_unique"] = max((r["unique_rel_error"] for r in b), default=None)
    out["batch_overlap"] = max((r["overlap_rel_error"] for r in b), default=None)
    return out


def with_naive(model: dict, naives: list[dict]) -> dict:
    """The model's record with the naive baseline's errors beside it (the mean over the
    given realizations: one synthesis of a short stream is a noisy sample of the baseline)
    and the figures where the model loses (its error larger by more than float noise)."""
    me = errors(model)
    per = [errors(n) for n in naives]
    ne = {k: (float(np.mean([p[k] for p in per])) if all(p[k] is not None for p in per)
              else None) for k in me}
    model["naive"] = {k: v for k, v in ne.items() if v is not None}
    model["naive"]["realizations"] = len(naives)
    model["naive"]["distinct_ratio"] = float(np.mean([n["distinct_ratio"] for n in naives]))
    model["naive"]["top10_share_synthetic"] = float(np.mean(
        [n["top10_share_synthetic"] for n in naives]))
    model["loses_to_naive"] = sorted(k for k in me if me[k] is not None
                                     and ne.get(k) is not None and me[k] > ne[k] + 1e-12)
    return model
