"""Ceiling reproducibility: two probes back to back, every figure compared.

    python benchmarks/bench_ceilings.py            # two quick probes (about 40 s)
    python benchmarks/bench_ceilings.py --full     # two full probes

Target (issue #4): every ceiling within +-5% across the two probes on a quiet machine.  This
machine is shared, so each figure is printed with its relative difference and the other
processes' CPU use during the run, and the verdict is per figure, not a pass/fail of the host.
Nothing is cached (the probes are not written to the ceilings cache).
"""

from __future__ import annotations

import argparse
import time

import psutil

from dlrmprof.profile import ceilings, host


def figures(c: dict) -> dict[str, float]:
    out = {}
    for t in c["threads"]:
        k = str(t)
        for name in ("copy", "triad", "read"):
            out[f"stream {name} GB/s @{t}"] = c["stream"][name][k]["best"]
        out[f"random GB/s @{t}"] = c["random"]["by_threads"][k]["best"]
        out[f"fp32 GFLOP/s @{t}"] = c["gemm"]["fp32"][k]["best"]
        out[f"bf16 GFLOP/s @{t}"] = c["gemm"]["bf16"][k]["best"]
    out["latency ns"] = c["random"]["latency_ns"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--tolerance", type=float, default=0.05)
    args = ap.parse_args()
    fp = host.collect(gpu=True)
    psutil.cpu_percent()
    runs = []
    for i in range(2):
        t0 = time.perf_counter()
        runs.append(ceilings.probe(fp, full=args.full))
        print(f"probe {i + 1}: {time.perf_counter() - t0:.1f} s", flush=True)
    busy = psutil.cpu_percent()
    a, b = figures(runs[0]), figures(runs[1])
    ok = 0
    print(f"\n{'figure':28} {'probe 1':>10} {'probe 2':>10} {'diff':>8}  within +-"
          f"{args.tolerance:.0%}")
    for k in a:
        d = (b[k] - a[k]) / a[k]
        good = abs(d) <= args.tolerance
        ok += good
        print(f"{k:28} {a[k]:10.2f} {b[k]:10.2f} {d:+8.1%}  {'yes' if good else 'NO'}")
    flagged = sum(r[s].get("flagged", 0) for r in runs for s in ("stream", "random", "gemm"))
    print(f"\n{ok}/{len(a)} figures reproducible within +-{args.tolerance:.0%}; "
          f"whole-machine CPU use during the probes {busy:.0f}%; {flagged} samples flagged as "
          f"contaminated by other processes")


if __name__ == "__main__":
    main()
