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
"bf16_gflops"}``.  Everything here has ``source: "measured"``.  The kernels and timing loops
of each family are in `dlrmprof.profile.probes`; the record, typed, is
`dlrmprof.profile.ceilings_model.Ceilings` (what `summary` reads).

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

import datetime as _dt
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from dlrmprof import __version__
from dlrmprof.errors import UserError
from dlrmprof.fsutil import atomic_path
from dlrmprof.profile.ceilings_model import Ceilings
from dlrmprof.profile.host import data_caches
# the probes themselves (kernels, timing loops) live in probes.py; their names stay
# importable from here for callers that measure one family of roofs
from dlrmprof.profile.probes import (LINE, _capture_fd, gemm_engines, numba_threads,  # noqa: F401
                                     probe_cuda, probe_gemm, probe_random, probe_stream,
                                     torch_threads)

CEILINGS_VERSION = 1


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
    rec = Ceilings.from_json(c, "ceilings")
    out = []
    kept = sum(int(p.contaminated_kept) for p in (rec.stream, rec.random, rec.gemm))
    if kept:
        out.append(f"{kept} samples were taken while other processes used the CPUs and could "
                   "not be re-taken within the time budget")
    counts = sorted(int(k) for k in rec.roofs)
    for lo, hi in zip(counts, counts[1:]):
        for key in ("stream_gbs", "fp32_gflops", "bf16_gflops"):
            a, b = getattr(rec.roofs[str(lo)], key), getattr(rec.roofs[str(hi)], key)
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
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, UserError) as exc:
        return f"missing or wrong-typed field ({type(exc).__name__}: {str(exc)[:60]})"
    return None


def summarize(c: dict) -> dict:
    """Per thread count: the best roof of each kind."""
    rec = Ceilings.from_json(c, "ceilings")
    st, rnd, gemm = rec.stream, rec.random, rec.gemm
    roofs = {}
    for t in rec.threads:
        k = str(t)
        rt = rnd.by_threads[k]
        roofs[k] = {
            "stream_gbs": max(st.copy[k].best, st.triad[k].best, st.read[k].best),
            "stream_read_gbs": st.read[k].best,
            "random_gbs": rt.best, "random_ns_per_line": rt.ns_per_line,
            "latency_ns": rnd.latency_ns,
            "fp32_gflops": gemm.fp32[k].best,
            "bf16_gflops": gemm.bf16[k].best,
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
    rec = Ceilings.from_json(c, "ceilings")
    st, rnd, gemm = rec.stream, rec.random, rec.gemm
    lines = [f"ceilings for host {c['host_id']} ({'full' if rec.full else 'quick'} probe, "
             f"{rec.created}, {rec.probe_s or 0:.1f} s):"]
    lines.append(f"  {'threads':>7}  {'copy':>7} {'triad':>7} {'read':>7}  {'random':>7} "
                 f"{'ns/line':>7}  {'fp32':>8} {'bf16':>8}")
    for t in rec.threads:
        k = str(t)
        r = rnd.by_threads[k]
        lines.append(f"  {t:>7}  {st.copy[k].best:7.1f} {st.triad[k].best:7.1f} "
                     f"{st.read[k].best:7.1f}  {r.best:7.2f} {r.ns_per_line:7.2f}  "
                     f"{gemm.fp32[k].best:8.1f} {gemm.bf16[k].best:8.1f}")
    lines.append("  (GB/s for copy/triad/read/random, GFLOP/s for GEMM; best of "
                 f"{rec.sizes.get('repeats', '?')} samples)")
    lines.append(f"  memory latency (dependent chase): {rnd.latency_ns:.0f} ns; "
                 f"random-read parallelism at 1 thread: "
                 f"{rnd.by_threads[str(rec.threads[0])].mlp:.1f} lines in flight")
    e = gemm.engine
    lines.append(f"  GEMM engines: fp32 {e.fp32_impl}, bf16 {e.bf16_impl} "
                 f"(AMX {'used' if e.bf16_uses_amx else 'not used'}"
                 f"{'' if e.amx_tile else ': this CPU has no AMX'}); "
                 f"ATen capability {e.aten_cpu_capability}")
    cu = rec.cuda
    if cu is not None and cu.available:
        lines.append(f"  CUDA {cu.device}: copy {cu.copy.best:.0f} GB/s, fp32 GEMM "
                     f"{cu.fp32.best:.0f} GFLOP/s, bf16 {cu.bf16.best:.0f} GFLOP/s")
    else:
        lines.append(f"  CUDA: skipped ({None if cu is None else cu.reason})")
    flagged = rec.flagged()
    if flagged:
        lines.append(f"  noise: {flagged} samples flagged (other processes used CPU) and re-taken")
    if rec.provisional:
        lines.append("  provisional: " + "; ".join(rec.provisional_reasons or [])
                     + " (the next run probes again)")
    return "\n".join(lines)
