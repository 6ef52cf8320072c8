"""Per-operator timers with raw samples and a record of the host's noise.

    timer = OpTimer(device="cpu", threads=1)
    for it in range(iters):
        timer.begin_iteration()
        with timer.op("bottom_mlp"):
            ...
        timer.end_iteration()
    timer.stats("bottom_mlp")   # median, spread, raw samples, contaminated count

CPU ops are timed with `time.perf_counter`; on CUDA each op records a pair of CUDA events
(the host does not wait inside the op) and the iteration synchronizes once at its end to
read the elapsed times, so device work is timed on the device.

Noise (small shared machines: 2-thread code collapses while
another process holds a core): the system-wide CPU time (`/proc/stat` via psutil) and this
process's own CPU time (`time.process_time`, all threads) are read at iteration boundaries.
`/proc/stat` counts in 10 ms ticks, so a reading is only taken once at least `window_s` has
passed; every iteration inside that window gets the window's figure: *other processes' CPU
use in cores* = (system busy time - own CPU time) / wall time, plus the hypervisor's steal.
A sample is *contaminated* when the other processes used more cores than this run left free
(`cpus - threads`, plus a small tolerance) or the steal exceeded the same tolerance.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

TOLERANCE_CORES = 0.15


@dataclass(frozen=True)
class NoiseWindow:
    start_iter: int      # first iteration covered
    end_iter: int        # one past the last iteration covered
    wall_s: float
    other_cores: float   # other processes' CPU use, in cores (averaged over the window)
    steal_cores: float   # hypervisor steal, in cores
    own_cores: float     # this process's CPU use, in cores
    contaminated: bool


def _system_busy() -> tuple[float, float]:
    """(busy seconds excluding steal, steal seconds) summed over all CPUs."""
    import psutil

    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    steal = getattr(t, "steal", 0.0)
    busy = sum(t) - idle - steal - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return busy, steal


class NoiseMonitor:
    """Other processes' CPU use during measurement, in windows of at least `window_s`."""

    def __init__(self, threads: int, cpus: int | None = None, window_s: float = 0.1,
                 tolerance: float = TOLERANCE_CORES, own_time=None):
        """`own_time()`: CPU seconds of the work being measured (default this process; a
        multi-process measurement passes the sum over its processes)."""
        self.own_time = own_time if own_time is not None else lambda: time.process_time()
        self.cpus = cpus or os.cpu_count() or 1
        self.threads = threads
        self.free_cores = max(0, self.cpus - threads)
        self.window_s = window_s
        self.tolerance = tolerance
        self.windows: list[NoiseWindow] = []
        self._open: tuple[int, float, float, float, float] | None = None

    def mark(self, iteration: int, force: bool = False) -> None:
        """Call at iteration boundaries: `iteration` iterations have completed so far."""
        now = time.perf_counter()
        if self._open is None:
            busy, steal = _system_busy()
            self._open = (iteration, now, busy, steal, self.own_time())
            return
        it0, t0, busy0, steal0, own0 = self._open
        wall = now - t0
        if (wall < self.window_s and not force) or iteration == it0:
            return
        busy, steal = _system_busy()
        own = self.own_time()
        own_c = (own - own0) / wall
        other = max(0.0, (busy - busy0) - (own - own0)) / wall
        steal_c = max(0.0, steal - steal0) / wall
        bad = other > self.free_cores + self.tolerance or steal_c > self.tolerance
        self.windows.append(NoiseWindow(it0, iteration, wall, other, steal_c, own_c, bad))
        self._open = (iteration, now, busy, steal, own)

    def reset(self) -> None:
        self.windows.clear()
        self._open = None

    def flags(self, n_iters: int) -> np.ndarray:
        """Per-iteration contamination flags (iterations outside any window: unflagged)."""
        out = np.zeros(n_iters, dtype=bool)
        for w in self.windows:
            out[w.start_iter:min(w.end_iter, n_iters)] = w.contaminated
        return out

    def other_cores(self, n_iters: int) -> np.ndarray:
        out = np.full(n_iters, np.nan)
        for w in self.windows:
            out[w.start_iter:min(w.end_iter, n_iters)] = w.other_cores
        return out

    def summary(self) -> dict[str, Any]:
        if not self.windows:
            return {"windows": 0, "cpus": self.cpus, "threads": self.threads,
                    "source": "measured (psutil /proc/stat, process_time)"}
        wall = np.array([w.wall_s for w in self.windows])
        other = np.array([w.other_cores for w in self.windows])
        steal = np.array([w.steal_cores for w in self.windows])
        bad = np.array([w.contaminated for w in self.windows])
        return {
            "source": "measured (psutil /proc/stat, process_time)",
            "cpus": self.cpus,
            "threads": self.threads,
            "free_cores": self.free_cores,
            "tolerance_cores": self.tolerance,
            "windows": len(self.windows),
            "window_s_min": self.window_s,
            "other_cores_mean": float(np.average(other, weights=wall)),
            "other_cores_max": float(other.max()),
            "steal_cores_mean": float(np.average(steal, weights=wall)),
            "contaminated_windows": int(bad.sum()),
            "contaminated_fraction": float(wall[bad].sum() / wall.sum()),
            "rule": "contaminated when other processes' cores > cpus - threads + tolerance, "
                    "or steal > tolerance",
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        }


class _CpuOp:
    __slots__ = ("timer", "name", "samples", "iters", "t0", "method")

    def __init__(self, timer: "OpTimer", name: str):
        self.timer = timer
        self.name = name
        self.samples: list[float] = []
        self.iters: list[int] = []
        self.t0 = 0.0
        self.method: str | None = None  # set when the samples come from elsewhere (add)

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.samples.append(time.perf_counter() - self.t0)
        self.iters.append(self.timer.iteration)
        return False


class CudaSpan:
    """One interval timed on the device: a pair of CUDA timing events recorded on the
    current stream.  `start()` and `stop()` do not wait for the device; `seconds()` reads
    the elapsed time once the end event has completed (`sync=True` waits for it)."""

    __slots__ = ("begin", "end")

    def __init__(self):
        self.begin = None
        self.end = None

    def start(self) -> "CudaSpan":
        import torch

        self.begin = torch.cuda.Event(enable_timing=True)
        self.begin.record()
        return self

    def stop(self) -> "CudaSpan":
        import torch

        self.end = torch.cuda.Event(enable_timing=True)
        self.end.record()
        return self

    def seconds(self, sync: bool = False) -> float:
        if sync:
            self.end.synchronize()
        return self.begin.elapsed_time(self.end) / 1e3


def cuda_times(fn, repeats: int, warmup: int = 1) -> list[float]:
    """Device seconds of `repeats` calls of `fn()` (each timed by its own `CudaSpan` and
    waited for), after `warmup` untimed calls and a device synchronize."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        span = CudaSpan().start()
        fn()
        out.append(span.stop().seconds(sync=True))
    return out


class _CudaOp(_CpuOp):
    """Times on the device: the span is read at the end of the iteration (one synchronize
    for all ops), so the host never waits inside an op."""

    __slots__ = ("span",)

    def __enter__(self):
        self.span = CudaSpan().start()
        return self

    def __exit__(self, *exc):
        self.timer._pending.append((self, self.span.stop(), self.timer.iteration))
        return False


class OpTimer:
    """Per-op timer: raw samples (seconds) per op name, tagged with their iteration."""

    def __init__(self, device: str = "cpu", threads: int = 1, noise: bool = True,
                 window_s: float = 0.1):
        self.device = device
        self.cuda = device.startswith("cuda")
        self.method = "cuda-events" if self.cuda else "perf_counter"
        self._ops: dict[str, _CpuOp] = {}
        self._pending: list = []
        self.iteration = 0
        self.iter_wall: list[float] = []
        self._iter_t0 = 0.0
        self.noise = NoiseMonitor(threads, window_s=window_s) if noise else None

    def op(self, name: str, host: bool = False) -> _CpuOp:
        """Context manager timing one execution of `name`.  `host=True`: host-side work
        (data loading) timed with perf_counter even on a CUDA device."""
        o = self._ops.get(name)
        if o is None:
            o = (_CudaOp if self.cuda and not host else _CpuOp)(self, name)
            self._ops[name] = o
        return o

    def method_of(self, name: str) -> str:
        o = self._ops.get(name)
        if o is not None and o.method is not None:
            return o.method
        return "cuda-events" if isinstance(o, _CudaOp) else "perf_counter"

    def add(self, name: str, seconds: float, method: str | None = None) -> None:
        """Record a sample measured elsewhere (e.g. inside a kernel, by the time-stamp
        counter: method "tsc")."""
        o = self.op(name, host=method is not None)
        o.samples.append(seconds)
        o.iters.append(self.iteration)
        if method is not None:
            o.method = method

    def add_all(self, names, seconds, method: str | None = None) -> None:
        """`add` for several ops at once (e.g. every table's time from one kernel call)."""
        it = self.iteration
        ops = self._ops
        for name, sec in zip(names, seconds):
            o = ops.get(name)
            if o is None:
                o = self.op(name, host=method is not None)
            o.samples.append(float(sec))
            o.iters.append(it)
            if method is not None:
                o.method = method

    def begin_iteration(self) -> None:
        if self.noise is not None and self.iteration == 0 and not self.iter_wall:
            self.noise.mark(0)
        self._iter_t0 = time.perf_counter()

    def end_iteration(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            for o, span, it in self._pending:
                o.samples.append(span.seconds())
                o.iters.append(it)
            self._pending.clear()
        self.iter_wall.append(time.perf_counter() - self._iter_t0)
        self.iteration += 1
        if self.noise is not None:
            self.noise.mark(self.iteration)

    def finish(self) -> None:
        """Close the last noise window."""
        if self.noise is not None:
            self.noise.mark(self.iteration, force=True)

    def reset(self) -> None:
        """Drop everything recorded so far (after warm-up)."""
        self._ops.clear()
        self._pending.clear()
        self.iteration = 0
        self.iter_wall.clear()
        if self.noise is not None:
            self.noise.reset()

    @property
    def names(self) -> list[str]:
        return list(self._ops)

    def samples(self, name: str) -> np.ndarray:
        return np.asarray(self._ops[name].samples, dtype=np.float64)

    def stats(self, name: str) -> dict[str, Any]:
        o = self._ops[name]
        flags = self.noise.flags(self.iteration) if self.noise is not None else None
        it = np.asarray(o.iters, dtype=np.int64)
        bad = flags[np.clip(it, 0, max(self.iteration - 1, 0))] if flags is not None and \
            self.iteration else np.zeros(len(it), dtype=bool)
        return summarize(o.samples, bad, method=self.method)


def summarize(samples, contaminated=None, method: str = "perf_counter") -> dict[str, Any]:
    """Median and spread of raw samples (seconds); `contaminated` flags per sample."""
    x = np.asarray(samples, dtype=np.float64)
    bad = np.zeros(len(x), dtype=bool) if contaminated is None else np.asarray(contaminated, bool)
    if len(x) == 0:
        return {"n": 0, "method": method, "samples_s": []}
    q10, q25, q50, q75, q90 = np.percentile(x, [10, 25, 50, 75, 90])
    clean = x[~bad]
    return {
        "n": int(len(x)),
        "method": method,
        "median_s": float(q50),
        "min_s": float(x.min()),
        "max_s": float(x.max()),
        "mean_s": float(x.mean()),
        "p10_s": float(q10),
        "p90_s": float(q90),
        "iqr_s": float(q75 - q25),
        "spread_rel": float((q90 - q10) / q50) if q50 > 0 else math.nan,
        "contaminated": int(bad.sum()),
        "median_clean_s": float(np.median(clean)) if len(clean) else None,
        "samples_s": [float(v) for v in x],
        "contaminated_idx": [int(i) for i in np.flatnonzero(bad)],
    }
