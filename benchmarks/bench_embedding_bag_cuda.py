"""GPU embedding-bag forward: numba-cuda and torch on CUDA tensors, effective GB/s (every
lookup counted) against the device's measured copy bandwidth.

    python benchmarks/bench_embedding_bag_cuda.py [--quick]

Timed with CUDA events (median of repeats after warm-up); results are checked against
each other before timing.  The numba-cuda call includes its out-of-range index check, a
one-word device-to-host read that synchronises the stream.  Exits with a one-line message
when there is no GPU.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

B = 2048


def event_time(fn, repeats):
    import torch
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    return float(np.median(times))


def copy_bandwidth(nbytes=1 << 30):
    """Device-to-device copy: bytes read + written per second."""
    import torch
    a = torch.empty(nbytes // 4, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    t = event_time(lambda: b.copy_(a), 10)
    del a, b
    return 2 * nbytes / t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("bench_embedding_bag_cuda: no CUDA GPU visible to torch", file=sys.stderr)
        return 2
    import torch.nn.functional as F

    from dlrmprof import kernels
    have_numba_cuda = "numba-cuda" in kernels.backends("embedding_bag")
    props = torch.cuda.get_device_properties(0)
    copy_bw = copy_bandwidth()
    print(f"device: {props.name}, {props.total_memory / 2**30:.0f} GiB; copy bandwidth "
          f"{copy_bw / 1e9:.0f} GB/s (read + write); numba-cuda "
          f"{'available' if have_numba_cuda else 'NOT available'}")
    print(f"{'R':>9} {'D':>4} {'L':>3} {'dist':>7} {'torch GB/s':>10} {'%copy':>6} "
          f"{'numba GB/s':>10} {'%copy':>6} {'numba/torch':>11}")
    rng = np.random.default_rng(0)
    rows = [10**6] if args.quick else [10**5, 10**6, 10**7]
    dims = [64] if args.quick else [16, 64, 128]
    for R in rows:
        for D in dims:
            weight = torch.rand((R, D), device="cuda")
            for L in [1, 20]:
                for dist in ["uniform", "zipf"]:
                    n = B * L
                    ids = (rng.integers(0, R, n) if dist == "uniform"
                           else (rng.zipf(1.1, n) - 1) % R)
                    idx = torch.from_numpy(ids).cuda()
                    off = torch.arange(0, n + 1, L, device="cuda")
                    gb = n * D * 4 / 1e9
                    run_t = lambda: F.embedding_bag(idx, weight, off, mode="sum",  # noqa: E731
                                                    include_last_offset=True)
                    want = run_t()
                    t_torch = event_time(run_t, args.repeats)
                    line = (f"{R:>9.0e} {D:>4} {L:>3} {dist:>7} {gb / t_torch:>10.1f} "
                            f"{100 * gb * 1e9 / t_torch / copy_bw:>5.1f}%")
                    if have_numba_cuda:
                        run_n = lambda: kernels.embedding_bag(  # noqa: E731
                            weight, idx, off, backend="numba-cuda")
                        got = run_n()
                        if not torch.allclose(got, want, rtol=1e-4, atol=1e-4):
                            raise SystemExit("numba-cuda result differs from torch")
                        t_numba = event_time(run_n, args.repeats)
                        line += (f" {gb / t_numba:>10.1f} "
                                 f"{100 * gb * 1e9 / t_numba / copy_bw:>5.1f}% "
                                 f"{t_torch / t_numba:>10.2f}x")
                    print(line, flush=True)
            del weight
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
