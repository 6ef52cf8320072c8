"""numba embedding bag over packed tables (int8, int4, fp16; dlrmprof.kernels.numba_quant)
vs torch's own lookups on the same bytes: ``torch.ops.quantized.
embedding_bag_byte_rowwise_offsets`` / ``embedding_bag_4bit_rowwise_offsets`` (FBGEMM's CPU
kernels) and ``F.embedding_bag`` on an fp16 table.  B 2048, sum pooling, 1 thread.

    python benchmarks/bench_quantized_embedding.py            # R 1e4..1e7 x D 16/64/128
    python benchmarks/bench_quantized_embedding.py --quick    # R 1e4, 1e6 x D 16, 128
    python benchmarks/bench_quantized_embedding.py --cells int8:1e7:64:1:zipf --processes 4

Per cell, on the benchmark harness (dlrmprof.profile.harness): both sides are checked
against the float64 reference of the dequantized rows on a batch first (numba to 2e-5
relative; torch's fp16 lookup returns fp16, so to 2e-3); then the two are called in
interleaved rounds (which goes first alternates), each call on its own batch from a pool of
indices that touches >= 4x L3 of rows: ratio = torch time / numba time per round, median
[quartiles].  "others" is the CPU other processes used during the cell (this host is
shared); a cell with too few clean rounds (others took the core it needed) is marked '!'.
Where the packed kernels' prefetch plan differs from the fp32 kernel's plan at the packed
row's bytes (`numba_quant.packed_plan`, `fp32_plan_at`), numba under the fp32 plan is timed
in the same rounds too ("fp32 plan" column).  `--processes N` then re-times the cells of
`STABILITY_CELLS` (or `--cells`) in N fresh processes, one after another, each cell's ratio
also per block of consecutive rounds: a plan that some processes or time windows serve and
others do not shows there.  "hp" is the share of the table in 2 MiB pages.  Tables
are packed directly from random bytes (int8 / int4 codes, scale and bias drawn per row,
fp16 values), allocated as dlrmprof's DLRM allocates tables (64-byte aligned, advised into
2 MiB pages).  Results go to benchmarks/results/quantized_embedding.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numba
import numpy as np
import torch

from dlrmprof import kernels
from dlrmprof.kernels import numba_quant, quant, torch_quant
from dlrmprof.kernels.tables import empty_table, huge_page_share
from dlrmprof.profile import harness

sys.path.insert(0, str(Path(__file__).parent))
from bench_embedding_bag import zipf_ids  # noqa: E402

# history: 1: cells and summary (an integer schema); 2: the harness's comparisons (statistics
# per cell), per-cell ratio quartiles and clean rounds; 3: per cell the prefetch plans (the
# fp32 plan's ratio where it differs), ratio percentiles and block medians, huge-page share;
# "stability": cells re-timed in fresh processes
SCHEMA = "dlrmprof.bench.quantized_embedding/3"
B = 2048
L3_BYTES = 32 << 20
DTYPES = ("int8", "int4", "fp16")
OUT = harness.results_path(__file__, "quantized_embedding.json")
# one-lookup cells whose ratio depended on the process under the fp32 plan (L2-only prefetch)
STABILITY_CELLS = ("int8:1e7:64:1:zipf", "fp16:1e5:64:1:zipf")
BLOCKS = 8   # a cell's rounds in this many consecutive blocks: the ratio's median per block


def packed_table(rng, dtype, R, D):
    """An R-row packed table of dimension D filled in pieces (no full-size temporary)."""
    C = quant.packed_columns(dtype, D)
    store = {"fp16": torch.float16}.get(dtype, torch.uint8)
    data = empty_table(R, C, dtype=store).numpy()
    step = 1 << 20
    for r in range(0, R, step):
        n = min(step, R - r)
        if dtype == "fp16":
            data[r:r + n] = rng.standard_normal((n, D), dtype=np.float32) * 0.05
            continue
        code_bytes = D if dtype == "int8" else D // 2
        data[r:r + n, :code_bytes] = rng.integers(0, 256, (n, code_bytes), dtype=np.uint8)
        sb = np.stack([rng.uniform(1e-4, 1e-2, n), rng.uniform(-0.5, 0.0, n)], axis=1)
        ftype = np.float32 if dtype == "int8" else np.float16
        data[r:r + n, code_bytes:] = sb.astype(ftype).view(np.uint8)
    return quant.QTable(dtype, D, data)


def index_pool(rng, R, row_bytes, L, dist):
    """Batches enough that one sweep through them touches >= 4x L3 of rows."""
    per_batch = B * L
    nbatches = int(np.clip(np.ceil(4 * L3_BYTES / (per_batch * row_bytes)), 8, 512))
    n = nbatches * per_batch
    ids = rng.integers(0, R, size=n) if dist == "uniform" else zipf_ids(rng, n, R)
    return ids.reshape(nbatches, per_batch), np.arange(0, per_batch + 1, L, dtype=np.int64)


def check(qt, pool, offsets, outputs):
    """Every variant's result on the first batch against its float64 reference (torch's
    fp16 lookup returns fp16: to 2e-3 relative; the rest to 2e-5)."""
    ref = kernels.qembedding_bag(qt, pool[0], offsets, backend="reference")
    big = max(1.0, float(np.abs(ref).max()))
    for name, out in outputs.items():
        rtol = 2e-3 if name == "torch" and qt.dtype == "fp16" else 2e-5
        out = out.float().numpy() if isinstance(out, torch.Tensor) else out
        assert np.all(np.abs(out - ref) <= rtol * (np.abs(ref) + big)), (
            f"{name} {qt.dtype} result differs from the float64 reference: max abs err "
            f"{np.abs(out - ref).max():.3g}")


def plans(qt):
    """(the packed kernels' prefetch plan, the fp32 kernel's plan at the packed row's bytes)."""
    aligned = ((qt.data.ctypes.data | qt.row_bytes) & 63) == 0
    args = (qt.nbytes, qt.row_bytes, aligned, numba_quant.L2_BYTES, numba_quant.L3_BYTES)
    return tuple(numba_quant.packed_plan(*args)), tuple(numba_quant.fp32_plan_at(*args))


def time_cell(qt, pool, offsets, seconds, label, params):
    """numba vs torch on one packed table, interleaved rounds (a harness.Comparison); numba
    under the fp32 plan too where it differs from the packed one ("numba_fp32_plan")."""
    table_t, _, off_t, _ = torch_quant.prepare(qt.dtype, qt.data, pool[0], offsets)
    data = numba_quant.storage(qt.dtype, qt.data)
    entry, ser = numba_quant.kernels(qt.dtype, qt.dim)
    l2, l3 = numba_quant.L2_BYTES, numba_quant.L3_BYTES
    dim, dtype = qt.dim, qt.dtype
    pt = torch.from_numpy(pool)
    packed, fp32 = plans(qt)

    def run_numba(i):   # the backend's own call, as kernels.resolve hands it out
        out = np.empty((B, dim), np.float32)
        if entry(data, pool[i], offsets, None, False, out, l2, l3, 1, 0):
            raise SystemExit("numba reported bad indices")
        return out

    def run_fp32_plan(i):
        out = np.empty((B, dim), np.float32)
        if ser(data, pool[i], offsets, None, False, out, 0, B, fp32[0], fp32[1], 0):
            raise SystemExit("numba reported bad indices")
        return out

    def run_torch(i):
        return torch_quant.lookup(dtype, table_t, pt[i], off_t, "sum", None)

    variants = {"torch": run_torch, "numba": run_numba}
    if fp32 != packed:
        variants["numba_fp32_plan"] = run_fp32_plan
    return harness.compare(variants, baseline="torch",
                           check=lambda o: check(qt, pool, offsets, o), seconds=seconds,
                           warmup=4, nargs=pool.shape[0], threads=1, label=label,
                           params=params)


def round_ratios(cmp, name):
    """torch time / `name`'s time per round used, in round order: (its percentiles 10, 25,
    50, 75, 90; medians of BLOCKS consecutive blocks of rounds)."""
    r = cmp.times("torch") / cmp.times(name)
    pcts = [float(x) for x in np.percentile(r, [10, 25, 50, 75, 90])]
    blocks = [float(np.median(b)) for b in np.array_split(r, min(BLOCKS, len(r))) if len(b)]
    return pcts, blocks


def cell(qt, pool, offsets, seconds, cmps, facts):
    """Time one cell, print its row, return its record."""
    cmp = time_cell(qt, pool, offsets, seconds, label=" ".join(
        f"{k} {v:.0e}" if k == "R" else f"{k} {v}" for k, v in facts.items()), params=facts)
    cmps.append(cmp)
    tn, tt = cmp.median_s("numba"), cmp.median_s("torch")
    r = cmp.speedup("numba")
    others = cmp.other_cores_mean() or 0.0
    bad = cmp.used != "clean"
    packed, fp32 = plans(qt)
    hp = huge_page_share(qt.data.ctypes.data, qt.nbytes)
    pcts, blocks = round_ratios(cmp, "numba")
    rec = dict(facts, row_bytes=qt.row_bytes, table_bytes=qt.nbytes, huge_pages=hp,
               plan=list(packed), fp32_plan=list(fp32), numba_s=tn, torch_s=tt,
               ratio=r.median, ratio_q25=r.q25, ratio_q75=r.q75, ratio_percentiles=pcts,
               ratio_blocks=blocks, others_cpus=others, rounds=cmp.rounds,
               clean_rounds=cmp.clean_rounds, contaminated=bad)
    alt = ""
    if "numba_fp32_plan" in cmp.names:
        rec["ratio_fp32_plan"] = cmp.speedup("numba_fp32_plan").median
        rec["ratio_blocks_fp32_plan"] = round_ratios(cmp, "numba_fp32_plan")[1]
        alt = f"{rec['ratio_fp32_plan']:.2f}x"
    print(f"{facts['dtype']:>5} {facts['R']:>7.0e} {facts['D']:>4} {facts['L']:>3} "
          f"{facts['dist']:>7} {qt.row_bytes:>5} {qt.nbytes / 2**20:>6.0f} "
          f"{'-' if hp is None else f'{hp:.2f}':>4} {tn * 1e6:>9.1f} {tt * 1e6:>9.1f} "
          f"{r.median:>5.2f}x {alt:>9} {others:>6.2f}{'  !' if bad else ''}", flush=True)
    return rec


geomean = harness.geomean


def summarize(cells):
    out = {}
    for dtype in DTYPES:
        r = [c["ratio"] for c in cells if c["dtype"] == dtype]
        clean = [c["ratio"] for c in cells if c["dtype"] == dtype and not c["contaminated"]]
        if r:
            worst = min((c for c in cells if c["dtype"] == dtype), key=lambda c: c["ratio"])
            out[dtype] = dict(cells=len(r), geomean=geomean(r), min=min(r),
                              at_least_1x=int(sum(x >= 1.0 for x in r)),
                              clean_cells=len(clean), clean_geomean=geomean(clean),
                              worst={k: worst[k] for k in ("R", "D", "L", "dist")})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="R 1e4, 1e6 x D 16, 128")
    ap.add_argument("--rows", type=float, nargs="*", help="override R values")
    ap.add_argument("--dims", type=int, nargs="*", help="override D values (even)")
    ap.add_argument("--dtypes", nargs="*", choices=DTYPES, help="default: all three")
    ap.add_argument("--seconds", type=float, default=None, help="timing budget per cell")
    ap.add_argument("--cells", nargs="*", help="only these cells, each dtype:R:D:L:dist")
    ap.add_argument("--processes", type=int, default=None,
                    help="re-time STABILITY_CELLS (or --cells) in this many fresh processes "
                    "(default: 4 after the full grid, else 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=OUT, help=f"results JSON (default {OUT})")
    args = ap.parse_args(argv)
    try:
        return run(args)
    except harness.CheckFailed as exc:
        raise SystemExit(f"bench_quantized_embedding: {exc}") from None


def parse_cell(spec):
    """'dtype:R:D:L:dist' -> its facts."""
    try:
        dtype, R, D, L, dist = spec.split(":")
        facts = dict(dtype=dtype, R=int(float(R)), D=int(D), L=int(L), dist=dist)
    except ValueError:
        raise SystemExit(f"bench_quantized_embedding: --cells {spec!r}: expected "
                         "dtype:R:D:L:dist, e.g. int8:1e7:64:1:zipf") from None
    if dtype not in DTYPES or dist not in ("uniform", "zipf") or facts["D"] % 2:
        raise SystemExit(f"bench_quantized_embedding: --cells {spec!r}: dtype one of "
                         f"{DTYPES}, an even D, dist uniform or zipf")
    return facts


def time_cells(cell_facts, seconds, rng, cmps):
    """Time each cell (facts), one packed table per (R, D, dtype) in the order given."""
    cells, tables = [], {}
    for f in cell_facts:
        tables.setdefault((f["R"], f["D"], f["dtype"]), []).append(f)
    for (R, D, dtype), group in tables.items():
        qt = packed_table(rng, dtype, R, D)
        for f in group:
            pool, offsets = index_pool(rng, R, qt.row_bytes, f["L"], f["dist"])
            cells.append(cell(qt, pool, offsets, seconds, cmps, f))
            del pool
        del qt
        gc.collect()
    return cells


def _key(facts):
    return tuple(facts[k] for k in ("dtype", "R", "D", "L", "dist"))


def stability(specs, processes, seconds):
    """Each cell of `specs` re-timed in `processes` fresh processes, one after another:
    per cell, per process, its ratio (and under the fp32 plan), block medians, huge pages."""
    keep = ("ratio", "ratio_fp32_plan", "ratio_blocks", "ratio_blocks_fp32_plan", "huge_pages",
            "plan", "fp32_plan", "others_cpus", "contaminated")
    out = {spec: [] for spec in specs}
    with tempfile.TemporaryDirectory(prefix="dlrmprof-qstab-") as tmp:
        for k in range(processes):
            path = os.path.join(tmp, f"{k}.json")
            print(f"process {k + 1}/{processes}", flush=True)
            done = subprocess.run([sys.executable, __file__, "--cells", *specs, "--seconds",
                                   str(seconds), "--seed", str(k + 1), "--processes", "0",
                                   "--out", path], timeout=1800)
            if done.returncode != 0:
                raise SystemExit(f"bench_quantized_embedding: stability process {k + 1} "
                                 f"failed ({done.returncode})")
            with open(path) as f:
                by_facts = {_key(c): c for c in json.load(f)["cells"]}
            for spec in specs:
                c = by_facts[_key(parse_cell(spec))]
                out[spec].append({key: c[key] for key in keep if key in c})
    return [dict(cell=spec, processes=procs) for spec, procs in out.items()]


def run(args):
    rows = [int(r) for r in (args.rows or ([1e4, 1e6] if args.quick else [1e4, 1e5, 1e6, 1e7]))]
    dims = args.dims or ([16, 128] if args.quick else [16, 64, 128])
    if any(d < 2 or d % 2 for d in dims):
        print("bench_quantized_embedding: --dims must be even and >= 2 (int4 packs two values "
              "a byte)", file=sys.stderr)
        return 2
    dtypes = args.dtypes or list(DTYPES)
    seconds = args.seconds or (0.2 if args.quick else 0.4)
    grid = not args.cells
    processes = args.processes if args.processes is not None else (
        4 if grid and not (args.quick or args.rows or args.dims or args.dtypes) else 0)
    rng = np.random.default_rng(args.seed)
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    if grid:
        facts = [dict(dtype=dtype, R=R, D=D, L=L, dist=dist) for R in rows for D in dims
                 for dtype in dtypes for L in (1, 20) for dist in ("uniform", "zipf")]
    else:
        facts = [parse_cell(spec) for spec in args.cells]
    print(f"B={B}, 1 thread, numba {numba.__version__}, torch {torch.__version__}; "
          f"{len(facts)} cells", flush=True)
    print(f"{'dtype':>5} {'R':>7} {'D':>4} {'L':>3} {'dist':>7} {'row B':>5} {'MB':>6} "
          f"{'hp':>4} {'numba us':>9} {'torch us':>9} {'ratio':>6} {'fp32 plan':>9} "
          f"{'others':>6}", flush=True)
    cmps = []
    cells = time_cells(facts, seconds, rng, cmps)
    summary = summarize(cells)
    print()
    for dtype, s in summary.items():
        print(f"{dtype}: {s['cells']} cells, geomean {s['geomean']:.2f}x, min {s['min']:.2f}x "
              f"(R={s['worst']['R']:.0e} D={s['worst']['D']} L={s['worst']['L']} "
              f"{s['worst']['dist']}), >= 1.0x in {s['at_least_1x']}/{s['cells']}; clean "
              f"cells {s['clean_cells']}, geomean "
              + (f"{s['clean_geomean']:.2f}x" if s['clean_geomean'] else "-"))
    extra = {}
    if processes:
        extra["stability"] = stability(list(args.cells or STABILITY_CELLS), processes, seconds)
        for st in extra["stability"]:
            print(f"{st['cell']}: ratio per process " + ", ".join(
                f"{p['ratio']:.2f}x" + (f" (fp32 plan {p['ratio_fp32_plan']:.2f}x)"
                                        if "ratio_fp32_plan" in p else "")
                for p in st["processes"]))
    doc = harness.results_doc(
        SCHEMA, comparisons=cmps, max_samples=0, benchmark="bench_quantized_embedding",
        source="measured (perf_counter, interleaved rounds; ratio = torch time / numba time)",
        batch=B, threads=1, ratio="torch time / numba time (median of per-round ratios)",
        cells=cells, summary=summary, **extra)
    harness.write_results(args.out, doc)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
