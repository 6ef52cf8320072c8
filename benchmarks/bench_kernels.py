"""numba vs torch for the other kernels: fused embedding-bag SGD (torch: index_add_ based),
interaction forward/backward (torch: bmm) and linear (torch: MKL GEMM).

    python benchmarks/bench_kernels.py            # all
    python benchmarks/bench_kernels.py --quick    # fewer cells, shorter timing

Candidate and baseline calls are interleaved (alternating first), medians compared, results
checked to match before timing.  "others" = CPU other processes used during the cell, in
cores; '!' marks a contaminated cell: others took more than cores - threads + 0.25 cores
(this machine is shared).
"""

from __future__ import annotations

import argparse
import sys
import time

import numba
import numpy as np
import psutil
import torch

from dlrmprof import kernels


def _busy(c):
    return sum(getattr(c, f, 0.0) for f in ("user", "system", "nice", "irq", "softirq"))


def compare(fns: dict, seconds: float, nargs: int):
    """fns: name -> callable(i); i cycles over nargs prepared inputs.  Returns medians (s)
    and other processes' CPU use (cores)."""
    for f in fns.values():
        f(0)
    samples = {n: [] for n in fns}
    me = psutil.Process()
    c0, m0, t0 = psutil.cpu_times(), me.cpu_times(), time.perf_counter()
    k = 0
    names = list(fns)
    while time.perf_counter() - t0 < seconds or len(samples[names[0]]) < 5:
        order = names if k % 2 == 0 else names[::-1]
        for j, n in enumerate(order):
            i = (k * len(names) + j) % nargs
            a = time.perf_counter_ns()
            fns[n](i)
            samples[n].append(time.perf_counter_ns() - a)
        k += 1
    wall = time.perf_counter() - t0
    c1, m1 = psutil.cpu_times(), me.cpu_times()
    mine = (m1.user + m1.system) - (m0.user + m0.system)
    others = max(0.0, (_busy(c1) - _busy(c0) - mine) / wall)
    return {n: float(np.median(v)) * 1e-9 for n, v in samples.items()}, others


def row(label, med, others, extra=""):
    r = med["torch"] / med["numba"]
    bad = others > (psutil.cpu_count() or 1) - torch.get_num_threads() + 0.25
    print(f"{label:<44} numba {med['numba'] * 1e6:>9.1f} us  torch {med['torch'] * 1e6:>9.1f} us"
          f"  {r:>5.2f}x  others {others:.2f}{'  !' if bad else ''}{extra}", flush=True)
    return r


def bench_sgd(rng, quick, seconds, threads):
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
                    # same update on both copies first: results must agree
                    kernels.embedding_bag_sgd(w_np, idx[0], off, grad[0], 0.01, backend="numba")
                    kernels.embedding_bag_sgd(w_t, idx_t[0], off_t, grad_t[0], 0.01,
                                              backend="torch")
                    if not np.allclose(w_np, w_t.numpy(), rtol=1e-4, atol=1e-5):
                        raise SystemExit("SGD results differ between numba and torch")
                    for thr in threads:
                        torch.set_num_threads(thr)
                        numba.set_num_threads(thr)
                        med, others = compare({
                            "numba": lambda i: kernels.embedding_bag_sgd(
                                w_np, idx[i], off, grad[i], 1e-6, backend="numba"),
                            "torch": lambda i: kernels.embedding_bag_sgd(
                                w_t, idx_t[i], off_t, grad_t[i], 1e-6, backend="torch"),
                        }, seconds, nb)
                        ratios.append(row(f"R={R:.0e} D={D:<3} L={L:<2} {dist:<7} thr={thr}",
                                          med, others))
                    del w_np, w_t
    return ratios


def bench_interaction(rng, quick, seconds, threads):
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
            a = kernels.interaction(dense[0], pooled[0], backend="numba")
            b = kernels.interaction(dt[0], pt[0], backend="torch").numpy()
            if not np.allclose(a, b, rtol=1e-4, atol=1e-3):
                raise SystemExit("interaction results differ between numba and torch")
            for thr in threads:
                torch.set_num_threads(thr)
                numba.set_num_threads(thr)
                med, others = compare({
                    "numba": lambda i: kernels.interaction(dense[i], pooled[i], backend="numba"),
                    "torch": lambda i: kernels.interaction(dt[i], pt[i], backend="torch"),
                }, seconds, nb)
                ratios.append(row(f"fwd B={B:<5} T={T} D={D:<3} thr={thr}", med, others))
                med, others = compare({
                    "numba": lambda i: kernels.interaction_backward(dense[i], pooled[i], g[i],
                                                                    backend="numba"),
                    "torch": lambda i: kernels.interaction_backward(dt[i], pt[i], gt[i],
                                                                    backend="torch"),
                }, seconds, nb)
                ratios.append(row(f"bwd B={B:<5} T={T} D={D:<3} thr={thr}", med, others))
    return ratios


def bench_linear(rng, quick, seconds, threads):
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
                med, others = compare({
                    "numba": lambda i: kernels.linear(x[i], w, bias, backend="numba"),
                    "torch": lambda i: kernels.linear(xt[i], wt, bt, backend="torch"),
                }, seconds, nb)
                gflops = 2 * B * fin * fout / med["numba"] / 1e9
                ratios.append(row(f"B={B:<5} {fin}->{fout} thr={thr}", med, others,
                                  f"  numba {gflops:.0f} GFLOP/s"))
    return ratios


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["sgd", "interaction", "linear"], nargs="*")
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    seconds = args.seconds or (0.2 if args.quick else 0.5)
    rng = np.random.default_rng(args.seed)
    only = args.only or ["sgd", "interaction", "linear"]
    print(f"numba {numba.__version__}  torch {torch.__version__}  (ratio = torch time / numba "
          f"time: > 1 means numba is faster)")
    for name, fn in (("sgd", bench_sgd), ("interaction", bench_interaction),
                     ("linear", bench_linear)):
        if name in only:
            r = np.array(fn(rng, args.quick, seconds, args.threads))
            print(f"{name}: geomean {np.exp(np.log(r).mean()):.2f}x, min {r.min():.2f}x, "
                  f"max {r.max():.2f}x over {len(r)} cells")


if __name__ == "__main__":
    sys.exit(main())
