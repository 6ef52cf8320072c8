"""Working-set sweep: GB/s of a gather (embedding bag) and of a streaming read against the size of
the data they touch, from L1-sized to beyond the last-level cache (source: ``"measured"``).

The gather reads random rows (uniform) of a float32 table of the given size through
`dlrmprof.kernels.embedding_bag` (numba backend), counting every looked-up row as traffic (the
effective convention).  The streaming read sums a float64 array of the given size, repeated until
enough bytes have moved.  Knees are points where the GB/s falls by at least `knee_drop` between
neighbouring sizes; each is matched to the nearest reported cache size, which shows how much of a
reported cache a core can really use (on VMs the usable L3 is often far below the reported one).
"""

from __future__ import annotations

import math
import re
from typing import Callable

import numpy as np

from dlrmprof import fmt
from dlrmprof.errors import UserError
from dlrmprof.profile import noise
from dlrmprof.profile.host import data_caches
from dlrmprof.profile.study_model import SweepResult

MIN_SIZE = 16 << 10


def parse_bytes(text: str, *, what: str = "size") -> int:
    """'16K', '32MiB', '1.5G', '4096' -> bytes (UserError on anything else)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise UserError(f"{what}: expected a byte size like 16K, 64M or 2G, got {text!r}")
    mult = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2).upper()]
    return int(float(m.group(1)) * mult)


def sizes_between(lo: int, hi: int, per_octave: int = 1) -> list[int]:
    """Geometric sizes lo .. hi (inclusive), `per_octave` points per doubling, 4 KiB-rounded."""
    if lo <= 0 or hi < lo:
        raise UserError(f"sweep sizes: expected 0 < min <= max, got {lo} .. {hi}")
    n = int(math.floor(math.log2(hi / lo) * per_octave + 1e-9))
    out = sorted({max(4096, int(round(lo * 2 ** (i / per_octave) / 4096)) * 4096)
                  for i in range(n + 1)})
    if out[-1] < hi:
        out.append(hi)
    return out


def check_memory(max_size: int, available: int | None) -> None:
    """Refuse a sweep whose largest table does not fit comfortably in available memory."""
    if available is not None and max_size > 0.8 * available:
        raise UserError(f"sweep: --max-size {max_size / 2**30:.2f} GiB is larger than this "
                        f"host can hold (available memory {available / 2**30:.2f} GiB; the "
                        f"sweep needs the table in RAM, at most 80% of what is available)")


_READ: list[Callable] = []


def _read_kernel() -> Callable:
    if not _READ:
        import numba

        @numba.njit(cache=True, fastmath=True)
        def read_sum(a, reps):
            s = 0.0
            for _ in range(reps):
                for i in range(a.size):
                    s += a[i]
            return s
        _READ.append(read_sum)
    return _READ[0]


def measure_point(size: int, *, dim: int = 16, lookups: int = 1 << 18, pooling: int = 32,
                  repeats: int = 3, seed: int = 0, threads: int = 1) -> dict:
    from dlrmprof import kernels
    from dlrmprof.profile.probes import numba_threads

    row_bytes = dim * 4
    rows = max(1, size // row_bytes)
    rng = np.random.default_rng(seed)
    weight = np.ones((rows, dim), dtype=np.float32)
    bags = max(1, lookups // pooling)
    idx = rng.integers(0, rows, size=bags * pooling, dtype=np.int64)
    offsets = np.arange(0, bags * pooling + 1, pooling, dtype=np.int64)
    with numba_threads(threads):
        g = noise.timed_samples(lambda: kernels.embedding_bag(weight, idx, offsets,
                                                              backend="numba"),
                                repeats=repeats, warmup=1, budget_s=2.0)
    pooled = kernels.embedding_bag(weight, idx, offsets, backend="numba")
    if not np.all(pooled == pooling):
        raise RuntimeError("gather kernel returned wrong sums during the sweep")
    arr = np.ones(max(1, size // 8))
    reps = max(1, (64 << 20) // max(arr.nbytes, 1))
    rk = _read_kernel()
    s = noise.timed_samples(lambda: rk(arr, reps), repeats=repeats, warmup=1, budget_s=2.0)
    if rk(arr, 1) != arr.size:
        raise RuntimeError("streaming read returned a wrong sum during the sweep")
    gb = min(g["samples"])
    sb = min(s["samples"])
    return {"size_bytes": int(rows * row_bytes), "rows": rows,
            "gather_gbs": idx.size * row_bytes / gb / 1e9,
            "gather_ns_per_row": gb / idx.size * 1e9,
            "read_gbs": arr.nbytes * reps / sb / 1e9,
            "flagged": g["flagged"] + s["flagged"]}


def find_knees(sizes: list[int], gbs: list[float], caches: list[dict],
               knee_drop: float = 0.2) -> list[dict]:
    """Points where GB/s falls by >= knee_drop to the next size, matched to cache sizes."""
    knees = []
    levels = data_caches(caches)
    for i in range(len(sizes) - 1):
        if gbs[i] > 0 and gbs[i + 1] < (1 - knee_drop) * gbs[i]:
            # the knee lies between sizes[i] and sizes[i+1]: geometric midpoint
            at = math.sqrt(sizes[i] * sizes[i + 1])
            near = min(levels, key=lambda c: abs(math.log2(c["size_bytes"] / at)),
                       default=None)
            knee = {"between": [sizes[i], sizes[i + 1]], "at_bytes": int(at),
                    "drop": 1 - gbs[i + 1] / gbs[i], "nearest_cache": None}
            if near is not None:
                ratio = at / near["size_bytes"]
                knee["nearest_cache"] = {"level": near["level"], "size_bytes": near["size_bytes"],
                                         "ratio": ratio,
                                         # the knee lies within a factor 2 of the cache size
                                         "matches": 0.5 <= ratio <= 2.0}
            knees.append(knee)
    return knees


def run_sweep(fp: dict, *, min_size: int = MIN_SIZE, max_size: int | None = None,
              per_octave: int = 1, threads: int = 1, dim: int = 16, repeats: int = 3,
              progress: Callable[[str], None] | None = None) -> dict:
    """The sweep (see module docstring); `fp` is the host fingerprint."""
    levels = data_caches(fp.get("caches", []))
    llc = levels[-1]["size_bytes"] if levels else 32 << 20
    max_size = max_size or 4 * llc
    check_memory(max_size, (fp.get("memory") or {}).get("available_bytes"))
    sizes = sizes_between(min_size, max_size, per_octave)
    points = []
    for s in sizes:
        if progress:
            progress(f"{s / 2**10:.0f} KiB")
        points.append(measure_point(s, dim=dim, repeats=repeats, threads=threads))
    xs = [p["size_bytes"] for p in points]
    return {"points": points, "threads": threads, "dim": dim,
            "caches": [{"level": c["level"], "size_bytes": c["size_bytes"]} for c in levels],
            "knees": {"gather": find_knees(xs, [p["gather_gbs"] for p in points], levels),
                      "read": find_knees(xs, [p["read_gbs"] for p in points], levels)},
            "source": "measured"}


def summary(res: dict | SweepResult) -> str:
    r = res if isinstance(res, SweepResult) else SweepResult.from_json(res, "sweep")
    lines = [f"working-set sweep ({r.threads} thread(s), rows of {r.dim} float32):",
             f"  {'size':>10}  {'gather GB/s':>11} {'ns/row':>7}  {'read GB/s':>9}"]
    for p in r.points:
        lines.append(f"  {fmt.size(p.size_bytes):>10}  {p.gather_gbs:11.2f} "
                     f"{p.gather_ns_per_row:7.2f}  {p.read_gbs:9.2f}")
    for kind, knees in (("gather", r.knees.gather), ("read", r.knees.read)):
        for k in knees:
            nc = k.nearest_cache
            cmp = ""
            if nc and nc.matches:
                cmp = (f": reported L{nc.level} {fmt.size(nc.size_bytes)} "
                       f"(knee at {nc.ratio:.2f}x it)")
            elif nc:
                cmp = (f": no reported cache within 2x (nearest L{nc.level} "
                       f"{fmt.size(nc.size_bytes)}); TLB reach or a smaller usable cache?")
            lines.append(f"  {kind} knee: {k.drop:.0%} drop between "
                         f"{fmt.size(k.between[0])} and {fmt.size(k.between[1])}{cmp}")
    return "\n".join(lines)
