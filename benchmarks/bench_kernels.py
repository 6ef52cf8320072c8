"""numba vs torch for the other kernels: fused embedding-bag SGD (torch: index_add_ based),
interaction forward/backward (torch: bmm) and linear (torch: MKL GEMM).

    python benchmarks/bench_kernels.py            # all
    python benchmarks/bench_kernels.py --quick    # fewer cells, shorter timing

Timed by the benchmark harness (dlrmprof.profile.harness): results checked to match before
timing, torch and numba called in interleaved rounds (alternating which goes first), ratio =
torch time / numba time per round, median over rounds with its quartiles.  "others" = CPU
other processes used during the cell, in cores; "clean" = rounds in which they left this
run's cores alone (the statistics use the clean rounds when at least a third are).  Results:
benchmarks/results/kernels.json.
"""

from __future__ import annotations

import argparse
import sys

import numba
import numpy as np
import torch

from dlrmprof import kernels
from dlrmprof.profile import harness

SCHEMA = "dlrmprof.bench.kernels/1"
OUT = harness.results_path(__file__, "kernels.json")


def compare(fns: dict, seconds: float, nargs: int, threads: int, label: str,
            check=None) -> harness.Comparison:
    """fns: {"torch": fn(i), "numba": fn(i)}; i cycles over nargs prepared inputs."""
    return harness.compare(fns, baseline="torch", check=check, seconds=seconds, nargs=nargs,
                           threads=threads, label=label, params={"threads": threads})


def row(cmp: harness.Comparison, extra=""):
    """Print one cell; returns its median ratio (torch time / numba time)."""
    s = cmp.speedup("numba")
    oc = cmp.other_cores_mean() or 0.0
    print(f"{cmp.label:<44} numba {cmp.median_s('numba') * 1e6:>9.1f} us  torch "
          f"{cmp.median_s('torch') * 1e6:>9.1f} us  {s.describe():>18}  others {oc:.2f}  "
          f"clean {cmp.clean_rounds}/{cmp.rounds}{extra}", flush=True)
    return s.median


def bench_sgd(rng, quick, seconds, threads, out):
    print("\n# fused embedding-bag SGD (in place), B=2048; torch = index_add_ of scaled rows")
    ratios = []
    for R in ([10**4, 10**6] if quick else [10**4, 10**5, 10**6]):
        for D in ([16, 64] if quick else [16, 64, 128]):
            for L in [1, 20]:
                for dist in ["uniform", "zipf"]:
                    B = 2048
                    w_np = rng.random((R, D), dtype=np.float32)
                    w_t = torch.from_numpy(w_np.copy())
                    nb = 8
                    if dist == "uniform":
                        idx = rng.integers(0, R, size=(nb, B * L))
                    else:
                        idx = (rng.zipf(1.1, size=(nb, B * L)) - 1) % R
                    off = np.arange(0, B * L + 1, L, dtype=np.int64)
                    grad = rng.standard_normal((nb, B, D)).astype(np.float32)
                    idx_t, off_t, grad_t = map(torch.from_numpy, (idx, off, grad))
                    rows = np.unique(idx[0])
                    lr = [0.0]

                    def same_update(_out, before):
                        """The check call applied one update (lr 0.01, batch 0) to each copy:
                        the same change, and not none; then time at lr 1e-6 (bounded)."""
                        d_np = w_np[rows] - before[0]
                        d_t = w_t.numpy()[rows] - before[1]
                        lr[0] = 1e-6
                        return bool(np.abs(d_np).max() > 0 and
                                    np.allclose(d_np, d_t, rtol=1e-3, atol=1e-6))

                    for thr in threads:
                        torch.set_num_threads(thr)
                        numba.set_num_threads(thr)
                        lr[0] = 0.01
                        before = (w_np[rows].copy(), w_t.numpy()[rows].copy())
                        cmp = compare({
                            "torch": lambda i: kernels.embedding_bag_sgd(
                                w_t, idx_t[i], off_t, grad_t[i], lr[0], backend="torch"),
                            "numba": lambda i: kernels.embedding_bag_sgd(
                                w_np, idx[i], off, grad[i], lr[0], backend="numba"),
                        }, seconds, nb, thr, f"sgd R={R:.0e} D={D:<3} L={L:<2} {dist:<7} "
                           f"thr={thr}", check=lambda o, b=before: same_update(o, b))
                        out.append(cmp)
                        ratios.append(row(cmp))
                    w_np = w_t = None   # free the table before the next one
    return ratios


def bench_interaction(rng, quick, seconds, threads, out):
    print("\n# interaction forward + backward, T=26 tables; torch = bmm + tril gather")
    ratios = []
    for B in [128, 2048]:
        for D in ([16] if quick else [16, 64]):
            T = 26
            nb = 4
            dense = rng.standard_normal((nb, B, D)).astype(np.float32)
            pooled = rng.standard_normal((nb, B, T, D)).astype(np.float32)
            g = rng.standard_normal((nb, B, D + (T + 1) * T // 2)).astype(np.float32)
            dt, pt, gt = map(torch.from_numpy, (dense, pooled, g))

            def agree(o):
                a, b = o["numba"], o["torch"]
                a, b = (a, b) if isinstance(a, tuple) else ((a,), (b,))
                return all(np.allclose(x, y.numpy(), rtol=1e-4, atol=1e-3)
                           for x, y in zip(a, b))

            for thr in threads:
                torch.set_num_threads(thr)
                numba.set_num_threads(thr)
                cmp = compare({
                    "torch": lambda i: kernels.interaction(dt[i], pt[i], backend="torch"),
                    "numba": lambda i: kernels.interaction(dense[i], pooled[i], backend="numba"),
                }, seconds, nb, thr, f"interaction fwd B={B:<5} T={T} D={D:<3} thr={thr}",
                    check=agree)
                out.append(cmp)
                ratios.append(row(cmp))
                cmp = compare({
                    "torch": lambda i: kernels.interaction_backward(dt[i], pt[i], gt[i],
                                                                    backend="torch"),
                    "numba": lambda i: kernels.interaction_backward(dense[i], pooled[i], g[i],
                                                                    backend="numba"),
                }, seconds, nb, thr, f"interaction bwd B={B:<5} T={T} D={D:<3} thr={thr}",
                    check=agree)
                out.append(cmp)
                ratios.append(row(cmp))
    return ratios


def bench_linear(rng, quick, seconds, threads, out):
    print("\n# linear (fp32) x @ W.T + b; torch = MKL sgemm (numba kernel is for SIMD studies)")
    ratios = []
    for B in [128, 2048]:
        for fin, fout in ([(512, 256)] if quick else [(13, 512), (512, 256), (479, 512)]):
            nb = 4
            x = rng.standard_normal((nb, B, fin)).astype(np.float32)
            w = rng.standard_normal((fout, fin)).astype(np.float32)
            bias = rng.standard_normal(fout).astype(np.float32)
            xt, wt, bt = map(torch.from_numpy, (x, w, bias))
            for thr in threads:
                torch.set_num_threads(thr)
                numba.set_num_threads(thr)
                cmp = compare({
                    "torch": lambda i: kernels.linear(xt[i], wt, bt, backend="torch"),
                    "numba": lambda i: kernels.linear(x[i], w, bias, backend="numba"),
                }, seconds, nb, thr, f"linear B={B:<5} {fin}->{fout} thr={thr}",
                    check=lambda o: np.allclose(o["numba"], o["torch"].numpy(), rtol=1e-3,
                                                atol=1e-3))
                out.append(cmp)
                gflops = 2 * B * fin * fout / cmp.median_s("numba") / 1e9
                ratios.append(row(cmp, f"  numba {gflops:.0f} GFLOP/s"))
    return ratios


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["sgd", "interaction", "linear"], nargs="*")
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=OUT, help=f"results JSON (default {OUT})")
    args = ap.parse_args(argv)
    seconds = args.seconds or (0.2 if args.quick else 0.5)
    rng = np.random.default_rng(args.seed)
    only = args.only or ["sgd", "interaction", "linear"]
    print(f"numba {numba.__version__}  torch {torch.__version__}  (ratio = torch time / numba "
          f"time per round, median [quartiles]: > 1 means numba is faster)")
    cmps, summary = [], {}
    for name, fn in (("sgd", bench_sgd), ("interaction", bench_interaction),
                     ("linear", bench_linear)):
        if name in only:
            try:
                r = np.array(fn(rng, args.quick, seconds, args.threads, cmps))
            except harness.CheckFailed as exc:
                raise SystemExit(f"bench_kernels: {name}: {exc}") from None
            summary[name] = {"cells": len(r), "geomean": harness.geomean(r),
                             "min": float(r.min()), "max": float(r.max())}
            print(f"{name}: geomean {summary[name]['geomean']:.2f}x, min {r.min():.2f}x, "
                  f"max {r.max():.2f}x over {len(r)} cells")
    doc = harness.results_doc(
        SCHEMA, comparisons=cmps, summary=summary,
        source="measured (perf_counter, interleaved rounds; ratio = torch time / numba time)")
    print(f"wrote {harness.write_results(args.out, doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
