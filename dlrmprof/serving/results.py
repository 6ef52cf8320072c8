"""From recorded timestamps to the report's figures: latency accounting and interference.

Per query (the times of a `RawPoint`):

    latency = answer - scheduled arrival        answer = end of the last of its batches
    service = that last batch's service time    (received by an instance -> result on host)
    wait    = latency - service                 batching wait + queueing + message passing

Queries that arrive during the warm-up (the first `warmup_s` of the schedule) are served but
not counted.  A counted query still unanswered at the drain deadline has an unbounded latency:
percentiles that land on one are None and the point misses the SLO.

`reference_latencies` replays the same batches (same pieces, their measured service times)
through an ideal dispatcher and FIFO servers; `point_figures` stores its percentiles beside the
measured ones so the harness's own share is visible.
"""

from __future__ import annotations

import heapq
from collections import defaultdict

import numpy as np

from dlrmprof.profile.serving import (PCTS, InstanceFigures, Interference, InterferenceClass,
                                      InterferenceRow, LoadPoint, Percentiles)
from dlrmprof.serving.launcher import RawPoint

UNBOUNDED = 1e9   # stands in for "not answered" inside percentile computations


def percentiles(values) -> Percentiles:
    """Linear-interpolation percentiles (numpy's default); None where a value is unbounded."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        return Percentiles(0, None, None, None, None, None, None)
    qs = np.percentile(x, [q for _, q in PCTS])
    fin = [None if v >= UNBOUNDED / 2 else float(v) for v in qs]
    mean = None if x.max() >= UNBOUNDED / 2 else float(x.mean())
    return Percentiles(int(x.size), mean, *fin)


def query_times(raw: RawPoint) -> dict[str, np.ndarray]:
    """Per query: answer time and the service of its last batch (NaN when unanswered)."""
    q = raw.schedule.num_queries
    answer = np.full(q, -np.inf)
    service = np.full(q, np.nan)
    missing = np.zeros(q, bool)
    for b in raw.batches:
        rec = raw.served.get(b.batch_id)
        for qid, _ in b.pieces:
            if rec is None:
                missing[qid] = True
            elif rec[3] > answer[qid]:
                answer[qid] = rec[3]
                service[qid] = rec[3] - rec[1]
    answer[missing] = np.nan
    answer[np.isinf(answer)] = np.nan   # never cut into a batch (aborted point)
    return {"answer": answer, "service": service}


def reference_latencies(raw: RawPoint, instances: int) -> np.ndarray:
    """Latency of every query if the same batches ran on `instances` ideal FIFO servers,
    each batch available at its ideal cut time (see `Batcher`) with its measured service."""
    sched = raw.t0 + raw.schedule.times
    pol = raw.policy
    free = [0.0] * instances
    heapq.heapify(free)
    answer = np.full(raw.schedule.num_queries, np.nan)
    for b in raw.batches:
        rec = raw.served.get(b.batch_id)
        if rec is None:
            continue
        qids = [qid for qid, _ in b.pieces]
        ready = sched[qids[-1]]
        if b.size < pol.max_batch:
            ready = max(ready, sched[qids[0]] + pol.max_wait)
        start = max(ready, heapq.heappop(free))
        end = start + (rec[3] - rec[1])
        heapq.heappush(free, end)
        for qid in qids:
            answer[qid] = end if np.isnan(answer[qid]) else max(answer[qid], end)
    return answer - sched


def _batch_sizes(raw: RawPoint) -> dict:
    sizes = np.asarray([b.size for b in raw.batches], np.int64)
    if sizes.size == 0:
        return {"batches": 0, "counts": {}, "mean": None, "min": None, "max": None}
    vals, counts = np.unique(sizes, return_counts=True)
    top = np.argsort(-counts)[:20]
    return {"batches": int(sizes.size), "mean": float(sizes.mean()), "min": int(sizes.min()),
            "max": int(sizes.max()), "p50": float(np.median(sizes)),
            "full_fraction": float(np.mean(sizes == raw.policy.max_batch)),
            "counts": {str(int(vals[i])): int(counts[i]) for i in sorted(top)},
            "counts_note": "the 20 most frequent sizes"}


def _instances(raw: RawPoint, placement: dict, span: float) -> list[InstanceFigures]:
    per: dict[int, list] = defaultdict(list)
    sizes = {b.batch_id: b.size for b in raw.batches}
    for bid, (inst, t_recv, _, t_end, *_) in raw.served.items():
        per[inst].append((t_end - t_recv, sizes.get(bid, 0)))
    out = []
    for i, cores in enumerate(placement.get("cores") or []):
        rows = per.get(i, [])
        svc = [s for s, _ in rows]
        out.append(InstanceFigures(i, list(cores), len(rows), int(sum(n for _, n in rows)),
                                   float(sum(svc) / span) if span > 0 else 0.0,
                                   percentiles(svc)))
    return out


def point_figures(raw: RawPoint, *, warmup_s: float, slo_s: float, instances: int,
                  placement: dict) -> LoadPoint:
    """The `LoadPoint` of one recorded run (see the module doc for the definitions)."""
    s = raw.schedule
    sched = raw.t0 + s.times
    qt = query_times(raw)
    keep = s.times >= warmup_s
    answered = ~np.isnan(qt["answer"])
    lat = np.where(answered, qt["answer"] - sched, UNBOUNDED)[keep]
    svc = qt["service"][keep & answered]
    wait = (qt["answer"] - sched - qt["service"])[keep & answered]
    ref = reference_latencies(raw, instances)
    ref = np.where(np.isnan(ref), UNBOUNDED, ref)[keep]
    late = raw.dispatched - sched
    span_d = raw.dispatched[-1] - raw.dispatched[0] if s.num_queries > 1 else 0.0
    achieved = (s.num_queries - 1) / span_d if span_d > 0 else float("nan")
    window = s.duration - warmup_s
    # throughput: answers that came back inside the measurement window (any query's)
    t_ans = np.where(answered, qt["answer"] - raw.t0, -1.0)
    inside = (t_ans >= warmup_s) & (t_ans <= s.duration)
    done = int(inside.sum())
    samples = int(s.sizes[inside].sum())
    lat_p = percentiles(lat)
    ends = [r[3] for r in raw.served.values()]
    starts = [r[1] for r in raw.served.values()]
    span = (max(ends) - min(starts)) if ends else 0.0
    return LoadPoint(
        offered_qps=s.rate, achieved_qps=float(achieved), completed_qps=done / window,
        samples_per_s=samples / window, queries=s.num_queries, measured=int(keep.sum()),
        unfinished=int((keep & ~answered).sum()), dispatch_late=percentiles(late),
        latency=lat_p, wait=percentiles(wait), service=percentiles(svc),
        reference=percentiles(ref), batch_sizes=_batch_sizes(raw),
        meets_slo=lat_p.p99 is not None and lat_p.p99 <= slo_s,
        instances=_instances(raw, placement, span), noise=dict(raw.noise))


def latency_bounded(points: list[LoadPoint]) -> float | None:
    """The highest offered rate whose p99 met the SLO (None: no rate did).  On a noisy host
    a lower rate can miss while a higher one meets; the Markdown names those rates."""
    met = [p.offered_qps for p in points if p.meets_slo]
    return max(met) if met else None



# -- interference ---------------------------------------------------------------------------
def interference(solo_rows: list[dict], coloc_rows: list[list[dict]], verdicts: dict,
                 *, instances: int, batch: int, iters: int, noise_solo: dict,
                 noise_coloc: dict) -> Interference:
    """Per op: median time alone vs co-located (median over every co-located instance's
    samples), factor = co-located / solo; summed by verdict class (by op kind when no
    roofline verdicts were made).  Whole-model rows (``step``, ``emb.all``) and data are
    listed but not summed into classes (they would count their parts twice); ``emb.all`` is summed
    only when there are no per-table rows (fused tables)."""
    by_verdict = bool(verdicts)
    per_table = any(r["name"].startswith("emb.") and r["name"] != "emb.all" for r in solo_rows)
    coloc: dict[tuple, list] = defaultdict(list)
    for rows in coloc_rows:
        for r in rows:
            coloc[(r["name"], r["phase"])].extend(r["time"]["samples"])
    out, groups = [], defaultdict(lambda: [[], 0.0, 0.0])
    for r in solo_rows:
        key = (r["name"], r["phase"])
        xs = coloc.get(key)
        if not xs:
            continue
        c = np.percentile(xs, [10, 50, 90])
        t = r["time"]
        v = (verdicts.get(key) or {}).get("verdict")
        row = InterferenceRow(r["name"], r["phase"], r.get("kind"), v, t["median"], float(c[1]),
                              float(c[1] / t["median"]) if t["median"] > 0 else float("nan"),
                              not (c[2] < t["p10"] or t["p90"] < c[0]))
        out.append(row)
        whole = r["name"] == "step" or r["phase"] == "data" or \
            (r["name"] == "emb.all" and per_table)
        group = v if by_verdict else r.get("kind")
        if not whole and group:
            g = groups[group]
            g[0].append(r["name"])
            g[1] += row.solo_s
            g[2] += row.colocated_s
    classes = [InterferenceClass(k, ops, s, c, c / s if s > 0 else float("nan"))
               for k, (ops, s, c) in groups.items()]
    return Interference(instances, batch, iters, "verdict" if by_verdict else "kind", out,
                        classes, noise_solo, noise_coloc)
