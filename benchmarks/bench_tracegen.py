"""Trace toolkit benchmarks: every figure printed with a baseline measured in the same run.

    python benchmarks/bench_tracegen.py                 # all parts
    python benchmarks/bench_tracegen.py --parts rd,mrc  # some parts
    python benchmarks/bench_tracegen.py --quick         # 1e6 accesses, 200k rows

Parts:
  rd      reuse-distance pass, 1e7 accesses of Zipf(1.1) ranks over 1e6 ids (ids a random
          permutation of the ranks), 1 core; baseline: a plain numba Fenwick pass over the
          whole time axis (benchmarks/bench_tracegen_baselines.py).  Results compared first.
  mrc     20-point miss-ratio curve from one pass vs libCacheSim's LRU simulation per size
          (oracleGeneral file written by our exporter; miss ratios compared first).
  shards  SHARDS estimate (rates 0.1/0.01/0.001) against the exact MRC, with and without the
          heavy ids kept exactly.
  synth   synthesis from the stream's profile; baseline: a list-based LRU stack synthesizer
          (what the DLRM reference generator does), timed on a short prefix.
  ingest  Kaggle ingestion (read_criteo) of a generated 2M-row Criteo-format file made by
          resampling the bundled real rows; peak RSS of a child process doing only that;
          baseline: a plain-Python split + dict remap on 100k rows.
  jobs    gen-trace profiling + synthesis of 8 tables with 1 vs 2 processes.
Timings are the best of `--repeat` runs, alternating ours and the baseline.  Each part that
ran writes benchmarks/results/tracegen_<part>.json (its figures as the summary).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tracegen_baselines import plain_fenwick_distances  # noqa: E402

from dlrmprof.tracegen import reuse_distances  # noqa: E402
from dlrmprof.tracegen.reuse import exact_hit_rates  # noqa: E402


def zipf_stream(n: int, n_ids: int, s: float = 1.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.arange(1, n_ids + 1, dtype=np.float64) ** -s
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    ranks = np.searchsorted(cdf, rng.random(n))
    return rng.permutation(n_ids)[ranks].astype(np.int64)


CPU_TIMES: dict = {}


def best(fn, repeat, key=None):
    """Best wall time of `repeat` runs; the best CPU time (process_time, which excludes time
    spent waiting for a core held by other processes) is kept in CPU_TIMES[key]."""
    times, cpus = [], []
    out = None
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    if key:
        CPU_TIMES[key] = min(CPU_TIMES.get(key, float("inf")), min(cpus))
    return min(times), out


def load_note() -> str:
    try:
        return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus"
    except OSError:
        return ""


def bench_rd(args, results):
    n, u = args.n, args.ids
    ids = zipf_stream(n, u)
    reuse_distances(ids[:1000])
    plain_fenwick_distances(ids[:1000], u)
    ours = reuse_distances(ids)
    base = plain_fenwick_distances(ids, u)
    assert np.array_equal(ours, base), "reuse distances differ from the plain Fenwick pass"
    t_ours, t_base = [], []
    for _ in range(args.repeat):
        t_ours.append(best(lambda: reuse_distances(ids), 1, "rd")[0])
        t_base.append(best(lambda: plain_fenwick_distances(ids, u), 1, "rd_plain")[0])
    r_ours, r_base = n / min(t_ours), n / min(t_base)
    c_ours, c_base = n / CPU_TIMES["rd"], n / CPU_TIMES["rd_plain"]
    print(f"[rd] {n:.0e} Zipf(1.1) accesses over {u:.0e} ids ({int((ours < 0).sum())} distinct), "
          f"1 thread: ours {r_ours / 1e6:.1f} M/s wall ({c_ours / 1e6:.1f} M/s per CPU second), "
          f"plain Fenwick {r_base / 1e6:.1f} M/s ({c_base / 1e6:.1f}), ratio "
          f"{r_ours / r_base:.2f}x wall, {c_ours / c_base:.2f}x CPU (results identical; "
          f"{load_note()})")
    results["rd"] = {"accesses": n, "ids": u, "ours_per_s": r_ours, "plain_per_s": r_base,
                     "ratio": r_ours / r_base, "ours_per_cpu_s": c_ours,
                     "plain_per_cpu_s": c_base}
    return ids, ours


def bench_mrc(args, results, ids=None):
    try:
        import libcachesim as lcs
    except ImportError:
        print("[mrc] libcachesim not installed (pip install libcachesim): skipped")
        return
    from dlrmprof.tracegen.export import ORACLE_DTYPE, next_access

    if ids is None:
        ids = zipf_stream(args.n, args.ids)
    n = ids.shape[0]
    distinct = len(np.unique(ids))
    sizes = np.unique(np.geomspace(1, distinct, 20).astype(np.int64))

    def ours():
        return exact_hit_rates(reuse_distances(ids), sizes)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "z.oracleGeneral.bin")
        rec = np.empty(n, dtype=ORACLE_DTYPE)
        rec["timestamp"] = np.arange(n) // 128
        rec["obj_id"] = ids.astype(np.uint64)
        rec["obj_size"] = 1
        rec["next_access_vtime"] = next_access(ids)
        rec.tofile(path)

        def lcs_one(c):
            reader = lcs.TraceReader(path, lcs.TraceType.ORACLE_GENERAL_TRACE)
            # hash table sized to the distinct count (the default 2^24 buckets costs more)
            hp = max(16, int(np.ceil(np.log2(distinct))) + 1)
            return lcs.LRU(cache_size=int(c), hashpower=hp).process_trace(reader)[0]

        hr = ours()
        # results first: libCacheSim's miss ratios at 3 sizes equal ours
        for c in sizes[[0, len(sizes) // 2, -1]]:
            i = int(np.flatnonzero(sizes == c)[0])
            assert abs(lcs_one(c) - (1 - hr[i])) < 1e-9, (c, lcs_one(c), 1 - hr[i])
        t_ours = best(ours, args.repeat, "mrc")[0]
        per_size = []
        todo = sizes if args.lcs_sizes >= len(sizes) else sizes[:: max(1, len(sizes) // args.lcs_sizes)]
        for c in todo:
            per_size.append(best(lambda: lcs_one(c), 1, f"lcs{c}")[0])
        t_lcs = float(np.mean(per_size)) * len(sizes)
    extrap = "" if len(todo) == len(sizes) else f" (mean of {len(todo)} sizes x {len(sizes)})"
    print(f"[mrc] {len(sizes)}-point MRC, {n:.0e} accesses: ours {t_ours:.2f} s (one pass), "
          f"libCacheSim LRU {t_lcs:.2f} s{extrap}, ratio {t_lcs / t_ours:.1f}x "
          f"(miss ratios equal at 3 sizes)")
    results["mrc"] = {"points": len(sizes), "ours_s": t_ours, "libcachesim_s": t_lcs,
                      "ratio": t_lcs / t_ours}


def bench_shards(args, results, ids=None, dist=None):
    from dlrmprof.tracegen.reuse import hit_rates, histogram, mrc_sizes, shards_histogram

    if ids is None:
        ids = zipf_stream(args.n, args.ids)
        dist = reuse_distances(ids)
    hist, cold = histogram(dist)
    sizes = mrc_sizes(cold)
    exact = hit_rates(hist, cold, sizes)
    t_exact = best(lambda: reuse_distances(ids), 1)[0]
    out = {}
    for rate in (0.1, 0.01, 0.001):
        errs, plain = [], []
        t = best(lambda: shards_histogram(ids, rate, 0), 1)[0]
        for seed in range(3):
            h, c, _ = shards_histogram(ids, rate, seed)
            errs.append(float(np.abs(hit_rates(h, c, sizes) - exact).mean()))
            h, c, _ = shards_histogram(ids, rate, seed, heavy=0)
            plain.append(float(np.abs(hit_rates(h, c, sizes) - exact).mean()))
        out[rate] = {"mae": errs, "plain_shards_mae": plain, "s": t}
        print(f"[shards] rate {rate}: MRC MAE vs exact {np.mean(errs):.4f} (3 seeds, max "
              f"{np.max(errs):.4f}); plain SHARDS without the heavy ids {np.mean(plain):.4f}; "
              f"{t:.2f} s vs exact pass {t_exact:.2f} s")
    results["shards"] = out


def naive_stack_synth(dists: np.ndarray) -> np.ndarray:
    stack: list[int] = []
    out = np.empty(len(dists), dtype=np.int64)
    nxt = 0
    for i, d in enumerate(dists):
        if d < 0 or d >= len(stack):
            x = nxt
            nxt += 1
        else:
            x = stack.pop(len(stack) - 1 - d)
        stack.append(x)
        out[i] = x
    return out


def bench_synth(args, results, ids=None, dist=None):
    from dlrmprof.tracegen.fidelity import fidelity
    from dlrmprof.tracegen.profile import build_profile
    from dlrmprof.tracegen.synth import synthesize_stream

    if ids is None:
        ids = zipf_stream(args.n, args.ids)
        dist = reuse_distances(ids)
    n = ids.shape[0]
    prof = build_profile("zipf", ids, dist=dist)
    synthesize_stream(prof, length=1000)
    t, (syn, _) = best(lambda: synthesize_stream(prof, seed=1), args.repeat, "synth")
    f = fidelity(prof, syn)
    m = min(n, 200_000)
    t_naive, _ = best(lambda: naive_stack_synth(dist[:m]), 1)
    r_ours, r_naive = n / t, m / t_naive
    print(f"[synth] {n:.0e} accesses: ours {r_ours / 1e6:.1f} M/s wall "
          f"({n / CPU_TIMES['synth'] / 1e6:.1f} M/s per CPU second), list-based stack "
          f"{r_naive / 1e3:.1f} k/s (on {m} accesses), ratio {r_ours / r_naive:.0f}x; "
          f"fidelity MAE {f['mrc_mae']:.4f}, distinct ratio {f['distinct_ratio']:.3f}, "
          f"top10 {f['top10_share_source']:.3f}/{f['top10_share_synthetic']:.3f}, "
          f"top1% {f['top1pct_share_source']:.3f}/{f['top1pct_share_synthetic']:.3f}")
    results["synth"] = {"accesses": n, "ours_per_s": r_ours, "naive_per_s": r_naive,
                        "ratio": r_ours / r_naive, "fidelity": {
                            k: v for k, v in f.items() if not isinstance(v, list)}}


def make_criteo_file(path: Path, rows: int, seed: int = 0) -> None:
    from dlrmprof.tracegen.readers import BUNDLED_SAMPLE

    lines = BUNDLED_SAMPLE.read_bytes().splitlines(keepends=True)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        for start in range(0, rows, 100_000):
            pick = rng.integers(0, len(lines), min(100_000, rows - start))
            fh.write(b"".join(lines[i] for i in pick))


_INGEST_CHILD = r"""
import resource, sys, time, json
from dlrmprof.tracegen.readers import read_criteo
path, threads = sys.argv[1], int(sys.argv[2])
list(read_criteo(path, max_rows=1000))           # compile
if threads > 1:
    for _ in read_criteo(path, threads=threads, block_bytes=1 << 21):   # compile
        break
t0 = time.perf_counter()
r = read_criteo(path, threads=threads)
rows = 0
for c in r:
    rows += c.labels.shape[0]
dt = time.perf_counter() - t0
# VmHWM: this process image's peak RSS (ru_maxrss would carry the parent's across exec)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")]
peak = int(hwm[0].split()[1]) / 1024 if hwm else \
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": rows, "s": dt, "cpu_s": time.process_time(), "peak_rss_mb": peak}))
"""


def python_baseline_ingest(path: Path, rows: int) -> float:
    maps = [dict() for _ in range(26)]
    t0 = time.perf_counter()
    with open(path) as fh:
        for i, line in enumerate(fh):
            if i >= rows:
                break
            f = line.rstrip("\n").split("\t")
            float(f[0])
            [int(x) if x else 0 for x in f[1:14]]
            [m.setdefault(x, len(m)) for m, x in zip(maps, f[14:])]
    return rows / (time.perf_counter() - t0)


def bench_ingest(args, results):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train_2m.txt"
        make_criteo_file(path, args.rows)
        size_mb = path.stat().st_size / 2**20
        runs, runs2, base = [], [], []
        for _ in range(args.repeat):
            for threads, into in ((1, runs), (2, runs2)):
                out = subprocess.run([sys.executable, "-c", _INGEST_CHILD, str(path),
                                      str(threads)], capture_output=True, text=True, check=True)
                into.append(json.loads(out.stdout.strip().splitlines()[-1]))
            base.append(python_baseline_ingest(path, min(100_000, args.rows)))
        best_run = min(runs, key=lambda r: r["s"])
        best2 = min(runs2, key=lambda r: r["s"])
        rate = best_run["rows"] / best_run["s"]
        rate2 = best2["rows"] / best2["s"]
        peak = max(r["peak_rss_mb"] for r in runs)
        peak2 = max(r["peak_rss_mb"] for r in runs2)
        print(f"[ingest] {best_run['rows']} rows ({size_mb:.0f} MiB, real rows resampled): "
              f"{rate / 1e3:.0f} k rows/s on 1 thread, {rate2 / 1e3:.0f} k rows/s with 2 "
              f"parse threads; peak RSS {peak:.0f} MiB (2 threads: {peak2:.0f} MiB); "
              f"plain-Python split+dict "
              f"{max(base) / 1e3:.0f} k rows/s, ratio {rate / max(base):.1f}x ({load_note()})")
        results["ingest"] = {"rows": best_run["rows"], "rows_per_s": rate,
                             "rows_per_s_2_threads": rate2, "peak_rss_mb": peak,
                             "peak_rss_mb_2_threads": peak2,
                             "python_rows_per_s": max(base), "ratio": rate / max(base)}


def bench_jobs(args, results):
    from dlrmprof.tracegen.generate import profiles_from_streams, synthesize_trace
    from dlrmprof.tracegen.readers import TableStream

    n = args.n // 4
    streams = [TableStream(f"z{i}", zipf_stream(n, args.ids // 4, seed=i), np.ones(n, np.int64),
                           args.ids // 4) for i in range(8)]
    # warm the pool's numba cache
    profiles_from_streams(streams[:2], jobs=2)
    times = {}
    digests = {}
    for jobs in (1, 2):
        t0 = time.perf_counter()
        profs = profiles_from_streams(streams, jobs=jobs)
        tr = synthesize_trace(profs, source={"kind": "bench"}, seed=0, jobs=jobs)
        times[jobs] = time.perf_counter() - t0
        digests[jobs] = tr.digest
    assert digests[1] == digests[2], "parallel synthesis changed the trace"
    print(f"[jobs] 8 tables x {n:.0e} accesses, profile + synthesize + fidelity: 1 process "
          f"{times[1]:.2f} s, 2 processes {times[2]:.2f} s, speed-up {times[1] / times[2]:.2f}x "
          f"(same digest)")
    results["jobs"] = {"t1_s": times[1], "t2_s": times[2], "speedup": times[1] / times[2]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="rd,mrc,synth,shards,ingest,jobs")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lcs-sizes", type=int, default=20,
                    help="libCacheSim sizes actually simulated (the mean is scaled to 20)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    args.n = 1_000_000 if args.quick else 10_000_000
    args.ids = 100_000 if args.quick else 1_000_000
    args.rows = 200_000 if args.quick else 2_000_000
    parts = args.parts.split(",")
    results = {}
    ids = dist = None
    if "rd" in parts:
        ids, dist = bench_rd(args, results)
    if "mrc" in parts:
        bench_mrc(args, results, ids)
    if "synth" in parts:
        bench_synth(args, results, ids, dist)
    if "shards" in parts:
        bench_shards(args, results, ids, dist)
    if "ingest" in parts:
        bench_ingest(args, results)
    if "jobs" in parts:
        bench_jobs(args, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    from dlrmprof.profile import harness

    for part, figures in results.items():
        doc = harness.results_doc(
            f"dlrmprof.bench.tracegen_{part}/1", summary=_flat(figures), quick=args.quick,
            source="measured: best of --repeat runs, ours and the baseline alternating, "
                   "results compared first (see the part's description in the script)")
        out = harness.results_path(__file__, f"tracegen_{part}.json")
        print(f"wrote {harness.write_results(out, doc)}")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float, str, bool)):
            out[prefix + k] = v
    return out


if __name__ == "__main__":
    main()
