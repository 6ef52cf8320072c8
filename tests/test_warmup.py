"""The compile warm-up helper of a cold gen-trace (tracegen/warmup.py): its record of
specializations, the helper process and how the command stops it."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from numba.core.registry import CPUDispatcher

from dlrmprof.tracegen import warmup

ROOT = Path(__file__).resolve().parents[1]

_SIGNATURES_OF_A_RUN = r"""
import contextlib, io, json, sys, tempfile
from numba.core.registry import CPUDispatcher
from dlrmprof.cli import cli
with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
    cli.main(["gen-trace", "--from", "kaggle", "--out", tmp + "/t.npz"], standalone_mode=False)
out = {}
for mod in [m for m in sys.modules if m.startswith("dlrmprof.tracegen")]:
    for d in vars(sys.modules[mod]).values():
        if isinstance(d, CPUDispatcher) and d.py_func.__module__ == mod and d.signatures:
            out[f"{mod}.{d.py_func.__name__}"] = [str(s) for s in d.signatures]
print(json.dumps(out))
"""


def _env(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), **extra)


def test_the_record_parses_back_to_its_dispatchers_signatures():
    doc = warmup.load_record()
    assert doc["kernels"] and {k["phase"] for k in doc["kernels"]} == {"bundled", "long"}
    for k in doc["kernels"]:
        d = warmup.dispatcher(k["function"])
        assert isinstance(d, CPUDispatcher) and d.py_func.__name__ == k["function"].split(".")[-1]
        assert str(warmup.parse_signature(k["signature"])) == k["signature"]


def test_the_record_holds_what_a_gen_trace_on_the_bundled_sample_compiles(tmp_path):
    """A stale record only costs the overlap, but it should not go stale unnoticed: the
    specializations one gen-trace on the bundled sample uses are the record's bundled ones."""
    import json

    res = subprocess.run([sys.executable, "-c", _SIGNATURES_OF_A_RUN], env=_env(),
                         capture_output=True, text=True, timeout=600, check=True)
    used = {(f, s) for f, sigs in json.loads(res.stdout.splitlines()[-1]).items()
            for s in sigs}
    bundled = [(k["function"], str(warmup.parse_signature(k["signature"])), k["compile_s"])
               for k in warmup.load_record()["kernels"] if k["phase"] == "bundled"]
    # a warm run loads its kernels whole: the callees (compiled inside them, time 0 in the
    # record) show no signatures of their own
    compiled_alone = {(f, s) for f, s, t in bundled if t > 0}
    hint = "run `python -m dlrmprof.tracegen.warmup --record`"
    assert compiled_alone <= used, (hint, sorted(compiled_alone - used))
    assert used <= {(f, s) for f, s, _ in bundled}, (hint, sorted(used - compiled_alone))


def test_the_split_gives_the_command_the_costliest_and_the_helper_the_rest():
    doc = warmup.load_record()
    spec = {(k["function"], k["signature"]): k["compile_s"] for k in doc["kernels"]
            if k["phase"] == "bundled" and k["compile_s"] > 0}
    mine, helper = warmup.split(doc, long=False)
    assert mine and helper and set(mine) | set(helper) == set(spec)
    assert not set(mine) & set(helper)
    assert sum(spec[p] for p in mine) >= warmup.SHARE * sum(spec.values())
    assert min(spec[p] for p in mine) >= max(spec[p] for p in helper)
    assert helper == [p for p in spec if p in set(helper)]      # in the command's order
    mine, helper = warmup.split(doc, long=True)
    times = [k["compile_s"] for k in doc["kernels"] if k["phase"] == "long" and k["compile_s"]]
    assert mine == [] and len(helper) == len(times)
    assert helper[0][0].endswith(".budgets._budget_core")       # the costliest first


def test_the_helper_fills_a_cold_cache(tmp_path):
    """`python -m dlrmprof.tracegen.warmup --limit N` compiles the first N specializations of
    its order into numba's cache (NUMBA_CACHE_DIR here): their index files appear."""
    cache = tmp_path / "cache"
    check = ("from dlrmprof.tracegen import warmup; d = warmup.load_record(); "
             "print(warmup.cache_is_cold(d), *[warmup._index_path(warmup.dispatcher(f)).name "
             "for f, _ in warmup.split(d, long=False)[1][:2]])")
    before = subprocess.run([sys.executable, "-c", check], env=_env(NUMBA_CACHE_DIR=str(cache)),
                            capture_output=True, text=True, check=True).stdout.split()
    assert before[0] == "True"
    res = subprocess.run([sys.executable, "-m", "dlrmprof.tracegen.warmup", "--short",
                          "--limit", "2"], env=_env(NUMBA_CACHE_DIR=str(cache)), timeout=600)
    assert res.returncode == 0
    written = {p.name for p in cache.rglob("*.nbi")}
    assert set(before[1:]) <= written
    assert not [p for p in cache.rglob("*") if ".tmp." in p.name]


@pytest.mark.parametrize("fork", [False, True])
@pytest.mark.parametrize("fail", [False, True])
def test_the_command_stops_the_helper_however_it_ends(monkeypatch, fail, fork):
    """A new interpreter or a fork of the command (where no threads but the import's run):
    stopped (SIGTERM, even inside its start or a compile) or finished, and reaped."""
    monkeypatch.setattr(warmup, "_worth_starting", lambda long: warmup.load_record())
    procs = []
    with pytest.raises(KeyboardInterrupt) if fail else _nothing():
        with warmup.compiling_ahead(long=False, fork=fork) as proc:
            procs.append(proc)
            assert proc is not None and proc.pid > 0
            if fail:
                raise KeyboardInterrupt
    code = procs[0].returncode
    # a new interpreter is still importing when the body ends at once; a fork of this
    # process, whose kernels are compiled, may have finished
    assert code == -signal.SIGTERM or (fork and code == 0), code
    with pytest.raises(ChildProcessError):
        os.waitpid(procs[0].pid, os.WNOHANG)            # reaped: no zombie left
    with warmup.compiling_ahead(enabled=False) as proc:
        assert proc is None


@pytest.mark.parametrize("fork", [False, True])
def test_a_helper_that_cannot_start_leaves_the_command_alone(monkeypatch, fork):
    """The helper only saves time: a fork or spawn that fails (EAGAIN, ENOMEM) is no error."""
    def refuse(*a, **k):
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(warmup, "_worth_starting", lambda long: warmup.load_record())
    monkeypatch.setattr(os, "fork", refuse)
    monkeypatch.setattr(warmup.subprocess, "Popen", refuse)
    ran = []
    with warmup.compiling_ahead(long=False, fork=fork) as proc:
        ran.append(proc)
    assert ran == [None]


def test_no_helper_when_turned_off_or_warm(monkeypatch):
    monkeypatch.setenv(warmup.ENV, "0")
    assert warmup._worth_starting() is None
    monkeypatch.setenv(warmup.ENV, "1")
    monkeypatch.setattr(warmup, "cache_is_cold", lambda doc, long: False)
    assert warmup._worth_starting() is None


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
