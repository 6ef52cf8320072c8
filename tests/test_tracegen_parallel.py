"""gen-trace --nproc N: tables profiled, synthesized and measured in N processes of this host
(socket pairs) or, in the torchrun form, in real torch.distributed (gloo) processes, gathered on
rank 0; the trace is byte-for-byte the one a single process writes."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli_helpers import one_line_error

from dlrmprof.cli import cli
from dlrmprof.tracegen import Trace

AVAZU = Path(__file__).parent / "data" / "streams" / "avazu_train_head8k.csv"


def _gen(tmp_path, name, *args):
    out = tmp_path / name
    res = CliRunner().invoke(cli, ["gen-trace", *args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.parametrize("args", [
    ("--from", "kaggle"),
    ("--from", "kaggle", "--tables", "C3,C9"),             # 3 ranks, 2 tables: one only reads
    ("--from", "csv", "--input", str(AVAZU), "--columns", "site_id,device_ip,C14"),
    ("--from", "kaggle", "--tables", "C1,C3,C9", "--profile-only"),   # fidelity on the ranks
    ("--from", "kaggle", "--tables", "C2,C20", "--length", "1.5x", "--seed", "7"),
])
def test_parallel_capture_writes_the_single_process_trace(tmp_path, args):
    one = _gen(tmp_path, "one.npz", *args)
    nproc = "3" if "--tables" in args else "2"
    many = _gen(tmp_path, "many.npz", *args, "--nproc", nproc)
    assert many.read_bytes() == one.read_bytes()
    assert Trace.load(many).digest == Trace.load(one).digest


def test_parallel_capture_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3\n")
    out = tmp_path / "t.npz"
    res = CliRunner().invoke(cli, ["gen-trace", "--from", "csv", "--input", str(bad), "--strict",
                                   "--nproc", "2", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "bad.csv:3" in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_torchrun_form_and_local_ranks_give_the_same_capture():
    """The torchrun form (2 real gloo processes, started by session.launch as torchrun would,
    each running `capture_on_torch`) and the local engine (`run_local`: this process as rank 0,
    forked or spawned ranks, socket pairs) give the same capture, table for table."""
    from dlrmprof.commands.trace import capture_on_torch
    from dlrmprof.session.exchange import run_local
    from dlrmprof.session.launch import DistOptions, launch
    from dlrmprof.tracegen.capture import CaptureSpec, SynthPlan, capture_rank

    spec = CaptureSpec(source="kaggle", tables="C1,C3,C9")
    synth = SynthPlan(seed=3)
    runs = {"torch": launch(None, DistOptions(nproc=2, backend="gloo"), entry=capture_on_torch,
                            args=(spec, synth), fingerprint=False, start_method="spawn")[0]}
    for method in ("fork", "spawn"):
        runs[method] = run_local(2, capture_rank, (spec, synth), start_method=method)
    a = runs["torch"]
    assert sorted(a.synthesized) == [0, 1, 2]
    for b in (runs["fork"], runs["spawn"]):
        assert sorted(b.synthesized) == [0, 1, 2]
        assert [p.name for p in a.profiles] == [p.name for p in b.profiles] == ["C1", "C3", "C9"]
        assert a.info.rows_read == b.info.rows_read
        for t in range(3):
            ids_a, offs_a, fid_a, n_a = a.synthesized[t]
            ids_b, offs_b, fid_b, n_b = b.synthesized[t]
            assert np.array_equal(ids_a, ids_b) and n_a == n_b and fid_a == fid_b
            assert (offs_a is None) == (offs_b is None)


def _exchange_entry(ex, seed):
    """Each rank's row blocks for every rank (some past a socket's buffer, one empty), the
    span sizes all-gathered, then everything gathered on rank 0 for the check."""
    rng = np.random.default_rng(seed + ex.rank)
    rows = [70_000, 3, 0][ex.rank % 3]
    own = ex.row_blocks([(rows + 2, len(range(o, 5, ex.world))) for o in range(ex.world)])
    for o in range(ex.world):
        own[o][:] = rng.integers(0, 1 << 40, size=own[o].shape)
        own[o] = own[o][:rows]               # fewer rows used than allocated, as a span's
    stats = ex.all_gather(rows)
    blocks = ex.exchange_rows(own, stats)
    return ex.gather((own, blocks))


def _exchange_on_torch(seed):
    from dlrmprof.session.exchange import TorchExchange

    with TorchExchange() as ex:
        return _exchange_entry(ex, seed)


@pytest.mark.parametrize("engine", ["pipes-2", "pipes-3", "bytes-3", "torch-2"])
def test_exchange_engines_deliver_every_block_to_its_owner(engine, monkeypatch):
    """Socket pairs with shared row blocks (memfd) or with the blocks sent as bytes (where the
    OS has no memfd), and torch.distributed: every rank gets every peer's block for it."""
    from dlrmprof.session import exchange
    from dlrmprof.session.exchange import run_local
    from dlrmprof.session.launch import DistOptions, launch

    kind, world = engine.split("-")
    world = int(world)
    if kind == "bytes":
        monkeypatch.setattr(exchange, "_SHARED", False)
    if kind != "torch":
        got = run_local(world, _exchange_entry, (11,))
    else:
        got = launch(None, DistOptions(nproc=world, backend="gloo"), entry=_exchange_on_torch,
                     args=(11,), fingerprint=False, start_method="spawn")[0]
    assert len(got) == world
    for r, (_, blocks) in enumerate(got):
        # rank o's block for rank r, in rank order; empty ones are not sent
        sent = [got[o][0][r] for o in range(world) if o == r or got[o][0][r].size]
        assert len(blocks) == len(sent) and len(sent) > 1
        assert all(np.array_equal(b, s) for b, s in zip(blocks, sent))


def _failing_entry(ex, how):
    import os
    import signal

    from dlrmprof.errors import UserError

    ex.all_gather(ex.rank)
    if ex.rank == (0 if how == "rank0" else ex.world - 1):
        if how in ("user", "rank0"):
            raise UserError("bad.txt:3: expected 40 fields, got 3")
        if how == "bug":
            raise ValueError("boom")
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "exit":
            os._exit(3)
    ex.all_gather(ex.rank)                   # the others wait here
    return "done"


@pytest.mark.parametrize("how, error, pattern", [
    ("user", "RankFailed", r"^rank 2: bad\.txt:3: expected 40 fields, got 3; all ranks stopped$"),
    ("kill", "RankFailed", r"^rank 2 \(pid \d+\) died \(SIGKILL\) mid-run; the other ranks"),
    ("exit", "RankFailed", r"^rank 2 \(pid \d+\) exited with code 3; the other ranks"),
    ("bug", "RuntimeError", r"^rank 2 failed: ValueError: boom\n.*Traceback"),
    ("rank0", "UserError", r"^bad\.txt:3: expected 40 fields, got 3$"),
])
def test_local_rank_failure_stops_every_rank_with_one_line(how, error, pattern):
    import multiprocessing
    import re
    import time

    from dlrmprof.session.exchange import run_local

    t0 = time.perf_counter()
    with pytest.raises(Exception) as exc:
        run_local(3, _failing_entry, (how,))
    assert type(exc.value).__name__ == error
    assert re.search(pattern, str(exc.value), re.S), str(exc.value)
    if error != "RuntimeError":
        assert "\n" not in str(exc.value)
    if how == "user":
        assert exc.value.exit_code == 2
    assert not multiprocessing.active_children()
    assert time.perf_counter() - t0 < 20


def test_split_parse_keeps_malformed_lines_and_their_numbers(tmp_path):
    """Ranks parse a span of the file each: malformed lines in either span are counted and
    named by their line in the whole file, as one process does (the header records them)."""
    from dlrmprof.tracegen.readers import BUNDLED_SAMPLE

    lines = BUNDLED_SAMPLE.read_bytes().splitlines(keepends=True)
    lines.insert(200, b"1\tnot a row\n")
    lines.insert(1700, b"0\t1\t2\n")
    src = tmp_path / "bad.txt"
    src.write_bytes(b"".join(lines[:-1]) + lines[-1].rstrip(b"\n"))   # no final newline
    one = _gen(tmp_path, "one.npz", "--from", "kaggle", "--input", str(src))
    many = _gen(tmp_path, "many.npz", "--from", "kaggle", "--input", str(src), "--nproc", "2")
    assert many.read_bytes() == one.read_bytes()
    source = Trace.load(many).header["source"]
    assert source["malformed_lines"] == 2
    assert any(":1701" in m for m in source["malformed_examples"]), source


def test_split_parse_of_no_well_formed_row_is_one_line(tmp_path):
    src = tmp_path / "junk.txt"
    src.write_text("x\ty\n" * 50)
    out = tmp_path / "t.npz"
    res = CliRunner().invoke(cli, ["gen-trace", "--from", "kaggle", "--input", str(src),
                                   "--nproc", "2", "--out", str(out)])
    line = one_line_error(res)
    assert "junk.txt: expected at least one well-formed Criteo row" in line
    assert "(50 malformed lines)" in line and not out.exists()


@pytest.mark.parametrize("parts", [1, 2, 3, 7, 3000])
def test_line_spans_read_raw_and_mapped_equal_one_reader(tmp_path, parts):
    """Spans cut at line starts cover every line once (CRLF lines, no final newline, more
    spans than lines); their raw values mapped in span order give one reader's dense ids."""
    import numpy as np

    from dlrmprof.tracegen.criteo import line_spans, read_criteo
    from dlrmprof.tracegen.readers import BUNDLED_SAMPLE

    lines = BUNDLED_SAMPLE.read_bytes().splitlines()
    src = tmp_path / "crlf.txt"
    src.write_bytes(b"\r\n".join(lines[:400]) + b"\n" + b"\n".join(lines[400:]))
    data = src.read_bytes()
    spans = line_spans(src, parts)
    assert spans[0][0] == 0 and spans[-1][1] == len(data) and len(spans) == parts
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert all(lo in (0, len(data)) or data[lo - 1:lo] == b"\n" for lo, _ in spans)
    whole = np.concatenate([c.sparse for c in read_criteo(src, table_rows=5000)])
    # a raw reader's chunks are views of its buffers, good until the next one: copy them
    # (small blocks: many chunks through the same buffers)
    raw = [c.sparse.copy() for span in spans
           for c in read_criteo(src, span=span, raw=True, table_rows=5000, block_bytes=1 << 14)]
    mapped = read_criteo(src, table_rows=5000).dense_ids(np.concatenate(raw))
    assert np.array_equal(mapped, whole)


def test_ranks_fork_only_from_a_single_threaded_process():
    """A fork copies other threads' held locks but not the threads: gen-trace --nproc forks
    its ranks only from a process that runs one thread (a fresh CLI process), else spawns."""
    import subprocess
    import sys
    import threading

    from dlrmprof.commands.trace import rank_start_method

    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert rank_start_method() == "spawn"
    finally:
        stop.set()
        t.join()
    fresh = subprocess.run([sys.executable, "-c", "from dlrmprof.commands.trace import "
                            "rank_start_method as m; print(m())"],
                           capture_output=True, text=True, check=True)
    assert fresh.stdout.strip() == "fork"


def _criteo_copies(path: Path, copies: int) -> Path:
    from dlrmprof.tracegen.readers import BUNDLED_SAMPLE

    data = BUNDLED_SAMPLE.read_bytes()
    path.write_bytes(data * copies)
    return path


def _ranks_started(copies, tmp_path, **popen):
    """A `gen-trace --nproc 2` process on a Criteo file of `copies` bundled samples, once its
    rank 1 runs: (process, psutil view of rank 1, output path)."""
    import subprocess
    import sys
    import time

    import psutil

    src = _criteo_copies(tmp_path / "train.txt", copies)
    out = tmp_path / "t.npz"
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    proc = subprocess.Popen([sys.executable, "-m", "dlrmprof", "gen-trace", "--from", "kaggle",
                             "--input", str(src), "--out", str(out), "--nproc", "2"],
                            text=True, **popen)
    parent = psutil.Process(proc.pid)
    deadline = time.time() + 60
    while not parent.children() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert proc.poll() is None and len(parent.children()) == 1
    return proc, parent.children()[0], out


def test_ctrl_c_stops_every_rank_and_writes_nothing(tmp_path):
    """A terminal's Ctrl-C reaches every rank: rank 1 leaves it to rank 0, which stops it,
    says so in one line and writes nothing."""
    import os
    import signal

    proc, child, out = _ranks_started(60, tmp_path, start_new_session=True)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1:] == ["dlrmprof: interrupted (SIGINT); partial output "
                                             "and temporary files removed"], err
    assert "Traceback" not in err and not out.exists()
    assert not child.is_running() or child.status() == "zombie"


def test_killed_rank_0_takes_its_ranks_with_it(tmp_path):
    import signal

    import psutil

    import time

    import subprocess

    # no pipes: a reader of rank 0's output would wait for rank 1, which holds them too
    proc, child, out = _ranks_started(150, tmp_path, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
    deadline = time.time() + 60                 # past the span exchange: profiling, which
    while sum(child.cpu_times()[:2]) < 1.5 and time.time() < deadline:   # takes seconds
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    try:
        child.wait(timeout=2)
    except psutil.TimeoutExpired:
        child.kill()
        raise AssertionError("rank 1 kept running after rank 0 was killed") from None
    assert not out.exists()


@pytest.mark.parametrize("world", [2, 3, 5])
def test_synthesis_owners_balance_the_ranks_with_rank_0s_writing(world):
    """Every table has one owner; counting rank 0's work after the gather (writing the kept
    ids), no rank's estimated work exceeds another's by more than one table's; without ids to
    keep, rank 0 takes its full share."""
    from types import SimpleNamespace

    from dlrmprof.tracegen import capture as C

    rng = np.random.default_rng(world)
    for keep in (True, False):
        profs = [SimpleNamespace(accesses=int(a), num_bags=int(b), distinct=int(d))
                 for a, b, d in zip(rng.integers(1, 10**6, 26), rng.integers(1, 10**5, 26),
                                    rng.integers(1, 10**5, 26))]
        tasks = [(p, 2000, None, None, True, keep) for p in profs]
        owners = C.synthesis_owners(tasks, world)
        assert len(owners) == 26 and set(owners) <= set(range(world))

        def cost(t):
            p = profs[t]
            n = p.accesses * 2000 / p.num_bags
            return n * (C._SYNTH_NS[0] + C._SYNTH_NS[1] * np.log2(p.distinct + 2))

        load = [sum(cost(t) for t in range(26) if owners[t] == r) for r in range(world)]
        if keep:
            load[0] += sum(C._WRITE_NS * p.accesses * 2000 / p.num_bags for p in profs)
        assert max(load) - min(load) <= max(cost(t) for t in range(26)) + 1e-6
        assert owners == C.synthesis_owners(tasks, world)          # the same on every rank


def _p2p_entry(ex, sizes):
    """Every rank but 0 sends rank 0 its objects (one past a socket's buffer) without waiting;
    rank 0 polls the last rank before it has sent, then receives all in each rank's order."""
    if ex.rank:
        ex.all_gather(None)                   # rank 0 has polled: nothing sent yet
        for k, n in enumerate(sizes):
            ex.send(0, (ex.rank, k, np.full(n, ex.rank * 100 + k, dtype=np.int64)))
        ex.flush()
        ex.all_gather(None)
        return None
    early = ex.poll(ex.world - 1)
    ex.all_gather(None)
    got = {r: [ex.recv(r) for _ in sizes] for r in range(1, ex.world)}
    ex.all_gather(None)
    return early, got


def _p2p_on_torch(sizes):
    from dlrmprof.session.exchange import TorchExchange

    with TorchExchange() as ex:
        return _p2p_entry(ex, sizes)


@pytest.mark.parametrize("engine", ["pipes-3", "torch-2"])
def test_exchange_send_recv_keep_each_ranks_order(engine):
    """`send` returns before the peer receives (a 4 MB object over a socket pair), `poll`
    is False with nothing sent, and `recv` gives each rank's objects in the order sent."""
    from dlrmprof.session.exchange import run_local
    from dlrmprof.session.launch import DistOptions, launch

    kind, world = engine.split("-")
    sizes = (3, 500_000, 0, 7)
    if kind == "pipes":
        early, got = run_local(int(world), _p2p_entry, (sizes,))
    else:
        early, got = launch(None, DistOptions(nproc=int(world), backend="gloo"),
                                  entry=_p2p_on_torch, args=(sizes,), fingerprint=False,
                                  start_method="spawn")[0]
    assert early is False
    assert sorted(got) == list(range(1, int(world)))
    for r, objs in got.items():
        for k, (rank, kk, arr) in enumerate(objs):
            assert (rank, kk) == (r, k) and arr.shape == (sizes[k],)
            assert (arr == r * 100 + k).all()


class _FakeExchange:
    """A peer whose tables come in at given pops of rank 0 (poll False before)."""

    def __init__(self, arrives: dict):
        self.arrives, self.sent, self.pops = arrives, [], 0

    def poll(self, peer):
        return bool(self.sent) or self.pops >= self.arrives.get("all", 0)

    def recv(self, peer):
        if not self.sent:
            self.sent = [(t, ("peer", t)) for t in self.arrives["order"]]
        return self.sent.pop(0)


def test_synthesis_stream_gives_tables_in_order_and_makes_its_own_ahead(monkeypatch):
    """Rank 0 reads the tables in order; while a peer's next table has not come it makes its
    own next ones ahead (each once), and waits only when it has none left to make."""
    from dlrmprof.tracegen import capture as C

    made = []
    monkeypatch.setattr(C, "_synthesized", lambda task: made.append(task) or ("own", task))
    owners = [0, 1, 0, 0, 1, 1, 0]
    ex = _FakeExchange({"order": [1, 4, 5], "all": 99})      # the peer never ready early
    stream = C.SynthesisStream(ex, list(range(7)), owners)
    assert len(stream) == 7 and 6 in stream and 7 not in stream
    out = [stream.pop(t) for t in range(7)]
    assert out == [("own" if r == 0 else "peer", t) for t, r in enumerate(owners)]
    assert made == [0, 2, 3, 6]            # 2, 3 and 6 made ahead while table 1 had not come
    assert len(stream) == 0


def _stream_failing_entry(ex, spec, synth):
    """capture_rank with a rank that fails in its synthesis, after the profiles' exchange."""
    from dlrmprof.tracegen import capture as C

    if ex.rank == 1:
        def boom(task):
            from dlrmprof.errors import UserError
            raise UserError("disk full while synthesizing")
        C._synthesized = boom
    return C.capture_rank(ex, spec, synth, stream=True)


def test_rank_failing_while_rank_0_reads_its_tables_is_one_line():
    """A rank that fails while rank 0 streams the tables (inside `then`) stops every rank
    with one line naming it."""
    import multiprocessing

    from dlrmprof.session.exchange import run_local
    from dlrmprof.tracegen.capture import CaptureSpec, SynthPlan

    spec = CaptureSpec(source="kaggle", tables="C1,C3,C9")

    def then(got):
        return [got.synthesized.pop(t) for t in range(3)]

    with pytest.raises(Exception) as exc:
        run_local(2, _stream_failing_entry, (spec, SynthPlan(seed=3)), start_method="fork",
                  then=then)
    assert type(exc.value).__name__ == "RankFailed"
    assert str(exc.value) == "rank 1: disk full while synthesizing; all ranks stopped"
    assert not multiprocessing.active_children()
