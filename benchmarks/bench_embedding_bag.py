"""numba embedding-bag forward (dlrmprof.kernels, backend="numba") vs torch's
F.embedding_bag, over tables R x D, pooling L, index distributions and thread counts.

    python benchmarks/bench_embedding_bag.py            # full sweep (R up to 1e7: 5 GB table)
    python benchmarks/bench_embedding_bag.py --quick    # R in {1e4, 1e6}, D in {16, 128}
    python benchmarks/bench_embedding_bag.py --tune     # every prefetch plan, 1 thread
    python benchmarks/bench_embedding_bag.py --span     # cached rows spread ever wider

Every cell runs on the benchmark harness (dlrmprof.profile.harness): results checked against
torch first; then numba and torch calls are interleaved (alternating which goes first), each
call on its own batch cut from a pool of indices larger than the L3 cache (so repeated
batches do not warm the cache for the other side), and the ratio torch time / numba time is
taken per round (median [quartiles] over rounds).  GB/s is effective: every looked-up row
counted (nnz * D * 4 bytes).  "others" is the CPU time other processes used during the cell,
in cores (this machine is shared).  The sweep writes benchmarks/results/embedding_bag.json.

For tables in DRAM the run first measures this host's random-access roof (the profiler's
probe: independent loads of random 64-byte lines from a 1 GiB table, `dlrmprof host`'s
"random access"), at each thread count, and prints each side's share of it: a bag of L rows
of D fp32 must fetch L * ceil(4D / 64) lines, so (lines * ns per line) is the least time a
cell can take when its rows miss every cache and each line is fetched alone.  It bounds
uniform DRAM cells with one-line rows (fp32 D <= 16); rows of several adjacent lines pass
it (the hardware fetches neighbouring lines together), and Zipf cells keep their hot rows
cached.  The summary says, for the uniform one-line-row DRAM
cells under 1.3x, whether 1.3x torch's rate would go past the roof (torch above 77% of it).
A round is contaminated when others took CPU the benchmark needed: more than cores - threads
+ 0.15 cores (the profiler's rule); a cell is marked '!' when too few of its rounds were clean
to use them alone.
"""

from __future__ import annotations

import argparse
import gc
import sys

import numba
import numpy as np
import torch
import torch.nn.functional as F

from dlrmprof import kernels
from dlrmprof.kernels.tables import empty_table, huge_page_share
from dlrmprof.profile import harness

B = 2048
L3_BYTES = 32 << 20
SCHEMA = "dlrmprof.bench.embedding_bag/1"
OUT = harness.results_path(__file__, "embedding_bag.json")


def contaminated(cmp: harness.Comparison) -> bool:
    """Too few clean rounds to use them alone."""
    return cmp.used != "clean"


def _close(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if np.allclose(a, b, rtol=1e-4, atol=1e-4):
        return True
    raise AssertionError(f"numba result differs from torch: max err {np.abs(a - b).max():.3g}")


def zipf_ids(rng, n, R, a=1.1):
    """Zipf(a) ranks truncated to [1, R] (rejection), scattered over the table by a fixed
    bijection so hot rows are not neighbours in memory."""
    out = np.empty(n, dtype=np.int64)
    filled = 0
    while filled < n:
        x = rng.zipf(a, size=2 * (n - filled))
        x = x[x <= R]
        take = min(len(x), n - filled)
        out[filled:filled + take] = x[:take]
        filled += take
    mult = 2654435761
    while np.gcd(mult, R) != 1:
        mult += 2
    return ((out - 1) * mult) % R


TABLES = {"dlrm": "64-byte aligned, advised into 2 MiB pages (kernels.tables.empty_table, as "
                  "dlrmprof's DLRM allocates its tables)",
          "torch": "torch.empty: 64-byte aligned, 4 KiB pages unless THP is 'always'",
          "numpy": "16-byte aligned (a 256-byte row spans 5 lines), numpy advises 2 MiB pages",
          "hugetlb": "1 GiB hugetlb pages (mmap MAP_HUGETLB | MAP_HUGE_1GB: the host must have "
                     "reserved them)"}
HUGE_1G_SYSFS = "/sys/kernel/mm/hugepages/hugepages-1048576kB"


def usage_error(msg):
    """A one-line error on stderr and exit 2, as argparse reports a bad option."""
    print(f"bench_embedding_bag: {msg}", file=sys.stderr)
    raise SystemExit(2)


def hugetlb_table(R, D):
    """An R x D fp32 table in 1 GiB hugetlb pages (a numpy array that keeps its mapping
    alive).  Exit 2 with the pages needed and free when the mapping fails."""
    import mmap
    nbytes = R * D * 4
    size = -(-nbytes // (1 << 30)) << 30
    try:
        m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
                      | 0x40000 | (30 << 26))   # MAP_HUGETLB | MAP_HUGE_1GB (Linux)
    except (OSError, ValueError) as e:
        try:
            with open(f"{HUGE_1G_SYSFS}/free_hugepages") as f:
                free = f.read().strip()
        except OSError:
            free = "unknown (no 1 GiB page size here)"
        usage_error(f"--table hugetlb: cannot map {size >> 30} 1 GiB page(s) for an "
                    f"R {R:.0e} x D {D} table ({e}); free 1 GiB pages: {free}; reserve them "
                    f"as root: echo N > {HUGE_1G_SYSFS}/nr_hugepages")
    return np.frombuffer(m, dtype=np.float32, count=R * D).reshape(R, D)


def table(rng, R, D, kind="dlrm"):
    """(torch tensor, numpy view) of one R x D fp32 table, both sides reading the same memory
    (see TABLES)."""
    if kind == "numpy":
        weight = rng.random((R, D), dtype=np.float32)
        return torch.from_numpy(weight), weight
    if kind == "hugetlb":
        weight = hugetlb_table(R, D)
        weight_t = torch.from_numpy(weight)
    else:
        weight_t = (empty_table(R, D) if kind == "dlrm"
                    else torch.empty(R, D, dtype=torch.float32))
        weight = weight_t.numpy()
    step = 1 << 22
    for r in range(0, R, step):   # in pieces: no second full-size temporary
        weight[r:r + step] = rng.random((min(step, R - r), D), dtype=np.float32)
    return weight_t, weight


def index_pool(rng, R, D, L, dist):
    """Enough batches that one sweep through them touches >= 4x L3 of rows."""
    per_batch = B * L
    nbatches = int(np.clip(np.ceil(4 * L3_BYTES / (per_batch * D * 4)), 8, 512))
    n = nbatches * per_batch
    ids = rng.integers(0, R, size=n) if dist == "uniform" else zipf_ids(rng, n, R)
    offsets = np.arange(0, per_batch + 1, L, dtype=np.int64)
    return ids.reshape(nbatches, per_batch), offsets


def time_cell(weight_np, weight_t, pool, offsets, threads, seconds, label="", params=None):
    """numba vs torch on one table and index pool, interleaved (a harness.Comparison)."""
    torch.set_num_threads(threads)
    numba.set_num_threads(threads)
    offsets_t = torch.from_numpy(offsets)
    pool_t = torch.from_numpy(pool)

    def run_numba(i):
        return kernels.embedding_bag(weight_np, pool[i], offsets, backend="numba")

    def run_torch(i):
        return F.embedding_bag(pool_t[i], weight_t, offsets_t, mode="sum",
                               include_last_offset=True)

    return harness.compare({"torch": run_torch, "numba": run_numba}, baseline="torch",
                           check=lambda o: _close(o["numba"], o["torch"].numpy()),
                           seconds=seconds, warmup=4,
                           nargs=pool.shape[0], threads=threads, label=label,
                           params=dict(params or {}, threads=threads))


def tune_cell(weight, weight_t, pool, offsets, seconds, plans):
    """1 thread: the D-specialised numba kernel under each prefetch plan (distance, level),
    each paired with torch on its own (the two interleaved, as in `time_cell`); returns
    {plan: Comparison}.  Each plan is measured against torch alone, as the sweep measures
    the library's choice (a rotation through all plans at once measures them in another
    setting than the one the library's choice runs in)."""
    from dlrmprof.kernels import numba_embedding
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    D = weight.shape[1]
    _, ser = numba_embedding._eb_vec_kernels(D, weight.itemsize)
    out = np.empty((B, D), dtype=np.float32)
    offsets_t, pool_t = torch.from_numpy(offsets), torch.from_numpy(pool)

    def run_torch(i):
        return F.embedding_bag(pool_t[i], weight_t, offsets_t, mode="sum",
                               include_last_offset=True)

    res = {}
    for dist, level in plans:
        def run_plan(i, d=dist, lv=level):
            ser(weight, pool[i], offsets, None, False, out, 0, B, d, lv)
            return out
        res[(dist, level)] = harness.compare(
            {"torch": run_torch, "plan": run_plan}, baseline="torch",
            check=lambda o: _close(o["plan"], o["torch"].numpy()), seconds=seconds,
            nargs=pool.shape[0], threads=1, label=f"plan {dist}/{level}",
            params={"distance": dist, "level": level})
    return res


def span_cells(R, hots=(4096, 65536)):
    """(hot rows, span rows, step) of the span probe on a table of R rows.  Step 1 draws the
    hot rows among all rows of the span, step 3 among every third row only, so no two hot rows
    are neighbours in memory: the control for the hardware's adjacent-line and neighbour
    prefetch, which a dense hot set profits from and a scattered one cannot."""
    out = []
    for hot in hots:
        if 6 * hot > R:
            continue
        out += [(hot, int(2.5 * hot), 1), (hot, 6 * hot, 3)]
        out += [(hot, 10**k, 1) for k in range(5, 8) if 6 * hot < 10**k < R]
        out += [(hot, R, 1), (hot, R, 3)]
    return out


def span_probe(rng, kind, seconds, R=10**7, D=64, L=20):
    """Cached rows scattered over a growing span of the table (1 thread).  Each cell's bags
    draw uniformly from `hot` fixed rows chosen at random among the first `span` rows of one
    R x D table (`span_cells`): the cache footprint (hot rows x row bytes) stays the same
    while the rows spread over more pages and more of physical memory.  Time that grows with
    the span alone, with hot rows kept apart as well (step 3: not the neighbour prefetch), is
    address translation (TLB reach, page walks; in a VM also the hypervisor's nested tables,
    which no guest page size changes: compare `--table hugetlb`) or the DRAM locality of hot
    rows that other tenants' traffic evicts from a shared L3.  Zipf cells of large tables
    are mostly such scattered cached rows.  Prints ns per lookup for both sides."""
    if not span_cells(R):
        usage_error(f"--span needs R >= {6 * 4096} rows (--rows), got {R}")
    if D < 1 or L < 1:
        usage_error(f"--span needs D >= 1 (--dims) and L >= 1 (--pooling), got D {D}, L {L}")
    weight_t, weight = table(rng, R, D, kind)
    huge = None if kind == "hugetlb" else huge_page_share(weight.ctypes.data, weight.nbytes)
    print(f"tables allocated by {kind}: {TABLES[kind]}"
          + ("" if kind == "hugetlb" else "; 2 MiB-page share unknown" if huge is None else
             f"; {huge:.0%} of the table in 2 MiB pages"), flush=True)
    print(f"R={R:.0e} D={D} L={L} B={B}, 1 thread; hot rows uniform over the hot set; step 3: "
          "hot rows among every third row only (no hot neighbours)")
    print(f"{'hot rows':>8} {'MiB':>5} {'span rows':>9} {'step':>4} {'span MiB':>8} "
          f"{'4K pages':>8} {'2M pages':>8} {'numba ns':>8} {'torch ns':>8} {'ratio':>6} "
          f"{'others':>6}")
    offsets = np.arange(0, B * L + 1, L, dtype=np.int64)
    rowbytes = D * 4
    cmps = []
    for hot, span, step in span_cells(R):
        rows = step * rng.choice(span // step, hot, replace=False)
        pool = rows[rng.integers(0, hot, size=(8, B * L))]
        addr = weight.ctypes.data + rows.astype(np.int64) * rowbytes
        cmp = time_cell(weight, weight_t, pool, offsets, 1, seconds,
                        label=f"span hot {hot} span {span} step {step}",
                        params=dict(R=R, D=D, L=L, hot=hot, span=span, step=step))
        cmps.append(cmp)
        n = B * L
        print(f"{hot:>8} {hot * rowbytes / 2**20:>5.3g} {span:>9.2g} {step:>4} "
              f"{span * rowbytes / 2**20:>8.0f} {len(np.unique(addr >> 12)):>8} "
              f"{len(np.unique(addr >> 21)):>8} {cmp.median_s('numba') * 1e9 / n:>8.2f} "
              f"{cmp.median_s('torch') * 1e9 / n:>8.2f} {cmp.speedup('numba').median:>5.2f}x "
              f"{cmp.other_cores_mean() or 0:>6.2f}{'  !' if contaminated(cmp) else ''}",
              flush=True)
    return cmps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced sweep")
    ap.add_argument("--rows", type=float, nargs="*", help="override R values")
    ap.add_argument("--dims", type=int, nargs="*", help="override D values")
    ap.add_argument("--pooling", type=int, nargs="*", help="override L values")
    ap.add_argument("--dists", nargs="*", choices=["uniform", "zipf"])
    ap.add_argument("--threads", type=int, nargs="*", help="thread counts (default 1 2)")
    ap.add_argument("--seconds", type=float, default=None, help="timing budget per cell")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", choices=list(TABLES), default="dlrm",
                    help="how the tables are allocated: dlrm (default: 64-byte aligned, 2 MiB "
                    "pages, as dlrmprof's DLRM), torch (torch.empty: 4 KiB pages), numpy "
                    "(16-byte aligned) or hugetlb (1 GiB pages, reserved beforehand by root)")
    ap.add_argument("--tune", action="store_true",
                    help="1 thread: ratio vs torch of every prefetch plan (distance, level), "
                         "level 0 none / 1 L1 / 2 L2 / 3 every other line into L1 / 4 "
                         "two-stage (L2 4x the distance ahead, then L1); the library's "
                         "choice is marked *")
    ap.add_argument("--span", action="store_true",
                    help="1 thread: the same cached rows scattered over a growing span of "
                         "an R x D table, L lookups a bag (the first --rows / --dims / "
                         "--pooling value, default 1e7 x 64, L 20): what spreading them costs "
                         "a lookup")
    ap.add_argument("--out", default=None,
                    help=f"results JSON (default {OUT}, or embedding_bag_tune.json / "
                    "embedding_bag_span.json beside it for --tune / --span)")
    args = ap.parse_args(argv)
    try:
        if args.span:
            return span_main(args)
        return sweep_main(args)
    except harness.CheckFailed as exc:
        raise SystemExit(f"bench_embedding_bag: {exc}") from None


def _write(args, kind, cmps, **payload):
    out = args.out or OUT[:-len(".json")] + f"{kind}.json"
    doc = harness.results_doc(
        SCHEMA, comparisons=cmps, table=args.table, batch=B,
        source="measured (perf_counter, interleaved rounds; ratio = torch time / numba time)",
        **payload)
    print(f"wrote {harness.write_results(out, doc)}")


def span_main(args):
    other = [o for o, v in (("--quick", args.quick), ("--tune", args.tune),
                            ("--dists", args.dists), ("--threads", args.threads)) if v]
    if other:
        usage_error(f"--span draws its own rows on 1 thread: it does not take {other[0]}")
    cmps = span_probe(np.random.default_rng(args.seed), args.table, args.seconds or 0.5,
                      R=int(args.rows[0]) if args.rows else 10**7,
                      D=args.dims[0] if args.dims else 64,
                      L=args.pooling[0] if args.pooling else 20)
    _write(args, "_span", cmps)
    return 0


def random_roof(args, rows, dims):
    """ns per line of the random-access roof at each thread count (measured now), when some
    table is in DRAM."""
    if args.tune or not any(R * D * 4 >= 4 * L3_BYTES for R in rows for D in dims):
        return {}
    from dlrmprof.profile.ceilings import probe_random
    pr = probe_random(args.threads, table_bytes=1 << 30, lines=1 << 21,
                      chase_steps=1 << 20, repeats=7, seed=args.seed)
    roof_ns = {int(t): st["ns_per_line"] for t, st in pr["by_threads"].items()}
    print("random-access roof (measured now): " + ", ".join(
        f"{t} thr {v:.2f} ns/line ({64 / v:.2f} GB/s)" for t, v in roof_ns.items())
        + f"; dependent-load latency {pr['latency_ns']:.0f} ns", flush=True)
    return roof_ns


def tune_row(weight, weight_t, pool, offsets, seconds, cell, cmps):
    from dlrmprof.kernels.numba_cpu import prefetch_plan
    R, D, L, dist = cell
    chosen = prefetch_plan(weight.nbytes, D, weight.itemsize, weight.ctypes.data % 64 == 0)
    plans = ([(0, 0)] + [(d, lv) for lv in (1, 2) for d in (8, 16, 32, 64)]
             + [(16, 3)] + [(d, 4) for d in (8, 16, 32)])
    r = tune_cell(weight, weight_t, pool, offsets, seconds, plans)
    for (d, lv), c in r.items():
        c.params.update(R=R, D=D, L=L, dist=dist)
        c.label = f"R={R:.0e} D={D} L={L} {dist} plan {d}/{lv}"
        cmps.append(c)
    mark = {p: "*" if p == chosen or (p[1] == 0 and chosen[1] == 0) else "" for p in r}
    print(f"{R:>9.0e} {D:>4} {L:>3} {dist:>7} " + " ".join(
        f"{d}/{lv}{mark[(d, lv)]}={c.speedup('plan').median:.2f}" for (d, lv), c in r.items()),
        flush=True)


def sweep_cell(weight, weight_t, pool, offsets, seconds, cell, thr, roof_ns):
    """One cell at one thread count: prints its row, returns (cell facts, Comparison)."""
    R, D, L, dist = cell
    table_bytes = R * D * 4
    where = "DRAM" if table_bytes >= 4 * L3_BYTES else "cache"
    cmp = time_cell(weight, weight_t, pool, offsets, thr, seconds,
                    label=f"R={R:.0e} D={D} L={L} {dist} thr={thr}",
                    params=dict(R=R, D=D, L=L, dist=dist, where=where))
    tn, tt = cmp.median_s("numba"), cmp.median_s("torch")
    gb = B * L * D * 4 / 1e9
    ratio = cmp.speedup("numba").median
    roof_s = (B * L * -(-D * 4 // 64) * roof_ns[thr] * 1e-9
              if where == "DRAM" and thr in roof_ns else None)
    share = "" if roof_s is None else f" {roof_s / tn:>9.0%} {roof_s / tt:>10.0%}"
    print(f"{R:>9.0e} {D:>4} {L:>3} {dist:>7} {thr:>3} {table_bytes / 2**20:>6.0f}MB "
          f"{where:>5} {tn * 1e6:>9.1f} {tt * 1e6:>9.1f} {gb / tn:>10.2f} {gb / tt:>10.2f} "
          f"{ratio:>5.2f}x {cmp.other_cores_mean() or 0:>6.2f}{share}"
          f"{'  !' if contaminated(cmp) else ''}", flush=True)
    if roof_s is not None:
        cmp.params["torch_over_roof"] = roof_s / tt
    return (R, D, L, dist, thr, where, ratio, cmp, None if roof_s is None else roof_s / tt)


def sweep_main(args):
    args.threads = args.threads or [1, 2]
    rows = [int(r) for r in (args.rows or ([1e4, 1e6] if args.quick else [1e4, 1e5, 1e6, 1e7]))]
    dims = args.dims or ([16, 128] if args.quick else [16, 64, 128])
    pools = args.pooling or [1, 20]
    dists = args.dists or ["uniform", "zipf"]
    seconds = args.seconds or (0.25 if args.quick else 0.5)
    rng = np.random.default_rng(args.seed)
    roof_ns = random_roof(args, rows, dims)
    print(f"tables allocated by {args.table}: {TABLES[args.table]}", flush=True)
    print(f"B={B}  numba {numba.__version__} "
          f"torch {torch.__version__}  cells: R={rows} D={dims} L={pools} {dists} "
          f"threads={args.threads}", flush=True)
    print(f"{'R':>9} {'D':>4} {'L':>3} {'dist':>7} {'thr':>3} {'table':>8} {'where':>5} "
          f"{'numba us':>9} {'torch us':>9} {'numba GB/s':>10} {'torch GB/s':>10} "
          f"{'ratio':>6} {'others':>6} {'numba/roof':>10} {'torch/roof':>10}")
    results, cmps = [], []
    for R in rows:
        for D in dims:
            weight_t, weight = table(rng, R, D, args.table)
            huge = (None if args.table == "hugetlb"
                    else huge_page_share(weight.ctypes.data, weight.nbytes))
            if R * D * 4 >= 4 * L3_BYTES and huge is not None:
                print(f"  (R={R:.0e} D={D}: {huge:.0%} of the table in 2 MiB pages)", flush=True)
            for L in pools:
                for dist in dists:
                    pool, offsets = index_pool(rng, R, D, L, dist)
                    if args.tune:
                        tune_row(weight, weight_t, pool, offsets, seconds, (R, D, L, dist),
                                 cmps)
                        continue
                    for thr in args.threads:
                        results.append(sweep_cell(weight, weight_t, pool, offsets, seconds,
                                                  (R, D, L, dist), thr, roof_ns))
                        cmps.append(results[-1][7])
                    del pool
            del weight, weight_t
            gc.collect()
    if args.tune:
        _write(args, "_tune", cmps)
        return 0
    print()
    summary("all cells (ratio = torch time / numba time)", results)
    summary("clean cells (not contaminated)", [x for x in results if not contaminated(x[7])])
    for thr in args.threads:
        summary(f"{thr} thread(s)", [x for x in results if x[4] == thr])
    print("('!' = contaminated: too few rounds in which other processes left the cores "
          "this cell needed)")
    r = [x[6] for x in results]
    _write(args, "", cmps, random_roof_ns_per_line=roof_ns, summary={
        "cells": len(r), "geomean": harness.geomean(r), "min": min(r) if r else None,
        "at_least_1x": int(sum(x >= 1.0 for x in r)),
        "clean_cells": int(sum(not contaminated(x[7]) for x in results)),
        "clean_geomean": harness.geomean([x[6] for x in results if not contaminated(x[7])])})
    return 0


def summary(label, rows):
    if not rows:
        print(f"{label}: no cells")
        return
    r = np.array([x[6] for x in rows])
    dram = np.array([x[6] for x in rows if x[5] == "DRAM"])
    worst = rows[int(np.argmin(r))]
    print(f"{label}: {len(r)} cells, geomean {np.exp(np.log(r).mean()):.2f}x, worst "
          f"{worst[6]:.2f}x at R={worst[0]:.0e} D={worst[1]} L={worst[2]} {worst[3]} "
          f"{worst[4]} thr; >= 1.0x in {(r >= 1.0).sum()}/{len(r)}")
    if len(dram):
        print(f"  DRAM cells (table >= 4x L3): geomean {np.exp(np.log(dram).mean()):.2f}x, "
              f"min {dram.min():.2f}x, >= 1.3x in {(dram >= 1.3).sum()}/{len(dram)}")
    short = [x for x in rows if x[5] == "DRAM" and x[3] == "uniform" and x[6] < 1.3
             and x[8] is not None and x[1] * 4 <= 64]
    if short:
        beyond = [x for x in short if 1.3 * x[8] > 1.0]
        print(f"  uniform one-line-row DRAM cells under 1.3x: {len(short)}; in {len(beyond)}"
              f" of them 1.3x torch would pass the measured random-access roof (torch at "
              + ", ".join(f"{x[8]:.0%}" for x in beyond) + " of it)" if beyond else
              f"  uniform one-line-row DRAM cells under 1.3x: {len(short)}; all within "
              "the roof")


if __name__ == "__main__":
    sys.exit(main())
