"""`dlrmprof numerics`: ten dtype pairs with intervals, JSON round trip, plot, bad options."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from dlrmprof.cli import cli
from dlrmprof.session import numerics
from cli_helpers import one_line_error as _error


def test_numerics_on_the_bundled_sample_writes_ten_pairs(tmp_path):
    out, js = tmp_path / "n.md", tmp_path / "n.json"
    res = CliRunner().invoke(cli, ["numerics", "--epochs", "1", "--bootstrap", "100",
                                   "--repeats", "1", "--out", str(out), "--json-out", str(js)])
    assert res.exit_code == 0, res.output
    doc = json.loads(js.read_text())
    assert doc["schema"] == "dlrmprof-numerics" and doc["schema_version"] == 1
    r = numerics.NumericsResult.from_json(doc)
    assert r.bundled and r.test_rows == 400 and r.train_rows == 1599
    pairs = {(x.emb_dtype, x.mlp_dtype) for x in r.rows}
    assert pairs == {(e, m) for e in ("fp32", "fp16", "bf16", "int8", "int4")
                     for m in ("fp32", "bf16")}
    base = r.row("fp32", "fp32")
    assert base.max_abs_dp == 0 and base.auc_delta == 0 and base.separable is None
    for x in r.rows:
        assert x.logloss_ci[0] <= x.logloss <= x.logloss_ci[1]
        assert x.auc_ci[0] <= x.auc <= x.auc_ci[1]
        assert x.accuracy_ci[0] <= x.accuracy <= x.accuracy_ci[1]
        assert x.lookup_s > 0 and x.samples_per_s > 0
    assert [r.row(e, "fp32").row_bytes for e in ("fp32", "fp16", "bf16", "int8", "int4")] == \
        [64, 32, 32, 24, 12]
    assert r.row("int8", "fp32").max_abs_dp > 0          # the packed tables were used
    assert r.row("int4", "fp32").table_bytes * 16 // 3 == base.table_bytes
    assert "too small to separate" in r.statement or "excludes 0" in r.statement
    assert "| int4 | bf16 |" in out.read_text()
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paired_bootstrap_intervals_by_construction():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(float)
    p = np.clip(0.3 + 0.2 * (y - 0.3) + 0.1 * rng.standard_normal(300), 0.01, 0.99)
    boot = numerics.bootstrap(y, [p, p.copy()], 200, seed=1)
    assert boot.shape == (2, 200, 3)
    np.testing.assert_array_equal(boot[0], boot[1])          # same rows resampled for both
    lo, hi = numerics._ci(boot[0, :, 1])
    auc = numerics._metrics(y, p)[1]
    assert lo < auc < hi and hi - lo < 0.3


@pytest.mark.parametrize("args,msg", [
    (["--emb-dtype", "int3"], "unknown embedding dtype 'int3'"),
    (["--mlp-dtype", "fp8"], "unknown MLP dtype 'fp8'"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--bootstrap", "10"], "--bootstrap must be >= 100"),
    (["--backend", "numba-cuda"], "numba or torch"),
])
def test_bad_numerics_options(args, msg, tmp_path):
    res = CliRunner().invoke(cli, ["numerics", *args, "--out", str(tmp_path / "n.md")])
    assert msg in _error(res)
    assert not (tmp_path / "n.md").exists()


def test_int4_with_odd_dim_is_refused_before_training(tmp_path):
    cfg = tmp_path / "odd.yaml"
    cfg.write_text("name: odd\ndense_features: 13\nembedding_dim: 5\nbottom_mlp: [13, 16, 5]\n"
                   "top_mlp: [356, 1]\ninteraction: dot\nloss: bce\noptimizer: sgd\nlr: 0.1\n"
                   "batch_size: 64\ntables: [" + ", ".join(["100000"] * 26) + "]\n")
    res = CliRunner().invoke(cli, ["numerics", "--config", str(cfg), "--emb-dtype", "int4",
                                   "--out", str(tmp_path / "n.md")])
    assert "int4 packs two values a byte: D must be even" in _error(res)
