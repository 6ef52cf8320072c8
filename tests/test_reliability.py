"""Issue 18: nothing replaced, nothing left behind, no traceback on bad input, honest ceilings.

One test (or a few) per numbered item of the issue; the property-based fuzz suite over every
reader is tests/test_fuzz_readers.py.
"""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dlrmprof import fsutil, memcheck
from dlrmprof.cli import _Group, cli, interrupt_signal
from dlrmprof.errors import UserError
from dlrmprof.tracegen.readers import BUNDLED_SAMPLE, read_criteo, read_index, read_tbe


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(res, *needles, code=2):
    assert res.exit_code == code, (res.exit_code, res.output, res.exception)
    err = res.output.strip()
    assert err.startswith("dlrmprof: error: ") and "\n" not in err, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)
    return err


@pytest.fixture(scope="module")
def ids_npy(tmp_path_factory):
    p = tmp_path_factory.mktemp("ids") / "ids.npy"
    np.save(p, np.random.default_rng(0).integers(0, 500, 3000))
    return p


def gen(ids, out, *extra):
    return run("gen-trace", "--from", "index", "--input", ids, "--out", out, "--hot", 16,
               "--windows", 4, *extra)


# ------------------------------------------------------------------ 1. --out replaces nothing
def test_fifo_is_not_replaced(tmp_path, ids_npy):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    one_line_error(gen(ids_npy, fifo), "pipe.npz", "FIFO", "not replacing")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.npz"]


def test_device_node_and_directory_are_refused():
    with pytest.raises(UserError, match="character device"):
        fsutil.check_target("/dev/null")
    with pytest.raises(UserError, match="directory"):
        fsutil.check_target("/")


def test_read_only_file_is_kept(tmp_path, ids_npy):
    ro = tmp_path / "ro.npz"
    ro.write_bytes(b"keep me")
    ro.chmod(0o444)
    one_line_error(gen(ids_npy, ro), "ro.npz", "read-only", "0444")
    assert ro.read_bytes() == b"keep me" and stat.S_IMODE(ro.stat().st_mode) == 0o444


def test_existing_file_keeps_its_mode_and_symlink_is_followed(tmp_path, ids_npy):
    target = tmp_path / "t.npz"
    target.write_bytes(b"old")
    target.chmod(0o640)
    assert gen(ids_npy, target).exit_code == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and target.read_bytes()[:2] == b"PK"
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    assert gen(ids_npy, link, "--seed", 3).exit_code == 0
    assert link.is_symlink() and os.readlink(link) == str(target)


def test_stdout_dash_is_refused_for_binary_outputs(tmp_path, ids_npy):
    one_line_error(gen(ids_npy, "-"), "stdout")
    assert list(tmp_path.iterdir()) == []


def test_report_out_to_fifo_refused_before_the_run(tmp_path, tiny_trace):
    fifo = tmp_path / "r.json"
    os.mkfifo(fifo)
    one_line_error(run("run", "--trace", tiny_trace, "--config", "tiny", "--no-roofline",
                       "--iters", 2, "--warmup", 0, "--out", fifo), "FIFO")


# ------------------------------------------------------------------ 2. memory check
def test_yaml_table_beyond_memory(tmp_path):
    cfg = tmp_path / "big.yaml"
    cfg.write_text("dense_features: 13\nembedding_dim: 16\nbottom_mlp: [13, 16]\n"
                   "top_mlp: [8, 1]\ntables: [1000, 1000000000000, 50]\n")
    err = one_line_error(run("run", "--config", cfg, "--data", "random", "--iters", 2,
                             "--out", tmp_path / "r.json"),
                         "table C2", "64000000000000 bytes", "--max-rows")
    assert not (tmp_path / "r.json").exists()
    # the suggested cap fits (and runs past the check)
    cap = int(err.split("--max-rows ")[1].split()[0])
    assert 1 <= cap < 10**12


def test_trace_header_rows_beyond_memory(tmp_path):
    from dlrmprof.tracegen import build_profile, synthesize_trace

    rng = np.random.default_rng(0)
    profs = [build_profile(f"C{t + 1}", rng.integers(0, 50, 200), np.ones(200, np.int64),
                           rows=50) for t in range(4)]
    trace = synthesize_trace(profs, source={"kind": "test"}, num_samples=50,
                             table_rows=10**12, compute_fidelity=False)
    p = tmp_path / "huge.npz"
    trace.save(p)
    one_line_error(run("run", "--trace", p, "--config", "tiny", "--no-roofline", "--iters", 2,
                       "--out", tmp_path / "r.json"), "table C1", "bytes", "--max-rows")


def test_gen_trace_table_rows_and_length_beyond_memory(tmp_path, ids_npy):
    one_line_error(gen(ids_npy, tmp_path / "a.npz", "--table-rows", 2**41),
                   "table ids", "bytes", "--table-rows")
    one_line_error(gen(ids_npy, tmp_path / "b.npz", "--length", 10**12), "bytes", "--length")
    assert list(tmp_path.iterdir()) == []


def test_npy_header_promising_more_than_the_file_holds(tmp_path):
    import struct

    header = repr({"descr": "<i8", "fortran_order": False, "shape": (10**12,)}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    p = tmp_path / "huge.npy"
    p.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header
                  + np.arange(8, dtype=np.int64).tobytes())
    with pytest.raises(UserError, match="8000000000000 bytes of data.*got 64 bytes"):
        read_index(p)


def test_index_file_beyond_memory_names_input_rows(tmp_path, monkeypatch):
    p = tmp_path / "ids.bin"
    np.arange(1000, dtype="<i8").tofile(p)
    monkeypatch.setattr(memcheck, "available_bytes", lambda device="cpu": 10_000)
    with pytest.raises(UserError, match="ids.bin: reading its indices needs .*--input-rows"):
        read_index(p)
    assert read_index(p, max_rows=100)[0].ids.size == 100


def test_memcheck_units():
    with pytest.raises(UserError, match="table X.*2000 bytes.*--max-rows"):
        memcheck.check_fits([("table X", 2000)], what="t", hint="--max-rows", available=1000)
    memcheck.check_fits([("table X", 700)], what="t", hint="", available=1000)
    assert memcheck.max_rows_that_fit([10, 1000], 1, 100) == 70


# ------------------------------------------------------------------ 3-4. signals, stale files
def _criteo_input(path: Path, copies: int) -> Path:
    data = BUNDLED_SAMPLE.read_bytes()
    with open(path, "wb") as fh:
        for _ in range(copies):
            fh.write(data)
    return path


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_gen_trace_cleans_up(tmp_path, sig, code):
    src = _criteo_input(tmp_path / "train.txt", 40)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "out" / "t.npz"
    env = dict(os.environ, TMPDIR=str(tmpdir))
    proc = subprocess.Popen([sys.executable, "-m", "dlrmprof", "gen-trace", "--from", "kaggle",
                             "--input", str(src), "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # reading has started once the process has spent a few CPU seconds (imports and signal
    # handlers come first); the capture writes no temporary files (memory O(distinct ids))
    deadline = time.time() + 60
    while _cpu_seconds(proc.pid) < 3.0 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    assert list(tmpdir.iterdir()) == []
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.strip().splitlines() == [f"dlrmprof: interrupted ({signal.Signals(sig).name}); "
                                        "partial output and temporary files removed"]
    assert not out.exists() and list(tmpdir.iterdir()) == []
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_while_the_trace_is_written_cleans_up(tmp_path, sig, code):
    """gen-trace writes each table into a temporary file beside --out as it is synthesized
    (tracefile.PackedWriter): a signal while that file exists removes it and leaves an
    existing --out as it was."""
    src = _criteo_input(tmp_path / "train.txt", 40)
    out = tmp_path / "out" / "t.npz"
    out.parent.mkdir()
    out.write_bytes(b"previous trace")
    proc = subprocess.Popen([sys.executable, "-m", "dlrmprof", "gen-trace", "--from", "kaggle",
                             "--input", str(src), "--out", str(out), "--hot", "16"],
                            env=dict(os.environ, TMPDIR=str(tmp_path)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    temp = []
    while not temp and proc.poll() is None and time.time() < deadline:
        temp = [p for p in out.parent.iterdir() if p.name.startswith(".t.npz.dlrmprof-")]
        time.sleep(0.005)
    assert temp and proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.strip().splitlines() == [f"dlrmprof: interrupted ({signal.Signals(sig).name}); "
                                        "partial output and temporary files removed"]
    assert sorted(out.parent.iterdir()) == [out] and out.read_bytes() == b"previous trace"


def test_ctrl_c_to_the_process_group_with_worker_processes(tmp_path):
    """A terminal's Ctrl-C reaches every process of the group: the --jobs workers leave it to
    the parent (no worker traceback), which stops them and cleans up."""
    src = _criteo_input(tmp_path / "train.txt", 40)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "t.npz"
    proc = subprocess.Popen([sys.executable, "-m", "dlrmprof", "gen-trace", "--from", "kaggle",
                             "--input", str(src), "--out", str(out), "--jobs", "2"],
                            env=dict(os.environ, TMPDIR=str(tmpdir)), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import psutil

    deadline = time.time() + 60
    parent = psutil.Process(proc.pid)
    while len(parent.children()) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)       # until the worker processes run
    time.sleep(0.2)
    assert proc.poll() is None and len(parent.children()) >= 2
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["dlrmprof: interrupted (SIGINT); partial output and "
                                        "temporary files removed"]
    assert not out.exists() and list(tmpdir.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp", "train.txt"]


def test_numba_system_error_from_an_interrupt_is_an_interrupt():
    group = _Group()

    @group.command("boom")
    def boom():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as ki:
            raise SystemError("CPUDispatcher(<function f>) returned a result with an "
                              "exception set") from ki

    res = CliRunner().invoke(group, ["boom"])
    assert res.exit_code == 130 and res.output.strip() == (
        "dlrmprof: interrupted (SIGINT); partial output and temporary files removed")
    assert interrupt_signal(SystemError("unrelated")) is None


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temp_files_of_killed_runs_are_removed(tmp_path, ids_npy, monkeypatch):
    dead = _dead_pid()
    out = tmp_path / "t.npz"
    stale = tmp_path / f".t.npz.dlrmprof-{dead}-abc123.npz"
    stale.write_bytes(b"x" * 100)
    live = tmp_path / f".t.npz.dlrmprof-{os.getppid()}-abc123.npz"
    live.write_bytes(b"x")
    other = tmp_path / ".unrelated.npz"
    other.write_bytes(b"x")
    tmpdir = tmp_path / "tmp"
    spill = tmpdir / f"dlrmprof-spill-{dead}-xyz"
    spill.mkdir(parents=True)
    (spill / "0.bin").write_bytes(b"\0" * 64)
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr("tempfile.tempdir", None)
    assert run("gen-trace", "--from", "kaggle", "--input-rows", 50, "--tables", "C1", "--hot", 16,
               "--out", out).exit_code == 0
    assert not stale.exists() and live.exists() and other.exists() and out.exists()
    assert not spill.exists()


# ------------------------------------------------------------------ 5-6. ceilings
ROOFS = {"stream_gbs": 20.0, "stream_read_gbs": 12.0, "random_gbs": 2.0,
         "random_ns_per_line": 30.0, "latency_ns": 100.0, "fp32_gflops": 100.0,
         "bf16_gflops": 300.0}


def _record(host_id, roofs=None, provisional=False, **extra):
    from dlrmprof.profile import host as hostmod

    sw = hostmod.software_versions()
    roofs = roofs or {"1": dict(ROOFS)}
    threads = sorted(int(k) for k in roofs)
    per = {k: {"best": v["stream_gbs"], "median": 1.0, "min": 1.0, "samples_s": [1.0]}
           for k, v in roofs.items()}
    rec = {"version": 1, "host_id": host_id, "threads": threads, "full": False,
           "versions": {k: sw.get(k) for k in ("torch", "numba")},
           "stream": {"copy": per, "triad": per, "read": per, "flagged": 0,
                      "contaminated_kept": 0},
           "random": {"by_threads": {k: {"best": 2.0, "ns_per_line": 30.0, "mlp": 3.0}
                                     for k in roofs}, "latency_ns": 100.0, "flagged": 0,
                      "contaminated_kept": 0},
           "gemm": {"fp32": {k: {"best": v["fp32_gflops"]} for k, v in roofs.items()},
                    "bf16": {k: {"best": v["bf16_gflops"]} for k, v in roofs.items()},
                    "engine": {}, "flagged": 0, "contaminated_kept": 0},
           "cuda": {"available": False, "reason": "test"}, "roofs": roofs,
           "provisional": provisional, "provisional_reasons": ["test load"] if provisional
           else []}
    rec.update(extra)
    return rec


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    from dlrmprof.profile import ceilings

    monkeypatch.setenv("DLRMPROF_CACHE_DIR", str(tmp_path / "cache"))
    probes = []

    def fake_probe(fp, **kw):
        rec = probes.pop(0)
        return rec
    monkeypatch.setattr(ceilings, "probe", fake_probe)
    return probes


def test_damaged_cache_is_ignored_with_a_warning(cache_env):
    from dlrmprof.profile import ceilings

    fp = {"host_id": "h1"}
    bad = _record("h1")
    bad["roofs"]["1"]["fp32_gflops"] = "fast"
    ceilings.save_cached(bad)
    cache_env.append(_record("h1"))
    warned = []
    c, cached = ceilings.load_or_probe(fp, warn=warned.append)
    assert not cached and c["roofs"]["1"]["fp32_gflops"] == 100.0
    assert len(warned) == 1 and "fp32_gflops" in warned[0] and "probing again" in warned[0]
    assert ceilings.load_cached("h1")["roofs"]["1"]["fp32_gflops"] == 100.0
    for damage in ("[1, 2]", '{"version": 1, "host_id": "h1", "roofs": 3}', "\xff"):
        ceilings.cache_path("h1").write_text(damage)
        problems = []
        assert ceilings.load_cached("h1", problems) is None and problems


def test_provisional_probe_is_replaced_by_the_next_quiet_one(cache_env):
    from dlrmprof.profile import ceilings

    fp = {"host_id": "h2"}
    loaded = _record("h2", roofs={"1": dict(ROOFS, fp32_gflops=56.0)}, provisional=True)
    cache_env.append(loaded)
    c, _ = ceilings.load_or_probe(fp)
    assert c["provisional"]
    # next run: probes again; still under load -> best of both kept, still provisional
    cache_env.append(_record("h2", roofs={"1": dict(ROOFS, fp32_gflops=70.0,
                                                     stream_gbs=5.0)}, provisional=True))
    c, cached = ceilings.load_or_probe(fp)
    assert not cached and c["provisional"] and c["probes"] == 2
    assert c["roofs"]["1"]["fp32_gflops"] == 70.0 and c["roofs"]["1"]["stream_gbs"] == 20.0
    # a quiet probe replaces it
    cache_env.append(_record("h2", roofs={"1": dict(ROOFS, fp32_gflops=93.0)}))
    c, cached = ceilings.load_or_probe(fp)
    assert not cached and not c["provisional"] and c["roofs"]["1"]["fp32_gflops"] == 93.0
    c, cached = ceilings.load_or_probe(fp)
    assert cached and not cache_env


def test_provisional_reprobes_are_bounded(cache_env):
    from dlrmprof.profile import ceilings

    ceilings.save_cached(_record("h3", provisional=True, probes=ceilings.MAX_PROVISIONAL_PROBES))
    c, cached = ceilings.load_or_probe({"host_id": "h3"})
    assert cached and c["provisional"]


def test_quality_problems_flag_load_and_falling_roofs():
    from dlrmprof.profile import ceilings

    rec = _record("h", roofs={"1": dict(ROOFS, fp32_gflops=93.0),
                              "2": dict(ROOFS, fp32_gflops=56.0, stream_gbs=30.0)})
    probs = ceilings.quality_problems(rec)
    assert len(probs) == 1 and "fp32_gflops at 2 threads (56.0)" in probs[0]
    rec["gemm"]["contaminated_kept"] = 52
    assert any("52 samples" in p for p in ceilings.quality_problems(rec))
    assert ceilings.quality_problems(_record("h")) == []


def test_run_with_damaged_cache_reprobes_before_timing(tiny_trace, tmp_path, monkeypatch):
    from dlrmprof.dlrm import train
    from dlrmprof.profile import ceilings, host as hostmod

    monkeypatch.setenv("DLRMPROF_CACHE_DIR", str(tmp_path / "cache"))
    fp = hostmod.collect()
    bad = _record(fp["host_id"])
    bad["roofs"]["1"]["stream_gbs"] = {"oops": 1}
    ceilings.save_cached(bad)
    order = []
    monkeypatch.setattr(ceilings, "probe",
                        lambda fp_, **kw: order.append("probe") or _record(fp["host_id"]))
    real_loop = train.run_loop
    monkeypatch.setattr(train, "run_loop",
                        lambda *a, **kw: order.append("loop") or real_loop(*a, **kw))
    out = tmp_path / "r.json"
    res = run("run", "--trace", tiny_trace, "--config", "tiny", "--batch-size", 16, "--iters", 2,
              "--warmup", 0, "--no-cache-study", "--no-render", "--out", out)
    assert res.exit_code == 0, res.output
    assert order == ["probe", "loop"]
    assert "warning: ignoring the ceilings cache" in res.output and "stream_gbs" in res.output
    assert "Traceback" not in res.output and out.exists()
    import re

    pcts = [float(x) for x in re.findall(r"\((\d+(?:\.\d+)?)% of ", res.output)]
    assert pcts and max(pcts) <= 100.0, res.output


# ------------------------------------------------------------------ 7. validation gaps
def _report_dict():
    from dlrmprof.profile.report import Report, op_row

    row = op_row("top_mlp", phase="forward", device="cpu", backend="torch", samples=[1e-3])
    return Report.new({"host_id": "h"}, [row]).to_dict()


def test_report_without_ops_is_refused(tmp_path):
    d = _report_dict()
    del d["ops"]
    a = tmp_path / "a.json"
    a.write_text(json.dumps(d))
    b = tmp_path / "b.json"
    b.write_text(json.dumps(_report_dict()))
    one_line_error(run("compare", a, b), "a.json", "field ops")
    d["ops"] = []
    a.write_text(json.dumps(d))
    one_line_error(run("compare", a, b), "a.json", "field ops", "at least one op row")


def _rewrite_trace(src, dst, change):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    h = json.loads(str(arrays["header"]))
    change(h, arrays)
    arrays["header"] = np.array(json.dumps(h))
    np.savez(dst, **arrays)


def test_trace_without_digest_is_refused(tmp_path, tiny_trace):
    p = tmp_path / "nodigest.npz"
    _rewrite_trace(tiny_trace, p, lambda h, a: h.pop("digest"))
    one_line_error(run("trace-stats", p), "nodigest.npz", "header.digest", "got none")


def test_zero_sample_trace_is_refused(tmp_path, tiny_trace):
    from dlrmprof.tracegen.tracefile import content_digest

    def zero(h, a):
        h["num_samples"] = 0
        a["offsets"] = np.zeros(1, np.int64)
        a["indices"] = np.zeros(0, np.int64)
        h["digest"] = content_digest(h, a["indices"], a["offsets"])
    p = tmp_path / "zero.npz"
    _rewrite_trace(tiny_trace, p, zero)
    out = tmp_path / "o.bin"
    one_line_error(run("export-trace", p, "--to", "oracle-general", "--out", out),
                   "zero.npz", "num_samples")
    assert not out.exists()


def test_trace_of_empty_bags_exports_nothing(tmp_path):
    from dlrmprof.tracegen import build_profile, synthesize_trace

    prof = build_profile("C1", np.zeros(0, np.int64), np.zeros(10, np.int64), rows=5)
    p = tmp_path / "empty.npz"
    synthesize_trace([prof], source={"kind": "test"}, num_samples=10,
                     compute_fidelity=False).save(p)
    out = tmp_path / "o.bin"
    one_line_error(run("export-trace", p, "--to", "oracle-general", "--out", out),
                   "empty.npz", "at least one index")
    assert not out.exists()


def test_bom_does_not_cost_the_first_criteo_row(tmp_path):
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbf" + BUNDLED_SAMPLE.read_bytes())
    r = read_criteo([p], strict=True)
    chunks = list(r)
    ref = read_criteo([BUNDLED_SAMPLE], strict=True)
    ref_chunks = list(ref)
    assert r.rows_read == ref.rows_read == 1999 and chunks[0].first_line == 1
    assert np.array_equal(chunks[0].sparse, ref_chunks[0].sparse)
    assert np.array_equal(chunks[0].labels, ref_chunks[0].labels)


def test_pickled_npy_and_non_tensor_pt_in_our_words(tmp_path):
    import datetime

    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(UserError) as e:
        read_index(obj)
    assert "pickled Python objects" in str(e.value) and "trust" not in str(e.value)
    pt = tmp_path / "x.pt"
    torch.save({"indices": torch.arange(3), "when": datetime.datetime(2020, 1, 1)}, pt)
    with pytest.raises(UserError) as e:
        read_tbe(pt)
    msg = str(e.value)
    assert "other than tensors" in msg and "weights_only" not in msg and "\n" not in msg


@pytest.mark.parametrize("args,needle", [
    (["gen-trace", "--length", "0"], "--length"),
    (["gen-trace", "--from", "nope"], "--from"),
    (["run", "--iters", "many"], "--iters"),
    (["export-trace"], "FILE"),
    (["no-such-command"], "No such command"),
    (["gen-trace", "--from", "kaggle", "--bogus"], "--bogus"),
])
def test_click_usage_errors_are_one_line(args, needle):
    p = subprocess.run([sys.executable, "-m", "dlrmprof", *args], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlrmprof: error: ") and needle in lines[0]


def test_dash_is_stdout_for_text_exports_only(tmp_path, tiny_trace):
    res = CliRunner().invoke(cli, ["export-trace", tiny_trace, "--to", "mrc-hist", "--out", "-"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert set(doc) == {"C1", "C2", "C3", "C4"} and len(doc["C1"]["mrc_hist_counts"]) == 100
    one_line_error(run("export-trace", tiny_trace, "--to", "tbe", "--out", "-"), "stdout")
    assert not Path("-").exists()


def test_a_signal_inside_a_native_callback_is_delivered_after_it():
    """A signal that lands inside llvmlite's object-cache callback (ctypes drops an exception
    raised there) is delivered again once the callback has returned, not lost."""
    from dlrmprof import cli

    ns: dict = {}
    exec(compile("import sys\ndef _raw_object_cache_notify():\n    return sys._getframe()\n",
                 "/site/llvmlite/binding/executionengine.py", "exec"), ns)
    inside = ns["_raw_object_cache_notify"]()
    assert cli._in_native_callback(inside)
    assert not cli._in_native_callback(sys._getframe())
    saved = {s: signal.getsignal(s) for s in (signal.SIGALRM, signal.SIGINT, signal.SIGTERM)}
    try:
        cli._on_signal(signal.SIGTERM, inside)          # deferred: no exception here
        assert cli._received == []
        with pytest.raises(cli.Terminated):
            time.sleep(2)                               # the timer delivers it
        assert cli._received == [signal.SIGTERM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for s, h in saved.items():
            signal.signal(s, h)
        cli._received.clear()


def test_an_interrupt_python_drops_is_delivered_again():
    """The handler's exception raised inside a __del__ (or a gc, weakref or ctypes callback) is
    only printed by Python and dropped; the unraisable hook delivers the signal again after."""
    from dlrmprof import cli

    class Dropper:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):       # the handler runs at one of these bytecode boundaries
                pass

    saved = {s: signal.getsignal(s) for s in (signal.SIGALRM, signal.SIGINT, signal.SIGTERM)}
    saved_hook = sys.unraisablehook
    dropped: list = []
    sys.unraisablehook = lambda u: dropped.append(u)
    try:
        cli.install_signal_handlers()
        cli.install_signal_handlers()                   # installed once, not nested
        assert sys.unraisablehook.redelivers
        d = Dropper()
        del d                                           # the Terminated is raised in __del__
        with pytest.raises(cli.Terminated):
            time.sleep(2)                               # and delivered again here
        assert cli._received == [signal.SIGTERM] and dropped == []
        sys.unraisablehook(type("U", (), {"exc_value": ValueError("x")})())
        assert len(dropped) == 1                        # anything else goes to the old hook
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for s, h in saved.items():
            signal.signal(s, h)
        sys.unraisablehook = saved_hook
        cli._received.clear()


def test_an_interrupt_raised_in_exec_still_exits_130(tmp_path):
    """An interrupt raised inside exec/eval of a string (dataclasses, namedtuple and numba build
    code so) makes CPython's `python -m` end by killing itself with SIGINT, even when the
    exception was caught; the command clears that and exits 130 with its one line."""
    (tmp_path / "exec_interrupt.py").write_text(
        "from dlrmprof import cli as dcli\n\n"
        "@dcli.cli.command('exec-interrupt')\n"
        "def _cmd():\n"
        "    exec('import os, signal\\nos.kill(os.getpid(), signal.SIGINT)\\n'\n"
        "         'for _ in range(1000):\\n    pass\\n')\n\n"
        "dcli.main(['exec-interrupt'])\n")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(root)]))
    p = subprocess.run([sys.executable, "-m", "exec_interrupt"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert p.returncode == 130, (p.returncode, p.stderr)
    assert p.stderr.strip().splitlines() == [
        "dlrmprof: interrupted (SIGINT); partial output and temporary files removed"]
