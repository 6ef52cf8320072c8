"""Host ceilings ("roofs"), measured: streaming bandwidth, random-access bandwidth, GEMM FLOP/s.

`probe(fp, full=False, threads=None)` measures, at 1..N threads:

* ``stream``: STREAM-style ``copy`` (a = b), ``triad`` (a = b + s*c) and ``read`` (sum a) over
  float64 arrays several times the last-level cache (numba, parallel).  Bytes counted the STREAM
  way (copy 16 B/elem, triad 24, read 8; write-allocate traffic not counted).
* ``random``: independent random cache-line reads (one float from each of K random 64-byte lines
  of a table 8x the LLC, no dependency between loads, so the core overlaps as many misses as it
  can): GB/s (64 B per line) and ns per line; plus ``latency_ns`` from a dependent pointer chase
  (one miss at a time).  ``mlp`` = latency / (ns per line) is the memory-level parallelism the
  core achieved.  This is the roof that embedding gathers hit once tables leave cache.
* ``gemm``: torch ``mm`` of N x N fp32 and bf16, GFLOP/s (2 N^3 per call), with the engine that
  ran (fp32: torch's BLAS, e.g. MKL sgemm; bf16: the oneDNN implementation string captured from
  oneDNN's verbose log, e.g. ``brg_matmul:avx512_core_bf16`` or ``..._amx``).
* ``cuda``: device-to-device copy GB/s and fp32/bf16 GEMM GFLOP/s timed with CUDA events, when a
  GPU is present (else ``{"available": False, "reason": ...}``).

Each figure keeps its raw samples, best and median; the ceiling used by the roofline is the
*best* (what the host can reach).  ``roofs[threads]`` summarises:
``{"stream_gbs", "random_gbs", "random_ns_per_line", "latency_ns", "fp32_gflops",
"bf16_gflops"}``.  Everything here has ``source: "measured"``.

Results are cached per host_id in ``$DLRMPROF_CACHE_DIR`` (default ``~/.cache/dlrmprof``)/
``ceilings/<host_id>.json``; `load_or_probe` re-probes when asked (``refresh``), when the cached
file is unreadable or damaged (any field a reader uses missing or wrong-typed: a warning says
which), when it was made by other torch/numba versions or thread counts, and when it is
*provisional*: its probe kept samples contaminated by other processes, or a roof fell when
threads were added, or an op later ran above one of its roofs (`mark_provisional`).  A ceiling
is an upper bound, so a provisional record is replaced by the next quiet probe, or merged with
another provisional one (best of both), at most `MAX_PROVISIONAL_PROBES` times.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dlrmprof import __version__
from dlrmprof.fsutil import atomic_path
from dlrmprof.profile import noise
from dlrmprof.profile.host import data_caches
from dlrmprof.profile.timers import cuda_times

CEILINGS_VERSION = 1
LINE = 64


def cache_dir() -> Path:
    env = os.environ.get("DLRMPROF_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "dlrmprof"


def cache_path(host_id: str) -> Path:
    return cache_dir() / "ceilings" / f"{host_id}.json"


def thread_counts(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    out, t = [], 1
    while t < n:
        out.append(t)
        t *= 2
    out.append(n)
    return out


def llc_bytes(fp: dict) -> int:
    dc = data_caches(fp.get("caches", []))
    return int(dc[-1]["size_bytes"]) if dc else 32 << 20


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


def probe(fp: dict, *, full: bool = False, threads: list[int] | None = None,
          progress: Callable[[str], None] | None = None, sizes: dict | None = None) -> dict:
    """Measure this host's ceilings (see module docstring).  `fp` is `host.collect()`.

    `sizes` overrides the problem sizes (keys ``array_bytes``, ``table_bytes``, ``lines``,
    ``chase_steps``, ``gemm_n``, ``repeats``): tests use tiny ones.
    """
    say = progress or (lambda msg: None)
    ncpu = len(fp.get("threads", {}).get("affinity") or []) or os.cpu_count() or 1
    threads = threads or thread_counts(ncpu)
    llc = llc_bytes(fp)
    avail = (fp.get("memory") or {}).get("available_bytes") or (8 << 30)
    array_bytes = int(min(max(4 * llc, 64 << 20), avail // 8))
    table_bytes = int(min(max(8 * llc, 256 << 20), avail // 4))
    if full:
        array_bytes = int(min(max(8 * llc, 256 << 20), avail // 8))
        table_bytes = int(min(max(32 * llc, 1 << 30), avail // 4))
    sz = {"array_bytes": array_bytes, "table_bytes": table_bytes,
          "lines": (1 << 24) if full else (1 << 22),
          "chase_steps": (1 << 22) if full else (1 << 20),
          "gemm_n": 4096 if full else 2048, "repeats": 10 if full else 5}
    sz.update(sizes or {})
    repeats = sz["repeats"]
    t0 = time.perf_counter()
    say("stream (copy, triad, read)")
    stream = probe_stream(threads, sz["array_bytes"], repeats)
    say("random-access reads and pointer chase")
    rnd = probe_random(threads, sz["table_bytes"], lines=sz["lines"],
                       chase_steps=sz["chase_steps"], repeats=repeats)
    say("GEMM fp32 and bf16 (torch)")
    gemm = probe_gemm(threads, sz["gemm_n"], repeats=repeats if full else min(repeats, 3))
    say("CUDA")
    cuda = probe_cuda(repeats, full)
    from dlrmprof.profile.host import software_versions
    sw = software_versions()
    result = {
        "version": CEILINGS_VERSION, "host_id": fp["host_id"], "full": full,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tool_version": __version__, "threads": threads, "source": "measured",
        "versions": {k: sw.get(k) for k in ("torch", "numba", "llvmlite", "numpy")},
        "stream": stream, "random": rnd, "gemm": gemm, "cuda": cuda,
        "sizes": sz, "llc_bytes": llc, "probe_s": time.perf_counter() - t0,
    }
    result["roofs"] = summarize(result)
    reasons = quality_problems(result)
    result["provisional"] = bool(reasons)
    result["provisional_reasons"] = reasons
    return result


# a roof measured with more threads below this share of the one with fewer threads is suspect
MONOTONE_SLACK = 0.8
MAX_PROVISIONAL_PROBES = 3


def quality_problems(c: dict) -> list[str]:
    """Why a probe's figures may be under-measured: samples that stayed contaminated by other
    processes after every re-take, or a roof that falls when threads are added."""
    out = []
    kept = sum(int(c[s].get("contaminated_kept", 0)) for s in ("stream", "random", "gemm"))
    if kept:
        out.append(f"{kept} samples were taken while other processes used the CPUs and could "
                   "not be re-taken within the time budget")
    roofs = c.get("roofs") or {}
    counts = sorted(int(k) for k in roofs)
    for lo, hi in zip(counts, counts[1:]):
        for key in ("stream_gbs", "fp32_gflops", "bf16_gflops"):
            a, b = roofs[str(lo)].get(key), roofs[str(hi)].get(key)
            if a and b and b < MONOTONE_SLACK * a:
                out.append(f"{key} at {hi} threads ({b:.1f}) is below {lo} thread(s) ({a:.1f})")
    return out


def merge_best(old: dict, new: dict) -> dict:
    """`new` with each roof raised to `old`'s where the old probe measured more: a ceiling
    is an upper bound, so the best of two provisional probes is the better estimate."""
    out = dict(new)
    roofs = {k: dict(v) for k, v in new["roofs"].items()}
    for k, r in roofs.items():
        o = (old.get("roofs") or {}).get(k) or {}
        for key in ("stream_gbs", "stream_read_gbs", "random_gbs", "fp32_gflops",
                    "bf16_gflops"):
            if _pos(o.get(key)) and _pos(r.get(key)) and o[key] > r[key]:
                r[key] = o[key]
    out["roofs"] = roofs
    return out


def _pos(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) and x > 0


def cache_problem(data) -> str | None:
    """Why a cached ceilings record cannot be used (None: it can): the fields every reader
    (roofline, summary, the SIMD study) uses must be there with the right types."""
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    try:
        threads = data["threads"]
        if not isinstance(threads, list) or not threads or \
                not all(isinstance(t, int) and not isinstance(t, bool) and t > 0
                        for t in threads):
            return "field threads: expected a non-empty list of positive integers"
        roofs = data["roofs"]
        if not isinstance(roofs, dict) or sorted(roofs) != sorted(str(t) for t in threads):
            return "field roofs: expected one entry per thread count"
        for k, r in roofs.items():
            for key in ("stream_gbs", "random_gbs", "random_ns_per_line", "latency_ns",
                        "fp32_gflops", "bf16_gflops"):
                if not _pos(r.get(key)):
                    return f"field roofs.{k}.{key}: expected a positive number, got {r.get(key)!r}"
        summary(data)
        if not isinstance(data.get("cuda", {}), dict):
            return "field cuda: expected an object"
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        return f"missing or wrong-typed field ({type(exc).__name__}: {str(exc)[:60]})"
    return None


def summarize(c: dict) -> dict:
    """Per thread count: the best roof of each kind."""
    roofs = {}
    for t in c["threads"]:
        k = str(t)
        rt = c["random"]["by_threads"][k]
        roofs[k] = {
            "stream_gbs": max(c["stream"][n][k]["best"] for n in ("copy", "triad", "read")),
            "stream_read_gbs": c["stream"]["read"][k]["best"],
            "random_gbs": rt["best"], "random_ns_per_line": rt["ns_per_line"],
            "latency_ns": c["random"]["latency_ns"],
            "fp32_gflops": c["gemm"]["fp32"][k]["best"],
            "bf16_gflops": c["gemm"]["bf16"][k]["best"],
        }
    return roofs


def roofs_for(ceilings: dict, threads: int | None = None, device: str = "cpu") -> dict:
    """The roofs the roofline uses for `threads` (nearest measured count at or below it;
    default: the most threads measured).  For a CUDA device: the CUDA figures."""
    if device.startswith("cuda"):
        cu = ceilings.get("cuda") or {}
        if not cu.get("available"):
            raise KeyError("no CUDA ceilings in this ceilings record")
        return {"stream_gbs": cu["copy"]["best"], "random_gbs": None,
                "random_ns_per_line": None, "latency_ns": None,
                "fp32_gflops": cu["fp32"]["best"], "bf16_gflops": cu["bf16"]["best"]}
    roofs = ceilings["roofs"]
    counts = sorted(int(k) for k in roofs)
    if threads is None:
        return dict(roofs[str(counts[-1])], threads=counts[-1])
    below = [t for t in counts if t <= threads] or counts[:1]
    return dict(roofs[str(below[-1])], threads=below[-1])


def load_cached(host_id: str, problems: list[str] | None = None) -> dict | None:
    """The cached ceilings of this host, or None (no cache, another version, or damaged: a
    damaged one's reason is appended to `problems`)."""
    path = cache_path(host_id)
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        if problems is not None:
            problems.append(f"{path}: not valid JSON")
        return None
    if not isinstance(data, dict) or data.get("version") != CEILINGS_VERSION \
            or data.get("host_id") != host_id:
        if problems is not None and not (isinstance(data, dict) and
                                         isinstance(data.get("version"), int)):
            problems.append(f"{path}: not a ceilings record of version {CEILINGS_VERSION}")
        return None
    why = cache_problem(data)
    if why is not None:
        if problems is not None:
            problems.append(f"{path}: {why}")
        return None
    return data


def save_cached(c: dict) -> Path:
    path = cache_path(c["host_id"])
    text = json.dumps(c, indent=1)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def load_or_probe(fp: dict, *, refresh: bool = False, full: bool = False,
                  progress: Callable[[str], None] | None = None,
                  warn: Callable[[str], None] | None = None) -> tuple[dict, bool]:
    """Cached ceilings for this host, or a fresh probe (saved).  Returns (ceilings, cached).

    A damaged cache is ignored (`warn` says why) and re-probed.  A provisional record (its
    probe ran under load, see `quality_problems`) is re-probed on the next call: a quiet probe
    replaces it; another provisional one is merged with it (best of both per roof), and after
    `MAX_PROVISIONAL_PROBES` probes the merged record is kept as it is."""
    from dlrmprof.profile.host import software_versions
    old = None
    if not refresh:
        problems: list[str] = []
        c = load_cached(fp["host_id"], problems)
        for p in problems:
            if warn:
                warn(f"ignoring the ceilings cache ({p}); probing again")
        sw = software_versions()
        if c is not None and all(c.get("versions", {}).get(k) == sw.get(k)
                                 for k in ("torch", "numba")) and (c.get("full") or not full):
            if not c.get("provisional") or c.get("probes", 1) >= MAX_PROVISIONAL_PROBES:
                return c, True
            old = c
            if warn:
                warn("the cached ceilings are provisional ("
                     + "; ".join(c.get("provisional_reasons") or ["stale"]) + "); probing again")
    c = probe(fp, full=full, progress=progress)
    if old is not None:
        # the count of probes since the record turned provisional bounds the re-probing, even
        # when a quiet probe is marked stale again by an op (mark_provisional)
        if c.get("provisional"):
            c = merge_best(old, c)
        c["probes"] = int(old.get("probes", 1)) + 1
    save_cached(c)
    return c, False


def mark_provisional(c: dict, reason: str) -> None:
    """Record in this host's cache that its ceilings proved stale (an op ran above one), so
    the next run probes again; the raised figures are not written into the cache."""
    cached = load_cached(c.get("host_id", ""))
    if cached is None:
        return
    cached["provisional"] = True
    cached["provisional_reasons"] = list(cached.get("provisional_reasons") or []) + [reason]
    save_cached(cached)


def summary(c: dict) -> str:
    """Human lines for the CLI (the library never prints)."""
    lines = [f"ceilings for host {c['host_id']} ({'full' if c.get('full') else 'quick'} probe, "
             f"{c.get('created')}, {c.get('probe_s', 0):.1f} s):"]
    lines.append(f"  {'threads':>7}  {'copy':>7} {'triad':>7} {'read':>7}  {'random':>7} "
                 f"{'ns/line':>7}  {'fp32':>8} {'bf16':>8}")
    for t in c["threads"]:
        k = str(t)
        st, r = c["stream"], c["random"]["by_threads"][k]
        lines.append(f"  {t:>7}  {st['copy'][k]['best']:7.1f} {st['triad'][k]['best']:7.1f} "
                     f"{st['read'][k]['best']:7.1f}  {r['best']:7.2f} {r['ns_per_line']:7.2f}  "
                     f"{c['gemm']['fp32'][k]['best']:8.1f} {c['gemm']['bf16'][k]['best']:8.1f}")
    lines.append("  (GB/s for copy/triad/read/random, GFLOP/s for GEMM; best of "
                 f"{c.get('sizes', {}).get('repeats', '?')} samples)")
    lines.append(f"  memory latency (dependent chase): {c['random']['latency_ns']:.0f} ns; "
                 f"random-read parallelism at 1 thread: "
                 f"{c['random']['by_threads'][str(c['threads'][0])]['mlp']:.1f} lines in flight")
    e = c["gemm"]["engine"]
    lines.append(f"  GEMM engines: fp32 {e.get('fp32_impl')}, bf16 {e.get('bf16_impl')} "
                 f"(AMX {'used' if e.get('bf16_uses_amx') else 'not used'}"
                 f"{'' if e.get('amx_tile') else ': this CPU has no AMX'}); "
                 f"ATen capability {e.get('aten_cpu_capability')}")
    cu = c.get("cuda") or {}
    if cu.get("available"):
        lines.append(f"  CUDA {cu['device']}: copy {cu['copy']['best']:.0f} GB/s, fp32 GEMM "
                     f"{cu['fp32']['best']:.0f} GFLOP/s, bf16 {cu['bf16']['best']:.0f} GFLOP/s")
    else:
        lines.append(f"  CUDA: skipped ({cu.get('reason')})")
    flagged = sum(c[s].get("flagged", 0) for s in ("stream", "random", "gemm"))
    if flagged:
        lines.append(f"  noise: {flagged} samples flagged (other processes used CPU) and re-taken")
    if c.get("provisional"):
        lines.append("  provisional: " + "; ".join(c.get("provisional_reasons") or [])
                     + " (the next run probes again)")
    return "\n".join(lines)
