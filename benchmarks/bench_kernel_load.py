"""How long the numba kernels take to become callable in a fresh process: loaded from numba's
on-disk cache ("warm") against compiled from scratch ("cold", an empty cache directory).

    python benchmarks/bench_kernel_load.py [--rounds 3] [--families embedding_bag ...]

Every process that runs a kernel (a `dlrmprof run`, each child of the SIMD sweep, each rank)
pays this once per kernel.  A kernel that numba's cache serves loads in a fraction of its
compile time; one that it cannot serve (a jitted closure whose cells hold another kernel gets
a fresh cache key in every process) compiles again in every process, and its warm time stays
near its cold time (about half of it where only the entry kernels recompile; "served" below
means under a quarter).  Each family runs in a fresh child process per condition, warm and
cold interleaved in every round, the first call timed and its result checked against the float64
reference before the time counts.  The times are taken inside the child, which the harness
cannot time; its results writer writes benchmarks/results/kernel_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlrmprof.profile import harness  # noqa: E402
from dlrmprof.profile.noise import OtherCpu  # noqa: E402

SCHEMA = "dlrmprof.bench.kernel_load/1"
OUT = harness.results_path(__file__, "kernel_load.json")

# one child per (family, condition): build inputs, time the first call, check it
CHILD = r"""
import json, sys, time
import numpy as np
from dlrmprof import kernels
from dlrmprof.kernels import quant
family = sys.argv[1]
rng = np.random.default_rng(0)
w = rng.standard_normal((4096, 64)).astype(np.float32)
idx = rng.integers(0, 4096, 2048)
off = np.arange(0, 2049, 8)
if family == "embedding_bag":
    t = time.perf_counter(); got = kernels.embedding_bag(w, idx, off); dt = time.perf_counter() - t
    want = kernels.embedding_bag(w, idx, off, backend="reference")
elif family == "embedding_bag_sgd":
    g = rng.standard_normal((256, 64)).astype(np.float32)
    got, want = w.copy(), w.astype(np.float64)
    t = time.perf_counter(); kernels.embedding_bag_sgd(got, idx, off, g, 0.1)
    dt = time.perf_counter() - t
    kernels.embedding_bag_sgd(want, idx, off, g, 0.1, backend="reference")
elif family == "interaction":
    d = rng.standard_normal((128, 16)).astype(np.float32)
    p = rng.standard_normal((128, 26, 16)).astype(np.float32)
    t = time.perf_counter(); got = kernels.interaction(d, p); dt = time.perf_counter() - t
    want = kernels.interaction(d, p, backend="reference")
elif family.startswith("qembedding_bag_"):
    qt = quant.quantize(w, family.rsplit("_", 1)[1])
    t = time.perf_counter(); got = kernels.qembedding_bag(qt, idx, off)
    dt = time.perf_counter() - t
    want = kernels.qembedding_bag(qt, idx, off, backend="reference")
else:
    raise SystemExit(f"unknown family {family}")
ok = bool(np.allclose(got, want, rtol=1e-4, atol=1e-4))
print(json.dumps({"first_call_s": dt, "ok": ok}))
"""

# served by the cache: the warm first call under this share of the cold one (a family whose
# entry kernels compile again in every process stays near half of its cold time or above)
SERVED = 0.25

FAMILIES = ("embedding_bag", "embedding_bag_sgd", "interaction", "qembedding_bag_int8",
            "qembedding_bag_int4", "qembedding_bag_fp16")


def run_child(family: str, cache_dir: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=str(ROOT))
    with OtherCpu() as oc:
        done = subprocess.run([sys.executable, "-c", CHILD, family], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"{family}: child failed:\n{done.stderr[-2000:]}")
    res = json.loads(done.stdout.strip().splitlines()[-1])
    if not res["ok"]:
        raise SystemExit(f"{family}: result differs from the reference")
    return {"s": res["first_call_s"], "others": oc.cpus}


def measure(families, rounds: int) -> dict:
    out = {f: {"warm": [], "cold": [], "others": []} for f in families}
    with tempfile.TemporaryDirectory(prefix="dlrmprof-kload-") as tmp:
        warm = os.path.join(tmp, "warm")
        for f in families:            # fill the warm cache (untimed)
            run_child(f, warm)
        for r in range(rounds):
            for f in families:
                order = ("warm", "cold") if r % 2 == 0 else ("cold", "warm")
                for cond in order:
                    cache = warm if cond == "warm" else os.path.join(tmp, f"cold-{r}-{f}")
                    res = run_child(f, cache)
                    out[f][cond].append(res["s"])
                    out[f]["others"].append(res["others"])
    return out


def summarise(raw: dict) -> dict:
    rows = {}
    for f, r in raw.items():
        warm, cold = statistics.median(r["warm"]), statistics.median(r["cold"])
        rows[f] = {"warm_s": warm, "cold_s": cold, "cold_over_warm": cold / warm,
                   "served_by_cache": warm < SERVED * cold, "warm_samples_s": r["warm"],
                   "cold_samples_s": r["cold"], "others_cpus_max": max(r["others"])}
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--families", nargs="*", choices=FAMILIES, default=list(FAMILIES))
    ap.add_argument("--out", default=OUT, help=f"results JSON (default {OUT})")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    rows = summarise(measure(args.families, args.rounds))
    print(f"{'family':24s} {'warm s':>8s} {'cold s':>8s} {'cold/warm':>10s}  cache serves it")
    for f, r in rows.items():
        print(f"{f:24s} {r['warm_s']:8.2f} {r['cold_s']:8.2f} {r['cold_over_warm']:9.1f}x  "
              f"{'yes' if r['served_by_cache'] else 'NO: compiles in every process'}"
              f"  (others up to {r['others_cpus_max']:.2f} cores)")
    if not args.no_write:
        doc = harness.results_doc(
            SCHEMA, source="measured (time.perf_counter around the first call in a fresh child "
            "process; warm: numba's cache filled beforehand, cold: an empty one)",
            rounds=args.rounds, families=rows)
        print(f"wrote {harness.write_results(args.out, doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
