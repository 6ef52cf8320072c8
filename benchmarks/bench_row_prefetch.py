"""Prefetch schemes for gathering rows from a DRAM-resident table, against torch's
F.embedding_bag, one thread: is there a scheme that reads fp32 D = 64 rows (four 64-byte lines)
from DRAM much faster than torch does?

    python benchmarks/bench_row_prefetch.py                 # R 1e7 x D 64 (2.4 GB), L 20
    python benchmarks/bench_row_prefetch.py --table torch   # the same table in 4 KiB pages

This is the experiment behind `numba_prefetch.prefetch_plan`'s choices for rows of 3+ lines
from DRAM.  It runs a plain numba bag-sum loop that differs only in its prefetches, and the
library's own kernel under three plans, against torch:

  t0 near      prefetcht0 of the row's 4 lines, d0 lookups ahead (the plan before level 4)
  t1 far       prefetcht1 (into L2 on Zen 4) of the row's lines, d1 lookups ahead
  two-stage    both: t1 far into L2, then t0 near from L2 into L1, so more misses are in
               flight than the core's L1 miss buffers hold (the library's level 4)
  t1 half      prefetcht1 of every other line (the L2's adjacent-line prefetcher the rest)
  none         no software prefetch (hardware prefetchers only)

What the schemes gave is in docs/performance.md ("Prefetch schemes for one DRAM cell").

Timed on the benchmark harness (dlrmprof.profile.harness): every scheme's result is checked
against torch first; then all run interleaved, round by round (order rotated, each call on
its own batch from a pool larger than L3), ratio = torch time / scheme time per round
(median [quartiles]).  "others" is the CPU other processes used meanwhile, in cores (shared
host).  Results: benchmarks/results/row_prefetch.json.
"""

from __future__ import annotations

import argparse
import sys

import numba
import numpy as np
import torch
import torch.nn.functional as F
from numba import njit

from dlrmprof.kernels._simd import prefetch_at, vadd, vload, vstore, vzero
from dlrmprof.kernels.tables import empty_table, huge_page_share
from dlrmprof.profile import harness

D = 64  # four 64-byte lines of fp32
SCHEMA = "dlrmprof.bench.row_prefetch/1"
OUT = harness.results_path(__file__, "row_prefetch.json")
TORCH = "torch F.embedding_bag"


@njit(fastmath=True, boundscheck=False, nogil=True)
def bag_sum(weight, indices, offsets, out, d0, d1, half, tail):
    """out[b] = sum of weight[indices[p]] over the bag; prefetcht0 of all 4 lines d0 lookups
    ahead (0: none), prefetcht1 of all (half: every other) line d1 ahead (0: none); with
    `tail`, also the line of the row's last element (rows that do not start on a line span
    five)."""
    n = indices.shape[0]
    base = np.uint64(weight.ctypes.data)
    rowbytes = np.uint64(weight.shape[1] * weight.itemsize)
    for b in range(offsets.shape[0] - 1):
        acc = vzero(weight, 64)
        for p in range(offsets[b], offsets[b + 1]):
            if d1 > 0 and p + d1 < n:
                a = base + np.uint64(indices[p + d1]) * rowbytes
                prefetch_at(a, 2)
                prefetch_at(a + np.uint64(128), 2)
                if not half:
                    prefetch_at(a + np.uint64(64), 2)
                    prefetch_at(a + np.uint64(192), 2)
                    if tail:
                        prefetch_at(a + np.uint64(252), 2)
            if d0 > 0 and p + d0 < n:
                a = base + np.uint64(indices[p + d0]) * rowbytes
                prefetch_at(a, 1)
                prefetch_at(a + np.uint64(64), 1)
                prefetch_at(a + np.uint64(128), 1)
                prefetch_at(a + np.uint64(192), 1)
                if tail:
                    prefetch_at(a + np.uint64(252), 1)
            acc = vadd(acc, vload(weight, indices[p], 0, 64))
        vstore(out, b, 0, acc)


SCHEMES = {  # name: (d0, d1, half)
    "t0 near, 16 ahead (library)": (16, 0, False),
    "t0 near, 8 ahead": (8, 0, False),
    "t0 near, 24 ahead": (24, 0, False),
    "t1 far, 32 ahead": (0, 32, False),
    "t1 far, 48 ahead": (0, 48, False),
    "two-stage t1 48 + t0 12": (12, 48, False),
    "two-stage t1 64 + t0 16": (16, 64, False),
    "two-stage t1 32 + t0 8": (8, 32, False),
    "t1 half, 48 ahead": (0, 48, True),
    "none": (0, 0, False),
}


def table(R, kind):
    """An R x D fp32 table (numpy view; see --table)."""
    if kind == "numpy":
        return np.empty((R, D), dtype=np.float32)
    return (empty_table(R, D) if kind == "dlrm" else torch.empty(R, D)).numpy()


def pages_note(weight):
    share = huge_page_share(weight.ctypes.data, weight.nbytes)
    return "page size unknown" if share is None else f"{share:.0%} in 2 MiB pages"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=float, default=1e7, help="table rows (default 1e7: 2.4 GB)")
    ap.add_argument("--pooling", type=int, default=20)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=OUT, help=f"results JSON (default {OUT})")
    ap.add_argument("--table", choices=["dlrm", "torch", "numpy"], default="dlrm",
                    help="dlrm: kernels.tables.empty_table (64-byte aligned, 2 MiB pages, as "
                    "dlrmprof's DLRM); torch: torch.empty (4 KiB pages unless THP is "
                    "'always'); numpy: np.empty (16-byte aligned, so a 256-byte row spans 5 "
                    "lines; numpy advises 2 MiB pages itself)")
    args = ap.parse_args(argv)
    R, L, B = int(args.rows), args.pooling, args.batch
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    weight = table(R, args.table)
    weight[:] = rng.standard_normal((R, D), dtype=np.float32)
    weight_t = torch.from_numpy(weight)
    nb = int(np.clip(np.ceil(4 * (32 << 20) / (B * L * D * 4)), 8, 256))
    pool = rng.integers(0, R, size=(nb, B * L))
    offsets = np.arange(0, B * L + 1, L, dtype=np.int64)
    offsets_t, pool_t = torch.from_numpy(offsets), torch.from_numpy(pool)
    out = np.empty((B, D), dtype=np.float32)
    tail = weight.ctypes.data % 64 != 0

    fns = {TORCH: lambda i: F.embedding_bag(
        pool_t[i], weight_t, offsets_t, mode="sum", include_last_offset=True)}
    for name, (d0, d1, half) in SCHEMES.items():
        fns[name] = lambda i, a=d0, c=d1, h=half: bag_sum(weight, pool[i], offsets, out, a, c, h,
                                                          tail)
    from dlrmprof.kernels import numba_embedding
    _, ser = numba_embedding._eb_vec_kernels(D, 4)
    for d, lv in ((16, 1), (16, 2), (16, 4)):
        fns[f"library kernel, plan {d}/{lv}"] = (lambda i, d=d, lv=lv: ser(
            weight, pool[i], offsets, None, False, out, 0, B, d, lv))
    want = {}

    def check_each(name, got):
        """Each scheme writes `out`: compared with torch's result right after its call."""
        if name == TORCH:
            want["v"] = got.numpy()
            return True
        err = np.abs(out - want["v"]).max()
        assert np.allclose(out, want["v"], rtol=1e-4, atol=1e-4), \
            f"{name}: result differs from torch (max err {err:.3g})"

    try:
        cmp = harness.compare(fns, baseline=TORCH, check_each=check_each, rounds=args.rounds,
                              warmup=1, nargs=nb, threads=1, label=f"R={R:.0e} D={D} L={L}",
                              params=dict(R=R, D=D, L=L, B=B, table=args.table))
    except harness.CheckFailed as exc:
        raise SystemExit(f"bench_row_prefetch: {exc}") from None
    lines = B * L * (D * 4 // 64)
    print(f"R={R:.0e} x D={D} fp32 ({R * D * 4 / 2**30:.2f} GiB, {args.table}: "
          f"{'rows of 5 lines' if tail else 'line-aligned rows'}, {pages_note(weight)}), B={B}, "
          f"L={L}, 1 thread, {cmp.rounds} rounds interleaved ({cmp.clean_rounds} clean); others "
          f"{cmp.other_cores_mean() or 0:.2f} cores")
    print(f"{'scheme':32} {'us':>8} {'ns/line':>8} {'GB/s':>7} {'vs torch [quartiles]':>21}")
    for n in cmp.names:
        t = cmp.median_s(n)
        ratio = "1.00x" if n == TORCH else cmp.speedup(n).describe()
        print(f"{n:32} {t * 1e6:8.0f} {t * 1e9 / lines:8.2f} {lines * 64 / t / 1e9:7.2f} "
              f"{ratio:>21}")
    best = max(cmp.candidates, key=lambda n: cmp.speedup(n).median)
    print(f"best scheme: {best}, {cmp.speedup(best).describe()} torch")
    doc = harness.results_doc(
        SCHEMA, comparisons=[cmp], summary={"best": best, "best_speedup":
                                            cmp.speedup(best).median},
        source="measured (perf_counter, interleaved rotated rounds; ratio = torch time / "
               "scheme time)")
    print(f"wrote {harness.write_results(args.out, doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
