"""Trace file size and write/read time: the compact layout (format v2) against the int64 TBE
layout of format v1, on the same trace, in interleaved rounds.

    python benchmarks/bench_tracefile.py [--samples 2000000] [--rounds 3]

The trace: the bundled Criteo sample's 26 profiles synthesized at `--samples` samples (the
issue's 2M-sample Kaggle trace), in memory.  Before timing, both files are written once and
read back, and their indices and offsets must equal the in-memory ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from dlrmprof.fsutil import atomic_write_text
from dlrmprof.profile.noise import OtherCpu
from dlrmprof.tracegen import Trace
from dlrmprof.tracegen.generate import profiles_from_criteo, synthesize_trace
from dlrmprof.tracegen.readers import BUNDLED_SAMPLE, read_criteo

SCHEMA = "dlrmprof.bench.tracefile/1"
ROOT = Path(__file__).resolve().parent.parent


def write_v1(trace: Trace, path: Path) -> None:
    """The format-1 layout of the same trace: int64 indices and offsets, as 0.1 wrote."""
    trace.save(path, version=1)


def timed(fn) -> tuple[float, float]:
    with OtherCpu() as oc:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
    return dt, oc.cpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=2_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tracefile.json"))
    args = ap.parse_args()
    profiles = profiles_from_criteo(read_criteo(BUNDLED_SAMPLE))
    trace = synthesize_trace(profiles, source={"kind": "bench"}, num_samples=args.samples,
                             compute_fidelity=False)
    with tempfile.TemporaryDirectory() as tmp:
        v1, v2 = Path(tmp) / "v1.npz", Path(tmp) / "v2.npz"
        write_v1(trace, v1)
        trace.save(v2)
        for p in (v1, v2):                       # check before timing
            back = Trace.load(p)
            assert np.array_equal(back.indices, trace.indices), p
            assert np.array_equal(back.offsets, trace.offsets), p
        res = {k: [] for k in ("write_v1", "write_v2", "read_v1", "read_v2")}
        others = []
        for _ in range(args.rounds):
            for name, fn in (("write_v1", lambda: write_v1(trace, v1)),
                             ("write_v2", lambda: trace.save(v2)),
                             ("read_v1", lambda: Trace.load(v1)),
                             ("read_v2", lambda: Trace.load(v2))):
                dt, oc = timed(fn)
                res[name].append(dt)
                others.append(oc)
        sizes = {"v1_bytes": v1.stat().st_size, "v2_bytes": v2.stat().st_size}
    med = {k: float(np.median(v)) for k, v in res.items()}
    doc = {"schema": SCHEMA, "command": "python benchmarks/bench_tracefile.py",
           "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                    "loadavg": list(os.getloadavg())},
           "source": "measured (time.perf_counter, median of interleaved rounds); sizes "
                     "counted on disk",
           "samples": args.samples, "tables": len(trace.tables),
           "indices": int(trace.indices.size), "seconds": res,
           "other_cpus_max": float(max(others)),
           "summary": {"v1_MB": sizes["v1_bytes"] / 1e6, "v2_MB": sizes["v2_bytes"] / 1e6,
                       "size_ratio_v1_over_v2": sizes["v1_bytes"] / sizes["v2_bytes"],
                       "write_v1_s": med["write_v1"], "write_v2_s": med["write_v2"],
                       "write_speedup": med["write_v1"] / med["write_v2"],
                       "read_v1_s": med["read_v1"], "read_v2_s": med["read_v2"]}}
    s = doc["summary"]
    print(f"{args.samples:,} samples x {len(trace.tables)} tables: v1 {s['v1_MB']:.0f} MB, "
          f"v2 {s['v2_MB']:.0f} MB ({s['size_ratio_v1_over_v2']:.1f}x smaller); write "
          f"{s['write_v1_s']:.2f} -> {s['write_v2_s']:.2f} s ({s['write_speedup']:.2f}x); "
          f"read {s['read_v1_s']:.2f} -> {s['read_v2_s']:.2f} s")
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
