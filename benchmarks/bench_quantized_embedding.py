"""numba embedding bag over packed tables (int8, int4, fp16; dlrmprof.kernels.numba_quant)
vs torch's own lookups on the same bytes: ``torch.ops.quantized.
embedding_bag_byte_rowwise_offsets`` / ``embedding_bag_4bit_rowwise_offsets`` (FBGEMM's CPU
kernels) and ``F.embedding_bag`` on an fp16 table.  B 2048, sum pooling, 1 thread.

    python benchmarks/bench_quantized_embedding.py            # R 1e4..1e7 x D 16/64/128
    python benchmarks/bench_quantized_embedding.py --quick    # R 1e4, 1e6 x D 16, 128

Per cell, on the benchmark harness (dlrmprof.profile.harness): both sides are checked
against the float64 reference of the dequantized rows on a batch first (numba to 2e-5
relative; torch's fp16 lookup returns fp16, so to 2e-3); then the two are called in
interleaved rounds (which goes first alternates), each call on its own batch from a pool of
indices that touches >= 4x L3 of rows: ratio = torch time / numba time per round, median
[quartiles].  "others" is the CPU other processes used during the cell (this host is
shared); a cell with too few clean rounds (others took the core it needed) is marked '!'.
Tables
are packed directly from random bytes (int8 / int4 codes, scale and bias drawn per row,
fp16 values), allocated as dlrmprof's DLRM allocates tables (64-byte aligned, advised into
2 MiB pages).  Results go to benchmarks/results/quantized_embedding.json.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import numba
import numpy as np
import torch

from dlrmprof import kernels
from dlrmprof.kernels import numba_quant, quant, torch_quant
from dlrmprof.kernels.tables import empty_table
from dlrmprof.profile import harness

sys.path.insert(0, str(Path(__file__).parent))
from bench_embedding_bag import zipf_ids  # noqa: E402

# history: 1: cells and summary (an integer schema); 2: the harness's comparisons (statistics
# per cell), per-cell ratio quartiles and clean rounds
SCHEMA = "dlrmprof.bench.quantized_embedding/2"
B = 2048
L3_BYTES = 32 << 20
DTYPES = ("int8", "int4", "fp16")
OUT = harness.results_path(__file__, "quantized_embedding.json")


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
    """Both sides' results on the first batch against its float64 reference."""
    ref = kernels.qembedding_bag(qt, pool[0], offsets, backend="reference")
    big = max(1.0, float(np.abs(ref).max()))
    for name, rtol in (("numba", 2e-5), ("torch", 2e-3 if qt.dtype == "fp16" else 2e-5)):
        out = outputs[name]
        out = out.float().numpy() if isinstance(out, torch.Tensor) else out
        assert np.all(np.abs(out - ref) <= rtol * (np.abs(ref) + big)), (
            f"{name} {qt.dtype} result differs from the float64 reference: max abs err "
            f"{np.abs(out - ref).max():.3g}")


def time_cell(qt, pool, offsets, seconds, label, params):
    """numba vs torch on one packed table, interleaved rounds (a harness.Comparison)."""
    table_t, _, off_t, _ = torch_quant.prepare(qt.dtype, qt.data, pool[0], offsets)
    data = numba_quant.storage(qt.dtype, qt.data)
    entry = numba_quant.kernels(qt.dtype, qt.dim)[0]
    l2, l3 = numba_quant.L2_BYTES, numba_quant.L3_BYTES
    dim, dtype = qt.dim, qt.dtype
    pt = torch.from_numpy(pool)

    def run_numba(i):   # the backend's own call, as kernels.resolve hands it out
        out = np.empty((B, dim), np.float32)
        if entry(data, pool[i], offsets, None, False, out, l2, l3, 1, 0):
            raise SystemExit("numba reported bad indices")
        return out

    def run_torch(i):
        return torch_quant.lookup(dtype, table_t, pt[i], off_t, "sum", None)

    return harness.compare({"torch": run_torch, "numba": run_numba}, baseline="torch",
                           check=lambda o: check(qt, pool, offsets, o), seconds=seconds,
                           warmup=4, nargs=pool.shape[0], threads=1, label=label,
                           params=params)


def cell(qt, pool, offsets, seconds, cmps, facts):
    """Time one cell, print its row, return its record."""
    cmp = time_cell(qt, pool, offsets, seconds, label=" ".join(
        f"{k} {v:.0e}" if k == "R" else f"{k} {v}" for k, v in facts.items()), params=facts)
    cmps.append(cmp)
    tn, tt = cmp.median_s("numba"), cmp.median_s("torch")
    r = cmp.speedup("numba")
    others = cmp.other_cores_mean() or 0.0
    bad = cmp.used != "clean"
    print(f"{facts['dtype']:>5} {facts['R']:>7.0e} {facts['D']:>4} {facts['L']:>3} "
          f"{facts['dist']:>7} {qt.row_bytes:>5} {qt.nbytes / 2**20:>6.0f} {tn * 1e6:>9.1f} "
          f"{tt * 1e6:>9.1f} {r.median:>5.2f}x {others:>6.2f}{'  !' if bad else ''}", flush=True)
    return dict(facts, row_bytes=qt.row_bytes, table_bytes=qt.nbytes, numba_s=tn, torch_s=tt,
                ratio=r.median, ratio_q25=r.q25, ratio_q75=r.q75, others_cpus=others,
                rounds=cmp.rounds, clean_rounds=cmp.clean_rounds, contaminated=bad)


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
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=OUT, help=f"results JSON (default {OUT})")
    args = ap.parse_args(argv)
    try:
        return run(args)
    except harness.CheckFailed as exc:
        raise SystemExit(f"bench_quantized_embedding: {exc}") from None


def run(args):
    rows = [int(r) for r in (args.rows or ([1e4, 1e6] if args.quick else [1e4, 1e5, 1e6, 1e7]))]
    dims = args.dims or ([16, 128] if args.quick else [16, 64, 128])
    if any(d < 2 or d % 2 for d in dims):
        print("bench_quantized_embedding: --dims must be even and >= 2 (int4 packs two values "
              "a byte)", file=sys.stderr)
        return 2
    dtypes = args.dtypes or list(DTYPES)
    seconds = args.seconds or (0.2 if args.quick else 0.4)
    rng = np.random.default_rng(args.seed)
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    print(f"B={B}, 1 thread, numba {numba.__version__}, torch {torch.__version__}; "
          f"R={rows} D={dims} L=[1, 20] uniform/zipf, dtypes {dtypes}", flush=True)
    print(f"{'dtype':>5} {'R':>7} {'D':>4} {'L':>3} {'dist':>7} {'row B':>5} {'MB':>6} "
          f"{'numba us':>9} {'torch us':>9} {'ratio':>6} {'others':>6}", flush=True)
    cells, cmps = [], []
    for R in rows:
        for D in dims:
            for dtype in dtypes:
                qt = packed_table(rng, dtype, R, D)
                for L in (1, 20):
                    for dist in ("uniform", "zipf"):
                        pool, offsets = index_pool(rng, R, qt.row_bytes, L, dist)
                        cells.append(cell(qt, pool, offsets, seconds, cmps,
                                          dict(dtype=dtype, R=R, D=D, L=L, dist=dist)))
                        del pool
                del qt
                gc.collect()
    summary = summarize(cells)
    print()
    for dtype, s in summary.items():
        print(f"{dtype}: {s['cells']} cells, geomean {s['geomean']:.2f}x, min {s['min']:.2f}x "
              f"(R={s['worst']['R']:.0e} D={s['worst']['D']} L={s['worst']['L']} "
              f"{s['worst']['dist']}), >= 1.0x in {s['at_least_1x']}/{s['cells']}; clean "
              f"cells {s['clean_cells']}, geomean "
              + (f"{s['clean_geomean']:.2f}x" if s['clean_geomean'] else "-"))
    doc = harness.results_doc(
        SCHEMA, comparisons=cmps, max_samples=0, benchmark="bench_quantized_embedding",
        source="measured (perf_counter, interleaved rounds; ratio = torch time / numba time)",
        batch=B, threads=1, ratio="torch time / numba time (median of per-round ratios)",
        cells=cells, summary=summary)
    harness.write_results(args.out, doc)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
