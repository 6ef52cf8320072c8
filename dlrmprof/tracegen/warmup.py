"""gen-trace's numba kernels compiled on both CPUs when numba's cache is cold.

A cold gen-trace spends most of its time in numba compiles, one after another in the order
the pipeline first calls its kernels (docs/performance.md).  On a host with a second CPU the
work is split: on a short stream (the bundled sample) the command first compiles the
costliest specializations itself (up to SHARE of the recorded compile time) while a helper
process (a fork of the command where that is safe, else a new interpreter) compiles the
others into numba's on-disk cache in the pipeline's order; the pipeline
then loads them instead of compiling (numba looks in its cache at a specialization's first
call; an entry read while it is being written is a miss, and the command compiles it
itself).  On a long input the command compiles nothing ahead (its reading and capture come
first) and the helper compiles every specialization, the costliest first.

The specializations are recorded, in the order a gen-trace first compiles them, with their
compile times, in `warmup_kernels.json` (`python -m dlrmprof.tracegen.warmup --record`; a
test checks it against what a gen-trace on the bundled sample uses).  A stale record costs
at most the compiles it names.  `DLRMPROF_COMPILE_AHEAD=0` turns this off.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

RECORD = Path(__file__).with_name("warmup_kernels.json")
SCHEMA = "dlrmprof.tracegen.warmup/1"
ENV = "DLRMPROF_COMPILE_AHEAD"


def load_record(path: Path = RECORD) -> dict:
    """{"numba": version, "kernels": [{"function", "signature", "compile_s", "phase"}, ...]}:
    one specialization each, in first compile order; compile_s: the CPU seconds of its
    compile (0 for a callee: its time is its caller's); phase "bundled" (a gen-trace on the
    bundled sample) or "long" (one on 80,000 rows, streams of 2^15 accesses and more), each
    recorded from a cold cache."""
    doc = json.loads(path.read_text())
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema {doc.get('schema')!r}, expected {SCHEMA!r}")
    return doc


def dispatcher(name: str):
    """The numba dispatcher at dotted `name` (module path, then attribute)."""
    mod, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(mod), attr)


def parse_signature(text: str) -> tuple:
    """A dispatcher signature as `str(sig)` prints it (a tuple of numba types' reprs)."""
    from numba.core import types

    class Literal:                      # `Literal[int](0)`: a constant argument's type
        def __getitem__(self, _kind):
            return types.literal

    names = {k: v for k, v in vars(types).items() if not k.startswith("_")}
    names.update(bool=types.boolean, none=types.none, Literal=Literal(), int=int, str=str,
                 float=float)
    sig = eval(text, {"__builtins__": {}}, names)       # noqa: S307 -- the package's own record
    return sig if isinstance(sig, tuple) else (sig,)


SHARE = 0.45     # of a short run's compile time that the command compiles ahead itself


def _specs(doc: dict, phase: str) -> list[dict]:
    """The phase's specializations compiled from Python (a callee's, 0 s, comes with its
    caller's), in first compile order."""
    return [k for k in doc["kernels"] if k["phase"] == phase and k["compile_s"] > 0]


def split(doc: dict, long: bool) -> tuple[list, list]:
    """(the command's, the helper's) specializations as (function, signature) pairs: on a
    short run the command takes the costliest of the bundled run's, up to SHARE of their
    time, and the helper the others in the command's order; on a long run the helper takes
    every one of a long run's, the costliest first."""
    if long:
        order = sorted(_specs(doc, "long"), key=lambda k: -k["compile_s"])
        return [], [(k["function"], k["signature"]) for k in order]
    bundled = _specs(doc, "bundled")
    total = sum(k["compile_s"] for k in bundled)
    mine, acc = set(), 0.0
    for k in sorted(bundled, key=lambda k: -k["compile_s"]):
        if acc >= SHARE * total:
            break
        mine.add((k["function"], k["signature"]))
        acc += k["compile_s"]
    pairs = [(k["function"], k["signature"]) for k in bundled]
    return [p for p in pairs if p in mine], [p for p in pairs if p not in mine]


def compile_specs(pairs: list) -> None:
    """Compile each (function, signature) into numba's cache (a load where it is there); one
    that fails is left to the pipeline, which compiles what it calls."""
    for name, sig in pairs:
        try:
            dispatcher(name).compile(parse_signature(sig))
        except Exception:  # noqa: BLE001 -- ahead of time only; the call site compiles it
            continue


def _index_path(disp) -> Path | None:
    cache = getattr(disp, "_cache", None)
    cache_file = getattr(cache, "_cache_file", None)
    index = getattr(cache_file, "_index_path", None)
    return Path(index) if index else None


def cache_is_cold(doc: dict, long: bool = False) -> bool:
    """Whether some kernel the run compiles (the "long" record's or the "bundled" one's) has
    no cache index yet.  False where the dispatchers do not cache or numba's layout is not
    the one read here: nothing to gain, or nothing known."""
    for k in _specs(doc, "long" if long else "bundled"):
        try:
            index = _index_path(dispatcher(k["function"]))
        except (ImportError, AttributeError):
            return False
        if index is None:
            return False
        if not index.exists():
            return True
    return False


def _worth_starting(long: bool = False) -> dict | None:
    """The record, where a helper can shorten this run: not turned off, a second CPU, numba
    JIT on and its cache cold.  (A record made with another numba version still serves: a
    signature this numba does not parse is skipped.)"""
    if os.environ.get(ENV, "1") == "0" or os.environ.get("NUMBA_DISABLE_JIT", "0") != "0":
        return None
    try:
        if len(os.sched_getaffinity(0)) < 2:
            return None
    except AttributeError:                      # not Linux
        if (os.cpu_count() or 1) < 2:
            return None
    try:
        doc = load_record()
    except (OSError, ValueError):
        return None
    return doc if cache_is_cold(doc, long) else None


class _Forked:
    """The helper as a fork of the command (its imports done: no start-up of its own), with
    the part of `subprocess.Popen` the command uses: poll, terminate, wait, returncode."""

    def __init__(self, long: bool):
        self.returncode = None
        self.pid = os.fork()
        if self.pid == 0:                       # the helper: silent, never back in the command
            try:
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                helper_main(long)
            finally:
                os._exit(0)

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def terminate(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def wait(self):
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode


def _start_helper(long: bool, fork: bool):
    if fork:
        sys.stdout.flush()
        sys.stderr.flush()
        return _Forked(long)
    return subprocess.Popen([sys.executable, "-m", "dlrmprof.tracegen.warmup",
                             "--long" if long else "--short"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, close_fds=True)


@contextlib.contextmanager
def compiling_ahead(enabled: bool = True, long: bool = True, fork: bool = False):
    """Run the `with` body after `split`'s compiles (when `enabled` and `_worth_starting`):
    the helper process started first, then the command's own share compiled here.  `long`:
    the input is long (streams of 2^15 accesses or more); `fork`: the helper is a fork of
    this process (where that is safe: no threads but the import's, see
    commands.trace.rank_start_method), else a new interpreter; where neither can start (out
    of processes or memory), the body runs alone.  The helper is stopped at the end,
    whatever ends the body.  Yields the helper process or None."""
    proc = None
    doc = _worth_starting(long) if enabled else None
    if doc is not None:
        try:
            proc = _start_helper(long, fork)
        except OSError:             # no process to spare: the command compiles alone
            proc = None
    try:
        if doc is not None:
            compile_specs(split(doc, long)[0])
        yield proc
    finally:
        if proc is not None:
            proc.terminate()        # SIGTERM's default action: it stops even inside a compile
            proc.wait()


def _saving_without_sigterm() -> None:
    """In the helper: SIGTERM kills at once (its default action), except while numba writes a
    cache file, so a stop never leaves a half-written temporary file in the cache."""
    from numba.core import caching

    save = caching.IndexDataCacheFile.save

    def guarded(self, key, data):
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            save(self, key, data)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    caching.IndexDataCacheFile.save = guarded


def helper_main(long: bool, limit: int | None = None) -> int:
    """The helper process: compile `split`'s helper share (its first `limit`)."""
    from dlrmprof.procutil import die_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)        # Ctrl-C is the command's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not die_with_parent():
        return 0
    _saving_without_sigterm()
    compile_specs(split(load_record(), long)[1][:limit])
    return 0


def _record_child(which: str) -> None:
    """`record`'s process (numba's cache fresh): a gen-trace on the bundled sample ("bundled")
    or on 80,000 rows of it repeated ("long": streams of 2^15 accesses and more); prints
    every tracegen specialization it compiled, in the order its compile started (a caller
    before the callees it compiles), with the CPU seconds of its compile (a callee's is its
    caller's)."""
    import tempfile
    import time

    from numba.core import event

    from dlrmprof.cli import cli
    from dlrmprof.tracegen.readers import BUNDLED_SAMPLE

    seen: dict[tuple, dict] = {}
    phase = ["bundled"]
    open_: list[float] = []

    def key(ev) -> tuple:
        f = ev.data["dispatcher"].py_func
        return f"{f.__module__}.{f.__name__}", str(tuple(ev.data["args"]))

    class Listener(event.Listener):
        def on_start(self, ev):
            open_.append(time.process_time())
            name, sig = key(ev)
            if name.startswith("dlrmprof.tracegen.") and (name, sig) not in seen:
                seen[name, sig] = {"function": name, "signature": sig, "phase": phase[0],
                                   "compile_s": 0.0}

        def on_end(self, ev):
            dt = time.process_time() - open_.pop()
            k = seen.get(key(ev))
            if k is not None and not open_:     # a callee's time is its caller's
                k["compile_s"] = round(k["compile_s"] + dt, 3)

    event.register("numba:compile", Listener())
    phase[0] = which
    with tempfile.TemporaryDirectory() as tmp:
        args = []
        if which == "long":
            big = Path(tmp) / "train.txt"
            big.write_bytes(BUNDLED_SAMPLE.read_bytes() * 40)
            args = ["--input", str(big)]
        cli.main(["gen-trace", "--from", "kaggle", *args, "--out", str(Path(tmp) / "t.npz")],
                 standalone_mode=False)
    print(json.dumps(list(seen.values())))


def record(out: Path = RECORD) -> None:
    """Write the record: `_record_child` for each phase, each in a process of its own with an
    empty numba cache (numba reports only the compiles it does)."""
    import tempfile

    import numba

    kernels = []
    for which in ("bundled", "long"):
        with tempfile.TemporaryDirectory() as cache:
            res = subprocess.run([sys.executable, "-m", "dlrmprof.tracegen.warmup",
                                  "--record-child", which],
                                 env=dict(os.environ, NUMBA_CACHE_DIR=cache, **{ENV: "0"}),
                                 check=True, capture_output=True, text=True)
        kernels += json.loads(res.stdout.strip().splitlines()[-1])
    doc = {"schema": SCHEMA, "numba": numba.__version__,
           "made_by": "python -m dlrmprof.tracegen.warmup --record", "kernels": kernels}
    from dlrmprof.fsutil import atomic_write_text

    atomic_write_text(out, json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--record"]:
        record(Path(sys.argv[2]) if len(sys.argv) > 2 else RECORD)
    elif sys.argv[1:2] == ["--record-child"]:
        _record_child(sys.argv[2])
    else:
        args = sys.argv[1:]
        sys.exit(helper_main("--long" in args,
                             int(args[args.index("--limit") + 1]) if "--limit" in args else None))
