"""benchmarks/gpu_check.sh (issue #6): the one-call GPU check, tested where there is no GPU.

The script's CPU dry run must run every step that can run without a GPU, say "no GPU" for
the CUDA ones, and finish quickly; its helpers' checks must catch wrong kernels.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gck = _load("gpu_check_kernels")


def _has_cuda():
    import torch
    return torch.cuda.is_available()


def test_script_parses_and_documents_its_device_call():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    head = SCRIPT.read_text().split("\nset -uo pipefail")[0]
    m = re.search(r"command:\s+(.+)\n#\s+timeout_s:\s+(\d+)", head)
    assert m, "the header names the run call"
    command, timeout_s = m.group(1).strip(), int(m.group(2))
    assert len(command) <= 2000 and timeout_s <= 600
    budget = int(re.search(r"GPU_CHECK_BUDGET_S:-(\d+)", SCRIPT.read_text()).group(1))
    assert budget + 60 <= timeout_s, "the script's own budget leaves margin inside timeout_s"
    doc = (ROOT / "docs" / "gpu.md").read_text()
    assert command in doc and f"timeout_s: {timeout_s}" in doc.replace("`", "")


def test_script_rejects_unknown_arguments():
    done = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown argument" in done.stderr


def test_sgd_bound_catches_a_missing_or_doubled_lookup():
    import torch

    from dlrmprof.kernels import reference
    rng = np.random.default_rng(3)
    R, D, B = 50, 8, 40
    lengths = rng.integers(1, 6, size=B)
    off = np.concatenate([[0], np.cumsum(lengths)])
    idx = rng.integers(0, R, size=off[-1])
    w = rng.standard_normal((R, D)).astype(np.float32)
    g = rng.standard_normal((B, D)).astype(np.float32)
    lr = 0.3

    def update(indices, offsets):
        out = w.astype(np.float64)
        reference.embedding_bag_sgd(out, indices, offsets, g.astype(np.float64), lr, "sum", None)
        return out

    want = update(idx, off)
    touched = np.unique(idx)
    abs_sum = np.zeros((R, D))
    reference.embedding_bag_sgd(abs_sum, idx, off, np.abs(g.astype(np.float64)), -lr, "sum", None)
    count = np.bincount(idx, minlength=R)
    T = lambda x: torch.from_numpy(np.ascontiguousarray(x[touched], np.float64))  # noqa: E731

    def bound(after):
        return gck.sgd_bound(T(after - w), T(want - w), T(w.astype(np.float64)),
                             T(abs_sum), torch.from_numpy(count[touched]))

    float32_result = want.astype(np.float32).astype(np.float64)   # what a right kernel stores
    assert bound(float32_result)["ok"]
    # drop the last lookup of bag 0 (a kernel that stops one short)
    dropped = np.delete(idx, off[1] - 1)
    short = update(dropped, np.concatenate([[0], off[1:] - 1]))
    # bag 0 keeps its gradient, so recompute with bag 0 one shorter: rows differ by one g[0]
    assert not bound(short.astype(np.float32).astype(np.float64))["ok"]
    doubled = update(np.concatenate([idx, idx[:1]]), np.concatenate([off[:-1], [off[-1] + 1]]))
    assert not bound(doubled.astype(np.float32).astype(np.float64))["ok"]
    nan = float32_result.copy()
    nan[touched[0], 0] = np.nan
    assert not bound(nan)["ok"]


def test_bench_grid_covers_the_issue_and_cuts_late_tiers_first():
    cells = gck.grid_cells("full")
    assert {c["D"] for c in cells} == {16, 64, 128, 256}
    assert {c["L"] for c in cells} == {1, 20, 100}
    assert {c["R"] for c in cells} == {1_000_000, 10_000_000}
    assert min(c["B"] for c in cells) == 2048 and max(c["B"] for c in cells) == 65536
    assert {c["dist"] for c in cells} == {"uniform", "zipf"}
    tiers = [c["tier"] for c in cells]
    assert tiers == sorted(tiers)
    assert len({(c["R"], c["D"], c["L"], c["B"], c["dist"]) for c in cells}) == len(cells)
    first = [c for c in cells if c["tier"] == 0]
    assert {c["B"] for c in first} == {65536} and {c["D"] for c in first} == {16, 64, 128, 256}


def test_zipf_indices_follow_the_bounded_law():
    import torch
    R, n, s = 1000, 200_000, 1.1
    ind = gck.Indices(torch.device("cpu"), seed=5, s=s)
    ids = ind.draw(R, n, "zipf").numpy()
    assert ids.min() >= 0 and ids.max() < R
    counts = np.sort(np.bincount(ids, minlength=R))[::-1]
    p = np.arange(1, R + 1, dtype=np.float64) ** -s
    p /= p.sum()
    assert abs(counts[0] / n - p[0]) < 0.1 * p[0]
    assert abs(counts[:10].sum() / n - p[:10].sum()) < 0.05 * p[:10].sum()
    uni = ind.draw(R, n, "uniform").numpy()
    assert np.bincount(uni, minlength=R).max() / n < 5 / R


@pytest.mark.skipif(_has_cuda(), reason="checks the no-GPU path")
def test_helpers_say_no_gpu_and_exit_3(tmp_path):
    for cmd in (["gpu_check_kernels.py", "check"], ["gpu_check_kernels.py", "bench"],
                ["gpu_graph_check.py", "--out", str(tmp_path / "g.json")]):
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / cmd[0]), *cmd[1:]],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 3, done.stderr
        assert "SKIP: no GPU" in done.stdout
    assert not (tmp_path / "g.json").exists()


def test_graph_check_catches_a_step_that_differs(monkeypatch):
    """The graph check's equality test must fail a graph step that computes something else
    (here: the static-buffer step of a model trained with another learning rate)."""
    ggc = _load("gpu_graph_check")
    ggc.PRESET = "tiny"
    ok = ggc.equality_case("cpu", 1000, "torch", False, "train", 8)
    assert ok["ok"] and ok["max_rel_loss_diff"] == 0.0
    real = ggc._graph_step

    def off_by_lr(tr, mode, device):    # 10% more on the sparse and the dense SGD
        tr.lr *= 1.1
        for arch in (tr.model.dense_arch, tr.model.over_arch):
            arch.param_update.lr = tr.lr
        return real(tr, mode, device)
    monkeypatch.setattr(ggc, "_graph_step", off_by_lr)
    bad = ggc.equality_case("cpu", 1000, "torch", False, "train", 8)
    assert not bad["ok"] and bad["max_rel_loss_diff"] > bad["tolerance"]


@pytest.mark.slow
def test_cpu_dry_run_runs_every_cpu_step_and_skips_cuda(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), TMPDIR=str(tmp_path))
    env.pop("GPU_CHECK_STEPS", None)
    env.pop("GPU_CHECK_BUDGET_S", None)
    t0 = time.perf_counter()
    done = subprocess.run(["bash", str(SCRIPT), "--cpu-dry-run"], capture_output=True,
                          text=True, env=env, timeout=300, cwd=tmp_path)
    elapsed = time.perf_counter() - t0
    tail = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, tail
    assert elapsed < 240, f"dry run took {elapsed:.0f} s"
    # what comes back from a device call: at most 8 plain files, flat
    files = sorted(p.name for p in out.iterdir())
    assert all((out / f).is_file() for f in files) and len(files) <= 8, files
    assert {"summary.txt", "gpu_check.log", "ceilings.json", "kernels_check.json",
            "launch_graph.json", "embedding_bench.json", "embedding_bench.md",
            "reports.tar.gz"} <= set(files)
    summary = (out / "summary.txt").read_text()
    assert done.stdout.rstrip().endswith(summary.rstrip().splitlines()[-1])  # printed last
    assert "RESULT: OK" in summary
    steps = {}
    for line in summary.splitlines():
        m = re.match(r"^(\S+)\s+(OK|SKIP|FAIL|TIMEOUT|WARN)\s+\d+\s+(.*)$", line)
        if m:
            steps[m.group(1)] = (m.group(2), m.group(3))
    for name in ("pytest-cuda", "kernels-check", "graphs", "run-gpu", "bench"):
        assert steps[name][0] == "SKIP" and "no GPU" in steps[name][1], (name, steps.get(name))
    for name in ("setup", "import", "versions", "ceilings", "gen-trace", "kernels-check-selftest",
                 "run-cpu-kaggle-train-numba", "run-cpu-kaggle-train-torch",
                 "run-cpu-terabyte-train-numba", "compare-kaggle-train", "bench-selftest",
                 "graphs-selftest"):
        assert steps[name][0] == "OK", (name, steps.get(name))
    ceil = json.loads((out / "ceilings.json").read_text())
    assert ceil["ceilings"]["cuda"]["available"] is False
    check = json.loads((out / "kernels_check.json").read_text())
    assert check["ok"] and check["device"] == "cpu"
    graph = json.loads((out / "launch_graph.json").read_text())
    assert graph["ok"] and graph["device"] == "cpu" and graph["launch"]["ok"]
    assert len(graph["equality"]) == 4 and all(r["ok"] for r in graph["equality"])
    assert "graph step == eager" in summary and "CPU self-test" in summary
    bench = json.loads((out / "embedding_bench.json").read_text())
    assert bench["complete"] and bench["cells"]
    assert all(c["checked_ok"] and c["times"] for c in bench["cells"])
    with tarfile.open(out / "reports.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"reports/cpu-kaggle-train-numba.json", "reports/cpu-kaggle-train-numba.md",
            "reports/compare-kaggle-train.md", "reports/cpu-terabyte-train-numba.json"} <= names
    assert not list(tmp_path.glob("gpu_check.*")), "the scratch folder is removed"
