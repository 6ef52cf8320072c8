"""The ceilings record (`dlrmprof.profile.ceilings.probe`) and its roofs, as typed `Record`s.

    Ceilings
      stream: StreamProbe        copy / triad / read: {threads: Rate}   (GB/s)
      random: RandomProbe        by_threads: {threads: RandomRate}, latency_ns
      gemm: GemmProbe            fp32 / bf16: {threads: Rate}           (GFLOP/s), engine
      cuda: CudaProbe            copy, fp32, bf16: Rate                 when a GPU was present
      roofs: {threads: Roofs}    the best of each kind, what the roofline uses

Thread counts are string keys, as in the JSON file.  Every figure is measured.
"""

from __future__ import annotations

from dataclasses import field

from dlrmprof.profile.record import Record, dict_of, json_record, nested


@json_record
class Roofs(Record):
    """The roofs at one thread count (or of a CUDA device, without the random-access ones)."""

    stream_gbs: float | None = None          # best of STREAM copy / triad / read
    stream_read_gbs: float | None = None
    random_gbs: float | None = None          # independent random 64-byte lines
    random_ns_per_line: float | None = None
    latency_ns: float | None = None          # dependent pointer chase
    fp32_gflops: float | None = None
    bf16_gflops: float | None = None
    threads: int | None = None


@json_record
class Rate(Record):
    """One probe's rate statistics (GB/s or GFLOP/s) from its samples in seconds."""

    best: float
    median: float | None = None
    min: float | None = None
    samples_s: list = field(default_factory=list)


@json_record
class RandomRate(Record):
    best: float
    ns_per_line: float
    mlp: float | None = None                 # latency / ns per line: lines in flight
    median: float | None = None


@json_record
class StreamProbe(Record):
    copy: dict = dict_of(Rate)
    triad: dict = dict_of(Rate)
    read: dict = dict_of(Rate)
    flagged: int = 0
    contaminated_kept: int = 0


@json_record
class RandomProbe(Record):
    by_threads: dict = dict_of(RandomRate)
    latency_ns: float | None = None
    flagged: int = 0
    contaminated_kept: int = 0


@json_record
class GemmEngine(Record):
    """Which engine ran the GEMMs (`probes.gemm_engines`)."""

    fp32_impl: str | None = None       # e.g. "MKL sgemm"
    bf16_impl: str | None = None       # oneDNN implementation, e.g. "brg_matmul:avx512_core_amx"
    bf16_uses_amx: bool | None = None
    amx_tile: bool | None = None       # the CPU has AMX tiles
    aten_cpu_capability: str | None = None


@json_record
class GemmProbe(Record):
    fp32: dict = dict_of(Rate)
    bf16: dict = dict_of(Rate)
    engine: GemmEngine = nested(GemmEngine, default_factory=GemmEngine)
    flagged: int = 0
    contaminated_kept: int = 0


@json_record
class CudaProbe(Record):
    available: bool = False
    reason: str | None = None
    device: str | None = None
    copy: Rate | None = nested(Rate, default=None)
    fp32: Rate | None = nested(Rate, default=None)
    bf16: Rate | None = nested(Rate, default=None)


@json_record
class Ceilings(Record):
    """A host's measured ceilings (one probe, or the best of several provisional ones)."""

    host_id: str | None = None
    threads: list = field(default_factory=list)
    full: bool | None = None
    created: str | None = None
    probe_s: float | None = None
    stream: StreamProbe | None = nested(StreamProbe, default=None)
    random: RandomProbe | None = nested(RandomProbe, default=None)
    gemm: GemmProbe | None = nested(GemmProbe, default=None)
    cuda: CudaProbe | None = nested(CudaProbe, default=None)
    sizes: dict = field(default_factory=dict)
    llc_bytes: int | None = None
    roofs: dict = dict_of(Roofs)
    provisional: bool | None = None
    provisional_reasons: list = field(default_factory=list)

    def flagged(self) -> int:
        """Samples flagged as contaminated (and re-taken) over every probe."""
        return sum(p.flagged for p in (self.stream, self.random, self.gemm) if p is not None)
