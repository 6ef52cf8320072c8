"""Trace fidelity on every kind of stream: the hot ids' own reuse, the selection between
variants, the naive baseline beside every figure, the caches users size, per-batch figures,
longer traces, and `--from csv` (real Avazu rows)."""

from __future__ import annotations

import gzip
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dlrmprof.cli import cli
from dlrmprof.commands.trace import _table_lines
from dlrmprof.tracegen import Trace, workloads
from dlrmprof.tracegen.csvlog import read_csv
from dlrmprof.tracegen.fidelity import fidelity, with_naive
from dlrmprof.tracegen.generate import _profile, synthesize_trace
from dlrmprof.tracegen.selection import choose_hot, objective
from dlrmprof.tracegen.profile import LocalityProfile, build_profile, stream_histogram
from dlrmprof.tracegen.reuse import dense_ids
from dlrmprof.tracegen.synth import synthesize_naive, synthesize_naive_hist, synthesize_stream
from dlrmprof.tracegen.windows import distinct_growth, planned_distinct, tail_cap

AVAZU = Path(__file__).parent / "data" / "streams" / "avazu_train_head8k.csv"


def _mean_mae(prof, synth, seeds=3):
    return float(np.mean([fidelity(prof, synth(prof, s))["mrc_mae"] for s in range(seeds)]))


def _model(prof, s):
    return synthesize_stream(prof, seed=s)[0]


def _naive(prof, s):
    return synthesize_naive(prof, seed=s)


# ------------------------------------------------------------------ the model
def test_spaced_hot_ids_keep_their_session_reuse():
    """Bursty users: hot ids spaced by their gap histogram keep their sessions; placed
    independently inside the window (the former model) they lose them."""
    ids = dense_ids(workloads.bursty_sessions(50_000, users=5_000, zipf_a=1.0,
                                              mean_session=8, concurrent=32, seed=1))
    spaced = build_profile("u", ids, hot=64)
    assert spaced.hot_gap.sum() > 0
    independent = replace(spaced, hot_gap=np.zeros((0, 0), dtype=np.int64))
    assert _mean_mae(spaced, _model) < 0.5 * _mean_mae(independent, _model)


def test_no_tail_id_outgrows_the_sources_most_accessed_tail_id():
    """Drifting popularity: the tail's stack model alone makes a few ids more popular than
    any of the source's (top-10 share off by 25% at K=256); the cap keeps every tail id at
    or below the source's (K+1)-th count, so the hot set's exact counts are the top."""
    ids = dense_ids(workloads.drifting_zipf(100_000, 20_000, 1.0, 0.05, seed=2))
    prof = build_profile("d", ids, hot=64)
    cap = tail_cap(prof, prof.accesses)
    assert cap == prof.top_counts[64]
    for s in range(2):
        syn = synthesize_stream(prof, seed=s)[0]
        counts = np.sort(np.bincount(syn))[::-1]
        assert (counts[:64] == prof.top_counts[:64]).all()     # the hot ids, exact
        assert counts[64] <= cap
        f = fidelity(prof, syn)
        assert f["top10_share_synthetic"] == pytest.approx(f["top10_share_source"])
    # a longer trace scales the cap with its length; no hot set, no cap
    assert tail_cap(prof, 3 * prof.accesses) == 3 * cap
    assert tail_cap(build_profile("d", ids, hot=0), prof.accesses) == 0


def test_selection_measures_every_variant_and_keeps_the_best():
    ids = dense_ids(workloads.irm_zipf(20_000, distinct=5_000, a=1.05, seed=2))
    prof, tried = choose_hot("z", ids, None, None, 32, stream_histogram(ids))
    seen = {(c["hot"], c["placement"]) for c in tried["candidates"]}
    assert {(0, "none"), (0, "naive"), (16, "spaced"), (16, "independent")} <= seen
    assert max(k for k, _ in seen) == min(4096, len(np.unique(ids)))
    # the naive candidate is the hinge's reference: as many syntheses as a finalist
    naive = [c for c in tried["candidates"] if c["placement"] == "naive"]
    assert naive[0]["syntheses"] == 3
    best = min(tried["candidates"], key=lambda c: c["objective"])
    assert (tried["chosen"], tried["placement"]) == (best["hot"], best["placement"])
    assert prof.hot_k == tried["chosen"]


@pytest.mark.parametrize("stream", ["drift", "scans", "irm"])
def test_built_streams_beat_the_naive_baseline(stream):
    ids = {"drift": lambda: workloads.drifting_zipf(50_000, 20_000, 1.0, 0.05, seed=3),
           "scans": lambda: workloads.scans(50_000, span=10_000, noise=0.05, seed=4),
           "irm": lambda: workloads.irm_zipf(50_000, 20_000, 1.05, seed=5)}[stream]()
    ids = dense_ids(ids)
    prof, _ = choose_hot(stream, ids, None, None, 32, stream_histogram(ids))
    model = _mean_mae(prof, _model, 2)
    assert model <= 0.004
    assert model <= _mean_mae(prof, _naive, 2)


def test_objective_counts_every_goal_in_its_units():
    base = {"mrc_mae": 0.004, "top10_share_source": 0.5, "top10_share_synthetic": 0.5,
            "top1pct_share_source": 0.5, "top1pct_share_synthetic": 0.5,
            "distinct_ratio": 1.0, "distinct_source": 10}
    assert objective(base) == pytest.approx(1.0)
    assert objective(base | {"top10_share_synthetic": 0.4}) == pytest.approx(2.0)
    assert objective(base | {"distinct_ratio": 1.02}) == pytest.approx(2.0)
    more = base | {"fifo_mae": 0.006, "lfu_mae": 0.006, "setassoc32_mae": 0.006,
                   "batches": [{"unique_rel_error": 0.05, "overlap_rel_error": 0.0}]}
    assert objective(more) == pytest.approx(2.0)          # secondary goals weigh half
    huge = more | {"lfu_mae": 0.6}                         # capped: cannot outvote the rest
    assert objective(huge) == pytest.approx(1.5 + 0.5 * 4.0)


def test_profiles_without_gap_histograms_still_load_and_synthesize():
    ids = dense_ids(workloads.irm_zipf(5_000, 1_000, 1.1, seed=6))
    prof = build_profile("t", ids, hot=16)
    arrays, scalars = prof.to_arrays("p0_")
    del arrays["p0_hot_gap"]                 # a file written before gap histograms existed
    old = LocalityProfile.from_arrays(arrays, "p0_", scalars)
    assert old.hot_gap.shape == (0, 0)
    old.validate()
    ids2, _ = synthesize_stream(old, seed=1)
    assert ids2.size == prof.accesses


# ------------------------------------------------------------------ what is reported
@pytest.mark.parametrize("trial", range(12))
def test_naive_histogram_from_its_draws_is_the_streams_own(trial):
    """The naive baseline's reuse histogram, from the stack depths its draws took, equals the
    reuse pass over its ids (random streams; shorter, longer, fewer rows than distinct ids,
    one row: the table-full reuse of the least recently used id), and so does its fidelity."""
    rng = np.random.default_rng(trial)
    n, nid = int(rng.integers(1, 20_000)), int(rng.integers(1, 3_000))
    ids = (rng.zipf(1.2 + rng.random(), n) % nid).astype(np.int64)
    prof = build_profile("t", ids, rows=nid, windows=4, hot=0)
    for length, rows in ((None, None), (n // 2 + 1, None), (2 * n, None),
                         (n, max(1, nid // 50)), (n, 1)):
        plain = synthesize_naive(prof, length=length, rows=rows, seed=trial)
        got, (hist, cold) = synthesize_naive_hist(prof, length=length, rows=rows, seed=trial)
        assert np.array_equal(got, plain)
        ref_hist, ref_cold = stream_histogram(plain)
        assert cold == ref_cold and np.array_equal(hist, ref_hist)
        if length is None:
            assert fidelity(prof, got, synthetic_hist=(hist, cold)) == fidelity(prof, plain)


def test_gen_trace_stores_naive_policies_and_batches(tmp_path):
    out = tmp_path / "t.npz"
    res = CliRunner().invoke(cli, ["gen-trace", "--from", "kaggle", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "naive" in res.output and "FIFO" in res.output and "per-batch" in res.output
    fid = Trace.load(out).header["fidelity"]
    for f in fid.values():
        assert {"naive", "loses_to_naive", "fifo_mae", "lfu_mae", "setassoc32_mae",
                "batches"} <= set(f)
        assert f["naive"]["realizations"] == 3
        assert [b["batch_size"] for b in f["batches"]] == [128]
    model = np.mean([f["mrc_mae"] for f in fid.values()])
    naive = np.mean([f["naive"]["mrc_mae"] for f in fid.values()])
    assert model <= 0.004 and model < 0.5 * naive
    for p in ("fifo", "setassoc32", "lfu"):
        assert np.mean([f[f"{p}_mae"] for f in fid.values()]) <= 0.006, p


def test_a_table_losing_to_the_naive_baseline_is_flagged():
    def rec(mae):
        return {"mrc_mae": mae, "distinct_ratio": 1.0, "top10_share_source": 0.3,
                "top10_share_synthetic": 0.3}
    won = with_naive(rec(0.001), [rec(0.002), rec(0.004)])
    lost = with_naive(rec(0.005), [rec(0.002), rec(0.004)])
    assert won["loses_to_naive"] == [] and lost["loses_to_naive"] == ["mrc_mae"]
    assert lost["naive"]["mrc_mae"] == pytest.approx(0.003)
    rows = [{"name": n, "rows": 9, "accesses": 9, "distinct": 9, "source_distinct": 9,
             "fidelity": f} for n, f in (("A", won), ("B", lost))]
    lines = _table_lines(rows)
    assert not lines[1].endswith("!") and lines[2].endswith("!")
    assert lines[-1].endswith("on 1 table(s), by at most 0.0020: B")


def test_longer_trace_grows_distinct_along_the_fitted_curve(tmp_path):
    full = workloads.irm_zipf(400_000, 200_000, 1.05, seed=1)
    prof = build_profile("t", dense_ids(full[:40_000]), hot=64)
    g = distinct_growth(prof)
    assert 0.5 < g["b"] < 1.0 and g["rmse_log"] < 0.05
    true = np.unique(full).size
    linear = prof.distinct + prof.tail_cold[-1] / prof.window_size * (400_000 - 40_000)
    planned = planned_distinct(prof, 400_000)
    assert abs(planned - true) < 0.5 * abs(linear - true)      # the fit beats the old rule
    trace = synthesize_trace([prof], source={}, num_samples=400_000, compute_fidelity=False)
    ext = trace.header["generator"]["extrapolated"]["t"]
    assert ext["accesses"] == 400_000 and ext["planned_distinct"] == planned
    assert trace.tables[0].distinct == pytest.approx(planned, rel=0.02)


# ------------------------------------------------------------------ --from csv (Avazu)
def test_avazu_through_gen_trace_meets_the_goals(tmp_path):
    out = tmp_path / "a.npz"
    res = CliRunner().invoke(cli, ["gen-trace", "--from", "csv", "--input", str(AVAZU),
                                   "--columns", "2-23", "--out", str(out)])
    assert res.exit_code == 0, res.output
    t = Trace.load(out)
    assert [m.name for m in t.tables][:3] == ["hour", "C1", "banner_pos"]
    assert t.num_samples == 8087 and len(t.tables) == 22
    fid = t.header["fidelity"]
    maes = [f["mrc_mae"] for f in fid.values()]
    assert np.mean(maes) <= 0.004 and max(maes) <= 0.010
    assert all(f["mrc_mae"] <= f["naive"]["mrc_mae"] + 1e-12 for f in fid.values())
    assert all(abs(f["distinct_ratio"] - 1) <= 0.02 for f in fid.values())
    assert all(f["top10_share_synthetic"] == pytest.approx(f["top10_share_source"], rel=0.2)
               for f in fid.values())
    for p in ("fifo", "lfu", "setassoc32"):
        assert np.mean([f[f"{p}_mae"] for f in fid.values()]) <= 0.006, p
    b128 = [b for f in fid.values() for b in f["batches"] if b["batch_size"] == 128]
    assert max(b["unique_rel_error"] for b in b128) <= 0.05


def test_csv_columns_by_name_index_and_range():
    by_name = read_csv(AVAZU, columns="site_id,C1", max_rows=500)
    by_index = read_csv(AVAZU, columns="5,3", max_rows=500)
    by_range = read_csv(AVAZU, columns="3-5", max_rows=500)
    assert [s.name for s in by_name.streams] == ["site_id", "C1"]
    np.testing.assert_array_equal(by_name.streams[0].ids, by_index.streams[0].ids)
    assert [s.name for s in by_range.streams] == ["C1", "banner_pos", "site_id"]
    assert by_name.rows_read == 500 and by_name.header is not None


def test_csv_without_header_bom_tab_and_gzip(tmp_path):
    rows = ["a\tx\t1", "b\tx\t2", "a\ty\t1", "c\tx\t3"]
    plain = tmp_path / "log.tsv"
    plain.write_text("\ufeff" + "\n".join(rows) + "\n", encoding="utf-8")
    got = read_csv(plain, header="no")
    assert got.sep == "\t" and got.rows_read == 4 and got.header is None
    np.testing.assert_array_equal(got.streams[0].ids, [0, 1, 0, 2])   # BOM not in the value
    gz = tmp_path / "log.tsv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    np.testing.assert_array_equal(read_csv(gz, header="no").streams[2].ids, [0, 1, 0, 2])


def test_csv_malformed_rows_counted_or_fatal(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text("user,item\n1,a\n2\n1,b\n")
    got = read_csv(f)
    assert got.rows_read == 2 and got.malformed == 1 and "line 3" in got.malformed_examples[0]
    res = CliRunner().invoke(cli, ["gen-trace", "--from", "csv", "--input", str(f), "--strict",
                                   "--out", str(tmp_path / "t.npz")])
    assert res.exit_code == 2 and "log.csv:3" in res.output and "2 fields" in res.output
    assert not (tmp_path / "t.npz").exists()


@pytest.mark.parametrize("args, expect", [
    (["--columns", "nope"], "field --columns: expected a column name of the header"),
    (["--columns", "99"], "expected column indices below 24"),
    (["--columns", "5-3"], "a column range a-b with a <= b"),
    (["--columns", "3,3"], "each column once"),
    (["--sep", "ab"], "a one-character separator"),
])
def test_csv_bad_options_are_one_line_errors(tmp_path, args, expect):
    out = tmp_path / "t.npz"
    res = CliRunner().invoke(cli, ["gen-trace", "--from", "csv", "--input", str(AVAZU),
                                   "--out", str(out), *args])
    assert res.exit_code == 2, res.output
    assert expect in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists()


def test_csv_options_refused_for_other_sources(tmp_path):
    res = CliRunner().invoke(cli, ["gen-trace", "--from", "kaggle", "--columns", "1",
                                   "--out", str(tmp_path / "t.npz")])
    assert res.exit_code == 2 and "to --from csv" in res.output


def test_csv_empty_or_header_only(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_text("")
    only = tmp_path / "h.csv"
    only.write_text("user,item\n")
    for f, expect in ((empty, "a non-empty file"), (only, "at least one well-formed data row")):
        res = CliRunner().invoke(cli, ["gen-trace", "--from", "csv", "--input", str(f),
                                       "--out", str(tmp_path / "t.npz")])
        assert res.exit_code == 2 and expect in res.output


def test_profile_of_a_csv_table_has_source_extras():
    s = read_csv(AVAZU, columns="site_id").streams[0]
    prof = _profile(s.name, s.ids, None, s.rows, 32, None, None)
    ex = prof.extra["source_extras"]
    assert ex["policies"]["accesses"] == 8087 and len(ex["policies"]["lfu"]) == len(
        ex["policies"]["sizes"])
    assert [b["batch_size"] for b in ex["batches"]] == [128, 2048]


# ------------------------------------------------------------------ --from parquet
def test_parquet_columns_match_the_csv_reading(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from dlrmprof.tracegen.csvlog import read_parquet

    csv = read_csv(AVAZU, columns="site_id,device_ip,C14", max_rows=3000)
    import csv as _csv
    with open(AVAZU, newline="") as fh:
        rows = list(_csv.DictReader(fh))[:3000]
    table = pa.table({"site_id": [r["site_id"] for r in rows],
                      "device_ip": [r["device_ip"] for r in rows],
                      "C14": [int(r["C14"]) for r in rows]})
    path = tmp_path / "log.parquet"
    pq.write_table(table, path, row_group_size=700)        # several row groups
    got = read_parquet(path, columns="site_id,1,C14")
    assert [s.name for s in got.streams] == ["site_id", "device_ip", "C14"]
    for a, b in zip(got.streams, csv.streams):
        np.testing.assert_array_equal(a.ids, b.ids)
    out = tmp_path / "t.npz"
    res = CliRunner().invoke(cli, ["gen-trace", "--from", "parquet", "--input", str(path),
                                   "--columns", "site_id,C14", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert [m.name for m in Trace.load(out).tables] == ["site_id", "C14"]


def test_parquet_bad_input_is_one_line(tmp_path):
    pytest.importorskip("pyarrow")
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"PAR1 not really")
    res = CliRunner().invoke(cli, ["gen-trace", "--from", "parquet", "--input", str(bad),
                                   "--out", str(tmp_path / "t.npz")])
    assert res.exit_code == 2 and "a readable Parquet file" in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(cli, ["gen-trace", "--from", "parquet", "--input", str(bad),
                                   "--sep", ";", "--out", str(tmp_path / "t.npz")])
    assert res.exit_code == 2 and "apply to --from csv" in res.output


def test_length_as_a_multiple_of_the_source(tmp_path):
    out = tmp_path / "t.npz"
    res = CliRunner().invoke(cli, ["gen-trace", "--from", "kaggle", "--tables", "C3,C12",
                                   "--length", "10x", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "extrapolated beyond the source on 2 table(s)" in res.output
    t = Trace.load(out)
    assert t.num_samples == 19_990
    ext = t.header["generator"]["extrapolated"]
    assert set(ext) == {"C3", "C12"} and all(e["accesses"] == 19_990 for e in ext.values())
    assert all(m.distinct > 2 * p.distinct for m, p in zip(t.tables, t.profiles))
    for bad in ("0x", "-2x", "abc", "0"):
        res = CliRunner().invoke(cli, ["gen-trace", "--from", "kaggle", "--length", bad,
                                       "--out", str(tmp_path / "b.npz")])
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, bad
