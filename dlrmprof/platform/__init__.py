"""Facts about the machine the code runs on, read once, below `kernels` and `profile`.

Both the kernels (cache sizes for the prefetch plan, the time-stamp counter for per-table
timing) and the host fingerprint (`dlrmprof.profile.host`) take their facts from here, so no
host fact is read in two places.  Every reader takes ``root`` (a directory standing for
``/``) so tests feed canned /proc and /sys trees; a reader skips what it cannot read.

    read_caches(root)      per-core caches of cpu0 from sysfs: [{level, type, size_bytes,
                           ways, line_bytes, sets, shared_cpus}]
    data_caches(caches)    the data/unified cache of each level (L1d, L2, L3, ...)
    cache_sizes(root)      `CacheSizes` (L1d, L2, L3 bytes; defaults where sysfs is silent)
    cpuinfo_blocks(root)   /proc/cpuinfo as (per-processor key/value dicts, the rest)
    cpu_flags(root)        the first processor's flags (x86) or Features (ARM)
    invariant_tsc(root)    whether the time-stamp counter ticks at a constant rate
    tsc_period_s(root)     seconds per tick of that counter (calibrated), or None

Nothing here imports numba except the TSC calibration (`dlrmprof.platform.tsc`), on first use.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["CacheSizes", "cache_sizes", "calibrate_tsc", "cpu_flags", "cpuinfo_blocks",
           "data_caches", "invariant_tsc", "parse_cpulist", "parse_size", "processor_flags",
           "read_caches",
           "read_int", "read_text", "tsc_period_s"]


def path(root: str | os.PathLike, rel: str) -> Path:
    """`rel` (an absolute path on the live host) under `root`."""
    return Path(root) / rel.lstrip("/")


def read_text(root, rel: str) -> str | None:
    """The stripped text of a file under `root`, None where it cannot be read."""
    try:
        return path(root, rel).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def read_int(s: str | None, base: int = 10) -> int | None:
    """int(s) in `base`, None for None or a malformed number."""
    if s is None:
        return None
    try:
        return int(s.strip(), base)
    except ValueError:
        return None


def parse_size(s: str | None) -> int | None:
    """'32K' / '1024 KB' / '32768K' / '1M' / '4096' -> bytes."""
    if not s:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)(i?B)?\s*", s, re.IGNORECASE)
    if not m:
        return None
    mult = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}[m.group(2).upper()]
    return int(float(m.group(1)) * mult)


def parse_cpulist(s: str | None) -> list[int]:
    """'0-3,8,10-11' -> [0, 1, 2, 3, 8, 10, 11]."""
    out: list[int] = []
    for part in (s or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            if a.isdigit() and b.isdigit():
                out.extend(range(int(a), int(b) + 1))
        elif part.isdigit():
            out.append(int(part))
    return out


# -- caches ----------------------------------------------------------------------------------

def read_caches(root="/", cpu: int = 0) -> list[dict]:
    """Per-core caches of `cpu` from sysfs, sorted by level (data before instruction)."""
    base = path(root, f"sys/devices/system/cpu/cpu{cpu}/cache")
    out = []
    try:
        dirs = sorted(d for d in base.iterdir() if d.name.startswith("index"))
    except OSError:
        return []
    for d in dirs:
        rel = str(d.relative_to(Path(root)))
        level = read_int(read_text(root, rel + "/level"))
        size = parse_size(read_text(root, rel + "/size"))
        if level is None or size is None:
            continue
        ways = read_int(read_text(root, rel + "/ways_of_associativity"))
        line = read_int(read_text(root, rel + "/coherency_line_size"))
        sets = read_int(read_text(root, rel + "/number_of_sets"))
        if ways == 0 and line and sets:  # some kernels report 0 for fully associative
            ways = size // line
        out.append({"level": level,
                    "type": (read_text(root, rel + "/type") or "Unified").lower(),
                    "size_bytes": size, "ways": ways, "line_bytes": line, "sets": sets,
                    "shared_cpus": parse_cpulist(read_text(root, rel + "/shared_cpu_list"))})
    order = {"data": 0, "unified": 1, "instruction": 2}
    out.sort(key=lambda c: (c["level"], order.get(c["type"], 3)))
    return out


def data_caches(caches: list[dict]) -> list[dict]:
    """The data/unified caches by level (L1d, L2, L3, ...), the hierarchy a load walks."""
    by_level: dict[int, dict] = {}
    for c in caches:
        if c["type"] in ("data", "unified") and c["level"] not in by_level:
            by_level[c["level"]] = c
    return [by_level[k] for k in sorted(by_level)]


@dataclass(frozen=True)
class CacheSizes:
    """Per-core L1d and L2 and the L3 of cpu0, in bytes, with where they came from."""
    l1: int
    l2: int
    l3: int
    source: str   # "sysfs", "sysfs+default" (some levels missing) or "default"

    DEFAULTS = (32 << 10, 1 << 20, 32 << 20)


def cache_sizes(root="/") -> CacheSizes:
    """The data/unified cache sizes of levels 1-3 from sysfs; a level sysfs does not give
    takes `CacheSizes.DEFAULTS` (32 KiB, 1 MiB, 32 MiB: common x86 server values) and the
    source says so."""
    by_level = {c["level"]: c["size_bytes"] for c in data_caches(read_caches(root))}
    sizes = [by_level.get(lv, d) for lv, d in zip((1, 2, 3), CacheSizes.DEFAULTS)]
    found = sum(lv in by_level for lv in (1, 2, 3))
    source = "sysfs" if found == 3 else ("sysfs+default" if found else "default")
    return CacheSizes(*sizes, source=source)


# -- CPU identity ----------------------------------------------------------------------------

def cpuinfo_blocks(root="/") -> tuple[list[dict], dict] | None:
    """/proc/cpuinfo as ([key/value dict per processor], the other keys): ARM puts
    "Hardware" and "Serial" after the processor blocks.  None where the file is missing."""
    text = read_text(root, "proc/cpuinfo")
    if text is None:
        return None
    procs = []
    top: dict[str, str] = {}
    for block in (b for b in re.split(r"\n\s*\n", text) if b.strip()):
        kv = {}
        for line in block.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                kv[k.strip()] = v.strip()
        if "processor" in kv and kv["processor"].isdigit():
            procs.append(kv)
        else:
            top.update(kv)
    return procs, top


def cpu_flags(root="/") -> frozenset[str]:
    """The first processor's ``flags`` (x86) or ``Features`` (ARM); empty where unknown."""
    blocks = cpuinfo_blocks(root)
    if blocks is None:
        return frozenset()
    procs, top = blocks
    return processor_flags(procs[0] if procs else top)


def processor_flags(kv: dict) -> frozenset[str]:
    """The ``flags`` (x86) or ``Features`` (ARM) of one processor block of /proc/cpuinfo."""
    return frozenset((kv.get("flags") or kv.get("Features") or "").split())


# -- time-stamp counter ----------------------------------------------------------------------

def invariant_tsc(root="/") -> bool:
    """Whether the time-stamp counter ticks at one rate whatever the core's clock and power
    state (x86-64 with ``constant_tsc`` and ``nonstop_tsc``), so ticks convert to seconds."""
    if str(root) == "/" and platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    flags = cpu_flags(root)
    return "constant_tsc" in flags and "nonstop_tsc" in flags


def calibrate_tsc(read: Callable[[], int], clock: Callable[[], float] = time.perf_counter,
                  spans: int = 3, span_s: float = 0.01) -> float | None:
    """Seconds per tick of the counter `read`, against `clock`: the median of `spans` busy
    spans of `span_s` each; None where a span saw no ticks or the rate is outside
    0.2 .. 10 GHz (not a time-stamp counter)."""
    est = []
    for _ in range(spans):
        c0, t0 = read(), clock()
        while clock() - t0 < span_s:
            pass
        c1, t1 = read(), clock()
        if c1 > c0:
            est.append((t1 - t0) / (c1 - c0))
    if len(est) < spans:
        return None
    period = sorted(est)[spans // 2]
    return period if 1e-10 < period < 5e-9 else None


@functools.lru_cache(maxsize=None)
def tsc_period_s(root="/") -> float | None:
    """Seconds per tick of this host's time-stamp counter, calibrated against perf_counter;
    None where there is no invariant TSC (`invariant_tsc`): callers then time with
    perf_counter."""
    if not invariant_tsc(root):
        return None
    from dlrmprof.platform.tsc import read_tsc
    return calibrate_tsc(read_tsc)
