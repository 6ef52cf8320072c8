"""`run --emb-dtype`: packed tables in the model, their bytes in the report, the per-table
fp32-vs-packed verdict, and the one-line errors."""

import numpy as np
import pytest
import torch

from dlrmprof import kernels
from dlrmprof.dlrm.config import load_config
from dlrmprof.dlrm.model import build_dlrm
from dlrmprof.errors import UserError
from dlrmprof.kernels import quant
from dlrmprof.kernels.cost import lines_per_row
from dlrmprof.profile import emb_dtype
from dlrmprof.profile.report import Report
from cli_helpers import one_line_error as _error, run_command as _run

FAST = ["--no-roofline", "--no-cache-study", "--no-render", "--iters", "3", "--warmup", "1"]


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_run_infer_int8_counts_packed_rows_and_states_each_table(tiny_trace, tmp_path, backend):
    out = tmp_path / "r.json"
    res = _run("--trace", tiny_trace, "--config", "tiny", "--mode", "infer", "--emb-dtype",
               "int8", "--backend", backend, "--batch-size", "16", "--out", str(out), *FAST)
    assert res.exit_code == 0, res.output
    assert "int8 vs fp32 lookups, per table" in res.output
    rep = Report.load(out)
    assert rep.config["emb_dtype"] == "int8"
    row = rep.op("emb.C2")
    sh = row["shape"]
    assert sh["row_bytes"] == 8 + 8 and sh["emb_dtype"] == "int8"
    assert sh["lines_per_lookup"] == lines_per_row(16) == 1.0
    want = kernels.cost("embedding_bag", batch=16, dim=8, nnz=sh["nnz"], row_bytes=16)
    assert row["bytes"] == want.bytes
    v = emb_dtype.TableDtypeVerdict.from_json(row["emb_dtype"])
    assert v.table == "C2" and v.rows == 100 and v.row_bytes == 16 and v.fp32_row_bytes == 32
    assert v.time_s > 0 and v.fp32_time_s > 0 and v.verdict in ("faster", "no change", "slower")
    assert "fits in L2" in v.why


@pytest.mark.parametrize("dtype", ["int8", "int4", "fp16", "bf16"])
def test_packed_forward_equals_fp32_model_on_dequantized_tables(dtype):
    cfg = load_config("tiny")
    ref = build_dlrm(cfg, backend="numba", seed=3)
    model = build_dlrm(cfg, backend="numba", seed=3, emb_dtype=dtype)
    with torch.no_grad():   # the fp32 model on the values the packed tables hold
        for w, qt in zip(ref.sparse_arch.weights, model.sparse_arch.packed):
            w.copy_(torch.from_numpy(quant.dequantize(qt).astype(np.float32)))
    rng = np.random.default_rng(0)
    B = 16
    idx = [rng.integers(0, t.rows, 2 * B) for t in cfg.tables]
    off = [np.arange(0, 2 * B + 1, 2) for _ in cfg.tables]
    dense = torch.from_numpy(rng.standard_normal((B, 13)).astype(np.float32))
    with torch.no_grad():
        a, _ = ref(dense, idx, off)
        b, _ = model(dense, idx, off)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_fp16_training_updates_master_rows_and_repacks_them():
    from dlrmprof.dlrm.data import Batch
    from dlrmprof.dlrm.train import DLRMTrain
    cfg = load_config("tiny")
    model = build_dlrm(cfg, backend="numba", seed=1, emb_dtype="fp16")
    before = [w.detach().numpy().copy() for w in model.sparse_arch.weights]
    rng = np.random.default_rng(1)
    B = 8
    idx = [rng.integers(0, t.rows, B) for t in cfg.tables]
    off = [np.arange(B + 1) for _ in cfg.tables]
    batch = Batch(dense=rng.standard_normal((B, 13)).astype(np.float32),
                  labels=rng.integers(0, 2, B).astype(np.float32), indices=idx, offsets=off)
    DLRMTrain(model, 0.5).train_step(batch)
    for t, (w, qt) in enumerate(zip(model.sparse_arch.weights, model.sparse_arch.packed)):
        w = w.detach().numpy()
        assert not np.array_equal(w[idx[t]], before[t][idx[t]])   # the master rows moved
        np.testing.assert_array_equal(qt.data, quant.quantize(w, "fp16").data)


@pytest.mark.parametrize("args,msg", [
    (["--emb-dtype", "int2"], "unknown embedding dtype 'int2'"),
    (["--emb-dtype", "int8", "--mode", "train"], "--emb-dtype int8 is for --mode infer"),
    (["--emb-dtype", "fp16", "--fused-tables"], "packed tables run on the CPU"),
])
def test_bad_emb_dtype_options(tiny_trace, args, msg):
    assert msg in _error(_run("--trace", tiny_trace, "--config", "tiny", *args, *FAST))


def test_int4_with_odd_dim_is_refused(tiny_trace, tmp_path):
    cfg = tmp_path / "odd.yaml"
    cfg.write_text("name: odd\ndense_features: 13\nembedding_dim: 5\nbottom_mlp: [13, 16, 5]\n"
                   "top_mlp: [15, 1]\ninteraction: dot\nloss: bce\noptimizer: sgd\nlr: 0.1\n"
                   "batch_size: 8\ntables: [64, 100, 257, 1000]\n")
    line = _error(_run("--data", "random", "--config", str(cfg), "--emb-dtype", "int4",
                       "--mode", "infer", *FAST))
    assert "int4 packs two values a byte: D must be even" in line


def test_set_emb_dtype_refuses_fused_tables():
    cfg = load_config("tiny")
    with pytest.raises(UserError, match="packed tables run on the CPU"):
        build_dlrm(cfg, backend="numba", fused_tables=True, emb_dtype="int8")


def test_explain_names_the_bound():
    l2, l3 = 1 << 20, 32 << 20
    v, why = emb_dtype.explain("int8", 16, 10**7, 1.0, l2, l3)
    assert v == "no change" and "latency-bound" in why and "1.25" in why
    v, why = emb_dtype.explain("int8", 64, 10**7, 1.6, l2, l3)
    assert v == "faster" and "4.00 -> 2.00 lines" in why
    v, why = emb_dtype.explain("fp16", 16, 100, 0.7, l2, l3)
    assert v == "slower" and "fits in L2" in why
    v, why = emb_dtype.explain("int8", 16, 10**6, 1.5, l2, l3)     # 61 MiB -> 23 MiB
    assert v == "faster" and "(DRAM) to 22.9 MiB, within L3" in why


def test_lines_per_row_by_hand():
    assert [lines_per_row(b) for b in (24, 64, 72, 12, 256, 136)] == [1.25, 1, 2, 1.125, 4, 3]
    with pytest.raises(UserError):
        lines_per_row(0)
    assert kernels.cost("embedding_bag", batch=2, dim=16, nnz=4, row_bytes=24).bytes_read == \
        4 * 24 + 4 * 8 + 3 * 8
