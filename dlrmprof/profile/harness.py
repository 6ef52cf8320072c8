"""Benchmark harness: a baseline and its candidates timed alike, in interleaved rounds, results
checked before timing, other processes' CPU use recorded, schema-versioned JSON out.

    from dlrmprof.profile import harness

    cmp = harness.compare({"torch": run_torch, "numba": run_numba}, baseline="torch",
                          check=lambda out: np.allclose(out["numba"], out["torch"]),
                          seconds=0.5, nargs=8, threads=1, label="R 1e6 D 64")
    cmp.speedup("numba")          # RatioStat: torch time / numba time, per round
    doc = harness.results_doc("dlrmprof.bench.kernels/1", source=..., comparisons=[cmp])
    harness.write_results("benchmarks/results/kernels.json", doc)

Why interleaved rounds: on a shared host the machine's speed drifts (another process takes a
core, the frequency changes).  Each round calls every variant once, in an order rotated by
one each round (with two variants: which goes first alternates), so drift hits all of them
alike; a ratio is taken *within* each round and the median over rounds is reported with its
quartiles, so what changes between rounds cancels.

Each call gets a running call index (modulo `nargs`), so a benchmark can hand every call its
own input from a pool larger than the caches: one variant never reads rows the other just
brought in.  A *sample* is `calls` consecutive calls (for work timed in chunks of
iterations); its time is divided by `calls`.

Timing and noise are the profiler's own (`profile.timers.OpTimer`): perf_counter on the CPU,
CUDA events on a GPU (`device="cuda"`: the device's time, read once per round), and the
`NoiseMonitor`'s windows of other processes' CPU use; a round is *contaminated* when, in its
window, other processes used more cores than `cpus - threads` (plus a tolerance).  Statistics
use the clean rounds when there are enough of them (at least a third, and two), else all
rounds, and say which (`used`).

`check(outputs)` is called with every variant's result on call index 0, before any warm-up
or timing (`check_each(name, output)` right after each call, for variants that write into a
shared buffer): a false result or an AssertionError raises `CheckFailed`, so no figure is
ever printed for a variant that computes something else.  Nothing here prints.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from dlrmprof.fsutil import atomic_write_text
from dlrmprof.profile.timers import NoiseMonitor, OpTimer, summarize

# The comparison layout inside results files; history:
#   1: label, baseline (and baseline_of), names, method, calls, params, rounds, clean_rounds,
#      used, stats per variant, speedup per candidate, samples_s / contaminated / other_cores
#      per round (null beyond MAX_SAMPLES rounds), the noise monitor's summary.
HARNESS_SCHEMA = "dlrmprof.profile.harness/1"
_SCHEMA_RE = re.compile(r"^[a-z0-9_.\-]+/[1-9][0-9]*$")
MAX_SAMPLES = 200   # rounds kept raw in a results file; beyond it only the statistics


class CheckFailed(AssertionError):
    """A variant's result did not pass the benchmark's check: nothing was timed."""


@dataclass(frozen=True)
class RatioStat:
    """time(numerator) / time(denominator), one value per round, summarized over rounds."""

    numerator: str
    denominator: str
    median: float
    q25: float
    q75: float
    min: float
    max: float
    rounds: int
    used: str          # "clean" (uncontaminated rounds only) or "all"

    def describe(self) -> str:
        return f"{self.median:.2f}x [{self.q25:.2f}-{self.q75:.2f}]"

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "RatioStat":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


@dataclass
class Comparison:
    """Per-round samples (seconds per call) of each variant, with each round's noise."""

    label: str
    baseline: str
    names: tuple[str, ...]
    samples_s: dict[str, list[float]]
    contaminated: list[bool]
    other_cores: list[float | None]
    method: str = "perf_counter"
    calls: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    noise: dict[str, Any] = field(default_factory=dict)
    # variants measured against another baseline than `baseline` (several groups timed in
    # the same rounds, e.g. train and inference steps)
    baseline_of: dict[str, str] = field(default_factory=dict)

    def baseline_for(self, name: str) -> str:
        return self.baseline_of.get(name, self.baseline)

    @property
    def candidates(self) -> list[str]:
        """Every variant that is not itself a baseline."""
        bases = {self.baseline, *self.baseline_of.values()}
        return [n for n in self.names if n not in bases]

    @property
    def rounds(self) -> int:
        return len(self.contaminated)

    @property
    def clean_rounds(self) -> int:
        return int(self.rounds - sum(self.contaminated))

    @property
    def used(self) -> str:
        """'clean' when enough rounds are uncontaminated to use them alone, else 'all'."""
        need = max(2, self.rounds // 3)
        return "clean" if self.clean_rounds >= need else "all"

    def _mask(self) -> np.ndarray:
        bad = np.asarray(self.contaminated, dtype=bool)
        return ~bad if self.used == "clean" else np.ones(len(bad), dtype=bool)

    def times(self, name: str) -> np.ndarray:
        """The rounds' seconds per call of `name` that the statistics use."""
        return np.asarray(self.samples_s[name], dtype=np.float64)[self._mask()]

    def median_s(self, name: str) -> float:
        return float(np.median(self.times(name)))

    def stats(self, name: str) -> dict[str, Any]:
        """The profiler's time statistics of every round (`timers.summarize`), contaminated
        rounds counted, raw samples left out."""
        s = summarize(self.samples_s[name], self.contaminated, method=self.method)
        s.pop("samples_s", None)
        s.pop("contaminated_idx", None)
        return s

    def ratio(self, numerator: str, denominator: str | None = None) -> RatioStat:
        """time(numerator) / time(denominator) per round (default denominator: the baseline)."""
        den = denominator or self.baseline
        r = self.times(numerator) / self.times(den)
        q25, q50, q75 = np.percentile(r, [25, 50, 75])
        return RatioStat(numerator, den, float(q50), float(q25), float(q75), float(r.min()),
                         float(r.max()), int(len(r)), self.used)

    def speedup(self, name: str) -> RatioStat:
        """baseline time / `name`'s time per round: above 1, `name` is faster."""
        return self.ratio(self.baseline_for(name), name)

    def other_cores_mean(self) -> float | None:
        vals = [v for v in self.other_cores if v is not None]
        return float(np.mean(vals)) if vals else None

    def to_json(self, max_samples: int = MAX_SAMPLES) -> dict[str, Any]:
        keep = self.rounds <= max_samples
        return {
            "layout": HARNESS_SCHEMA, "label": self.label, "baseline": self.baseline,
            "names": list(self.names), "method": self.method, "calls": self.calls,
            "params": dict(self.params), "rounds": self.rounds,
            "clean_rounds": self.clean_rounds, "used": self.used,
            "other_cores_mean": self.other_cores_mean(),
            "stats": {n: self.stats(n) for n in self.names},
            "baseline_of": dict(self.baseline_of),
            "speedup": {n: self.speedup(n).to_json() for n in self.candidates},
            # raw rounds to 5 significant digits (a results file stays small)
            "samples_s": ({n: [float(f"{v:.5g}") for v in vs]
                           for n, vs in self.samples_s.items()} if keep else None),
            "contaminated": list(self.contaminated) if keep else None,
            "other_cores": ([None if v is None else round(v, 3) for v in self.other_cores]
                            if keep else None),
            "noise": dict(self.noise),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Comparison":
        """A comparison back from its JSON (raw rounds needed: files that kept them)."""
        if d.get("layout") != HARNESS_SCHEMA:
            raise ValueError(f"not a {HARNESS_SCHEMA} comparison: {d.get('layout')!r}")
        if d.get("samples_s") is None:
            raise ValueError(f"comparison {d.get('label')!r} kept statistics only "
                             f"({d.get('rounds')} rounds > {MAX_SAMPLES})")
        return cls(label=d["label"], baseline=d["baseline"], names=tuple(d["names"]),
                   samples_s={k: list(v) for k, v in d["samples_s"].items()},
                   contaminated=list(d["contaminated"]), other_cores=list(d["other_cores"]),
                   method=d["method"], calls=d["calls"], params=dict(d["params"]),
                   noise=dict(d["noise"]), baseline_of=dict(d.get("baseline_of", {})))


def run_check(variants: Mapping[str, Callable[[int], Any]],
              check: Callable[[dict[str, Any]], Any] | None,
              check_each: Callable[[str, Any], Any] | None = None) -> dict[str, Any]:
    """Every variant once on call index 0, then `check(outputs)`; `check_each(name, output)`
    right after each call (for variants that write into a shared buffer).  `CheckFailed` if
    a check returns False or raises AssertionError."""
    outputs = {}
    for name, fn in variants.items():
        outputs[name] = fn(0)
        if check_each is not None:
            _verdict(lambda: check_each(name, outputs[name]), name)
    if check is not None:
        _verdict(lambda: check(outputs), ", ".join(variants))
    return outputs


def _verdict(fn: Callable[[], Any], what: str) -> None:
    try:
        ok = fn()
    except CheckFailed:
        raise
    except AssertionError as exc:
        raise CheckFailed(f"result check failed before timing: {exc}") from None
    if ok is not None and not ok:           # False, numpy's False_, an empty result
        raise CheckFailed(f"result check failed before timing: the results disagree ({what})")


def compare(variants: Mapping[str, Callable[[int], Any]], *, baseline: str,
            check: Callable[[dict[str, Any]], Any] | None = None,
            check_each: Callable[[str, Any], Any] | None = None, rounds: int | None = None,
            seconds: float | None = None, min_rounds: int = 5, max_rounds: int | None = None,
            warmup: int = 1, nargs: int | None = None, calls: int = 1, threads: int = 1,
            device: str = "cpu", window_s: float = 0.05, own_time=None, label: str = "",
            params: Mapping[str, Any] | None = None,
            baseline_of: Mapping[str, str] | None = None) -> Comparison:
    """Time `variants` (name -> fn(call_index)) in interleaved rounds; see the module doc.

    `baseline_of`: {variant: its baseline} for variants compared with another baseline
    than `baseline` (several groups timed in the same rounds).

    Stops after exactly `rounds` rounds, or else once `seconds` have passed and at least
    `min_rounds` are done (or at `max_rounds`).  `own_time()`: CPU seconds of the measured
    work when it runs in other processes too (the noise monitor's argument)."""
    for b in (baseline, *(baseline_of or {}).values()):
        if b not in variants:
            raise ValueError(f"baseline {b!r} is not one of {list(variants)}")
    if rounds is None and seconds is None:
        raise ValueError("give rounds or seconds")
    if calls < 1 or min_rounds < 1 or (rounds is not None and rounds < 1):
        raise ValueError("calls, rounds and min_rounds must be >= 1")
    names = list(variants)
    run_check(variants, check, check_each)
    counter = _Counter(nargs)
    for _ in range(warmup):
        for name in names:
            variants[name](counter.next())
    timer = OpTimer(device=device, threads=threads, window_s=window_s)
    if timer.noise is not None and own_time is not None:
        timer.noise = NoiseMonitor(threads, window_s=window_s, own_time=own_time)
    t_start = time.perf_counter()
    k = 0
    while _more(k, rounds, seconds, min_rounds, max_rounds, time.perf_counter() - t_start):
        shift = k % len(names)
        timer.begin_iteration()
        for name in names[shift:] + names[:shift]:
            fn = variants[name]
            with timer.op(name):
                for _ in range(calls):
                    fn(counter.next())
        timer.end_iteration()
        k += 1
    timer.finish()
    flags = timer.noise.flags(k) if timer.noise is not None else np.zeros(k, dtype=bool)
    other = timer.noise.other_cores(k) if timer.noise is not None else np.full(k, np.nan)
    return Comparison(
        label=label, baseline=baseline, names=tuple(names),
        samples_s={n: [float(s) / calls for s in timer.samples(n)] for n in names},
        contaminated=[bool(f) for f in flags],
        other_cores=[None if np.isnan(v) else float(v) for v in other],
        method=timer.method, calls=calls, params=dict(params or {}),
        noise=timer.noise.summary() if timer.noise is not None else {},
        baseline_of=dict(baseline_of or {}))


class _Counter:
    """Running call index, modulo `nargs` when given."""

    def __init__(self, nargs: int | None):
        self.nargs = nargs
        self.i = -1

    def next(self) -> int:
        self.i += 1
        return self.i % self.nargs if self.nargs else self.i


def _more(k, rounds, seconds, min_rounds, max_rounds, elapsed) -> bool:
    if rounds is not None:
        return k < rounds
    if max_rounds is not None and k >= max_rounds:
        return False
    return k < min_rounds or elapsed < seconds


def geomean(values: Sequence[float]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.exp(np.mean(np.log(v)))) if v else None


def host_facts() -> dict[str, Any]:
    """The host a results file was measured on (machine, CPUs, load, versions)."""
    facts: dict[str, Any] = {"machine": platform.machine(), "cpus": os.cpu_count(),
                             "python": platform.python_version()}
    if hasattr(os, "getloadavg"):
        facts["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    for mod in ("numpy", "numba", "torch"):
        m = sys.modules.get(mod)
        if m is not None:
            facts[mod] = getattr(m, "__version__", "?")
    return facts


def command_line(argv: Sequence[str] | None = None) -> str:
    """`python benchmarks/<script> <args>` as the user typed it (the script's path made
    relative to the working directory when it lies below it)."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]) if argv else Path("?")
    try:
        script = script.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    return shlex.join(["python", str(script), *argv[1:]])


def results_path(script: str, name: str) -> str:
    """`results/<name>` beside a benchmark script (its default output, wherever it is run
    from)."""
    return str(Path(script).resolve().parent / "results" / name)


def results_doc(schema: str, *, source: str, comparisons: Sequence[Comparison] = (),
                command: str | None = None, max_samples: int = MAX_SAMPLES,
                **payload: Any) -> dict[str, Any]:
    """A results document: schema, command, host, where the figures come from, the
    comparisons, and the benchmark's own fields (`payload`, e.g. a `summary` mapping).
    `max_samples`: comparisons with more rounds keep their statistics only (0: all do, for
    sweeps of many cells)."""
    if not _SCHEMA_RE.match(schema):
        raise ValueError(f"schema {schema!r}: expected 'name/<version>', e.g. "
                         "'dlrmprof.bench.kernels/1'")
    doc: dict[str, Any] = {"schema": schema, "command": command or command_line(),
                           "host": host_facts(), "source": source}
    if comparisons:
        doc["harness"] = HARNESS_SCHEMA
        doc["comparisons"] = [c.to_json(max_samples) for c in comparisons]
    doc.update(payload)
    return doc


def write_results(path: str | os.PathLike, doc: Mapping[str, Any]) -> Path:
    """Write a results document atomically (nothing half-written); refuses one without a
    versioned schema."""
    schema = doc.get("schema")
    if not isinstance(schema, str) or not _SCHEMA_RE.match(schema):
        raise ValueError(f"results document without a versioned schema: {schema!r}")
    text = json.dumps(_finite(doc), indent=1, allow_nan=False, default=_jsonable)
    atomic_write_text(path, _SCALARS.sub(_one_line_list, text) + "\n")
    return Path(path)


# a JSON list of numbers / null / booleans, one element a line as `indent` writes it
_SCALARS = re.compile(r"\[\s*(?:(?:-?[0-9][0-9.eE+\-]*|null|true|false)\s*,\s*)*"
                      r"(?:-?[0-9][0-9.eE+\-]*|null|true|false)\s*\]")


def _one_line_list(m: re.Match) -> str:
    return "[" + ", ".join(x.strip() for x in m.group(0)[1:-1].split(",")) + "]"


def _finite(x: Any) -> Any:
    """NaN and infinities become null (JSON has neither)."""
    if isinstance(x, float):
        return x if np.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")
