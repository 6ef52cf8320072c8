"""The synthesizer core and the Criteo parser against their code at another git revision.

    python benchmarks/bench_kernel_split.py --ref 2095a58          # the code before the split
    python benchmarks/bench_kernel_split.py --ref main --quick

Issue 19 split `synth._synth_core` and `_criteo_parse.parse_block` into functions of at most
80 lines; this checks that the split costs nothing.  The modules at `--ref` are taken with
`git show` into a temporary directory and imported beside the current ones; both run on the
same inputs in interleaved rounds (dlrmprof.profile.harness), their results compared first
(the same stream, item count and counters; the same rows, positions and error records).

Cells: synthesis of a Zipf(1.1) stream's profile (all ids, and a table 50 times smaller than
the distinct count, which takes the table-full paths); parsing a Criteo TSV made by resampling
the bundled rows, and the same with 40 malformed lines of every kind.  One thread.
Writes benchmarks/results/kernel_split.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tracegen import make_criteo_file, zipf_stream  # noqa: E402

from dlrmprof.profile import harness  # noqa: E402
from dlrmprof.tracegen import _criteo_parse, reuse_distances, synth  # noqa: E402
from dlrmprof.tracegen.profile import build_profile  # noqa: E402

SCHEMA = "dlrmprof.bench.kernel_split/1"
OUT = harness.results_path(__file__, "kernel_split.json")
ROOT = Path(__file__).resolve().parent.parent
MODULES = {"synth": "dlrmprof/tracegen/synth.py",
           "criteo_parse": "dlrmprof/tracegen/_criteo_parse.py"}


def load_at(ref: str, tmp: Path) -> dict:
    """The MODULES as they are at git revision `ref`, imported under new names."""
    mods = {}
    for name, path in MODULES.items():
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:{path}"], check=True,
                             capture_output=True, text=True).stdout
        file = tmp / f"ref_{name}.py"
        file.write_text(src)
        spec = importlib.util.spec_from_file_location(f"ref_{name}", file)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        mods[name] = mod
    return mods


def core_args(prof, rows):
    """The arguments synthesize_stream hands _synth_core, caught on their way in."""
    got = {}
    real = synth._synth_core

    def catch(*a):
        got["args"] = a
        return real(*a)

    synth._synth_core = catch
    try:
        synth.synthesize_stream(prof, rows=rows, seed=1)
    finally:
        synth._synth_core = real
    return got["args"]


def same_synth(out):
    a, b = out["ref"], out["split"]
    return np.array_equal(a[0], b[0]) and a[1:] == b[1:]


def parse_all(mod, buf):
    m = 1 + int(np.count_nonzero(buf == 10))
    labels, dense, cats = (np.empty(m, np.int64), np.empty((m, 13), np.int64),
                           np.empty((m, 26), np.int64))
    err = [np.full(64, -1, np.int64) for _ in range(3)]
    r = mod.parse_block(buf, 0, buf.shape[0], labels, dense, cats, m, *err, False)
    return r, labels[: r[1]], dense[: r[1]], cats[: r[1]], *err


def same_parse(out):
    a, b = out["ref"], out["split"]
    return a[0] == b[0] and all(np.array_equal(x, y) for x, y in zip(a[1:], b[1:]))


def with_bad_lines(buf: np.ndarray, n: int, seed: int = 3) -> np.ndarray:
    """buf with n lines broken, cycling through every error kind (fields, label, dense, hex
    length, hex digit)."""
    lines = bytes(buf).split(b"\n")
    rng = np.random.default_rng(seed)
    for j, i in enumerate(rng.choice(len(lines) - 1, n, replace=False)):
        f = lines[i].split(b"\t")
        k = j % 5
        if k == 0:
            f = f[:-1]
        else:
            f[(0, 3, 20, 30)[k - 1]] = (b"x", b"-", b"123456789", b"zz")[k - 1]
        lines[i] = b"\t".join(f)
    return np.frombuffer(b"\n".join(lines), dtype=np.uint8)


def measure(ref: dict, n: int, rows: int, rounds: int) -> list:
    ids = zipf_stream(n, n // 10)
    prof = build_profile("zipf", ids, dist=reuse_distances(ids))
    cmps = []
    for label, table in ((f"synth {n:.0e} Zipf accesses", None),
                         (f"synth {n:.0e}, table full ({n // 50} rows)", n // 50)):
        args = core_args(prof, table)
        cmps.append(harness.compare(
            # the ref's dists is None where this code passes an empty array (synth_core)
            {"ref": lambda i, a=args: ref["synth"]._synth_core(*a[:15]),
             "split": lambda i, a=args: synth._synth_core(*a)},
            baseline="ref", check=same_synth, rounds=rounds, label=label))
    with tempfile.TemporaryDirectory(prefix="dlrmprof-split-") as tmp:
        path = Path(tmp) / "criteo.txt"
        make_criteo_file(path, rows)
        buf = np.fromfile(path, dtype=np.uint8)
    for label, b in ((f"parse {rows} Criteo rows", buf),
                     (f"parse {rows} rows, 40 malformed", with_bad_lines(buf, 40))):
        cmps.append(harness.compare(
            {"ref": lambda i, b=b: parse_all(ref["criteo_parse"], b),
             "split": lambda i, b=b: parse_all(_criteo_parse, b)},
            baseline="ref", check=same_parse, rounds=rounds, label=label))
    return cmps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", default="main", help="git revision of the code to compare with")
    ap.add_argument("--quick", action="store_true", help="5e5 accesses, 100k rows")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--out", default=OUT, help=f"results JSON (default {OUT})")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    n, rows = (500_000, 100_000) if args.quick else (2_000_000, 300_000)
    with tempfile.TemporaryDirectory(prefix="dlrmprof-ref-") as tmp:
        cmps = measure(load_at(args.ref, Path(tmp)), n, rows, args.rounds)
    summary = {}
    for c in cmps:
        r = c.ratio("split", "ref")
        summary[c.label] = round(r.median, 3)
        print(f"{c.label}: split / ref time {r.median:.3f} [{r.q25:.3f}-{r.q75:.3f}], "
              f"{c.used} of {c.rounds} rounds, others {c.other_cores_mean() or 0:.2f} cores")
    if not args.no_write:
        doc = harness.results_doc(
            SCHEMA, source="measured (perf_counter, interleaved rounds, results checked "
            "equal first)", comparisons=cmps, ref=args.ref,
            summary={f"split / ref time, {k}": v for k, v in summary.items()})
        print(f"wrote {harness.write_results(args.out, doc)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
