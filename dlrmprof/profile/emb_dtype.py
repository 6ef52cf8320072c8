"""Did a table's smaller rows speed its lookup, and why: fp32 vs a packed dtype, per table.

A lookup of one row costs the cache lines its bytes span.  Rows that start on a line and
fit in one (fp32 D <= 16) cost one line whatever their size: shrinking them (int8 D 16 is
24 bytes) saves nothing per lookup, and rows of 24 bytes packed back to back straddle a line
boundary 2 times in 8, so they touch more lines on average (1.25), not fewer.  Such a lookup is
latency-bound (one dependent miss per row) and gains little; a row of several lines (fp32 D
64 is 4 lines, int8 D 64 is 72 bytes, 2 lines) moves fewer bytes when packed, and a lookup
bound by those bytes gains.  A table that fits in L2 is bound by instructions (the
conversion adds some), not by memory; one that shrinks into a closer level (DRAM -> L3)
turns misses into hits whatever its lines.

`compare_tables` times both lookups of every table on the same fresh batches, interleaved
(the profiler's `OpTimer`, one thread), and `TableDtypeVerdict` states the result with the counted
lines and bytes; `run` attaches one to each table's op row (key ``emb_dtype``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from dlrmprof import kernels
from dlrmprof.kernels import quant
from dlrmprof.kernels.cost import lines_per_row

SAME = 0.10   # |speedup - 1| within this: "no change"


@dataclass(frozen=True)
class TableDtypeVerdict:
    table: str
    dtype: str
    rows: int
    row_bytes: int                 # packed row, scale and bias included (counted)
    fp32_row_bytes: int
    lines_per_lookup: float        # mean 64-byte lines a lookup touches, rows back to back
    fp32_lines_per_lookup: float
    table_bytes: int
    fp32_table_bytes: int
    time_s: float                  # median per call (measured)
    fp32_time_s: float
    speedup: float                 # fp32 time / packed time
    verdict: str                   # "faster", "no change", "slower"
    why: str
    source: str = "time measured (interleaved, same batches); bytes and lines counted"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "TableDtypeVerdict":
        return cls(**{f: d[f] for f in cls.__dataclass_fields__ if f in d})


def where(table_bytes: int, l2: int, l3: int) -> str:
    return "L2" if table_bytes <= l2 else ("L3" if table_bytes <= l3 else "DRAM")


def explain(dtype: str, dim: int, rows: int, speedup: float, l2: int, l3: int) -> tuple:
    """(verdict, why) for a table of `rows` x `dim` looked up in `dtype` instead of fp32."""
    rb, rb32 = quant.row_bytes(dtype, dim), 4 * dim
    ln, ln32 = lines_per_row(rb), lines_per_row(rb32)
    home, home32 = where(rows * rb, l2, l3), where(rows * rb32, l2, l3)
    verdict = ("faster" if speedup >= 1 + SAME else
               "slower" if speedup <= 1 - SAME else "no change")
    if home32 == "L2":
        why = (f"fits in L2 either way ({rows * rb32 / 2**10:.0f} KiB in fp32): bound by "
               f"instructions, not memory; {dtype} adds the conversion")
    elif home != home32:
        why = (f"the table shrinks from {rows * rb32 / 2**20:.1f} MiB ({home32}) to "
               f"{rows * rb / 2**20:.1f} MiB, within {home}: lookups that missed to {home32} "
               f"now hit in {home} ({ln32:.2f} -> {ln:.2f} lines a lookup)")
    elif ln >= ln32 - 0.05:
        why = (f"the {rb32}-byte fp32 row already costs {ln32:.2f} line(s) a lookup and the "
               f"{rb}-byte {dtype} row {ln:.2f}: latency-bound, one miss per row either way, "
               f"little to gain")
    else:
        why = (f"{ln32:.2f} -> {ln:.2f} lines a lookup ({rb32} -> {rb} bytes a row), table in "
               f"{home32} as fp32, {home} as {dtype}: fewer bytes to move where the lookup is "
               f"bound by them")
    return verdict, why


def compare_tables(names, fp32_tables, packed, bags, modes, backend: str = "numba",
                   l2: int | None = None, l3: int | None = None) -> list:
    """Per table: fp32 lookup (`kernels.resolve("embedding_bag", backend)`) vs the packed one
    (`qembedding_bag`), one call each per batch in `bags` ([(indices per table, offsets per
    table)]); batch 0 warms both up, each later batch is one timed round (which side goes
    first alternates).  Every round takes a fresh batch, as the run's own loop does: batches
    used again would find their rows cached.  Median per call; a `TableDtypeVerdict` per
    table."""
    from dlrmprof.kernels.numba_cpu import L2_BYTES, L3_BYTES
    from dlrmprof.profile.timers import OpTimer

    l2 = L2_BYTES if l2 is None else l2
    l3 = L3_BYTES if l3 is None else l3
    eb = kernels.resolve("embedding_bag", backend)
    qeb = kernels.resolve("qembedding_bag", backend)
    timer = OpTimer(device="cpu", threads=1)
    if backend == "torch":   # its fp32 kernel takes tensors (zero-copy views)
        import torch
        w32 = [torch.from_numpy(w) for w in fp32_tables]
        bags32 = [([torch.from_numpy(i) for i in idx], [torch.from_numpy(o) for o in off])
                  for idx, off in bags]
    else:
        w32, bags32 = fp32_tables, bags

    def fp32(t, k):
        idx, off = bags32[k]
        eb(w32[t], idx[t], off[t], modes[t], None)

    def pk(t, k):
        q, (idx, off) = packed[t], bags[k]
        qeb(q.dtype, q.dim, q.data, idx[t], off[t], modes[t], None)

    for k in range(len(bags)):
        timer.begin_iteration()
        for t in range(len(names)):
            order = ((f"fp32.{t}", fp32), (f"q.{t}", pk))
            for name, fn in (order if k % 2 == 0 else order[::-1]):
                if k == 0:
                    fn(t, k)
                    continue
                with timer.op(name):
                    fn(t, k)
        timer.end_iteration()
        if k == 0:
            timer.reset()
    out = []
    for t, name in enumerate(names):
        q = packed[t]
        tf = float(np.median(timer.samples(f"fp32.{t}")))
        tq = float(np.median(timer.samples(f"q.{t}")))
        speedup = tf / tq if tq > 0 else math.inf
        verdict, why = explain(q.dtype, q.dim, q.rows, speedup, l2, l3)
        out.append(TableDtypeVerdict(
            table=name, dtype=q.dtype, rows=q.rows, row_bytes=q.row_bytes,
            fp32_row_bytes=4 * q.dim, lines_per_lookup=lines_per_row(q.row_bytes),
            fp32_lines_per_lookup=lines_per_row(4 * q.dim), table_bytes=q.nbytes,
            fp32_table_bytes=4 * q.dim * q.rows, time_s=tq, fp32_time_s=tf, speedup=speedup,
            verdict=verdict, why=why))
    return out
