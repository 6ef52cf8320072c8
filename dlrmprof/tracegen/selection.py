"""The selection of each table's model variant, by measurement.

Each candidate (hot-set size K, the hot ids' placement, the naive model) is built, synthesized
and scored by `objective`: every fidelity goal in its units, with a hinge for 'no worse than
the naive baseline'.  Long streams are compared on a prefix (HOT_PREFIX accesses) cut into
windows of the whole stream's window length (`prefix_windows`); the best few candidates
average a few syntheses.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dlrmprof.tracegen.budgets import NO_HOT, WITH_HOT
from dlrmprof.tracegen.budgets import PLACEMENTS as BUDGET_PLACEMENTS
from dlrmprof.tracegen.budgets import band_of, budget_profile, with_budgets
from dlrmprof.tracegen.classes import PLACEMENTS as CLASS_PLACEMENTS
from dlrmprof.tracegen.classes import class_profile
from dlrmprof.tracegen.fidelity import (POLICIES, errors, policy_figures, selection_figures,
                                        source_extras)
from dlrmprof.tracegen.naive import naive_bags_figures
from dlrmprof.tracegen.profile import LocalityProfile, build_profile, stream_histogram
from dlrmprof.tracegen.shortband import NO_BAND, short_band
from dlrmprof.tracegen.synth import NAIVE, synthesize_bags

HOT_CANDIDATES = (0, 4, 8, 16, 64, 256, 1024, 4096)
HOT_PREFIX = 1 << 16          # candidates are compared on at most this many accesses (a prefix)
SELECTION_SEEDS = 3           # syntheses per finalist on streams up to SHORT_STREAM accesses
SHORT_STREAM = 1 << 16
FINALISTS = 3
# the class model is a candidate on streams of at least this many accesses (and more ids than
# the largest hot set): below, its W x C per-window class histograms hold a few accesses
# each, and a selection measured against the same stream would reward memorising them
CLASS_MIN = 1 << 15
# the budget model is a candidate on streams of at least this many accesses: below, the
# source's count distribution it stores is nearly a copy of the popularity the selection
# measures it against (and the bundled sample's tables, 1,999 accesses, do not pay its JIT)
BUDGET_MIN = CLASS_MIN
# hot sets the budget model is measured with (a hot set and budgets for the other ids): past
# this size the hot ids' per-window placement costs more LRU error than their popularity gains
BUDGET_HOT_MAX = 16
# the selection simulates only LFU of the other caches: FIFO and set-associative LRU follow
# the LRU curve closely, LFU follows popularity
SELECTION_POLICIES = ("lfu",)
# streams of at least this many accesses (a long stream's prefix) measure their candidates
# best first (`_measure_best_first`): the same choice with fewer other-cache simulations;
# shorter ones in the candidates' order, so that their recorded selections (the trace
# file's bytes, e.g. the bundled sample's) stay as they were
BEST_FIRST_MIN = CLASS_MIN
# a prefix of at least SCREEN_MIN accesses is first screened on its first SCREEN (`_screen`):
# the SCREENED best candidates there (and the naive one) are measured on the whole prefix
SCREEN_MIN = HOT_PREFIX
SCREEN = 1 << 14
SCREENED = 4

# The selection objective: each error in units of its goal, summed; the smallest wins.
MAE_UNIT = 0.004              # LRU MRC MAE
SHARE_UNIT = 0.2              # top-10 / top-1% share, relative
DISTINCT_UNIT = 0.02          # distinct count, relative
CACHE_UNIT = 0.006            # FIFO / LFU / set-associative MRC MAE
BATCH_UNIT = 0.05             # per-batch unique count and overlap, relative
# the other caches and the batch figures weigh half as much as the LRU curve, and at most
# SECONDARY_CAP units each: a goal no candidate can reach must not outvote the LRU curve
SECONDARY = 0.5
SECONDARY_CAP = 4.0
# the other caches' cap on streams of BUDGET_MIN accesses or more: there candidates differ in
# LFU error well above SECONDARY_CAP units (0.02-0.04 on session streams), a difference of the
# model, not of the draw; the LRU curve still weighs as much and its hinge still guards it
LONG_CACHE_CAP = 8.0
# 'no worse than the naive baseline': units per MAE_UNIT of LRU error above the naive one
NAIVE_HINGE = 2.0


def objective(f: dict, cache_cap: float = SECONDARY_CAP) -> float:
    """One number per candidate: each fidelity error in units of its goal, summed: LRU MRC
    error, popularity (top-10 and top-1% share), distinct count, and where measured (at
    SECONDARY weight, capped: the other caches at `cache_cap` units, the batch figures at
    SECONDARY_CAP) the FIFO / LFU / set-associative errors and the per-batch unique and
    overlap errors."""
    def rel(a, b):
        return abs(b / a - 1) if a > 0 else 0.0
    pop = max(rel(f["top10_share_source"], f["top10_share_synthetic"]),
              rel(f["top1pct_share_source"], f["top1pct_share_synthetic"]))
    total = (f["mrc_mae"] / MAE_UNIT + pop / SHARE_UNIT
             + abs(f["distinct_ratio"] - 1) / DISTINCT_UNIT)
    e = errors(f)
    caches = [e[p + "_mae"] for p in POLICIES if e[p + "_mae"] is not None]
    if caches:
        total += SECONDARY * min(float(np.mean(caches)) / CACHE_UNIT, cache_cap)
    batch = [x for x in (e["batch_unique"], e["batch_overlap"]) if x is not None]
    if batch:
        total += SECONDARY * min(max(batch) / BATCH_UNIT, SECONDARY_CAP)
    return total


def _variants(base, k: int, distinct: int, naive: bool, ids=None, classes: bool = False,
              band=NO_BAND, keep=lambda placement: True):
    """The variants of the profile with K = `k` hot ids (`base()` builds it, once, when a
    variant kept is measured; `distinct`: its distinct count) that are measured: hot ids spaced
    by their gaps, placed independently inside each window (the gap histogram dropped), and
    with `naive` the naive model itself (which uses only the whole-stream histogram), given
    the stream `ids` (at least BUDGET_MIN accesses) its budget model (`budgets.py`) and with
    `classes` its class model by octaves and by half octaves of counts (`classes.py`; the
    profile has no hot set then); with a hot set of at most BUDGET_HOT_MAX ids, not every id,
    the budget model with that hot set (`budgets.WITH_HOT`: with and without runs, from its
    smallest K); the budget placements that take one get the stream's short `band`
    (`shortband.short_band`).  Only the placements `keep` accepts are yielded: a K whose
    variants are all left out is not built."""
    prof = None

    def built():
        nonlocal prof
        prof = base() if prof is None else prof
        return prof

    placements = ["spaced" if k else "none"]
    budgets = ids is not None and ids.shape[0] >= BUDGET_MIN
    if naive:
        placements.append(NAIVE)
        placements += list(NO_HOT) if budgets else []
        placements += list(CLASS_PLACEMENTS) if ids is not None and classes else []
    if budgets and 0 < k <= BUDGET_HOT_MAX and k < distinct:
        placements += [p for p, smallest in WITH_HOT.items() if k >= smallest]
    placements += ["independent"] if k else []
    for placement in filter(keep, placements):
        yield from _variant(built(), placement, ids, band)


def _variant(prof: LocalityProfile, placement: str, ids, band):
    """(placement, profile) of `_variants`' placement of `prof` (none for "independent"
    without a gap histogram: it would be "spaced" again)."""
    if placement in ("spaced", "none"):
        yield placement, prof
    elif placement == NAIVE:
        yield NAIVE, replace(prof, extra=dict(prof.extra, model=NAIVE))
    elif placement in BUDGET_PLACEMENTS:
        yield placement, budget_profile(prof, ids, placement, band)
    elif placement in CLASS_PLACEMENTS:
        yield placement, class_profile(prof, ids, CLASS_PLACEMENTS[placement])
    elif prof.hot_gap.size:
        yield "independent", replace(prof, hot_gap=np.zeros((0, 0), dtype=np.int64),
                                     extra=dict(prof.extra))


def _measure_candidate(t: dict, seed: int, above: tuple | None = None) -> None:
    """One more synthesis of a selection candidate; its figures are the means so far.
    `above` (its first synthesis only): (the naive candidate's LRU error, an objective
    reached): the other caches are not simulated when the figures without them already put
    the candidate at or above it (they only add to the objective); its objective is then
    that lower bound, marked 'pruned'."""
    syn, f = _synthesis(t, seed)
    if above is not None and _lower_bound(f, above[0], t["_cap"]) >= above[1]:
        t["pruned"] = True
    else:
        f.update(policy_figures(t["_prof"], syn, SELECTION_POLICIES))
    _record(t, f)


def _synthesis(t: dict, seed: int) -> tuple[np.ndarray, dict]:
    """A synthesis of candidate `t` and its figures without the other caches."""
    prof = t["_prof"]
    figs = naive_bags_figures(prof, seed) if prof.extra.get("model") == NAIVE else None
    if figs is not None:        # the naive model: its figures from its draws, no reuse pass
        return figs.head, selection_figures(prof, None, figures=figs)
    syn, offs, _ = synthesize_bags(prof, seed=seed)
    if prof.bag_len_values.shape == (1,) and int(prof.bag_len_values[0]) == 1:
        offs = None     # one id per bag (a prefix's bags): the same figures, no offsets check
    return syn, selection_figures(prof, syn, offs)


def _lower_bound(f: dict, naive_mae: float | None, cache_cap: float) -> float:
    """The objective of figures `f` (hinge included) without the other caches: a lower
    bound of the objective with them."""
    return objective(f, cache_cap) + _hinge_units(f["mrc_mae"], naive_mae)


def _record(t: dict, f: dict) -> None:
    """Add one synthesis' figures `f` to candidate `t`: its figures are the means so far."""
    t["_f"].append(f)
    fs = t["_f"]
    f["_objective"] = objective(f, t["_cap"])
    t["_base"] = t["objective"] = _mean([f["_objective"] for f in fs])
    t["mrc_mae"] = _mean([f["mrc_mae"] for f in fs])
    t["top10_share_error"] = _mean(
        [f["top10_share_synthetic"] - f["top10_share_source"] for f in fs])
    t["syntheses"] = len(fs)


def _mean(xs: list[float]) -> float:
    """`np.mean` of a candidate's few figures, the same float without numpy's per-call cost:
    below 8 values numpy sums left to right from 0.0 (pairwise from 8 on)."""
    if len(xs) >= 8:
        return float(np.mean(xs))
    s = 0.0
    for x in xs:
        s += x
    return s / len(xs)


def _hinge_units(mae: float, naive_mae: float | None) -> float:
    """The objective's units for an LRU error `mae` above the naive candidate's."""
    if naive_mae is None:
        return 0.0
    return NAIVE_HINGE * max(0.0, mae - naive_mae) / MAE_UNIT


def _naive_mae(tried: list[dict]) -> float | None:
    """The naive candidate's LRU error (the hinge's reference), None without one."""
    naive = [t for t in tried if t["placement"] == NAIVE]
    return naive[0]["mrc_mae"] if naive else None


def _reseed_best_first(pool: list[dict], seed: int, seeds: int, naive_mae) -> None:
    """The finalists' further syntheses (up to `seeds` each), in the order of `pool` (their
    first objectives): a finalist stops once its objective cannot come under the best
    finished one's, counting the syntheses it has left at objective 0 and LRU error 0 (a
    lower bound of its mean); its record is then the mean of the syntheses made, which is
    above that bound.  The same winner as all syntheses made."""
    bar = np.inf
    for t in pool:
        for s in range(t["syntheses"], seeds):
            fs = t["_f"]
            bound = (sum(f["_objective"] for f in fs) / seeds
                     + _hinge_units(sum(f["mrc_mae"] for f in fs) / seeds, naive_mae))
            if bound > bar:
                break
            _measure_candidate(t, seed + s)
        else:
            bar = min(bar, t["_base"] + _hinge_units(t["mrc_mae"], naive_mae))


def _hinge(tried: list[dict]) -> None:
    """The goal 'no worse than the naive baseline' in the objective: a candidate whose LRU
    error exceeds the naive candidate's pays NAIVE_HINGE units per MAE_UNIT of excess."""
    naive = [t for t in tried if t["placement"] == NAIVE]
    for t in tried:
        t["objective"] = t["_base"] + _hinge_units(t["mrc_mae"],
                                                   naive[0]["mrc_mae"] if naive else None)


def _measure_in_order(tried: list[dict], seed: int, seeds: int, keep: int) -> None:
    """The first round in the candidates' order: the naive candidate, the hinge's reference,
    as many syntheses as a finalist; a candidate measured after it that cannot reach the
    best `keep` so far does not simulate the other caches (`_measure_candidate`)."""
    bar, naive_mae = np.inf, None
    for t in tried:
        prune = naive_mae is not None and t["placement"] != NAIVE
        _measure_candidate(t, seed, (naive_mae, bar) if prune else None)
        for s in range(1, seeds if t["placement"] == NAIVE else 1):
            _measure_candidate(t, seed + s)
        if t["placement"] == NAIVE:
            naive_mae = t["mrc_mae"]
        if naive_mae is not None:
            done = sorted(u["_base"] + _hinge_units(u["mrc_mae"], naive_mae)
                          for u in tried if u["_f"])
            bar = done[keep - 1] if len(done) >= keep else np.inf


def _measure_best_first(tried: list[dict], seed: int, seeds: int, keep: int) -> None:
    """The first round best first: the naive candidate (all its syntheses), then every other
    candidate synthesized and scored without the other caches (a lower bound of its
    objective), then the other caches simulated in the order of those bounds, until a bound
    reaches the best `keep` objectives so far; the rest are 'pruned' at their bound.  The
    same syntheses and seeds as `_measure_in_order`, and the same `keep` best: a pruned
    candidate's objective is at least theirs; fewer simulations where the good candidates
    come last in the candidates' order (the large hot sets)."""
    naive = [t for t in tried if t["placement"] == NAIVE]
    for t in naive:
        for s in range(seeds):
            _measure_candidate(t, seed + s)
    naive_mae = naive[0]["mrc_mae"] if naive else None
    done = sorted(t["_base"] for t in naive)
    first = [(t,) + _synthesis(t, seed) for t in tried if t["placement"] != NAIVE]
    first.sort(key=lambda x: _lower_bound(x[2], naive_mae, x[0]["_cap"]))   # stable
    for t, syn, f in first:
        bar = done[keep - 1] if len(done) >= keep else np.inf
        if _lower_bound(f, naive_mae, t["_cap"]) >= bar:
            t["pruned"] = True
        else:
            f.update(policy_figures(t["_prof"], syn, SELECTION_POLICIES))
        _record(t, f)
        done = sorted(done + [t["_base"] + _hinge_units(t["mrc_mae"], naive_mae)])


def choose_hot(name, ids, lengths, rows, windows, hist_cold, candidates=HOT_CANDIDATES,
               seed: int = 12345) -> tuple[LocalityProfile, dict]:
    """Pick the hot-set size K and the hot ids' placement by measuring: build the profile with
    each candidate, synthesize it and keep the one with the smallest `objective` (every
    fidelity goal in its units).  On short streams, where one synthesis is a noisy
    measurement, the FINALISTS best are synthesized SELECTION_SEEDS times and compared by
    their means (and the naive candidate, the hinge's reference, too).  Returns (profile,
    what was measured)."""
    n = int(ids.shape[0])
    # long streams: compare candidates on a prefix (bags of one access each there), then
    # build the chosen profile on the whole stream
    on_prefix = n > HOT_PREFIX and (lengths is None or len(lengths) == n)
    if on_prefix:
        prof, chosen = select_hot(name, ids[:HOT_PREFIX], None, rows,
                                  prefix_windows(windows, n, HOT_PREFIX), None, candidates,
                                  seed)
        prof = with_placement(build_profile(name, ids, lengths, rows=rows, windows=windows,
                                            hot=chosen["chosen"], hist_cold=hist_cold),
                              chosen["placement"], ids, band=band_of(prof))
    else:
        prof, chosen = select_hot(name, ids, lengths, rows, windows, hist_cold, candidates,
                                  seed)
    prof.extra.pop("source_extras", None)     # the caller measures the whole stream's
    return prof, chosen


def prefix_windows(windows: int, n: int, prefix: int) -> int:
    """The windows of a selection on the first `prefix` of `n` accesses: as many as give them
    the whole stream's window length (n / windows accesses), at least one.  A candidate's
    batch overlap and cache curves depend on how many accesses its windows hold (the hot ids
    placed inside each window, the windows' histograms): measured on windows shorter than
    the model's, a candidate can win the prefix and lose the whole stream."""
    if n <= prefix:
        return windows
    return max(1, min(windows, round(windows * prefix / n)))


def with_placement(prof: LocalityProfile, placement: str, ids=None, counts=None,
                   band=None) -> LocalityProfile:
    """`prof` (just built, with the chosen K) as the chosen variant: hot ids placed
    independently (no gap histogram), the naive model, the class model (of the stream
    `ids`; the one-pass capture adds it from its own pass instead) or the budget model (of
    the stream `ids`, or of its per-id access `counts`; with the short `band` the selection
    measured, its record's "short_band", or None to measure it on `ids`)."""
    if placement in CLASS_PLACEMENTS and ids is not None:
        return class_profile(prof, ids, CLASS_PLACEMENTS[placement])
    if placement in BUDGET_PLACEMENTS:
        if counts is not None:
            return with_budgets(prof, counts, placement, NO_BAND if band is None else band)
        return budget_profile(prof, ids, placement, band)
    if placement == "independent":
        return replace(prof, hot_gap=np.zeros((0, 0), dtype=np.int64))
    if placement == NAIVE:
        prof.extra["model"] = NAIVE
    return prof


def _candidates(name, sub, sub_lengths, rows, windows, sub_hc, candidates,
                dropped: set = frozenset()) -> list[dict]:
    """The candidates of a selection on `sub` (unmeasured): each hot-set size with its
    variants (`_variants`); "_key" (the candidate's K as asked, its placement) names it.
    Those in `dropped` are left out."""
    distinct = int(sub_hc[1])
    # the source's curves of the caches the objective compares (`choose_hot`'s caller
    # measures the whole stream's own)
    extras = source_extras(sub, sub_lengths, distinct, policies=SELECTION_POLICIES)
    # the class model, where it has the data (CLASS_MIN) and where no candidate hot set
    # holds every id (one that does keeps each id's own per-window counts: finer than classes)
    class_candidates = sub.shape[0] >= CLASS_MIN and distinct > max(candidates)
    band = short_band(sub) if sub.shape[0] >= BUDGET_MIN else NO_BAND
    cap = LONG_CACHE_CAP if sub.shape[0] >= BUDGET_MIN else SECONDARY_CAP
    tried, last = [], None
    for asked in candidates:
        if last is not None and asked and last >= distinct:
            break                      # the previous candidate already held every id
        last = k = min(asked, distinct)

        def base(k=k):
            prof = build_profile(name, sub, sub_lengths, rows=rows, windows=windows, hot=k,
                                 hist_cold=sub_hc)
            prof.extra["source_extras"] = extras
            return prof

        for placement, prof in _variants(base, k, distinct, naive=k == 0 and 0 in candidates,
                                         ids=sub, classes=class_candidates, band=band,
                                         keep=lambda p, a=asked: (a, p) not in dropped):
            tried.append({"hot": k, "placement": placement, "_prof": prof, "_f": [],
                          "_key": (asked, placement), "_cap": cap})
    return tried


def _screen(name, sub, sub_lengths, rows, windows, candidates, seed) -> set:
    """The candidates not worth measuring on a long prefix `sub` (at least SCREEN_MIN
    accesses, one per bag), as their "_key"s: each candidate measured once on the first
    SCREEN accesses (windows of the same length, `prefix_windows`); all but the SCREENED
    best and the naive candidate are dropped (a candidate the screen did not have, a hot-set
    size past its distinct count or a model past its length, is not).  Empty on a shorter
    stream."""
    n = int(sub.shape[0])
    if n < SCREEN_MIN or sub_lengths is not None:
        return set()
    head = sub[:SCREEN]
    cand = _candidates(name, head, None, rows, prefix_windows(windows, n, SCREEN),
                       stream_histogram(head), candidates)
    _measure_best_first(cand, seed, 1, SCREENED)
    _hinge(cand)
    ranked = sorted(cand, key=lambda t: t["objective"])
    return {t["_key"] for t in ranked[SCREENED:] if t["placement"] != NAIVE}


def select_hot(name, sub, sub_lengths, rows, windows, sub_hc, candidates=HOT_CANDIDATES,
               seed: int = 12345) -> tuple[LocalityProfile, dict]:
    """The selection of `choose_hot` on the stream `sub` (the whole stream or its prefix;
    `sub_hc` its reuse histogram, None to measure it): (the winning candidate's profile of
    `sub`, what was measured)."""
    sub_hc = stream_histogram(sub) if sub_hc is None else sub_hc
    # short streams: one synthesis is a noisy measurement; average a few
    seeds = SELECTION_SEEDS if sub.shape[0] <= SHORT_STREAM else 1
    dropped = _screen(name, sub, sub_lengths, rows, windows, candidates, seed)
    tried = _candidates(name, sub, sub_lengths, rows, windows, sub_hc, candidates, dropped)
    # successive halving: one synthesis each, then more for the best few; the naive
    # candidate, the hinge's reference, always as many as a finalist.  A candidate that
    # cannot reach the best `keep` (the finalists, or the winner) does not simulate the
    # other caches: the same choice
    keep = FINALISTS if seeds > 1 else 1
    if sub.shape[0] >= BEST_FIRST_MIN:
        _measure_best_first(tried, seed, seeds, keep)
    else:
        _measure_in_order(tried, seed, seeds, keep)
    _hinge(tried)
    pool = tried
    if seeds > 1:
        pool = sorted(tried, key=lambda t: t["objective"])[:FINALISTS]
        if sub.shape[0] >= BEST_FIRST_MIN:
            _reseed_best_first(pool, seed, seeds, _naive_mae(tried))
        else:
            for t in pool:
                for s in range(t["syntheses"], seeds):
                    _measure_candidate(t, seed + s)
        _hinge(tried)
    best = min(pool, key=lambda t: t["objective"])
    prof = best["_prof"]
    for t in tried:
        del t["_prof"], t["_f"], t["_base"], t["_key"], t["_cap"]
    out = {"chosen": best["hot"], "placement": best["placement"],
           "measured_on_accesses": int(sub.shape[0]), "candidates": tried}
    if band_of(prof)[0]:
        out["short_band"] = list(band_of(prof))
    if dropped:
        out["screened_out"] = {"accesses": SCREEN, "candidates": sorted(map(list, dropped))}
    return prof, out
