"""gen-trace --nproc N: tables profiled, synthesized and measured in N real torch.distributed
(gloo) processes, gathered on rank 0; the trace is byte-for-byte the one a single process
writes."""

from pathlib import Path

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


def test_ranks_returning_their_shares_equal_the_gather_on_rank_0():
    """gather=False (gen-trace --nproc: each rank's share goes to the launching process) and
    gather=True (torchrun: rank 0 gathers) give the same capture, table for table."""
    import numpy as np

    from dlrmprof.session.launch import DistOptions, launch
    from dlrmprof.tracegen.capture import CaptureSpec, SynthPlan, capture_rank, merge_shares

    spec = CaptureSpec(source="kaggle", tables="C1,C3,C9")
    synth = SynthPlan(seed=3)
    runs = {}
    for gather, method in ((True, "spawn"), (False, "fork")):
        got = launch(None, DistOptions(nproc=2, backend="gloo"), entry=capture_rank,
                     args=(spec, synth, gather), fingerprint=False, start_method=method)
        runs[gather] = got[0] if gather else merge_shares(got)
    a, b = runs[True], runs[False]
    assert sorted(a.synthesized) == sorted(b.synthesized) == [0, 1, 2]
    assert [p.name for p in a.profiles] == [p.name for p in b.profiles] == ["C1", "C3", "C9"]
    for t in range(3):
        ids_a, offs_a, fid_a, n_a = a.synthesized[t]
        ids_b, offs_b, fid_b, n_b = b.synthesized[t]
        assert np.array_equal(ids_a, ids_b) and n_a == n_b and fid_a == fid_b
        assert (offs_a is None) == (offs_b is None)


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
