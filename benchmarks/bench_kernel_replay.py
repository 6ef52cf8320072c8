"""Per-kernel CPU of one gen-trace run, each call replayed on another commit's code beside it.

    python benchmarks/bench_kernel_replay.py --input FILE [--previous main] [--rounds 1]
        [--out benchmarks/results/kernel_replay.json]

Runs `dlrmprof gen-trace --from kaggle --input FILE --json` in this process.  Every call of
the per-access passes below also runs the `--previous` commit's code of the same file (its
source from `git show`, compiled here) on the same arguments, the two interleaved call by
call (which goes first alternating), each timed with time.process_time; their results are
compared call by call and the benchmark stops at the first difference (so the figures are
measured on runs that give the same records):

  naive_head     naive.naive_figures of the naive baseline's whole stream (its figures on
                 the first POLICY_PREFIX ids; generate._naive_fidelity)
  naive_other    naive.naive_figures of the selection's naive candidates
  reuse          reuse.ReuseState._run (each state shadowed by one of the previous code)
  fifo, lfu, setassoc   policies._fifo / _lfu / _setassoc on each policies._Stream (the
                 previous code's built beside it, its construction timed as "stream")
  kept           onepass._Kept.add, the capture's copy of the rows (compared: kept or not)

A run on the bundled sample then one on FILE's first WARM_ROWS rows compile both sides'
kernels first, so the timed rounds on FILE compile none.  Other processes' CPU use (profile.noise.OtherCpu) and the load average are
recorded with each round; the figures are CPU seconds summed over each round's calls.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import tempfile
import time
import types
from collections import defaultdict
from pathlib import Path

import numpy as np

from dlrmprof.profile import harness
from dlrmprof.profile.noise import OtherCpu
from dlrmprof.tracegen import generate, naive, onepass, policies, reuse
from dlrmprof.tracegen.fidelity import POLICY_PREFIX
from dlrmprof.tracegen.readers import BUNDLED_SAMPLE

# history: 1: first version
SCHEMA = "dlrmprof.bench.kernel_replay/1"
ROOT = Path(__file__).resolve().parent.parent
FILES = ("naive", "reuse", "policies", "onepass")
WARM_ROWS = 80_000      # the warm-up's rows of the input: streams past 2^16 (the long paths)


def previous_modules(commit: str) -> dict:
    """{name: module} of `commit`'s tracegen files in FILES, compiled here (uncached)."""
    out = {}
    for name in FILES:
        src = subprocess.run(["git", "-C", str(ROOT), "show",
                              f"{commit}:dlrmprof/tracegen/{name}.py"],
                             check=True, capture_output=True, text=True).stdout
        mod = types.ModuleType(f"previous_{name}")
        sys.modules[mod.__name__] = mod        # dataclasses look their module up
        exec(compile(src.replace("cache=True", "cache=False"), f"{commit}:{name}.py", "exec"),
             mod.__dict__)
        out[name] = mod
    return out


def same(a, b, what: str) -> None:
    """a == b, arrays element by element, dataclasses field by field."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not np.array_equal(np.asarray(a), np.asarray(b)):
            raise AssertionError(f"{what}: the previous code gave another result")
    elif isinstance(a, (tuple, list)):
        if len(a) != len(b):
            raise AssertionError(f"{what}: the previous code gave another result")
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{what}[{i}]")
    elif hasattr(a, "__dataclass_fields__"):
        for k in a.__dataclass_fields__:
            same(getattr(a, k), getattr(b, k), f"{what}.{k}")
    elif a != b:
        raise AssertionError(f"{what}: the previous code gave {a!r}, ours {b!r}")


class Replay:
    """The wrappers: each patched call runs both sides, times them, compares them."""

    def __init__(self, prev: dict):
        self.prev = prev
        self.times = defaultdict(lambda: [0.0, 0.0, 0])      # name: previous s, ours s, calls
        self.flip = False

    def both(self, name: str, previous, ours):
        self.flip = not self.flip
        order = ((0, previous), (1, ours)) if self.flip else ((1, ours), (0, previous))
        out = [None, None]
        for side, fn in order:
            t0 = time.process_time()
            out[side] = fn()
            self.times[name][side] += time.process_time() - t0
        self.times[name][2] += 1
        return out

    def install(self, stack: contextlib.ExitStack) -> None:
        patch = _Patcher(stack)
        prev_nf, ours_nf = self.prev["naive"].naive_figures, naive.naive_figures

        def naive_figures(*a, **k):
            name = "naive_head" if k.get("head", 0) >= POLICY_PREFIX else "naive_other"
            p, o = self.both(name, lambda: prev_nf(*a, **k), lambda: ours_nf(*a, **k))
            same(p, o, name)
            return o

        patch(naive, "naive_figures", naive_figures)
        patch(generate, "naive_figures", naive_figures)
        self._reuse(patch)
        self._policies(patch)
        self._kept(patch)

    def _reuse(self, patch) -> None:
        prev_state, init, run = self.prev["reuse"].ReuseState, reuse.ReuseState.__init__, \
            reuse.ReuseState._run

        def state_init(st, id_bound=1024):
            init(st, id_bound)
            st.previous = prev_state(id_bound)

        def state_run(st, ids, out, hist):
            o2 = out.copy() if out.size else out
            h2 = hist.copy() if hist.size else hist
            self.both("reuse", lambda: st.previous._run(ids, o2, h2),
                      lambda: run(st, ids, out, hist))
            same((o2, h2, st.previous.d), (out, hist, st.d), "reuse")

        patch(reuse.ReuseState, "__init__", state_init)
        patch(reuse.ReuseState, "_run", state_run)

    def _policies(self, patch) -> None:
        prev = self.prev["policies"]
        init = policies._Stream.__init__

        def stream_init(st, ids, max_accesses=None):
            made = self.both("stream", lambda: prev._Stream(ids, max_accesses),
                             lambda: init(st, ids, max_accesses))
            st.previous = made[0]

        patch(policies._Stream, "__init__", stream_init)
        for name in ("_fifo", "_lfu", "_setassoc"):
            def run(st, *rest, _p=getattr(prev, name), _o=getattr(policies, name), _n=name):
                p, o = self.both(_n[1:], lambda: _p(st.previous, *rest), lambda: _o(st, *rest))
                same(p, o, _n[1:])
                return o

            patch(policies, name, run)

    def _kept(self, patch) -> None:
        prev_kept, init, add = self.prev["onepass"]._Kept, onepass._Kept.__init__, \
            onepass._Kept.add

        def kept_init(k, tables, budget):
            init(k, tables, budget)
            k.previous = prev_kept(tables, budget)

        def kept_add(k, sp):
            self.both("kept", lambda: k.previous.add(sp), lambda: add(k, sp))
            same(k.previous.ok, k.ok, "kept")

        patch(onepass._Kept, "__init__", kept_init)
        patch(onepass._Kept, "add", kept_add)


class _Patcher:
    def __init__(self, stack: contextlib.ExitStack):
        self.stack = stack

    def __call__(self, owner, name: str, value) -> None:
        old = getattr(owner, name)
        setattr(owner, name, value)
        self.stack.callback(setattr, owner, name, old)


def gen_trace(path: Path, out: Path, rows: int | None) -> None:
    from dlrmprof.cli import cli

    more = [] if rows is None else ["--input-rows", str(rows)]
    with contextlib.redirect_stdout(io.StringIO()):
        cli.main(args=["gen-trace", "--from", "kaggle", "--input", str(path), "--out", str(out),
                       "--json", *more], standalone_mode=False)


def replay_round(prev: dict, path: Path, out: Path, rows: int | None = None) -> dict:
    rep = Replay(prev)
    with contextlib.ExitStack() as stack, OtherCpu() as other:
        rep.install(stack)
        gen_trace(path, out, rows)
    kernels = {k: {"calls": v[2], "previous_s": round(v[0], 4), "ours_s": round(v[1], 4),
                   "ratio": round(v[0] / v[1], 3) if v[1] > 0 else None}
               for k, v in sorted(rep.times.items())}
    p = sum(v[0] for v in rep.times.values())
    o = sum(v[1] for v in rep.times.values())
    return {"kernels": kernels, "previous_s": round(p, 3), "ours_s": round(o, 3),
            "saved_s": round(p - o, 3), "other_cpus": round(other.cpus, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True, help="a Criteo Kaggle-format file")
    ap.add_argument("--previous", default="main", help="the commit to replay against")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", default=harness.results_path(__file__, "kernel_replay.json"))
    args = ap.parse_args()
    prev = previous_modules(args.previous)
    with tempfile.TemporaryDirectory() as tmp:
        for rows in (None, WARM_ROWS):      # compile both sides (short and long streams)
            replay_round(prev, BUNDLED_SAMPLE if rows is None else Path(args.input),
                         Path(tmp) / "warm.npz", rows)
        rounds = []
        for r in range(args.rounds):
            rounds.append(replay_round(prev, Path(args.input), Path(tmp) / "trace.npz"))
            print(f"round {r + 1}: previous {rounds[-1]['previous_s']:.3f} s, ours "
                  f"{rounds[-1]['ours_s']:.3f} s (CPU, summed over the replayed calls; other "
                  f"processes {rounds[-1]['other_cpus']:.2f} CPUs)")
    last = rounds[-1]
    for k, v in last["kernels"].items():
        print(f"  {k:12s} {v['calls']:6d} calls  previous {v['previous_s']:7.3f} s  ours "
              f"{v['ours_s']:7.3f} s  {v['ratio']}x")
    doc = harness.results_doc(
        SCHEMA, source="measured (time.process_time per call, the two sides interleaved call "
        "by call in one gen-trace run, same results checked call by call)",
        input=Path(args.input).name, previous=args.previous, rounds=rounds,
        summary={"previous_s": [r["previous_s"] for r in rounds],
                 "ours_s": [r["ours_s"] for r in rounds],
                 "saved_s": [r["saved_s"] for r in rounds]})
    print(f"wrote {harness.write_results(args.out, doc)}")


if __name__ == "__main__":
    main()
