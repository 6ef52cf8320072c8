"""GPU embedding-bag forward: numba-cuda and torch on CUDA tensors, effective GB/s (every
lookup counted) against the device's measured copy bandwidth.

    python benchmarks/bench_embedding_bag_cuda.py [--quick]

Timed on the benchmark harness (dlrmprof.profile.harness) with the profiler's CUDA-event
timer (profile.timers.OpTimer on "cuda"): torch and numba-cuda interleaved round by round,
results checked against each other before timing, ratio = torch time / numba-cuda time per
round (median [quartiles]).  The numba-cuda call includes its out-of-range index check, a
one-word device-to-host read that synchronises the stream.  Exits with a one-line message
when there is no GPU.  Results: benchmarks/results/embedding_bag_cuda.json.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from dlrmprof.profile import harness

B = 2048


SCHEMA = "dlrmprof.bench.embedding_bag_cuda/1"
OUT = harness.results_path(__file__, "embedding_bag_cuda.json")


def copy_bandwidth(nbytes=1 << 30):
    """Device-to-device copy: bytes read + written per second (CUDA events, median)."""
    import torch
    a = torch.empty(nbytes // 4, device="cuda")
    b = torch.empty_like(a)
    cmp = harness.compare({"copy": lambda i: b.copy_(a)}, baseline="copy", rounds=10,
                          device="cuda", label="device copy", params={"bytes": nbytes})
    a = b = None   # free both before the cells
    return 2 * nbytes / cmp.median_s("copy"), cmp


def cell(weight, idx, off, have_numba_cuda, repeats, label, params):
    """torch (and numba-cuda) on one table and batch, interleaved, checked first."""
    import torch
    import torch.nn.functional as F

    from dlrmprof import kernels
    fns = {"torch": lambda i: F.embedding_bag(idx, weight, off, mode="sum",
                                              include_last_offset=True)}
    if have_numba_cuda:
        fns["numba-cuda"] = lambda i: kernels.embedding_bag(weight, idx, off,
                                                            backend="numba-cuda")

    def check(o):
        if "numba-cuda" in o and not torch.allclose(o["numba-cuda"], o["torch"], rtol=1e-4,
                                                    atol=1e-4):
            raise AssertionError("numba-cuda result differs from torch")
    return harness.compare(fns, baseline="torch", check=check, rounds=repeats, warmup=2,
                           device="cuda", label=label, params=params)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=20, help="interleaved rounds per cell")
    ap.add_argument("--out", default=OUT, help=f"results JSON (default {OUT})")
    args = ap.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("bench_embedding_bag_cuda: no CUDA GPU visible to torch", file=sys.stderr)
        return 2
    from dlrmprof import kernels
    have_numba_cuda = "numba-cuda" in kernels.backends("embedding_bag")
    props = torch.cuda.get_device_properties(0)
    copy_bw, copy_cmp = copy_bandwidth()
    print(f"device: {props.name}, {props.total_memory / 2**30:.0f} GiB; copy bandwidth "
          f"{copy_bw / 1e9:.0f} GB/s (read + write); numba-cuda "
          f"{'available' if have_numba_cuda else 'NOT available'}")
    print(f"{'R':>9} {'D':>4} {'L':>3} {'dist':>7} {'torch GB/s':>10} {'%copy':>6} "
          f"{'numba GB/s':>10} {'%copy':>6} {'numba/torch':>18}")
    rng = np.random.default_rng(0)
    rows = [10**6] if args.quick else [10**5, 10**6, 10**7]
    dims = [64] if args.quick else [16, 64, 128]
    cmps = [copy_cmp]
    try:
        for R in rows:
            for D in dims:
                weight = torch.rand((R, D), device="cuda")
                for L in [1, 20]:
                    for dist in ["uniform", "zipf"]:
                        cmps.append(one_cell(rng, weight, R, D, L, dist, have_numba_cuda,
                                             args.repeats, copy_bw))
                del weight
                torch.cuda.empty_cache()
    except harness.CheckFailed as exc:
        raise SystemExit(f"bench_embedding_bag_cuda: {exc}") from None
    doc = harness.results_doc(
        SCHEMA, comparisons=cmps, device=props.name, copy_gbs=copy_bw / 1e9, batch=B,
        source="measured (CUDA events, interleaved rounds; ratio = torch time / numba-cuda "
               "time)")
    print(f"wrote {harness.write_results(args.out, doc)}")
    return 0


def one_cell(rng, weight, R, D, L, dist, have_numba_cuda, repeats, copy_bw):
    import torch
    n = B * L
    ids = rng.integers(0, R, n) if dist == "uniform" else (rng.zipf(1.1, n) - 1) % R
    idx = torch.from_numpy(ids).cuda()
    off = torch.arange(0, n + 1, L, device="cuda")
    gb = n * D * 4 / 1e9
    cmp = cell(weight, idx, off, have_numba_cuda, repeats, f"R={R:.0e} D={D} L={L} {dist}",
               dict(R=R, D=D, L=L, dist=dist))
    t_torch = cmp.median_s("torch")
    line = (f"{R:>9.0e} {D:>4} {L:>3} {dist:>7} {gb / t_torch:>10.1f} "
            f"{100 * gb * 1e9 / t_torch / copy_bw:>5.1f}%")
    if have_numba_cuda:
        t_numba = cmp.median_s("numba-cuda")
        line += (f" {gb / t_numba:>10.1f} {100 * gb * 1e9 / t_numba / copy_bw:>5.1f}% "
                 f"{cmp.speedup('numba-cuda').describe():>18}")
    print(line, flush=True)
    return cmp


if __name__ == "__main__":
    sys.exit(main())
