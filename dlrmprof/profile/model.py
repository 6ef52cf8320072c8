"""The report as typed dataclasses: what `render` and `compare` read.

`Report` (`dlrmprof.profile.report`) is the file: plain JSON sections, validated, versioned
and upgraded on load, and what the run layer builds.  `ReportModel.of(report)` types it:

    ReportModel
      host: Host                    cpu: CpuFacts, caches: [CacheFacts], memory, os, gpu ...
      config: RunConfig             the run's options (free-form beyond the typed keys)
      trace: TraceSummary
      ceilings: dict                the probe record as the run stored it; `ceilings_record()`
                                    types it (`dlrmprof.profile.ceilings_model.Ceilings`)
      ops: [OpRow]                  time: TimeStats
      roofline: RooflineSection     rows: [Verdict], roofs / measured_roofs: Roofs
      end_to_end: EndToEnd, noise: Noise, training: Training
      cache: CacheSection           simulation: {op: OpCacheSim}, mrc: {table: Mrc}, sweep
      simd: SimdStudy               ops: [SimdOp], levels: [SimdLevel]
                                    (the cache and SIMD types: dlrmprof.profile.study_model)
      serving: ServingSection | None   (dlrmprof.profile.serving)

Every class is a `Record`: ``from_json(d).to_json() == d``, key order and absent keys
included, so ``ReportModel.of(r).to_json()`` writes the same bytes as ``r.to_json()``.
Figures keep their units (seconds, bytes, GB/s, GFLOP/s) and the report's names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dlrmprof.errors import UserError
from dlrmprof.profile.ceilings_model import Ceilings, Roofs
from dlrmprof.profile.record import Record, json_record, list_of, nested
from dlrmprof.profile.study_model import CacheSection, SimdStudy


# -- ops and their verdicts ---------------------------------------------------------------------

@json_record
class TimeStats(Record):
    """Per-call time in seconds (`report.time_stats`): raw samples kept after dropping
    contaminated ones; ``flagged`` = how many samples other processes contaminated."""

    median: float
    p10: float
    p90: float
    mean: float
    n: int
    samples: list = field(default_factory=list)
    flagged: int = 0


@json_record
class OpRow(Record):
    """One timed op (`report.op_row`): bytes and FLOPs counted by the cost model."""

    name: str
    phase: str
    device: str
    backend: str
    time: TimeStats = nested(TimeStats)
    kind: str | None = None
    bytes: int | None = None
    flops: int | None = None
    shape: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    timer: str | None = None            # "perf_counter", "tsc", "cuda_event" ...
    dropped_contaminated: int | None = None
    emb_dtype: dict | None = None       # emb_dtype.TableDtypeVerdict.to_json()

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.phase)

    def achieved_gbs(self) -> float | None:
        """Counted bytes over the median time (GB/s), or None without bytes or time."""
        t = self.time.median
        return self.bytes / t / 1e9 if self.bytes and t else None

    def achieved_gflops(self) -> float | None:
        t = self.time.median
        return self.flops / t / 1e9 if self.flops and t else None


@json_record
class Verdict(Record):
    """An op against the host's roofs (`roofline.verdict_for`); None where not judged.

    ``verdict`` is None (with ``reason``) for an op without a measured time or counts."""

    name: str | None = None
    phase: str | None = None
    kind: str | None = None
    device: str | None = None
    backend: str | None = None
    time_s: float | None = None
    bytes: int | None = None
    flops: int | None = None
    threads: int | None = None
    verdict: str | None = None          # "memory-bound", "latency-bound", "compute-bound"
    reason: str | None = None           # why there is no verdict
    intensity: float | None = None      # FLOP / byte
    achieved_gbs: float | None = None   # effective: every counted byte
    achieved_gflops: float | None = None
    compute_roof_gflops: float | None = None
    compute_roof: str | None = None     # "fp32 GEMM", "bf16 GEMM"
    memory_roof: str | None = None      # "stream" or "random"
    memory_roof_gbs: float | None = None
    ridge_intensity: float | None = None
    attainable_gflops: float | None = None
    governing_roof: str | None = None   # "stream", "random" or "compute"
    why: str | None = None
    percent_of_roof: float | None = None
    percent_of_stream: float | None = None
    percent_of_random_roof: float | None = None
    exceeds_roof: bool | None = None
    ceiling_raised: bool | None = None
    per_call_s: float | None = None
    roof_time_per_call_s: float | None = None
    overhead_dominated: bool | None = None
    note: str | None = None
    dram_bytes_est: float | None = None      # simulated (cache study)
    dram_gbs_est: float | None = None
    dram_fraction_est: float | None = None
    percent_of_roof_dram: float | None = None
    dram_exceeds_roof: bool | None = None
    sources: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str | None, str | None]:
        return (self.name, self.phase)

    def label(self, percent: bool = True) -> str:
        """As tables print it: "memory-bound (12% of roof)", or "overhead-dominated (0% of
        memory-bound roof)" when a call's fixed cost sets the time; "-" without a verdict."""
        if not self.verdict:
            return "-"
        pct = self.percent_of_roof
        has_pct = percent and isinstance(pct, (int, float))
        if self.overhead_dominated:
            return "overhead-dominated" + (f" ({pct:.0f}% of {self.verdict} roof)"
                                           if has_pct else "")
        return self.verdict + (f" ({pct:.0f}% of roof)" if has_pct else "")


@json_record
class StaleCeiling(Record):
    """A roof an op ran above: raised to what the op reached (`roofline.verdicts`)."""

    roof: str | None = None            # "stream_gbs", "fp32_gflops", ...
    device: str | None = None          # "cpu" or "cuda"
    reached: float | None = None
    op: str | None = None
    phase: str | None = None
    measured: float | None = None


@json_record
class RooflineSection(Record):
    """`roofline.section`: a verdict per op and the roofs of the run's device."""

    rows: list = list_of(Verdict)
    roofs: Roofs | None = nested(Roofs, default=None)
    measured_roofs: Roofs | None = nested(Roofs, default=None)
    device: str | None = None
    stale_ceilings: list = list_of(StaleCeiling)
    source: str | None = None

    def by_key(self) -> dict[tuple, Verdict]:
        """Verdicts by (op name, phase)."""
        return {v.key: v for v in self.rows}


# -- host, config, trace ------------------------------------------------------------------------

@json_record
class CpuFacts(Record):
    vendor: str | None = None
    model_name: str | None = None
    arch: str | None = None
    logical_cpus: int | None = None
    simd: list = field(default_factory=list)    # SIMD levels from the CPU flags


@json_record
class CacheFacts(Record):
    """One cache of the host (sysfs or py-cpuinfo): per core unless ``shared_cpus`` says."""

    level: int
    size_bytes: int
    type: str | None = None            # "data", "instruction", "unified"
    ways: int | None = None
    line_bytes: int | None = None


@json_record
class GpuFacts(Record):
    name: str | None = None
    memory_bytes: int | None = None
    sm_count: int | None = None


@json_record
class OsFacts(Record):
    kernel: str | None = None
    distro: str | None = None
    system: str | None = None


@json_record
class SoftwareFacts(Record):
    """Versions of the packages that set the figures (`host.software_versions`)."""

    python: str | None = None
    torch: str | None = None
    numba: str | None = None
    llvmlite: str | None = None
    numpy: str | None = None
    dlrmprof: str | None = None


@json_record
class Host(Record):
    """The host fingerprint (`dlrmprof.profile.host.collect`)."""

    host_id: str
    cpu: CpuFacts = nested(CpuFacts, default_factory=CpuFacts)
    caches: list = list_of(CacheFacts)
    memory: dict = field(default_factory=dict)      # total_bytes, available_bytes
    numa: dict = field(default_factory=dict)        # nodes: [...]
    os: OsFacts | None = nested(OsFacts, default=None)
    software: SoftwareFacts | None = nested(SoftwareFacts, default=None)
    gpu: list = list_of(GpuFacts)

    def data_caches(self) -> list[CacheFacts]:
        return [c for c in self.caches if c.type != "instruction"]

    @property
    def memory_bytes(self) -> int | None:
        return (self.memory or {}).get("total_bytes")

    @property
    def numa_nodes(self) -> int:
        return len((self.numa or {}).get("nodes") or [])


@json_record
class RunConfig(Record):
    """The run's options; ``run`` holds the timing loop's (iters, warmup ...)."""

    preset: str | None = None
    name: str | None = None
    device: str | None = None
    backend: str | None = None
    mode: str | None = None
    threads: int | None = None
    batch_size: int | None = None
    simd_level: str | None = None
    simd: str | None = None
    run: dict = field(default_factory=dict)

    @property
    def iters(self) -> int | None:
        """Timed iterations of the run loop (``run.iters``)."""
        return (self.run or {}).get("iters")

    def scalars(self) -> list[tuple[str, Any]]:
        """The options that are single values, in the file's order."""
        return [(k, v) for k, v in self.to_json().items() if not isinstance(v, (dict, list))]


@json_record
class TraceSummary(Record):
    path: str | None = None
    digest: str | None = None
    num_samples: int | None = None
    tables: list = field(default_factory=list)


# -- end to end, noise, training ----------------------------------------------------------------

@json_record
class EndToEnd(Record):
    samples_per_s: float | None = None
    time: TimeStats | None = nested(TimeStats, default=None)
    source: str | None = None


@json_record
class Noise(Record):
    """Other processes' CPU use during the run (`dlrmprof.profile.noise`)."""

    flagged: int | None = None
    dropped: int | None = None
    source: str | None = None

    def scalars(self) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in self.to_json().items() if not isinstance(v, (dict, list))]


@json_record
class Training(Record):
    losses: list = field(default_factory=list)
    first_loss: float | None = None
    last_loss: float | None = None


# -- the whole report ---------------------------------------------------------------------------

_SECTIONS: dict[str, type] = {
    "host": Host, "config": RunConfig, "trace": TraceSummary,
    "end_to_end": EndToEnd, "noise": Noise, "roofline": RooflineSection,
    "cache": CacheSection, "simd": SimdStudy, "training": Training}

# the order `Report.to_dict` writes (a model built in code writes the same)
_ORDER = ("schema", "schema_version", "tool_version", "created", "host", "ceilings", "config",
          "trace", "ops", "end_to_end", "noise", "roofline", "cache", "simd", "training",
          "serving")


@dataclass(frozen=True)
class ReportModel:
    """A `Report` with every section typed (see the module docstring)."""

    schema: str
    schema_version: int
    tool_version: str
    created: str
    host: Host
    ops: list                      # [OpRow]
    ceilings: dict                 # older reports hold other shapes: typed on request
    config: RunConfig
    trace: TraceSummary
    end_to_end: EndToEnd
    noise: Noise
    roofline: RooflineSection
    cache: CacheSection
    simd: SimdStudy
    training: Training
    serving: Any = None            # ServingSection, or None when the report has none
    loaded_from_version: int | None = None
    extra: dict = field(default_factory=dict, repr=False)   # top-level keys not known here
    key_order: tuple | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, report: Any, where: str = "<report>") -> "ReportModel":
        """Type a `Report` (already validated and upgraded); `where` (its file) names it in
        errors."""
        return dataclasses.replace(cls.from_json(report.to_dict(), where),
                                   loaded_from_version=report.loaded_from_version)

    @classmethod
    def from_json(cls, d: dict, where: str = "<report>") -> "ReportModel":
        from dlrmprof.profile.serving import ServingSection

        kw: dict[str, Any] = {k: d.get(k) for k in ("schema", "schema_version", "tool_version",
                                                    "created", "ceilings")}
        for name, rec in _SECTIONS.items():
            kw[name] = rec.from_json(d.get(name) or {}, f"{where}: field {name}")
        ops = d.get("ops")
        if not isinstance(ops, list):
            raise UserError(f"{where}: field ops: expected a list of op rows, got {ops!r:.60}")
        kw["ops"] = [OpRow.from_json(r, f"{where}: field ops[{i}]") for i, r in enumerate(ops)]
        serving = d.get("serving")
        kw["serving"] = ServingSection.from_json(serving, f"{where}: serving") if serving else None
        extra = {k: v for k, v in d.items() if k not in _ORDER}
        return cls(**kw, extra=extra, key_order=tuple(d))

    def to_json(self) -> dict:
        out: dict[str, Any] = {}
        for k in self.key_order or _ORDER:
            if k in self.extra:
                out[k] = self.extra[k]
                continue
            v = getattr(self, k)
            if k == "ops":
                v = [r.to_json() for r in v]
            elif k == "serving":
                v = {} if v is None else v.to_json()
            elif k in _SECTIONS:
                v = v.to_json()
            out[k] = v
        return out

    @property
    def host_id(self) -> str:
        return self.host.host_id

    def ceilings_record(self) -> Ceilings:
        """The ceilings section typed (a UserError naming the field if it has another shape)."""
        return Ceilings.from_json(self.ceilings, "ceilings")

    def op(self, name: str, phase: str = "forward") -> OpRow | None:
        for row in self.ops:
            if row.name == name and row.phase == phase:
                return row
        return None

