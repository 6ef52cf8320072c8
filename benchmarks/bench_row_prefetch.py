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

What it showed on the development host (Zen 4 VM): with rows on 64-byte lines and the table
in 2 MiB pages, prefetcht1 far ahead reaches 1.6-1.7x torch and two-stage 1.8x, where
prefetcht0 alone stays at 1.0-1.1x; in 4 KiB pages (`--table torch`) every row is also a TLB
miss and the best scheme reaches 1.23x; with numpy's 16-byte-aligned rows (5 lines each)
no scheme passes 1.23x.  The library's first two-stage version ran at 0.65x here where the
plain loop ran at 1.8x: its second inlined prefetch call took a reference on the table per
lookup (see `numba_prefetch._prefetch_row`); now it runs with the plain loop.

Every scheme's result is checked against torch first; then all run interleaved, round by
round (order rotated, each call on its own batch from a pool larger than L3), and the medians
are compared.  "others" is the CPU other processes used meanwhile, in cores (shared host).
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np
import psutil
import torch
import torch.nn.functional as F
from numba import njit

from dlrmprof.kernels._simd import prefetch_at, vadd, vload, vstore, vzero
from dlrmprof.kernels.tables import empty_table, huge_page_share

D = 64  # four 64-byte lines of fp32


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


def busy(c):
    return c.user + c.system + getattr(c, "nice", 0) + getattr(c, "irq", 0) + \
        getattr(c, "softirq", 0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=float, default=1e7, help="table rows (default 1e7: 2.4 GB)")
    ap.add_argument("--pooling", type=int, default=20)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
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

    fns = {"torch F.embedding_bag": lambda i: F.embedding_bag(
        pool_t[i], weight_t, offsets_t, mode="sum", include_last_offset=True)}
    for name, (d0, d1, half) in SCHEMES.items():
        fns[name] = lambda i, a=d0, c=d1, h=half: bag_sum(weight, pool[i], offsets, out, a, c, h,
                                                          tail)
    from dlrmprof.kernels import numba_embedding
    _, ser = numba_embedding._eb_vec_kernels(D, 4)
    for d, lv in ((16, 1), (16, 2), (16, 4)):
        fns[f"library kernel, plan {d}/{lv}"] = (lambda i, d=d, lv=lv: ser(
            weight, pool[i], offsets, None, False, out, 0, B, d, lv))
    want = fns["torch F.embedding_bag"](0).numpy()
    for name, fn in fns.items():
        if name.startswith("torch"):
            continue
        fn(0)
        if not np.allclose(out, want, rtol=1e-4, atol=1e-4):
            raise SystemExit(f"{name}: result differs from torch "
                             f"(max err {np.abs(out - want).max():.3g})")

    names = list(fns)
    samples = {n: [] for n in names}
    me = psutil.Process()
    cpu0, mine0, t_start = psutil.cpu_times(), me.cpu_times(), time.perf_counter()
    for k in range(args.rounds):
        order = names[k % len(names):] + names[:k % len(names)]
        for j, n in enumerate(order):
            i = (k * len(names) + j) % nb
            t0 = time.perf_counter_ns()
            fns[n](i)
            samples[n].append(time.perf_counter_ns() - t0)
    wall = time.perf_counter() - t_start
    cpu1, mine1 = psutil.cpu_times(), me.cpu_times()
    others = max(0.0, (busy(cpu1) - busy(cpu0) - (mine1.user + mine1.system - mine0.user
                                                  - mine0.system)) / wall)

    med = {n: float(np.median(v)) * 1e-9 for n, v in samples.items()}
    t_torch = med["torch F.embedding_bag"]
    lines = B * L * (D * 4 // 64)
    print(f"R={R:.0e} x D={D} fp32 ({R * D * 4 / 2**30:.2f} GiB, {args.table}: "
          f"{'rows of 5 lines' if tail else 'line-aligned rows'}, {pages_note(weight)}), B={B}, "
          f"L={L}, 1 thread, {args.rounds} rounds interleaved; others {others:.2f} cores")
    print(f"{'scheme':32} {'us':>8} {'ns/line':>8} {'GB/s':>7} {'vs torch':>9}")
    for n in names:
        t = med[n]
        print(f"{n:32} {t * 1e6:8.0f} {t * 1e9 / lines:8.2f} {lines * 64 / t / 1e9:7.2f} "
              f"{t_torch / t:8.2f}x")
    best = max((n for n in names if not n.startswith("torch")), key=lambda n: t_torch / med[n])
    print(f"best scheme: {best}, {t_torch / med[best]:.2f}x torch")


if __name__ == "__main__":
    main()
