import json
import os

import numpy as np
import pytest
import torch

from dlrmprof.profile.report import Report
from dlrmprof.tracegen import synthesize_trace
from cli_helpers import one_line_error as _error, run_command as _run

FAST = ["--no-roofline", "--no-cache-study", "--no-render", "--iters", "4", "--warmup", "1"]


@pytest.mark.parametrize("mode,backend", [("train", "numba"), ("infer", "torch")])
def test_run_writes_a_report(tiny_trace, tmp_path, mode, backend):
    out = tmp_path / "r.json"
    res = _run("--trace", tiny_trace, "--config", "tiny", "--mode", mode, "--backend", backend,
               "--batch-size", "16", "--out", str(out), *FAST)
    assert res.exit_code == 0, res.output
    assert "18 = 8 + 5*4/2 (computed)" in res.output and "samples/s" in res.output
    rep = Report.load(out)
    names = {(r["name"], r["phase"]) for r in rep.ops}
    expect = {("data", "data"), ("step", "step"), ("emb.all", "forward"), ("emb.C1", "forward"),
              ("emb.C4", "forward"), ("bottom_mlp", "forward"), ("interaction", "forward"),
              ("top_mlp", "forward")}
    if mode == "train":
        expect |= {("loss", "forward"), ("backward", "backward"), ("optimizer", "optimizer"),
                   ("emb.all", "optimizer"), ("emb.C3", "optimizer")}
    assert expect <= names
    for r in rep.ops:
        assert r["time"]["n"] >= 1 and r["time"]["median"] > 0
    emb = rep.op("emb.C2")
    assert emb["bytes"] > 0 and emb["flops"] > 0 and emb["shape"]["rows"] == 100
    assert emb["backend"] == backend and emb["sources"]["bytes"] == "counted"
    # numba at one thread: per-table figures from inside the one all-tables call
    from dlrmprof.kernels.numba_cpu import tsc_period_s
    tsc = backend == "numba" and tsc_period_s() is not None
    assert emb["timer"] == ("tsc" if tsc else "perf_counter")
    assert rep.op("emb.all")["timer"] == "perf_counter"
    assert ("time-stamp counter" in res.output) == tsc
    e2e = rep.end_to_end
    assert e2e["samples_per_s"] > 0 and e2e["model_samples_per_s"] >= e2e["samples_per_s"]
    assert rep.config["model"]["top_input"] == 18 and rep.config["mode"] == mode
    assert rep.trace["num_samples"] == 64 and len(rep.trace["digest"]) == 64
    assert rep.noise["threads"] == 1 and "windows" in rep.noise
    assert os.listdir(tmp_path) == ["r.json"]


def test_profile_only_trace_is_materialized(tmp_path, small_trace):
    from dlrmprof.tracegen import Trace
    full = Trace.load(small_trace(tmp_path / "full.npz"))
    synthesize_trace(list(full.profiles), source={"kind": "test"}, num_samples=64, seed=0,
                     compute_fidelity=False, keep_indices=False).save(tmp_path / "prof.npz")
    res = _run("--trace", str(tmp_path / "prof.npz"), "--config", "tiny", "--batch-size", "8",
               "--out", str(tmp_path / "r.json"), *FAST)
    assert res.exit_code == 0, res.output
    assert "synthesized from its profiles" in res.output
    assert Report.load(tmp_path / "r.json").trace["materialized"] is True


def test_kaggle_training_learns_and_plots(tmp_path):
    out = tmp_path / "k.json"
    res = _run("--data", "kaggle", "--mode", "train", "--iters", "60", "--warmup", "0",
               "--eval-every", "30", "--no-roofline", "--out", str(out))
    assert res.exit_code == 0, res.output
    tr = Report.load(out).training
    assert tr["test"]["n"] == 400 and tr["base_rate"]["n"] == 400
    assert tr["test"]["logloss"] < tr["base_rate"]["logloss"]  # it learns from real rows
    assert tr["test"]["auc"] > 0.55
    assert [c["step"] for c in tr["curve"]] == [30, 60]
    png = tmp_path / "k.training.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Operators" in (tmp_path / "k.md").read_text()  # rendered beside the report
    assert "held-out test (400 rows)" in res.output


# -- bad input: one line, exit 2, nothing written ----------------------------------------

def test_trace_indices_beyond_rows_name_the_table(tiny_trace, tmp_path):
    # a trace whose table C2 has fewer rows than its indices reach
    with np.load(tiny_trace) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(str(arrays.pop("header")))
    header["tables"][1]["rows"] = 5
    from dlrmprof.tracegen import tracefile
    full = tracefile.Trace.load(tiny_trace)          # the int64 layout the digest covers
    header["digest"] = tracefile.content_digest(header, full.indices, full.offsets)
    bad = tmp_path / "bad.npz"
    tracefile._write_npz(bad, header, arrays)
    line = _error(_run("--trace", str(bad), "--config", "tiny", "--out",
                       str(tmp_path / "o.json"), *FAST))
    assert "C2" in line and "5" in line
    assert not (tmp_path / "o.json").exists()


def test_trace_config_mismatch(tiny_trace, tmp_path):
    line = _error(_run("--trace", tiny_trace, "--config", "kaggle", *FAST))
    assert "trace has 4 tables but config preset kaggle has 26" in line
    cfg = tmp_path / "small.yaml"
    cfg.write_text("dense_features: 13\nembedding_dim: 8\nbottom_mlp: [13, 8]\n"
                   "top_mlp: [4, 1]\ntables: [64, 100, 200, 1000]\n")
    line = _error(_run("--trace", tiny_trace, "--config", str(cfg), *FAST))
    assert "table C3: trace has 257 rows" in line and "allows 200" in line
    line = _error(_run("--trace", tiny_trace, "--config", "tiny", "--max-rows", "100", *FAST))
    assert "table C3: trace has 257 rows" in line and "--max-rows 100" in line


@pytest.mark.parametrize("bs, msg", [("0", "--batch-size must be positive"),
                                     ("-3", "--batch-size must be positive"),
                                     ("65", "--batch-size 65 is larger than the trace's 64")])
def test_bad_batch_size(tiny_trace, bs, msg):
    assert msg in _error(_run("--trace", tiny_trace, "--config", "tiny", "--batch-size", bs,
                              *FAST))


def test_unknown_backend_and_preset(tiny_trace):
    assert "unknown backend 'fbgemm'" in _error(_run("--trace", tiny_trace, "--config", "tiny",
                                                     "--backend", "fbgemm", *FAST))
    assert "unknown config 'huge'" in _error(_run("--trace", tiny_trace, "--config", "huge",
                                                  *FAST))


def test_malformed_yaml_names_the_key(tiny_trace, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("dense_features: 13\nembedding_dim: 8\nbottom_mlp: [13, 8]\n"
                   "top_mlp: [4, one]\ntables: [64, 100, 257, 1000]\n")
    line = _error(_run("--trace", tiny_trace, "--config", str(cfg), *FAST))
    assert "bad.yaml" in line and "field top_mlp[1]" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a GPU")
def test_cuda_without_gpu(tiny_trace):
    assert "no CUDA GPU" in _error(_run("--device", "cuda", "--trace", tiny_trace, *FAST))


def test_output_not_writable(tiny_trace, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = _error(_run("--trace", tiny_trace, "--config", "tiny", "--out",
                       str(blocker / "r.json"), *FAST))
    assert "cannot write the report here" in line
    line = _error(_run("--trace", tiny_trace, "--config", "tiny", "--out", str(tmp_path),
                       *FAST))
    assert "is a directory" in line
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_missing_default_trace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "gen-trace" in _error(_run("--config", "tiny", *FAST))


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["torch", "numba-cuda"])
def test_run_on_cuda_times_with_events(tiny_trace, tmp_path, backend):
    out = tmp_path / "g.json"
    res = _run("--device", "cuda", "--backend", backend, "--trace", tiny_trace, "--config",
               "tiny", "--batch-size", "16", "--out", str(out), *FAST)
    assert res.exit_code == 0, res.output
    rep = Report.load(out)
    emb = rep.op("emb.C1")
    assert emb["device"] == "cuda" and emb["timer"] == "cuda-events"
    assert emb["backend"] == backend
    assert rep.op("data", "data")["timer"] == "perf_counter"


def test_random_data_uses_the_trace_tables(tiny_trace, tmp_path):
    out = tmp_path / "r.json"
    res = _run("--data", "random", "--trace", tiny_trace, "--config", "tiny", "--mode", "infer",
               "--batch-size", "16", "--out", str(out), *FAST)
    assert res.exit_code == 0, res.output
    rep = Report.load(out)
    assert rep.config["source"]["kind"] == "random"
    assert rep.config["source"]["bag_lengths"] == "from the trace"
    assert rep.op("emb.C3")["shape"]["rows"] == 257


def test_report_carries_roofline_verdicts_and_cache_study(tiny_trace, tmp_path, monkeypatch):
    from dlrmprof.profile import ceilings
    roofs = {"stream_gbs": 20.0, "stream_read_gbs": 12.0, "random_gbs": 2.0,
             "random_ns_per_line": 30.0, "latency_ns": 100.0, "fp32_gflops": 100.0,
             "bf16_gflops": 300.0}
    fake = {"roofs": {"1": roofs, "2": roofs}, "threads": [1, 2], "source": "measured",
            "llc_bytes": 32 << 20, "note": "canned for the test"}
    monkeypatch.setattr(ceilings, "load_or_probe", lambda fp, **kw: (fake, True))
    monkeypatch.setattr(ceilings, "load_cached", lambda host_id: fake)
    out = tmp_path / "v.json"
    res = _run("--trace", tiny_trace, "--config", "tiny", "--batch-size", "16", "--iters", "3",
               "--warmup", "1", "--out", str(out))
    assert res.exit_code == 0, res.output
    rep = Report.load(out)
    rows = {(r["name"], r["phase"]): r for r in rep.roofline["rows"]}
    assert rows[("top_mlp", "forward")]["verdict"] in ("compute-bound", "memory-bound")
    assert rows[("emb.C4", "forward")]["verdict"] is not None
    assert "emb.all" in rep.cache["simulation"] and rep.cache["source"] == "simulated"
    assert rep.ceilings["note"] == "canned for the test"
    assert (tmp_path / "v.md").exists() and (tmp_path / "v.roofline.png").exists()
    assert "verdict" in res.output and "-bound" in res.output


def test_failing_run_creates_no_reports_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _error(_run("--config", "tiny", "--batch-size", "0", *FAST))
    assert os.listdir(tmp_path) == []


def test_fused_tables_report_all_tables_as_one_op(tiny_trace, tmp_path):
    out = tmp_path / "f.json"
    res = _run("--trace", tiny_trace, "--config", "tiny", "--batch-size", "16", "--fused-tables",
               "--out", str(out), *FAST)
    assert res.exit_code == 0, res.output
    rep = Report.load(out)
    assert rep.op("emb.C1") is None and rep.op("emb.C1", "optimizer") is None
    emb = rep.op("emb.all")
    assert emb["shape"]["fused"] is True and emb["shape"]["calls"] == 1
    assert rep.op("emb.all", "optimizer")["kind"] == "embedding_bag_sgd"


def test_bf16_mlps_are_opt_in_and_recorded(tiny_trace, tmp_path):
    out = tmp_path / "bf16.json"
    res = _run("--trace", tiny_trace, "--config", "tiny", "--batch-size", "16", "--mlp-dtype",
               "bf16", "--out", str(out), *FAST)
    assert res.exit_code == 0, res.output
    rep = Report.load(out)
    assert rep.config["mlp_dtype"] == "bf16"
    assert rep.op("top_mlp")["shape"]["dtype"] == "bf16"
    assert np.isfinite(rep.training["losses"]).all()


def test_bf16_mlps_refused_under_nproc(tiny_trace):
    msg = _error(_run("--trace", tiny_trace, "--config", "tiny", "--nproc", "2",
                      "--mlp-dtype", "bf16", *FAST))
    assert "--mlp-dtype bf16" in msg and "fp32" in msg


def test_dense_sgd_counted_where_it_runs(tiny_trace, tmp_path):
    """The MLPs' SGD runs inside their backward: its bytes count there, and the optimizer
    row (nearly empty) must not claim them (that gave an optimizer 'at 1917% of roof')."""
    out = tmp_path / "r.json"
    res = _run("--trace", tiny_trace, "--config", "tiny", "--batch-size", "16", "--out",
               str(out), *FAST)
    assert res.exit_code == 0, res.output
    rep = Report.load(out)
    opt = next(r for r in rep.ops if r["name"] == "optimizer")
    assert opt["bytes"] is None and opt["flops"] is None
    bwd = next(r for r in rep.ops if r["name"] == "backward")
    assert "dense SGD" in bwd["shape"]["note"]
