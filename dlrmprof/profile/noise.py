"""Other processes' CPU use during a timed sample, and best-of timing with contamination control.

`OtherCpu` measures, over a window, how many CPUs' worth of time *other* processes used (system
busy time minus this process's own CPU time), from psutil.  A sample is *contaminated* when that
exceeds `threshold` CPUs (default 0.25): on a 2-core host another process holding a core ruins a
2-thread OpenMP region.

`timed_samples(fn, repeats=..., budget_s=...)` times fn() `repeats` times, flags contaminated
samples, and re-takes them while the time budget lasts.  Nothing here prints or seeds RNGs.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import psutil

DEFAULT_THRESHOLD = 0.25
try:
    _TICK = 1.0 / os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):
    _TICK = 0.01


class OtherCpu:
    """Context manager: ``with OtherCpu() as oc: work(); oc.cpus`` -> CPUs used by others
    (not by this process, nor by the child processes it waited for inside the block, such
    as a timed command run with subprocess.run)."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self.cpus = 0.0
        self.wall = 0.0

    def __enter__(self) -> "OtherCpu":
        self._t0 = time.perf_counter()
        self._sys0 = psutil.cpu_times()
        self._me0 = self._proc.cpu_times()
        return self

    def __exit__(self, *exc: Any) -> None:
        wall = time.perf_counter() - self._t0
        sys1 = psutil.cpu_times()
        me1 = self._proc.cpu_times()
        busy = _busy(sys1) - _busy(self._sys0)
        mine = _own(me1) - _own(self._me0)
        self.wall = wall
        self.other_s = max(0.0, busy - mine)
        # /proc/stat counts in clock ticks (10 ms): allow two ticks of rounding before blaming
        # other processes, so a short sample is flagged only for clear contamination
        self.cpus = max(0.0, self.other_s - 2 * _TICK) / wall if wall > 0 else 0.0


def _own(t) -> float:
    return (t.user + t.system + getattr(t, "children_user", 0.0)
            + getattr(t, "children_system", 0.0))


def _busy(t) -> float:
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(t)
    # guest time is already included in user on Linux
    total -= getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
    return total - idle


def timed_samples(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1,
                  budget_s: float = 5.0, threshold: float = DEFAULT_THRESHOLD,
                  drop_contaminated: bool = True) -> dict:
    """Time fn() `repeats` times (after `warmup` calls).

    Returns ``{"samples": [s...], "other_cpu": [cpus...], "flagged": n_flagged,
    "retaken": n, "contaminated_kept": n}``: when `drop_contaminated`, flagged samples are
    dropped and re-taken until `repeats` clean samples exist or `budget_s` is spent; what
    remains contaminated after the budget is kept and counted in ``contaminated_kept``.
    """
    for _ in range(warmup):
        fn()
    clean: list[tuple[float, float]] = []
    dirty: list[tuple[float, float]] = []
    flagged = 0
    start = time.perf_counter()
    attempts = 0
    while len(clean) < repeats:
        with OtherCpu() as oc:
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
        attempts += 1
        if oc.cpus > threshold:
            flagged += 1
            dirty.append((dt, oc.cpus))
            if not drop_contaminated:
                clean.append((dt, oc.cpus))
        else:
            clean.append((dt, oc.cpus))
        if time.perf_counter() - start > budget_s and len(clean) + len(dirty) >= repeats:
            break
    kept = list(clean)
    contaminated_kept = 0
    if drop_contaminated and len(kept) < repeats:
        dirty.sort()
        need = repeats - len(kept)
        kept += dirty[:need]
        contaminated_kept = min(need, len(dirty))
    return {"samples": [t for t, _ in kept], "other_cpu": [c for _, c in kept],
            "flagged": flagged, "retaken": max(0, attempts - repeats),
            "contaminated_kept": contaminated_kept}
