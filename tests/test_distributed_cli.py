"""`dlrmprof run --nproc N` and the plain `torchrun ... -m dlrmprof run` form, end to end."""

import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from dlrmprof.cli import cli
from dlrmprof.profile.report import Report
from dlrmprof.tracegen import build_profile, synthesize_trace
from cli_helpers import one_line_error as _error

FAST = ["--config", "tiny", "--no-roofline", "--no-cache-study", "--no-render", "--iters", "6",
        "--warmup", "1"]


@pytest.fixture(scope="module")
def tiny_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("tr") / "tiny.npz"
    rng = np.random.default_rng(0)
    profiles = []
    for t, r in enumerate((64, 100, 257, 1000)):
        lengths = rng.integers(1, 4, 300)
        ids = rng.integers(0, r, int(lengths.sum()))
        profiles.append(build_profile(f"C{t + 1}", ids, lengths, rows=r))
    synthesize_trace(profiles, source={"kind": "test"}, num_samples=64, seed=0,
                     compute_fidelity=False).save(path)
    return str(path)


@pytest.mark.parametrize("args,match", [
    (["--nproc", "5"], "5 ranks but only 4 embedding tables"),
    (["--nproc", "3"], "--batch-size 32 is not divisible by the 3 ranks"),
    (["--nproc", "2", "--batch-size", "30", "--nnodes", "2", "--rdzv-endpoint", "h:1"],
     "--batch-size 30 is not divisible by the 4 ranks"),
])
def test_bad_distributed_options_one_line(tiny_trace, tmp_path, args, match):
    out = tmp_path / "x.json"
    res = CliRunner().invoke(cli, ["run", "--trace", tiny_trace, *FAST, "--out", str(out),
                                   *args])
    assert match in _error(res)
    assert not out.exists()


def test_nccl_without_gpu_one_line(tiny_trace):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    res = CliRunner().invoke(cli, ["run", "--trace", tiny_trace, *FAST, "--nproc", "2",
                                   "--dist-backend", "nccl"])
    assert "nccl needs CUDA GPUs" in _error(res)


def _check_reports(out, world):
    merged = Report.load(out)
    assert merged.end_to_end["distributed"]["world_size"] == world
    assert merged.op("alltoall.fwd", "comm")["bytes"] > 0
    for r in range(world):
        rep = Report.load(out.with_name(f"{out.stem}.rank{r}.json"))
        assert rep.end_to_end["distributed"]["rank"] == r


def test_run_nproc_2_from_the_command_line(tiny_trace, tmp_path):
    out = tmp_path / "c.json"
    p = subprocess.run([sys.executable, "-m", "dlrmprof", "run", "--nproc", "2", "--trace",
                        tiny_trace, *FAST, "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "sharding plan: table-wise over 2 ranks" in p.stdout
    assert "all-to-all per step" in p.stdout and "(merged)" in p.stdout
    _check_reports(out, 2)


@pytest.mark.slow
def test_plain_torchrun_form(tiny_trace, tmp_path):
    out = tmp_path / "t.json"
    env = dict(os.environ)
    env.pop("RANK", None)
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", "-m", "dlrmprof", "run", "--trace", tiny_trace,
                        *FAST, "--out", str(out)],
                       capture_output=True, text=True, timeout=150, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("all-to-all per step") == 1  # rank 0 prints, rank 1 is quiet
    _check_reports(out, 2)


@pytest.mark.slow
def test_two_nodes_form_on_one_host(tmp_path):
    """`--nnodes 2 --rdzv-endpoint`: two launchers (as on two hosts) meet at one rendezvous."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    out = tmp_path / "mn.json"
    cmd = [sys.executable, "-m", "dlrmprof", "run", "--config", "tiny", "--data", "random",
           "--no-roofline", "--no-cache-study", "--iters", "4", "--warmup", "1", "--nproc", "1",
           "--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "t2n",
           "--rdzv-timeout", "60", "--out", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=150) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert sum("(merged)" in o[0] for o in outs) == 1
    assert sum("rank 0's host wrote the reports" in o[0] for o in outs) == 1
    _check_reports(out, 2)
