"""gen-trace --nproc N: tables profiled, synthesized and measured in N real torch.distributed
(gloo) processes, gathered on rank 0; the trace is byte-for-byte the one a single process
writes."""

from pathlib import Path

import pytest
from click.testing import CliRunner

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
