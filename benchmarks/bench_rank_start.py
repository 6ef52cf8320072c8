"""Starting the ranks of `gen-trace --nproc 2`: torchrun's machinery against socket pairs.

    python benchmarks/bench_rank_start.py                 # 7 interleaved rounds

Each call is a fresh interpreter that starts two ranks, runs one `all_gather` of the ranks'
numbers through the exchange `capture_rank` uses, checks it and exits: the serial cost a
`gen-trace --nproc 2` run pays before and after its ranks work.
- `torch`: the engine gen-trace's --nproc used before (`session.launch`: torch's import,
  the elastic agent, a c10d rendezvous, the ranks forked, a gloo group: `TorchExchange`);
  the torchrun form still runs on torch.distributed.
- `pipes`: `session.exchange.run_local` (this process is rank 0, rank 1 forked, a socket
  pair: `PipeExchange`), what --nproc runs now.
Interleaved rounds of the benchmark harness (`profile/harness.py`); each interpreter's output
is checked before any timing.  Results: benchmarks/results/rank_start.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlrmprof.profile import harness  # noqa: E402

SCHEMA = "dlrmprof.bench.rank_start/1"


def _gather(ex) -> list:
    return ex.all_gather(ex.rank)


def _torch_rank() -> list:
    from dlrmprof.session.exchange import TorchExchange

    with TorchExchange() as ex:
        return _gather(ex)


def child(engine: str) -> None:
    """One interpreter's work: two ranks, one all_gather; rank 0's result on stdout."""
    if engine == "torch":
        from dlrmprof.session.launch import DistOptions, launch

        got = launch(None, DistOptions(nproc=2, backend="gloo"), entry=_torch_rank, args=(),
                     fingerprint=False, start_method="fork")[0]
    else:
        from dlrmprof.session.exchange import run_local

        got = run_local(2, _gather)
    print(json.dumps(got))


def _run(engine: str) -> list:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, __file__, "--child", engine], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def _own_cpu() -> float:
    """CPU seconds of this process and of the interpreters it waited for."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--child", choices=["torch", "pipes"], help=argparse.SUPPRESS)
    ap.add_argument("--out", default=harness.results_path(__file__, "rank_start.json"))
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    cmp = harness.compare({"torch": lambda i: _run("torch"), "pipes": lambda i: _run("pipes")},
                          baseline="torch",
                          check=lambda out: out["torch"] == out["pipes"] == [0, 1],
                          rounds=args.rounds, warmup=1, threads=2, own_time=_own_cpu,
                          label="2 ranks started, one all_gather, ended (fresh interpreter)")
    doc = harness.results_doc(
        SCHEMA, comparisons=[cmp],
        source="measured: wall time of each interpreter (perf_counter in the harness), "
               "interleaved rounds, its result checked first",
        summary={"pipes_speedup_median": cmp.speedup("pipes").median})
    harness.write_results(args.out, doc)
    s = cmp.speedup("pipes")
    print(f"pipes against torch: {s.median:.2f}x [{s.q25:.2f}-{s.q75:.2f}]; wrote {args.out}")


if __name__ == "__main__":
    main()
