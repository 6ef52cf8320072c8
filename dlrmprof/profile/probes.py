"""The ceiling probes: the kernels and timing loops behind `dlrmprof.profile.ceilings.probe`.

Each `probe_*` measures one family of roofs at the given thread counts and returns plain
JSON values with raw samples, best and median (see `dlrmprof.profile.ceilings` for what each
figure means and how the roofline uses it).  Every probe checks the result of what it timed:
a kernel that did nothing would look fast.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from typing import Any, Callable

import numpy as np

from dlrmprof.profile import noise
from dlrmprof.profile.timers import cuda_times

LINE = 64


# -- numba kernels ------------------------------------------------------------------------------

_K: dict[str, Callable] = {}


def _kernels() -> dict[str, Callable]:
    if _K:
        return _K
    import numba
    from numba import prange

    @numba.njit(parallel=True, cache=True)
    def copy(a, b):
        for i in prange(a.size):
            a[i] = b[i]

    @numba.njit(parallel=True, cache=True)
    def triad(a, b, c, s):
        for i in prange(a.size):
            a[i] = b[i] + s * c[i]

    @numba.njit(parallel=True, cache=True, fastmath=True)  # reassociation lets the sum vectorise
    def read(a):
        s = 0.0
        for i in prange(a.size):
            s += a[i]
        return s

    @numba.njit(parallel=True, cache=True)
    def random_lines(table, lines, stride):
        # independent loads: the address of each comes from `lines`, not from a previous load
        s = 0.0
        for i in prange(lines.size):
            s += table[lines[i] * stride]
        return s

    @numba.njit(cache=True)
    def chase(nxt, steps):
        # dependent loads: each address is the value just loaded (one miss in flight)
        p = 0
        for _ in range(steps):
            p = nxt[p]
        return p

    _K.update(copy=copy, triad=triad, read=read, random_lines=random_lines, chase=chase)
    return _K


@contextlib.contextmanager
def numba_threads(n: int):
    import numba
    old = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(old)


@contextlib.contextmanager
def torch_threads(n: int):
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _stat(samples: list[float], work: float, unit_scale: float) -> dict:
    """samples in seconds, `work` bytes or flops per call -> rate stats in GB/s or GFLOP/s."""
    rates = sorted(work / s / unit_scale for s in samples)
    return {"best": rates[-1], "median": float(np.median(rates)), "min": rates[0],
            "samples_s": samples}


# -- probes -------------------------------------------------------------------------------------

def probe_stream(threads: list[int], array_bytes: int, repeats: int) -> dict:
    k = _kernels()
    n = array_bytes // 8
    a = np.zeros(n)
    b = np.ones(n)
    c = np.full(n, 2.0)
    out: dict[str, Any] = {"array_bytes": n * 8, "dtype": "float64", "source": "measured",
                           "copy": {}, "triad": {}, "read": {}, "flagged": 0,
                           "contaminated_kept": 0}
    for t in threads:
        with numba_threads(t):
            for name, fn, nbytes in (("copy", lambda: k["copy"](a, b), 16 * n),
                                     ("triad", lambda: k["triad"](a, b, c, 3.0), 24 * n),
                                     ("read", lambda: k["read"](b), 8 * n)):
                r = noise.timed_samples(fn, repeats=repeats, warmup=1, budget_s=2.0)
                out[name][str(t)] = _stat(r["samples"], nbytes, 1e9)
                out["flagged"] += r["flagged"]
                out["contaminated_kept"] += r["contaminated_kept"]
    # correctness of what we timed (a kernel that did nothing would be "fast")
    if not (a[0] == 1.0 + 3.0 * 2.0 and a[-1] == 7.0 and k["read"](c) == 2.0 * n):
        raise RuntimeError("STREAM kernels computed wrong values")
    return out


def probe_random(threads: list[int], table_bytes: int, lines: int, chase_steps: int,
                 repeats: int, seed: int = 0) -> dict:
    k = _kernels()
    rng = np.random.default_rng(seed)
    nlines = table_bytes // LINE
    stride = LINE // 4
    table = np.ones(nlines * stride, dtype=np.float32)
    idx = rng.integers(0, nlines, size=lines, dtype=np.int64)
    out: dict[str, Any] = {"table_bytes": nlines * LINE, "lines": lines, "line_bytes": LINE,
                           "source": "measured", "by_threads": {}, "flagged": 0,
                           "contaminated_kept": 0}
    for t in threads:
        with numba_threads(t):
            r = noise.timed_samples(lambda: k["random_lines"](table, idx, stride),
                                    repeats=repeats, warmup=1, budget_s=2.0)
        st = _stat(r["samples"], lines * LINE, 1e9)
        best_s = min(r["samples"])
        st["ns_per_line"] = best_s / lines * 1e9
        st["ns_per_line_per_thread"] = best_s / lines * 1e9 * t
        out["by_threads"][str(t)] = st
        out["flagged"] += r["flagged"]
        out["contaminated_kept"] += r["contaminated_kept"]
    if k["random_lines"](table, idx, stride) != float(lines):
        raise RuntimeError("random-access kernel computed a wrong sum")
    # dependent chase along one random cycle through all lines (perm[i] -> perm[i+1])
    perm = rng.permutation(nlines).astype(np.int64)
    # chase_tbl[8*p] = 8*next(p): one int64 used per 64-byte line, every line on one cycle
    chase_tbl = np.zeros(nlines * (LINE // 8), dtype=np.int64)
    chase_tbl[perm * (LINE // 8)] = np.roll(perm, -1) * (LINE // 8)
    steps = min(chase_steps, nlines)
    k["chase"](chase_tbl, 1000)
    t0 = time.perf_counter()
    k["chase"](chase_tbl, steps)
    dt = time.perf_counter() - t0
    out["latency_ns"] = dt / steps * 1e9
    out["chase_steps"] = steps
    for st in out["by_threads"].values():
        st["mlp"] = out["latency_ns"] / st["ns_per_line"]
    return out


def _capture_fd(fd: int, fn: Callable[[], Any]) -> str:
    """Run fn() with OS-level file descriptor `fd` redirected to a temp file; return its text."""
    import sys
    sys.stdout.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            fn()
        finally:
            os.dup2(saved, fd)
            os.close(saved)
        tmp.seek(0)
        return tmp.read().decode("utf-8", "replace")


def gemm_engines() -> dict:
    """Which engine torch uses for fp32 / bf16 matmul on CPU, and the ISA it reports."""
    import torch
    cfg = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", cfg)
    out: dict[str, Any] = {
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn_available": bool(torch.backends.mkldnn.is_available()),
        "blas": blas.group(1) if blas else None,
        "amx_tile": bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()),
        "avx512_bf16": bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()),
    }
    a = torch.ones(64, 64, dtype=torch.bfloat16)
    b = torch.ones(64, 64, dtype=torch.float32)

    def run():
        with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
            a @ a
            b @ b
    try:
        log = _capture_fd(1, run)
    except OSError:  # e.g. no real stdout fd
        log = ""
    isa = re.search(r"isa:([^\n]+)", log)
    impls = re.findall(r"primitive,exec,cpu,matmul,([^,]+),", log)
    out["onednn_isa"] = isa.group(1).strip() if isa else None
    out["bf16_impl"] = impls[0] if impls else None
    out["fp32_impl"] = impls[1] if len(impls) > 1 else (f"{out['blas']} sgemm" if out["blas"]
                                                         else None)
    out["bf16_uses_amx"] = bool(out["bf16_impl"] and "amx" in out["bf16_impl"])
    return out


def probe_gemm(threads: list[int], n: int, repeats: int) -> dict:
    import torch
    out: dict[str, Any] = {"n": n, "source": "measured", "engine": gemm_engines(),
                           "fp32": {}, "bf16": {}, "flagged": 0, "contaminated_kept": 0}
    flops = 2.0 * n ** 3
    g = torch.Generator().manual_seed(0)
    for dtype, key in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        a = torch.rand(n, n, generator=g).to(dtype)
        b = torch.rand(n, n, generator=g).to(dtype)
        c = torch.empty(n, n, dtype=dtype)
        for t in threads:
            with torch_threads(t):
                r = noise.timed_samples(lambda: torch.mm(a, b, out=c), repeats=repeats,
                                        warmup=1, budget_s=3.0)
            out[key][str(t)] = _stat(r["samples"], flops, 1e9)
            out["flagged"] += r["flagged"]
            out["contaminated_kept"] += r["contaminated_kept"]
        ref = (a[:4].double() @ b[:, :4].double())
        tol = 1e-3 if key == "fp32" else 3e-2
        if not torch.allclose(c[:4, :4].double(), ref, rtol=tol, atol=tol * n):
            raise RuntimeError(f"{key} GEMM result is wrong")
    return out


def probe_cuda(repeats: int, full: bool) -> dict:
    try:
        import torch
    except ImportError:
        return {"available": False, "reason": "torch is not installed"}
    if not torch.cuda.is_available():
        return {"available": False, "reason": "no CUDA device (torch.cuda.is_available() is "
                                              "False)"}
    dev = torch.device("cuda")
    out: dict[str, Any] = {"available": True, "source": "measured",
                           "device": torch.cuda.get_device_name(0)}

    def timed(fn) -> list[float]:
        return cuda_times(fn, repeats)

    nbytes = (1 << 30) if full else (256 << 20)
    x = torch.rand(nbytes // 4, device=dev)  # random, not zeros: checked after timing
    y = torch.full_like(x, float("nan"))
    out["copy"] = _stat(timed(lambda: y.copy_(x)), 2 * nbytes, 1e9)
    if not torch.equal(x, y):
        raise RuntimeError("CUDA copy probe: the copy is wrong")
    x = y = None  # free the copy buffers before the GEMMs
    n = 8192 if full else 4096
    for dtype, key in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        a = torch.rand(n, n, device=dev, dtype=dtype)
        b = torch.rand(n, n, device=dev, dtype=dtype)
        c = torch.empty(n, n, device=dev, dtype=dtype)
        out[key] = _stat(timed(lambda: torch.mm(a, b, out=c)), 2.0 * n ** 3, 1e9)
        out[key]["n"] = n
        ref = a[:4].double().cpu() @ b[:, :4].double().cpu()
        tol = 3e-3 if key == "fp32" else 3e-2  # fp32 may run as tf32 where allowed
        if not torch.allclose(c[:4, :4].double().cpu(), ref, rtol=tol, atol=tol * n):
            raise RuntimeError(f"CUDA {key} GEMM probe: the product is wrong")
    out["tf32_allowed"] = bool(torch.backends.cuda.matmul.allow_tf32)
    return out
