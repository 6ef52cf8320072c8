"""The report's studies as typed `Record`s: the cache study, the working-set sweep and the SIMD
sensitivity (part of `dlrmprof.profile.model.ReportModel`; kept apart so that reading a report
imports neither numpy nor the probes).

    CacheSection      simulation: {op: OpCacheSim}  levels: [SimLevel], trace_mrc: TraceMrc
                      mrc: {table: Mrc}, counters: Counters, sweep: SweepResult
    SweepResult       points: [SweepPoint], caches: [CacheMark], knees: Knees (gather/read: [Knee])
    SimdStudy         ops: [SimdOp] (by_level: {level: SimdCell}), levels: [SimdLevel]
"""

from __future__ import annotations

from dataclasses import field

from dlrmprof.profile.record import Record, dict_of, json_record, list_of, nested


# -- the working-set sweep (`sweep.run_sweep` returns the JSON form) ---------------------------

@json_record
class SweepPoint(Record):
    """One table size: gather and streaming-read GB/s (`measure_point`)."""

    size_bytes: int
    gather_gbs: float
    read_gbs: float
    gather_ns_per_row: float | None = None
    rows: int | None = None
    flagged: int = 0


@json_record
class NearestCache(Record):
    level: int
    size_bytes: int
    ratio: float                   # knee size / cache size
    matches: bool                  # within a factor 2


@json_record
class Knee(Record):
    """A fall of GB/s between two neighbouring sizes (`find_knees`)."""

    between: list                  # [smaller size, larger size] in bytes
    at_bytes: int
    drop: float                    # fraction of GB/s lost
    nearest_cache: NearestCache | None = nested(NearestCache, default=None)


@json_record
class Knees(Record):
    gather: list = list_of(Knee)
    read: list = list_of(Knee)


@json_record
class CacheMark(Record):
    level: int
    size_bytes: int


@json_record
class SweepResult(Record):
    points: list = list_of(SweepPoint)
    threads: int = 1
    dim: int | None = None
    caches: list = list_of(CacheMark)
    knees: Knees = nested(Knees, default_factory=Knees)
    source: str | None = None


# -- cache study and SIMD sensitivity -----------------------------------------------------------

@json_record
class SimLevel(Record):
    """One cache level in a simulation (`cachesim.simulate_op`); rates are cumulative from L1."""

    level: int
    size_bytes: int
    cumulative_hit_rate: float
    ways: int | None = None
    fa_cumulative_hit_rate: float | None = None   # fully-associative LRU of the same size


@json_record
class Mrc(Record):
    """A miss-ratio curve as hit rate against capacity in bytes."""

    sizes_bytes: list = field(default_factory=list)
    hit_rates: list = field(default_factory=list)


@json_record
class TraceMrc(Record):
    """A table's own LRU hit rates from its locality profile (`cachesim.trace_mrc`)."""

    capacities_bytes: list = field(default_factory=list)
    hit_rates: list = field(default_factory=list)
    curve: Mrc | None = nested(Mrc, default=None)
    source: str | None = None


@json_record
class OpCacheSim(Record):
    levels: list = list_of(SimLevel)
    dram_bytes: int | None = None
    row_bytes_total: int | None = None
    trace_mrc: TraceMrc | None = nested(TraceMrc, default=None)

    @property
    def dram_fraction(self) -> float | None:
        """Predicted DRAM bytes over the bytes of every looked-up row."""
        if self.dram_bytes is None or not self.row_bytes_total:
            return None
        return self.dram_bytes / self.row_bytes_total


@json_record
class Counters(Record):
    """Hardware counters (`counters.availability` / `measure`): measured, or why not."""

    available: bool | None = None
    reason: str | None = None
    events: dict = field(default_factory=dict)


@json_record
class CacheSection(Record):
    counters: Counters | None = nested(Counters, default=None)
    simulation: dict = dict_of(OpCacheSim)
    mrc: dict = dict_of(Mrc)
    sweep: SweepResult | None = nested(SweepResult, default=None)   # sweep.run_sweep()


@json_record
class SimdCell(Record):
    time_s: float | None = None
    speedup: float | None = None           # scalar time / this level's time
    error: str | None = None


@json_record
class SimdOp(Record):
    op: str
    verdict: str | None = None
    by_level: dict = dict_of(SimdCell)


@json_record
class AsmCounts(Record):
    """Vector registers and packed FP instructions counted in the generated assembly."""

    xmm: int = 0
    ymm: int = 0
    zmm: int = 0
    packed_fp: int | None = None


@json_record
class SimdLevel(Record):
    """An ISA level and what the generated code showed (``asm``) or the knobs (``verify``)."""

    name: str
    asm: AsmCounts | None = nested(AsmCounts, default=None)
    verify: dict | None = None
    verified: bool | None = None
    expect: str | None = None


@json_record
class SimdStudy(Record):
    """`simd.run_simd()`: per op and ISA level; ``torch`` is the torch knobs' sub-study."""

    ops: list = list_of(SimdOp)
    levels: list = list_of(SimdLevel)
    held: bool | None = None
    statement: str | None = None
    notes: list = field(default_factory=list)
    torch: dict | None = None

    @property
    def is_sub_study(self) -> bool:
        """True for a study rendered on its own (the torch knobs), which has no ``held``."""
        return self.key_order is not None and "held" not in self.key_order

    def torch_study(self) -> "SimdStudy | None":
        return SimdStudy.from_json(self.torch, "simd.torch") if self.torch else None
