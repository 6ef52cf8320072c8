"""Synthesis fidelity on every kind of stream we have, the model against the naive baseline.

    python benchmarks/bench_tracegen_fidelity.py [--quick] [--seed 11]
        [--timing-baseline REF] [--selection-baseline REF] [--timing-only]
        [--out benchmarks/results/tracegen_fidelity.json]

Streams (each table through gen-trace's own path: `generate._profile` picks the hot set and
placement, `generate.synthesize_trace` synthesizes and measures):

* real: the bundled Criteo Kaggle sample (26 columns x 1,999 rows) and the Avazu sample
  (tests/data/streams, 22 categorical columns x 8,087 rows, read by `gen-trace --from csv`);
* built (tracegen.workloads, seeded): bursty user sessions, a user-item interaction log (users
  and items as two tables), drifting Zipf, sequential scans with jumps, IRM Zipf.

Per stream it reports, for the model and for the naive baseline (i.i.d. draws from the whole
reuse-distance histogram on one LRU stack, the mean of the same number of realizations): LRU
MRC MAE mean and worst over tables, the naive/model ratio, distinct-count and top-10 share
errors, FIFO / LFU / 32-way set-associative MAE, per-batch unique and overlap errors at batch
128 and 2048, and the tables where the model loses to the baseline.

--timing-baseline REF also times `gen-trace --from kaggle` (the bundled sample) against the
code at git REF checked out into a temporary worktree, in interleaved rounds, warm and cold
(a fresh numba cache): the ratio of this code to REF's.  --selection-baseline REF times the
per-table model selection the same way (CPU seconds of `selection.select_hot` on 2^16-access
prefixes, and of `selection.choose_hot` on the bundled sample's whole 1,999-access columns,
one child process per round and code) and says whether both chose alike.

--batch-noise N measures the per-batch figures' floor on the two real samples, whose tables
hold a handful of batches: the same synthesis at N seeds, each table's error averaged over
them, beside the source's own relative standard error (its per-batch values' standard
deviation over the square root of their number, over their mean).  A worst table whose
one-seed error is over the goal while its mean over seeds is under it is off by the draw.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dlrmprof.fsutil import atomic_write_text
from dlrmprof.profile.noise import OtherCpu
from dlrmprof.tracegen import workloads
from dlrmprof.tracegen.csvlog import read_csv
from dlrmprof.tracegen.fidelity import errors
from dlrmprof.tracegen.generate import _profile, synthesize_trace
from dlrmprof.tracegen.readers import BUNDLED_SAMPLE, read_criteo
from dlrmprof.tracegen.reuse import dense_ids

SCHEMA = "dlrmprof.bench.tracegen_fidelity/1"
ROOT = Path(__file__).resolve().parent.parent
AVAZU = ROOT / "tests" / "data" / "streams" / "avazu_train_head8k.csv"


def real_streams() -> dict[str, list[tuple[str, np.ndarray]]]:
    """The real samples' columns: the bundled Criteo Kaggle rows and the Avazu rows."""
    r = read_criteo(BUNDLED_SAMPLE)
    sp = np.concatenate([c.sparse for c in r])
    return {
        "criteo-kaggle (real, 26 x 1,999)": [(nm, sp[:, j]) for j, nm in
                                               enumerate(r.table_names)],
        "avazu (real, 22 x 8,087)": [(s.name, s.ids) for s in
                                     read_csv(AVAZU, columns="2-23").streams]}


def streams(quick: bool) -> dict[str, list[tuple[str, np.ndarray]]]:
    n = 50_000 if quick else 200_000
    users, items = workloads.user_item_log(n, users=20_000, items=50_000, seed=3)
    return real_streams() | {
        f"bursty sessions ({n:,})": [("users", workloads.bursty_sessions(
            n, users=20_000, zipf_a=1.0, mean_session=8, concurrent=32, seed=1))],
        f"user-item log ({n:,})": [("users", users), ("items", items)],
        f"drifting Zipf ({n:,})": [("ids", workloads.drifting_zipf(
            n, distinct=50_000, a=1.0, drift=0.05, seed=2))],
        f"scans ({n:,})": [("ids", workloads.scans(n, span=20_000, noise=0.05, seed=4))],
        f"IRM Zipf ({n:,})": [("ids", workloads.irm_zipf(n, distinct=50_000, a=1.05, seed=5))],
    }


def measure(tables: list[tuple[str, np.ndarray]], seed: int) -> dict:
    profs = []
    for name, ids in tables:
        ids = dense_ids(np.asarray(ids, dtype=np.int64))
        profs.append(_profile(name, ids, None, int(ids.max()) + 1, 32, None, None))
    trace = synthesize_trace(profs, source={"kind": "bench"}, seed=seed, keep_indices=False)
    fid = trace.header["fidelity"]
    rows = []
    for p in profs:
        f = fid[p.name]
        e, n = errors(f), f["naive"]
        batch = {b["batch_size"]: b for b in f.get("batches", [])}
        rows.append({"table": p.name, "distinct": p.distinct, "accesses": p.accesses,
                     "hot": p.hot_k, "variant": p.extra["hot_selection"]["placement"],
                     "model": e, "naive": n,
                     "batch": {k: {"unique": v["unique_rel_error"],
                                   "overlap": v["overlap_rel_error"]}
                               for k, v in batch.items()},
                     "loses_to_naive": f["loses_to_naive"]})
    return summarize(rows) | {"tables": rows}


def _source_batches(ids: np.ndarray, bs: int) -> dict[str, np.ndarray]:
    """The source's per-batch values at batch size `bs` (one id per bag): unique ids in each
    full batch, and each batch's share of its ids the batch before also used."""
    sets = [np.unique(ids[b * bs:(b + 1) * bs]) for b in range(ids.shape[0] // bs)]
    return {"unique": np.array([s.size for s in sets], dtype=np.float64),
            "overlap": np.array([np.intersect1d(a, b, assume_unique=True).size / a.size
                                 for b, a in zip(sets, sets[1:])], dtype=np.float64)}


def _rel_se(x: np.ndarray) -> float | None:
    """Relative standard error of the mean of per-batch values `x` (None below two)."""
    if x.size < 2 or x.mean() == 0:
        return None
    return float(x.std(ddof=1) / np.sqrt(x.size) / x.mean())


def batch_noise(tables: list[tuple[str, np.ndarray]], seed: int, seeds: int) -> dict:
    """Per batch size and figure (unique, overlap): the worst table at `seed` with its error
    there, its mean and largest error over `seeds` seeds and the source's relative standard
    error; and the tables whose mean error over the seeds is over the goal (5%)."""
    profs, src = [], {}
    for name, ids in tables:
        ids = dense_ids(np.asarray(ids, dtype=np.int64))
        profs.append(_profile(name, ids, None, int(ids.max()) + 1, 32, None, None))
        src[name] = {bs: _source_batches(ids, bs) for bs in (128, 2048)}
    errs: dict = {}
    for s in range(seed, seed + seeds):
        fid = synthesize_trace(profs, source={"kind": "bench"}, seed=s,
                               keep_indices=False).header["fidelity"]
        for p in profs:
            for b in fid[p.name].get("batches", []):
                for what in ("unique", "overlap"):
                    errs.setdefault((b["batch_size"], what), {}).setdefault(
                        p.name, []).append(b[f"{what}_rel_error"])
    out = {}
    for (bs, what), per in sorted(errs.items()):
        worst = max(per, key=lambda t: per[t][0])
        e = per[worst]
        out[f"batch{bs}_{what}"] = {
            "worst_table": worst, "batches": int(src[worst][bs]["unique"].size),
            "error_at_seed": e[0], "error_mean": float(np.mean(e)), "error_max": max(e),
            "source_rel_se": _rel_se(src[worst][bs][what]),
            "over_goal_on_mean": sorted(t for t, v in per.items() if np.mean(v) > 0.05)}
    return out


def _agg(vals):
    vals = [v for v in vals if v is not None]
    return {"mean": float(np.mean(vals)), "worst": float(np.max(vals))} if vals else None


def summarize(rows: list[dict]) -> dict:
    out = {}
    for key in ("mrc_mae", "fifo_mae", "lfu_mae", "setassoc32_mae", "distinct", "top10_share"):
        out[key] = {"model": _agg([r["model"][key] for r in rows]),
                    "naive": _agg([r["naive"].get(key) for r in rows])}
    for bs in (128, 2048):
        for what in ("unique", "overlap"):
            vals = [r["batch"][bs][what] for r in rows if bs in r["batch"]]
            out[f"batch{bs}_{what}"] = _agg(vals)
    out["loses_lru"] = [r["table"] for r in rows if "mrc_mae" in r["loses_to_naive"]]
    return out


def _fmt(a, digits=4):
    return "-" if a is None else f"{a['mean']:.{digits}f} / {a['worst']:.{digits}f}"


def _gen_trace(cwd: Path, python: str, cache: str | None,
               **env_extra) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of the gen-trace process and of the processes it waited
    for, e.g. its compile helper; other processes' CPUs)."""
    env = dict(os.environ, PYTHONPATH=str(cwd), **env_extra)
    if cache:
        env["NUMBA_CACHE_DIR"] = cache
    with tempfile.TemporaryDirectory() as tmp, OtherCpu() as oc:
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([python, "-m", "dlrmprof.cli", "gen-trace", "--from", "kaggle", "--out",
                        str(Path(tmp) / "t.npz")], cwd=cwd, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        dt = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return dt, cpu, oc.cpus


def timing(ref: str, rounds: int) -> dict:
    """gen-trace on the bundled sample: this code vs the code at `ref`, interleaved; wall and
    CPU seconds (the CPU time moves less than the wall time on a shared host)."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(base),
                        ref], check=True)
        try:
            out = {"ref": ref, "other_cpus": []}
            for kind in ("warm", "cold"):
                out[kind] = {"this": [], "baseline": [], "cpu_this": [], "cpu_baseline": []}
            for who, cwd in (("this", ROOT), ("baseline", base)):   # fill the caches
                _gen_trace(cwd, sys.executable, None)
            # cold_one_cpu: this code with the compile helper off (tracegen/warmup.py), against
            # the same rounds' cold baseline
            out["cold_one_cpu"] = {"this": [], "cpu_this": []}
            for _ in range(rounds):
                for who, cwd in (("this", ROOT), ("baseline", base)):
                    for kind in ("warm", "cold", "cold_one_cpu")[: 3 if who == "this" else 2]:
                        off = {"DLRMPROF_COMPILE_AHEAD": "0"} if kind == "cold_one_cpu" else {}
                        with tempfile.TemporaryDirectory() as cache:
                            dt, cpu, oc = _gen_trace(cwd, sys.executable,
                                                     None if kind == "warm" else cache, **off)
                        out[kind][who].append(dt)
                        out[kind]["cpu_" + who].append(cpu)
                        out["other_cpus"].append(oc)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                           check=False)
    out["cold_one_cpu"] |= {"baseline": out["cold"]["baseline"],
                            "cpu_baseline": out["cold"]["cpu_baseline"]}
    for kind in ("warm", "cold", "cold_one_cpu"):
        t = out[kind]
        t["ratio_median"] = float(np.median(t["this"]) / np.median(t["baseline"]))
        t["cpu_ratio_median"] = float(np.median(t["cpu_this"]) / np.median(t["cpu_baseline"]))
    return out


def _jit_child() -> None:
    """Child process of `jit_report`: gen-trace on the bundled sample in this process, then
    every numba dispatcher of dlrmprof.tracegen that it compiled or loaded, with its
    signatures and (cold) the CPU seconds its own compiles took, callees' compiles excluded;
    prints JSON."""
    import contextlib
    import io

    import numba
    from numba.core import event
    from numba.core.registry import CPUDispatcher

    from dlrmprof.cli import cli

    own: dict[str, float] = {}
    stack: list[list[float]] = []

    class Listener(event.Listener):
        def on_start(self, ev):
            stack.append([time.process_time(), 0.0])

        def on_end(self, ev):
            t0, inner = stack.pop()
            dt = time.process_time() - t0
            if stack:
                stack[-1][1] += dt
            f = ev.data["dispatcher"].py_func
            key = f"{f.__module__}.{f.__qualname__}"
            own[key] = own.get(key, 0.0) + dt - inner

    event.register("numba:compile", Listener())
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()) as out:
        t0 = time.process_time()
        cli.main(["gen-trace", "--from", "kaggle", "--out", str(Path(tmp) / "t.npz")],
                 standalone_mode=False)
        cpu = time.process_time() - t0
    funcs, seen = [], set()
    for mod in sorted(m for m in sys.modules if m.startswith("dlrmprof.tracegen")):
        for name, d in sorted(vars(sys.modules[mod]).items()):
            if (isinstance(d, CPUDispatcher) and d.py_func.__module__ == mod and d.signatures
                    and id(d) not in seen):          # once, whatever names it has
                seen.add(id(d))
                key = f"{mod}.{d.py_func.__qualname__}"
                funcs.append({"name": key, "signatures": [str(s) for s in d.signatures],
                              "compile_s": round(own.get(key, 0.0), 3)})
    print(json.dumps({"numba": numba.__version__, "cpu_s": cpu, "functions": funcs,
                      "compile_s": sum(own.values()),
                      "compile_s_tracegen": sum(f["compile_s"] for f in funcs),
                      "digest": re.search(r"sha256 ([0-9a-f]{16})", out.getvalue())[1]}))


def jit_report(cold: bool = True) -> dict:
    """The numba dispatchers one gen-trace on the bundled sample compiles (cold: a fresh
    numba cache) or loads, with their signatures and own compile seconds (`_jit_child`)."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        if cold:
            env["NUMBA_CACHE_DIR"] = cache
        res = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--jit-child"],
                             cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1]) | {"cold": cold}


def _jit_line(j: dict) -> str:
    many = [f["name"] for f in j["functions"] if len(f["signatures"]) > 1]
    return (f"cold gen-trace: {len(j['functions'])} tracegen dispatchers, "
            f"{sum(len(f['signatures']) for f in j['functions'])} specializations, "
            f"{j['compile_s']:.1f} s in numba compiles (own times: "
            + ", ".join(f"{f['name'].rsplit('.', 1)[1]} {f['compile_s']:.2f}" for f in
                        sorted(j["functions"], key=lambda f: -f["compile_s"])[:5])
            + f", ...); more than one: {many or 'none'}")


def selection_tables() -> list[tuple[np.ndarray, int]]:
    """The tables the selection cost is measured on, each (its 2^16-access prefix, as a long
    capture's selection sees it; the whole stream's length): the 26 columns of the bundled
    Criteo rows resampled (seeded) to 2^16 rows, and the built streams above."""
    from dlrmprof.tracegen.selection import HOT_PREFIX

    r = read_criteo(BUNDLED_SAMPLE)
    sp = np.concatenate([c.sparse for c in r])
    rs = sp[np.random.default_rng(0).integers(0, sp.shape[0], HOT_PREFIX)]
    out = [(dense_ids(rs[:, j].astype(np.int64)), HOT_PREFIX) for j in range(rs.shape[1])]
    for name, tables in streams(False).items():
        if "real" not in name:
            out += [(dense_ids(np.asarray(ids[:HOT_PREFIX], dtype=np.int64)), len(ids))
                    for _, ids in tables]
    return out


def short_tables() -> list[np.ndarray]:
    """The short tables the selection cost is also measured on: the bundled sample's 26
    columns (1,999 accesses each), whole, as gen-trace's selection sees them."""
    sp = np.concatenate([c.sparse for c in read_criteo(BUNDLED_SAMPLE)])
    return [dense_ids(sp[:, j].astype(np.int64)) for j in range(sp.shape[1])]


def _selection_child() -> None:
    """Child process of `selection_cost`: the selection on every table once to compile, then
    timed (CPU seconds); prints JSON."""
    import dlrmprof
    from dlrmprof.tracegen import selection

    tables = selection_tables()
    # the windows gen-trace gives a prefix selection (the code before `prefix_windows`: 32)
    windows = getattr(selection, "prefix_windows", lambda w, n, p: w)

    def run():
        return [selection.select_hot("t", ids, None, int(ids.max()) + 1,
                                     windows(32, n, selection.HOT_PREFIX), None)[1]
                for ids, n in tables]
    from dlrmprof.tracegen.profile import stream_histogram

    short = short_tables()

    def run_short():
        return [selection.choose_hot("t", ids, None, int(ids.max()) + 1, 32,
                                     stream_histogram(ids))[1] for ids in short]
    run()
    t0 = time.process_time()
    sel = run()
    cpu = time.process_time() - t0
    run_short()
    t0 = time.process_time()
    sel_short = run_short()
    short_cpu = time.process_time() - t0
    print(json.dumps({"package": dlrmprof.__file__, "cpu_s": cpu, "tables": len(tables),
                      "short": {"cpu_s": short_cpu, "tables": len(short),
                                "choices": [[s["chosen"], s["placement"]] for s in sel_short],
                                "records": [s["candidates"] for s in sel_short]},
                      "choices": [[s["chosen"], s["placement"]] for s in sel],
                      "records": [s["candidates"] for s in sel],
                      "candidates": sum(len(s["candidates"]) for s in sel),
                      "pruned": sum(bool(c.get("pruned")) for s in sel
                                    for c in s["candidates"])}))


def selection_cost(ref: str, rounds: int) -> dict:
    """CPU time of the selection (`selection.select_hot`) over `selection_tables`, this code
    vs the code at `ref` (a temporary worktree), one child process per round and code,
    interleaved; and whether both made the same choices."""
    runs = {"this": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(base),
                        ref], check=True)
        try:
            with OtherCpu() as oc:
                for _ in range(rounds):
                    for who, tree in (("this", ROOT), ("baseline", base)):
                        res = subprocess.run(
                            [sys.executable, str(Path(__file__).resolve()), "--selection-child"],
                            cwd=tree, env=dict(os.environ, PYTHONPATH=str(tree)), check=True,
                            capture_output=True, text=True)
                        r = json.loads(res.stdout.strip().splitlines()[-1])
                        if not Path(r["package"]).resolve().is_relative_to(tree.resolve()):
                            raise AssertionError(f"{who}: imported {r['package']}")
                        runs[who].append(r)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                           check=False)
    med = {w: float(np.median([r["cpu_s"] for r in runs[w]])) for w in runs}
    this, base_ = runs["this"][0], runs["baseline"][0]
    short_med = {w: float(np.median([r["short"]["cpu_s"] for r in runs[w]])) for w in runs}
    short = {"tables": this["short"]["tables"],
             "cpu_s": {w: [r["short"]["cpu_s"] for r in runs[w]] for w in runs},
             "per_table_s": {w: short_med[w] / this["short"]["tables"] for w in runs},
             "ratio_median": short_med["this"] / short_med["baseline"],
             "same_choices": this["short"]["choices"] == base_["short"]["choices"],
             "same_records": this["short"]["records"] == base_["short"]["records"]}
    return {"ref": ref, "tables": this["tables"], "cpu_s": {w: [r["cpu_s"] for r in runs[w]]
                                                            for w in runs},
            "per_table_s": {w: med[w] / this["tables"] for w in med},
            "ratio_median": med["this"] / med["baseline"],
            "same_choices": this["choices"] == base_["choices"],
            "same_records": this["records"] == base_["records"],
            "candidates": {"this": this["candidates"], "baseline": base_["candidates"]},
            "pruned": {"this": this["pruned"], "baseline": base_["pruned"]},
            "short": short, "other_cpus": oc.cpus}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="50k-access built streams")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--timing-baseline", default=None, metavar="REF")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default=None, metavar="TEXT",
                    help="only the streams whose name contains TEXT (a partial run)")
    ap.add_argument("--timing-only", action="store_true",
                    help="with --timing-baseline: skip the fidelity streams (an existing --out "
                         "keeps its fidelity figures, the timing is replaced)")
    ap.add_argument("--selection-baseline", default=None, metavar="REF",
                    help="also time the selection on 2^16-access prefixes against REF")
    ap.add_argument("--selection-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--jit", action="store_true",
                    help="also list the numba dispatchers a cold gen-trace compiles, with "
                         "their signatures and own compile seconds")
    ap.add_argument("--jit-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch-noise", type=int, default=0, metavar="N",
                    help="also measure the real samples' per-batch figures at N seeds "
                         "beside the sources' own standard errors")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                          "tracegen_fidelity.json"))
    args = ap.parse_args()
    if args.selection_child:
        _selection_child()
        return
    if args.jit_child:
        _jit_child()
        return
    results = {}
    for name, tables in ({} if args.timing_only else streams(args.quick)).items():
        if args.only and args.only not in name:
            continue
        t0 = time.perf_counter()
        results[name] = measure(tables, args.seed)
        results[name]["seconds"] = time.perf_counter() - t0
        print(f"{name}: LRU MAE {_fmt(results[name]['mrc_mae']['model'])} (naive "
              f"{_fmt(results[name]['mrc_mae']['naive'])}), {results[name]['seconds']:.1f} s",
              flush=True)
    doc = {"schema": SCHEMA, "command": "python benchmarks/bench_tracegen_fidelity.py"
           + (" --quick" if args.quick else "")
           + (f" --only '{args.only}'" if args.only else ""), "seed": args.seed,
           "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                    "loadavg": list(os.getloadavg())},
           "source": "measured: synthetic streams vs their sources, exact simulation",
           "streams": results}
    if args.timing_only and not results:      # the file holds only what this command timed
        doc["command"] = "python benchmarks/bench_tracegen_fidelity.py " + shlex.join(
            sys.argv[1:])
        doc["source"] = ("measured: gen-trace's wall and CPU seconds against the baseline's"
                         if args.timing_baseline else "measured: the selection's CPU seconds "
                         "(process_time, child processes) against the baseline's")
    if args.timing_only and Path(args.out).exists():
        # a timing rerun (e.g. on a quieter host) keeps the file's fidelity figures
        prev = json.loads(Path(args.out).read_text())
        keep = ("seed", "streams", "timing", "selection", "jit", "batch_noise") + (
            ("command", "source") if prev.get("streams") else ())
        doc |= {k: prev[k] for k in keep if k in prev}
    if args.selection_baseline:
        doc["selection"] = sel = selection_cost(args.selection_baseline, args.rounds)
        print(f"selection on {sel['tables']} prefixes: {sel['per_table_s']['this']:.3f} s "
              f"per table, {args.selection_baseline} {sel['per_table_s']['baseline']:.3f} s, "
              f"ratio {sel['ratio_median']:.2f}; same choices: {sel['same_choices']}, "
              f"same records: {sel['same_records']}")
    if args.batch_noise:
        doc["batch_noise"] = {"seeds": args.batch_noise, "first_seed": args.seed,
                              "command": "python benchmarks/bench_tracegen_fidelity.py "
                                         f"--timing-only --batch-noise {args.batch_noise}",
                              "streams": {k: batch_noise(v, args.seed, args.batch_noise)
                                          for k, v in real_streams().items()}}
        for k, v in doc["batch_noise"]["streams"].items():
            for fig, r in v.items():
                print(f"{k} {fig}: worst {r['worst_table']} {r['error_at_seed']:.3f} at seed "
                      f"{args.seed}, mean over {args.batch_noise} seeds {r['error_mean']:.3f}, "
                      f"source rel. SE {r['source_rel_se'] or 0:.3f}")
    if args.jit:
        doc["jit"] = jit_report(cold=True)
        print(_jit_line(doc["jit"]))
    if args.timing_baseline:
        doc["timing"] = timing(args.timing_baseline, args.rounds) | {
            "command": "python benchmarks/bench_tracegen_fidelity.py --timing-only "
                       f"--timing-baseline {args.timing_baseline} --rounds {args.rounds}"}
        for kind in ("warm", "cold", "cold_one_cpu"):
            t = doc["timing"][kind]
            print(f"gen-trace --from kaggle, {kind}: this {np.median(t['this']):.2f} s, "
                  f"{args.timing_baseline} {np.median(t['baseline']):.2f} s, ratio "
                  f"{t['ratio_median']:.2f} (CPU time ratio {t['cpu_ratio_median']:.2f})")
    if results:
        from render_performance import render_tracegen_fidelity

        print("\n".join(render_tracegen_fidelity({"streams": results})))
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
