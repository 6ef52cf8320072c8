"""Open-loop query schedules: when each query arrives and how many samples (items) it holds.

A `Schedule` is fixed before the run starts (open loop: arrivals never wait for the server),
so a query's latency is measured from its *scheduled* arrival time, however late the
dispatcher gets to it (no coordinated omission).

Arrival processes (`ArrivalSpec.kind`):

``poisson``   a Poisson process at `rate` conditioned on its count: N = round(rate *
              duration) arrival times drawn uniformly on [0, duration) and sorted.  The gaps
              are exponential (memoryless) as in an unconditioned Poisson process, and the
              offered rate is exactly `rate` rather than rate +- sqrt(N) / duration.
``constant``  one query every 1 / rate seconds.
``file``      arrival times (seconds, one per line, '#' comments) replayed from a file; when a
              `rate` is asked for, the gaps are scaled so the replay offers that rate (a sweep
              keeps the file's burst shape), and the replay wraps around the file to fill
              `duration`.

Query sizes (`SizeSpec.kind`): ``uniform`` integers in [lo, hi] (MLPerf's DLRM server scenario:
100-700 items per query), ``fixed``, or ``hist``: a histogram file of ``size weight`` lines.
Everything is drawn from `numpy.random.default_rng(seed)`; nothing touches a global RNG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlrmprof.errors import UserError, input_error

ARRIVALS = ("poisson", "constant")
MLPERF_SIZES = (100, 700)


@dataclass(frozen=True)
class ArrivalSpec:
    kind: str = "poisson"            # poisson | constant | file
    path: str | None = None          # for kind == "file"
    times: tuple[float, ...] = ()    # the file's arrival times (seconds, sorted)

    def describe(self) -> str:
        if self.kind == "file":
            return f"replayed from {self.path} ({len(self.times)} arrival times)"
        if self.kind == "poisson":
            return "Poisson (conditioned on the count: rate x duration uniform sorted times)"
        return "constant gaps (1 / rate)"

    def to_json(self) -> dict:
        return {"kind": self.kind, "path": self.path, "describe": self.describe()}


@dataclass(frozen=True)
class SizeSpec:
    kind: str = "uniform"            # uniform | fixed | hist
    lo: int = MLPERF_SIZES[0]
    hi: int = MLPERF_SIZES[1]
    values: tuple[int, ...] = ()     # hist: sizes
    weights: tuple[float, ...] = ()  # hist: weights (any scale)
    path: str | None = None

    @property
    def max_size(self) -> int:
        return max(self.values) if self.kind == "hist" else self.hi

    @property
    def mean(self) -> float:
        if self.kind == "hist":
            w = np.asarray(self.weights, float)
            return float(np.dot(self.values, w) / w.sum())
        return (self.lo + self.hi) / 2

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"fixed {self.lo} items"
        if self.kind == "uniform":
            return f"uniform integers {self.lo}..{self.hi} items"
        return f"histogram from {self.path} ({len(self.values)} sizes, mean {self.mean:.1f})"

    def to_json(self) -> dict:
        return {"kind": self.kind, "lo": self.lo, "hi": self.hi, "path": self.path,
                "mean": self.mean, "describe": self.describe()}

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(n, self.lo, np.int64)
        if self.kind == "uniform":
            return rng.integers(self.lo, self.hi + 1, size=n, dtype=np.int64)
        p = np.asarray(self.weights, float)
        return rng.choice(np.asarray(self.values, np.int64), size=n, p=p / p.sum())


def parse_sizes(text: str) -> SizeSpec:
    """``uniform:LO:HI``, ``fixed:N`` (or a bare ``N``), ``hist:FILE``; UserError otherwise."""
    what = "--query-size: expected uniform:LO:HI, fixed:N or hist:FILE"
    kind, _, rest = text.partition(":")
    try:
        if kind.isdigit() and not rest:
            kind, rest = "fixed", kind
        if kind == "fixed":
            n = int(rest)
            if n < 1:
                raise ValueError
            return SizeSpec("fixed", n, n)
        if kind == "uniform":
            lo, hi = (int(x) for x in rest.split(":"))
            if not 1 <= lo <= hi:
                raise ValueError
            return SizeSpec("uniform", lo, hi)
    except ValueError:
        raise UserError(f"{what} with 1 <= LO <= HI, got {text!r}") from None
    if kind == "hist" and rest:
        return read_histogram(rest)
    raise UserError(f"{what}, got {text!r}")


def read_histogram(path: str) -> SizeSpec:
    """A query-size histogram: lines ``size weight`` (integers >= 1, weights >= 0, not all 0)."""
    values, weights = [], []
    for lineno, line in enumerate(_read_lines(path), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise input_error(path, "two fields 'size weight'", line=lineno, got=repr(line))
        try:
            size, weight = int(parts[0]), float(parts[1])
        except ValueError:
            raise input_error(path, "an integer size and a number weight", line=lineno,
                              got=repr(line)) from None
        if size < 1 or not math.isfinite(weight) or weight < 0:
            raise input_error(path, "size >= 1 and a finite weight >= 0", line=lineno,
                              got=repr(line))
        values.append(size)
        weights.append(weight)
    if not values or sum(weights) <= 0:
        raise input_error(path, "at least one 'size weight' line with a positive weight")
    return SizeSpec("hist", min(values), max(values), tuple(values), tuple(weights), path)


def read_arrivals(path: str) -> ArrivalSpec:
    """Arrival times in seconds, one per line, non-decreasing, at least two."""
    times: list[float] = []
    for lineno, line in enumerate(_read_lines(path), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            t = float(line)
        except ValueError:
            raise input_error(path, "an arrival time in seconds", line=lineno,
                              got=repr(line)) from None
        if not math.isfinite(t) or t < 0 or (times and t < times[-1]):
            raise input_error(path, "finite, non-negative, non-decreasing times", line=lineno,
                              got=repr(line))
        times.append(t)
    if len(times) < 2 or times[-1] <= times[0]:
        raise input_error(path, "at least two arrival times spanning a positive interval")
    return ArrivalSpec("file", path, tuple(times))


def parse_arrivals(text: str) -> ArrivalSpec:
    if text in ARRIVALS:
        return ArrivalSpec(text)
    if text.startswith("file:"):
        return read_arrivals(text[5:])
    raise UserError(f"--arrivals: expected poisson, constant or file:PATH, got {text!r}")


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") \
            from None


@dataclass(frozen=True)
class Schedule:
    """Arrival times (seconds from the start, sorted) and sizes (items) of every query."""

    times: np.ndarray        # float64 [Q]
    sizes: np.ndarray        # int64 [Q]
    rate: float              # offered queries/s
    duration: float          # seconds
    seed: int

    @property
    def num_queries(self) -> int:
        return int(self.times.shape[0])

    @property
    def first_sample(self) -> np.ndarray:
        """Where each query's samples start in the data (queries take consecutive samples)."""
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)


def make_schedule(rate: float | None, duration: float, arrivals: ArrivalSpec, sizes: SizeSpec,
                  seed: int = 0) -> Schedule:
    """The open-loop schedule of `duration` seconds at `rate` queries/s (see module doc)."""
    if duration <= 0:
        raise UserError(f"--duration must be positive, got {duration}")
    rng = np.random.default_rng(seed)
    if arrivals.kind == "file":
        times, rate = _replay(np.asarray(arrivals.times, float), rate, duration)
    else:
        if rate is None or not rate > 0 or not math.isfinite(rate):
            raise UserError(f"--rate must be a positive number of queries/s, got {rate}")
        n = max(1, int(round(rate * duration)))
        if arrivals.kind == "poisson":
            times = np.sort(rng.uniform(0.0, duration, size=n))
        elif arrivals.kind == "constant":
            times = np.arange(n, dtype=float) / rate
        else:
            raise UserError(f"--arrivals: unknown kind {arrivals.kind!r}")
    return Schedule(times, sizes.draw(rng, times.shape[0]), float(rate), float(duration), seed)


def _replay(src: np.ndarray, rate: float | None, duration: float) -> tuple[np.ndarray, float]:
    src = src - src[0]
    span = src[-1] * len(src) / (len(src) - 1)   # one mean gap after the last arrival
    native = len(src) / span
    scale = 1.0 if rate is None else native / rate
    one = src * scale
    period = span * scale
    reps = int(math.ceil(duration / period))
    times = np.concatenate([one + k * period for k in range(reps)])
    return times[times < duration], float(native if rate is None else rate)
