"""CUDA graphs and the lean numba-cuda launch on a GPU (issue 22), for benchmarks/gpu_check.sh.

    python3 benchmarks/gpu_graph_check.py --out launch_graph.json [--rows 1000000]
        [--eq-rows 100000] [--steps 50] [--rounds 7] [--round-steps 40] [--device cuda|cpu]

Three parts, each checked before anything is timed, written to one JSON file (schema
``dlrmprof.gpu_graph_check/1``):

* ``equality``: the kaggle preset (tables capped at --eq-rows), batch 128, one-hot batches: a
  model stepped through `dlrmprof.dlrm.graphs.GraphStep` against a copy stepped eagerly, over
  --steps steps, for torch and numba-cuda, per table and fused, train and infer.  Training:
  the largest relative loss difference and the largest table difference, next to the same
  figures for two *eager* copies (CUDA's atomics add in no fixed order: that is the floor
  of round-off a graph is held to); the goal: within max(1e-5, 4 x that floor).  Inference:
  the largest probability difference (goal <= 1e-6).
* ``throughput``: model samples/s (tables capped at --rows; pre-drawn batches, the loss read every training step
  as `run` does) of the eager step and the graph step on one model, in interleaved rounds
  (order alternating); the ratio is the median of the per-round ratios.  Goal (issue 22):
  train >= 4 x 25.8k, infer >= 4 x 53.7k samples/s (the H200 figures before graphs).
* ``launch``: numba-cuda's per-call cost on a small cell (B 128, D 16, one lookup a bag):
  the old path (numba's dispatcher call, each tensor converted per call, a fresh error
  counter) against the lean one (`numba_cuda_launch.Launcher`), host wall time per call with
  the error read that ends it, against the kernel's own time (CUDA events, launch covered
  by a GPU sleep); overhead = call - kernel.  Goal: <= 30 us.

``--device cpu`` (no GPU): the same harness on the CPU: `StaticStep` (the graph's body,
run eagerly) against the eager step, the interleaved timing of the two, and the two launch
paths checked under numba's CUDA simulator in a child process; labelled as CPU / simulator
self-tests, not GPU figures.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SCHEMA = "dlrmprof.gpu_graph_check/1"
GOAL_TRAIN = 4 * 25_800       # samples/s, kaggle train batch 128 (issue 22)
GOAL_INFER = 4 * 53_700
GOAL_OVERHEAD_S = 30e-6
NO_GPU = 3


def say(msg: str) -> None:
    print(msg, flush=True)


PRESET = "kaggle"


def _setup(device: str, rows: int, backend: str, fused: bool, seed: int = 3):
    from dlrmprof.dlrm.config import load_config
    from dlrmprof.dlrm.model import build_dlrm
    from dlrmprof.dlrm.train import DLRMTrain
    cfg = load_config(PRESET, max_rows=rows, batch_size=128)
    tr = DLRMTrain(build_dlrm(cfg, backend=backend, device=device, seed=seed,
                              fused_tables=fused), cfg.lr)
    return cfg, tr


def _batches(cfg, n: int, seed: int):
    from dlrmprof.dlrm.data import RandomSource
    src = RandomSource(cfg.batch_size, cfg.dense_features, [t.rows for t in cfg.tables],
                       seed=seed)
    return [src.next_batch() for _ in range(n)]


def _graph_step(tr, mode: str, device: str):
    from dlrmprof.dlrm import graphs
    return graphs.GraphStep(tr, mode) if device == "cuda" else graphs.StaticStep(tr, mode)


def _losses(step, batches) -> np.ndarray:
    return np.array([float(step(b)[0]) for b in batches])


def equality_case(device: str, rows: int, backend: str, fused: bool, mode: str,
                  steps: int) -> dict:
    import torch
    cfg, a = _setup(device, rows, backend, fused)
    from dlrmprof.dlrm.train import DLRMTrain
    b = DLRMTrain(copy.deepcopy(a.model), cfg.lr)
    floor_m = DLRMTrain(copy.deepcopy(a.model), cfg.lr)
    gstep = _graph_step(b, mode, device)
    batches = _batches(cfg, steps, seed=21)
    res = {"backend": backend, "fused": fused, "mode": mode, "steps": steps}
    if mode == "train":
        le = _losses(a.train_step, batches)
        lg = _losses(gstep, batches)
        lf = _losses(floor_m.train_step, batches)
        rel = lambda x: float(np.max(np.abs(x - le) / np.abs(le)))  # noqa: E731
        wa = a.model.sparse_arch.weight_all
        res.update(max_rel_loss_diff=rel(lg), eager_floor_rel_loss_diff=rel(lf),
                   max_table_diff=float((b.model.sparse_arch.weight_all - wa).abs().max()),
                   eager_floor_table_diff=float(
                       (floor_m.model.sparse_arch.weight_all - wa).abs().max()),
                   first_loss=float(le[0]), last_loss=float(le[-1]))
        res["tolerance"] = max(1e-5, 4 * res["eager_floor_rel_loss_diff"])
        res["ok"] = bool(np.isfinite(lg).all() and res["max_rel_loss_diff"] <= res["tolerance"])
    else:
        d = 0.0
        for bt in batches:
            d = max(d, float((gstep(bt).clone() - a.infer_step(bt)).abs().max()))
        res.update(max_prob_diff=d, tolerance=1e-6, ok=d <= 1e-6)
    if hasattr(gstep, "check"):
        gstep.check()
    info = getattr(gstep, "info", None)
    if info is not None:
        res["graph"] = {k: info.to_json()[k] for k in ("captures", "replays", "eager_steps")}
    if device == "cuda":
        torch.cuda.synchronize()
    return res


def throughput_case(device: str, rows: int, backend: str, fused: bool, mode: str,
                    rounds: int, round_steps: int) -> dict:
    import torch
    cfg, tr = _setup(device, rows, backend, fused)
    eager = tr.train_step if mode == "train" else tr.infer_step
    graph = _graph_step(tr, mode, device)
    batches = _batches(cfg, 32, seed=5)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    train = mode == "train"

    from dlrmprof.profile.noise import OtherCpu
    others: list[float] = []

    def one_round(fn) -> float:
        sync()
        with OtherCpu() as oc:
            t0 = time.perf_counter()
            for i in range(round_steps):
                out = fn(batches[i % len(batches)])
                if train:
                    float(out[0])       # the loss read every step, as `run` does
            sync()
            dt = time.perf_counter() - t0
        others.append(oc.cpus)
        return round_steps * cfg.batch_size / dt

    for fn in (eager, graph, graph):      # warm-up: compile, capture (second sight)
        one_round(fn)
    others.clear()
    samples = {"eager": [], "graph": []}
    for r in range(rounds):
        order = ("eager", "graph") if r % 2 == 0 else ("graph", "eager")
        for name in order:
            samples[name].append(one_round(eager if name == "eager" else graph))
    ratios = [g / e for g, e in zip(samples["graph"], samples["eager"])]
    goal = GOAL_TRAIN if train else GOAL_INFER
    med = {k: float(np.median(v)) for k, v in samples.items()}
    res = {"backend": backend, "fused": fused, "mode": mode, "batch": cfg.batch_size,
           "rounds": rounds, "round_steps": round_steps, "samples_per_s": samples,
           "median_samples_per_s": med, "graph_over_eager": float(np.median(ratios)),
           "other_cpus_per_round": others, "other_cpus_max": float(max(others)),
           "goal_samples_per_s": goal if device == "cuda" else None,
           "goal_met": (med["graph"] >= goal) if device == "cuda" else None,
           "source": "measured" if device == "cuda" else "measured on the CPU (StaticStep, "
                                                          "harness self-test: not a GPU figure)"}
    info = getattr(graph, "info", None)
    if info is not None:
        res["graph"] = {k: info.to_json()[k] for k in ("captures", "replays", "eager_steps")}
    return res


# -- numba-cuda launch overhead ------------------------------------------------------------
def _old_call(nc, cuda, torch, w, idx, off, ph):
    """numba-cuda's backend call as it was: the dispatcher types every argument, each tensor
    converted per call, a fresh error counter, the read that ends the call."""
    B, D = off.shape[0] - 1, w.shape[1]
    s = cuda.external_stream(torch.cuda.current_stream().cuda_stream)
    dw, di, do = (cuda.as_cuda_array(t.detach()) for t in (w, idx, off))
    res = torch.empty(B, D, device=w.device)
    err_t = torch.zeros(1, dtype=torch.int64, device=w.device)
    blocks, threads = nc.grid(B, D)
    nc.kernel("fwd", D)[blocks, threads, s](dw, dw, D, di, do, cuda.as_cuda_array(ph), False,
                                            False, cuda.as_cuda_array(res),
                                            cuda.as_cuda_array(err_t))
    if int(err_t.item()):
        raise IndexError("out-of-range index")
    return res


def launch_overhead(reps: int = 300) -> dict:
    import torch
    from numba import cuda

    from dlrmprof.kernels import numba_cuda as nc
    from dlrmprof.kernels import numba_cuda_launch as ncl
    from dlrmprof.kernels import torch_ops
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_check_kernels import Timer

    dev = torch.device("cuda", torch.cuda.current_device())
    g = torch.Generator(device=dev).manual_seed(11)
    B, D, R = 128, 16, 100_000
    w = torch.randn(R, D, device=dev, generator=g)
    idx = torch.randint(0, R, (B,), device=dev, generator=g)
    off = torch.arange(B + 1, device=dev)
    ph = torch.zeros(1, device=dev)
    want = w.index_select(0, idx).double()
    old = lambda: _old_call(nc, cuda, torch, w, idx, off, ph)  # noqa: E731
    lean = lambda: nc.embedding_bag(w, idx, off, "sum", None)  # noqa: E731
    tch = lambda: torch_ops.embedding_bag(w, idx, off, "sum", None)  # noqa: E731
    checks = {}
    for name, fn in (("old", old), ("lean", lean), ("torch", tch)):
        err = float((fn().double() - want).abs().max() / want.abs().max())
        checks[name] = {"rel_err": err, "ok": err < 1e-6}
    if not all(c["ok"] for c in checks.values()):
        return {"checks": checks, "ok": False, "note": "not timed: a check failed"}
    L = ncl.launcher_for(w, idx, off)
    out = L.empty((B, D))[1]
    dw, _, di, do, psw, has_w = L.args(w, None, idx, off, None)
    blocks, threads = nc.grid(B, D)
    args = (dw, dw, D, di, do, psw, has_w, False, out, L.err)
    k = nc.kernel("fwd", D)
    kernel = Timer(dev).measure(lambda: L.launch(k, blocks, threads, args), min_reps=20,
                                max_reps=50, budget_s=1.0)

    def wall(fn) -> float:
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    variants = {"old call": old, "lean call": lean, "torch call": tch,
                "lean launch (no error read)": lambda: L.launch(k, blocks, threads, args)}
    samples = {n: [] for n in variants}
    for fn in variants.values():
        for _ in range(20):
            wall(fn)
    for r in range(reps):                  # interleaved: one call of each per round
        names = list(variants) if r % 2 == 0 else list(reversed(variants))
        for n in names:
            samples[n].append(wall(variants[n]))
    med = {n: float(np.median(s)) for n, s in samples.items()}
    ks = kernel["median_s"]
    over = {n: m - ks for n, m in med.items()}
    return {"cell": {"B": B, "D": D, "L": 1, "R": R}, "checks": checks, "ok": True,
            "launch_path": ncl.launch_path(), "kernel_median_s": ks,
            "call_median_s": med, "overhead_s": over,
            "old_over_lean": med["old call"] / med["lean call"],
            "goal_overhead_s": GOAL_OVERHEAD_S,
            "goal_met": over["lean call"] <= GOAL_OVERHEAD_S,
            "definition": "host wall time of one call ending in a device synchronisation "
                          "(the backend's error read, or torch.cuda.synchronize), median of "
                          f"{reps} interleaved calls, minus the kernel's CUDA-event time",
            "source": "measured"}


SIM_CHECK = """
import numpy as np
from numba import cuda
from dlrmprof.kernels import numba_cuda as nc, reference
rng = np.random.default_rng(4)
B, D, R = 12, 16, 50
w = rng.standard_normal((R, D)).astype(np.float32)
idx = rng.integers(0, R, 3 * B)
off = np.arange(0, 3 * B + 1, 3)
want = reference.embedding_bag(w.astype(np.float64), idx, off, "sum", None)
lean = nc.embedding_bag(w, idx, off, "sum", None)
s = cuda.stream()
dw, di, do = (cuda.to_device(a, stream=s) for a in (w, idx, off))
out = cuda.device_array((B, D), np.float32, stream=s)
err = cuda.to_device(np.zeros(1, np.int64), stream=s)
ph = cuda.device_array(1, np.float32)
blocks, threads = nc.grid(B, D)
nc.kernel("fwd", D)[blocks, threads, s](dw, dw, D, di, do, ph, False, False, out, err)
old = out.copy_to_host(stream=s)
e1 = float(np.abs(lean - want).max()); e2 = float(np.abs(old - want).max())
assert e1 < 1e-5 and e2 < 1e-5 and int(err.copy_to_host()[0]) == 0, (e1, e2)
print("simulator: lean and old launch paths agree with the reference", e1, e2)
"""


def launch_simulated() -> dict:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", SIM_CHECK], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    say(done.stdout.strip() or done.stderr[-2000:])
    return {"ok": done.returncode == 0, "source": "numba CUDA simulator: correctness only, "
            "no timing", "output": (done.stdout or done.stderr)[-1000:]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--rows", type=int, default=1_000_000,
                    help="rows per table (cap) for the throughput part")
    ap.add_argument("--eq-rows", type=int, default=100_000,
                    help="rows per table (cap) for the equality part")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--round-steps", type=int, default=40)
    ap.add_argument("--config", default="kaggle", help="preset (the dry run uses tiny)")
    args = ap.parse_args(argv)
    global PRESET
    PRESET = args.config
    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        say("graph check: SKIP: no GPU (--device cpu runs the harness on the CPU)")
        return NO_GPU
    dev = args.device
    t0 = time.perf_counter()
    # the CPU self-test checks the harness with torch alone (numba's CPU compile is slow
    # and its static-buffer step is covered by tests/test_graphs.py)
    backends = ["torch", "numba-cuda"] if dev == "cuda" else ["torch"]
    doc = {"schema": SCHEMA, "device": dev,
           "command": "python3 benchmarks/gpu_graph_check.py " + " ".join(
               sys.argv[1:] if argv is None else argv),
           "source": "measured" if dev == "cuda" else "CPU / CUDA-simulator self-test of the "
                                                      "harness: not GPU figures",
           "card": torch.cuda.get_device_name() if dev == "cuda" else "CPU (harness self-test)",
           "preset": args.config, "batch": 128, "rows_per_table": args.rows,
           "equality_rows_per_table": min(args.rows, args.eq_rows),
           "equality": [], "throughput": []}
    for backend in backends:
        for fused in (False, True):
            for mode in ("train", "infer"):
                r = equality_case(dev, min(args.rows, args.eq_rows), backend, fused, mode,
                                  args.steps)
                doc["equality"].append(r)
                d = r.get("max_rel_loss_diff", r.get("max_prob_diff"))
                say(f"graph == eager  {backend:<10} {'fused' if fused else 'per-table':<9} "
                    f"{mode:<5} max diff {d:.2e} (tolerance {r['tolerance']:.1e}) "
                    f"{'OK' if r['ok'] else 'FAIL'}")
    cases = [(backends[0], False), (backends[0], True)] + [(b, True) for b in backends[1:]]
    for backend, fused in cases:
        for mode in ("train", "infer"):
            r = throughput_case(dev, args.rows, backend, fused, mode, args.rounds,
                                args.round_steps)
            doc["throughput"].append(r)
            m = r["median_samples_per_s"]
            say(f"samples/s       {backend:<10} {'fused' if fused else 'per-table':<9} {mode:<5} "
                f"eager {m['eager']:>10,.0f}  graph {m['graph']:>10,.0f}  "
                f"x{r['graph_over_eager']:.2f} (others <= {r['other_cpus_max']:.1f} CPUs)"
                + ("" if r["goal_met"] is None else
                                                  f"  goal {r['goal_samples_per_s']:,} "
                                                  f"{'met' if r['goal_met'] else 'NOT met'}"))
    if dev == "cuda":
        doc["launch"] = lo = launch_overhead()
        if lo.get("ok"):
            ov = lo["overhead_s"]
            say(f"numba-cuda call ({lo['launch_path']}): kernel {lo['kernel_median_s'] * 1e6:.1f} "
                f"us; overhead old {ov['old call'] * 1e6:.1f} us, lean {ov['lean call'] * 1e6:.1f} "
                f"us, torch {ov['torch call'] * 1e6:.1f} us; goal <= 30 us "
                f"{'met' if lo['goal_met'] else 'NOT met'}")
        else:
            say(f"numba-cuda launch: check FAILED {lo['checks']}")
    else:
        doc["launch"] = launch_simulated()
    ok = all(r["ok"] for r in doc["equality"]) and doc["launch"].get("ok", False)
    doc["ok"] = bool(ok)
    doc["elapsed_s"] = time.perf_counter() - t0
    from dlrmprof.fsutil import atomic_write_text
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(doc, indent=1, default=float))
    say(f"graph check: {'OK' if ok else 'FAIL'} ({doc['elapsed_s']:.0f} s) -> {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
