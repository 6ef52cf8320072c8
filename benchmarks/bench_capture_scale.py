"""gen-trace end to end at Kaggle scale: rows/s, peak RSS and peak temporary disk, against the
code of a baseline commit run in the same session (interleaved rounds).

    python benchmarks/bench_capture_scale.py                         # 2M rows, 2 rounds
    python benchmarks/bench_capture_scale.py --rows 200000 --rounds 1  # a quick run
    python benchmarks/bench_capture_scale.py --rows 2000000,45840617 --nproc 1,2

The input is a Criteo Kaggle-format file made by resampling the bundled real rows
(dlrmprof/data/criteo_kaggle_train_head2k.txt; 45,840,617 rows is the size of Kaggle's
train.txt, about 10.5 GB), written under --workdir and deleted afterwards (also on failure).
Each run is `python -m dlrmprof gen-trace --from kaggle --input FILE` writing its trace (with
--profile-only only from --profile-only-from rows, when that is given) in a child process
with its own TMPDIR; while it runs the benchmark polls the process tree's summed RSS and the
bytes under that TMPDIR every 0.1 s (peaks recorded), and records the CPU time other
processes used (profile/noise.py).  Temporary disk is what gen-trace puts under its TMPDIR:
the trace (and the temporary name it is written under, beside it) lies in the work directory
outside that TMPDIR, so the output is not counted as temporary disk; its size is recorded
as trace_mb.  The baseline is `git archive BASELINE` unpacked into a
temporary directory and run with the same interpreter; it runs for sizes up to
--baseline-max-rows (at 45.8M rows it would spill 4.8 GB and take many minutes).  --previous
COMMIT adds the code before a change the same way (`previous`, also up to
--baseline-max-rows): a change that keeps the results must give its digest and fidelity
figures, and the benchmark stops if it does not.

Before any figure is kept each run's trace is loaded and validated, and runs of the same code
on the same input must give the same digest (and --nproc 2 the digest of 1 process).
Results: benchmarks/results/capture_scale.json (schema dlrmprof.bench.capture_scale/1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from bench_tracegen import make_criteo_file  # noqa: E402

from dlrmprof.profile.noise import OtherCpu  # noqa: E402

SCHEMA = "dlrmprof.bench.capture_scale/1"
KAGGLE_ROWS = 45_840_617


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def run_once(code: Path, src: Path, out: Path, tmp: Path, nproc: int,
             extra: tuple = ()) -> dict:
    """One gen-trace run of the code under `code`; its wall time, peaks and digest."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=str(code), NUMBA_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "dlrmprof", "gen-trace", "--from", "kaggle", "--input",
           str(src), "--out", str(out), "--json", *extra]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    peak_rss = peak_tmp = 0
    log = out.with_suffix(".json")
    with OtherCpu() as oc, open(log, "w") as fh:
        t0 = time.perf_counter()
        # stdout to a file: a pipe nobody reads until the end would block the child
        child = subprocess.Popen(cmd, env=env, cwd=code, stdout=fh, stderr=subprocess.PIPE,
                                 text=True)
        ps = psutil.Process(child.pid)
        while True:
            # wait4, not poll: the child's CPU time (its own and its ranks', which it
            # waited for) comes with its exit status
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            peak_rss = max(peak_rss, _tree_rss(ps))
            peak_tmp = max(peak_tmp, _dir_bytes(tmp))
            time.sleep(0.1)
        wall = time.perf_counter() - t0
        child.returncode = os.waitstatus_to_exitcode(status)
        stderr = child.stderr.read()
    if child.returncode != 0:
        raise RuntimeError(f"gen-trace failed ({child.returncode}): {stderr[-2000:]}")
    doc = json.loads(log.read_text())
    log.unlink()
    left = _dir_bytes(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": peak_rss / 2**20, "peak_tmp_mb": peak_tmp / 2**20,
            "tmp_left_mb": left / 2**20, "digest": doc["digest"],
            "trace_mb": out.stat().st_size / 2**20,
            "other_cpus": oc.cpus, "fidelity": _fidelity_summary(doc),
            "phases_s": doc.get("phases_s")}


def _fidelity_summary(doc: dict) -> dict:
    """Mean and worst LRU MRC MAE over the tables, from gen-trace's JSON."""
    maes = [t["fidelity"]["mrc_mae"] for t in doc.get("tables", [])
            if isinstance(t.get("fidelity"), dict) and "mrc_mae" in t["fidelity"]]
    if not maes:
        return {}
    return {"mrc_mae_mean": sum(maes) / len(maes), "mrc_mae_max": max(maes),
            "tables": len(maes)}


def _check(out: Path, code: Path) -> None:
    """The trace loads and validates (with the code that wrote it)."""
    subprocess.run([sys.executable, "-c", "import sys; from dlrmprof.tracegen import Trace; "
                    "Trace.load(sys.argv[1]).validate()", str(out)],
                   env=dict(os.environ, PYTHONPATH=str(code)), cwd=code, check=True)


def _baseline_tree(commit: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _warm(code: Path, work: Path) -> None:
    """Compile numba's caches of `code` on a small input (not timed)."""
    subprocess.run([sys.executable, "-m", "dlrmprof", "gen-trace", "--from", "kaggle",
                    "--max-rows", "3000", "--out", str(work / "warm.npz")],
                   env=dict(os.environ, PYTHONPATH=str(code)), cwd=code, check=True,
                   capture_output=True)


def bench_size(rows: int, args, work: Path, codes: dict, on_run=None) -> dict:
    src = work / f"kaggle_{rows}.txt"
    t0 = time.perf_counter()
    make_criteo_file(src, rows)
    made_s = time.perf_counter() - t0
    size_mb = src.stat().st_size / 2**20
    runs: dict = {}
    try:
        for r in range(args.rounds):
            names = list(codes) if r % 2 == 0 else list(reversed(codes))
            for name in names:
                if name in ("baseline", "previous") and rows > args.baseline_max_rows:
                    continue
                code, nproc = codes[name]
                out = work / f"{name}.npz"
                extra = ("--profile-only",) if _profile_only(rows, args) else ()
                res = run_once(code, src, out, work / "tmp", nproc, extra)
                _check(out, code)
                out.unlink()
                runs.setdefault(name, []).append(res)
                if on_run is not None:         # keep what is measured if a later run fails
                    on_run(_summarize(rows, size_mb, made_s, runs, _profile_only(rows, args)))
                print(f"[{rows} rows] {name} round {r}: {res['s']:.1f} s "
                      f"(CPU {res['cpu_s']:.1f} s), "
                      f"{rows / res['s'] / 1e3:.0f} k rows/s, peak RSS "
                      f"{res['peak_rss_mb']:.0f} MiB, peak temp {res['peak_tmp_mb']:.0f} MiB, "
                      f"other CPUs {res['other_cpus']:.2f}", flush=True)
    finally:
        src.unlink(missing_ok=True)
    return _summarize(rows, size_mb, made_s, runs, _profile_only(rows, args))


def _profile_only(rows: int, args) -> bool:
    return args.profile_only_from is not None and rows >= args.profile_only_from


def _summarize(rows: int, size_mb: float, made_s: float, runs: dict, profile_only: bool) -> dict:
    for name, rs in runs.items():
        if len({r["digest"] for r in rs}) != 1:
            raise AssertionError(f"{name}: runs of the same code gave different digests")
    if "ours" in runs and "ours_nproc2" in runs:
        if runs["ours"][0]["digest"] != runs["ours_nproc2"][0]["digest"]:
            raise AssertionError("--nproc 2 gave another digest than 1 process")
    if "ours" in runs and "previous" in runs:
        a, b = runs["ours"][0], runs["previous"][0]
        if (a["digest"], a["fidelity"]) != (b["digest"], b["fidelity"]):
            raise AssertionError("the previous code gave another trace or fidelity than ours")
    summ: dict = {"rows": rows, "input_mb": size_mb, "make_input_s": made_s,
                  "profile_only": profile_only}
    for name, rs in runs.items():
        best = min(rs, key=lambda r: r["s"])
        summ[name] = {"best_s": best["s"], "rows_per_s": rows / best["s"],
                      "cpu_s_min": min(r["cpu_s"] for r in rs),
                      "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                      "peak_tmp_mb": max(r["peak_tmp_mb"] for r in rs),
                      "tmp_over_input": max(r["peak_tmp_mb"] for r in rs) / size_mb,
                      "trace_mb": best.get("trace_mb"),
                      "digest": best["digest"], "fidelity": best["fidelity"],
                      "phases_s": best.get("phases_s"), "runs": rs}
    for ref in ("baseline", "previous"):
        if "ours" in summ and ref in summ:
            summ[f"speedup_vs_{ref}"] = summ[ref]["best_s"] / summ["ours"]["best_s"]
    if "ours" in summ and "ours_nproc2" in summ:
        summ["nproc2_speedup"] = summ["ours"]["best_s"] / summ["ours_nproc2"]["best_s"]
    return summ


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="2000000",
                    help=f"comma-separated sizes (Kaggle's train.txt: {KAGGLE_ROWS})")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--nproc", default="1,2", help="comma-separated --nproc values of ours")
    ap.add_argument("--baseline", default="ce54615", help="commit of the baseline code")
    ap.add_argument("--previous", default=None,
                    help="commit of the code before a change that keeps the results (same "
                         "digest and fidelity required), timed beside ours")
    ap.add_argument("--ours", default=str(ROOT),
                    help="source tree timed as ours (default: this checkout)")
    ap.add_argument("--baseline-max-rows", type=int, default=2_000_000)
    ap.add_argument("--profile-only-from", type=int, default=None,
                    help="sizes from this many rows run with --profile-only (default: every "
                         "size writes its trace)")
    ap.add_argument("--workdir", default=None, help="where the input is made (default: TMPDIR)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "capture_scale.json"))
    args = ap.parse_args()
    sizes = [int(x) for x in args.rows.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-capture-", dir=args.workdir))
    try:
        ours = Path(args.ours).resolve()
        codes = {"ours": (ours, 1)}
        for n in (int(x) for x in args.nproc.split(",")):
            if n > 1:
                codes[f"ours_nproc{n}"] = (ours, n)
        if any(s <= args.baseline_max_rows for s in sizes):
            codes["baseline"] = (_baseline_tree(args.baseline, work / "baseline"), 1)
            if args.previous:
                codes["previous"] = (_baseline_tree(args.previous, work / "previous"), 1)
        for code, _ in set(codes.values()):
            _warm(code, work)
        results: list = []
        for rows in sizes:
            results.append(bench_size(rows, args, work, codes, lambda partial: _write(
                args, results + [dict(partial, partial=True)])))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _write(args, results)
    print(f"wrote {args.out}")


def _shown_args() -> list[str]:
    """The command's options without the paths of this machine (--ours, --out, --workdir):
    the results file names the code it timed, not where a copy of it lay."""
    out, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a in ("--ours", "--out", "--workdir"):
            skip = True
        elif not a.startswith(("--ours=", "--out=", "--workdir=")):
            out.append(a)
    return out


def _write(args, results: list) -> None:
    doc = {"schema": SCHEMA,
           "command": "python benchmarks/bench_capture_scale.py " + " ".join(_shown_args()),
           "host": {"machine": os.uname().machine, "cpus": os.cpu_count(),
                    "loadavg": list(os.getloadavg())},
           "source": "measured: wall time of the gen-trace child (time.perf_counter); "
                     "cpu_s: its user + system CPU seconds with its ranks' (os.wait4), "
                     "steadier than wall time when other processes share the cores; peak "
                     "RSS of its process tree and peak bytes under its TMPDIR polled every "
                     "0.1 s (psutil, os.walk; the trace lies outside that TMPDIR and is not "
                     "counted: trace_mb is its size on disk); other processes' CPU use from "
                     "profile/noise.py; "
                     "phases_s: gen-trace's own phase times (its --json phases_s: capture = "
                     "read and profile, and with --nproc the ranks' start; synthesis = "
                     "synthesis and fidelity in the writing process, with --nproc rank 0's "
                     "share and the other ranks' tables taken as they come; write)",
           "baseline": args.baseline, "previous": args.previous, "rounds": args.rounds,
           "sizes": results}
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
