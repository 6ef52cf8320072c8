import json

import pytest
from click.testing import CliRunner

from dlrmprof.cli import cli
from dlrmprof.profile import compare, report as R
from dlrmprof.profile import roofline
from dlrmprof.profile.report import Report, op_row

GOLDEN = "tests/data/reports/report_v1.json"
ROOFS = {"stream_gbs": 20.0, "random_gbs": 12.0, "random_ns_per_line": 12.8, "latency_ns": 120.0,
         "fp32_gflops": 100.0, "bf16_gflops": 300.0}


def _report(host_id, emb_t, mlp_t, cfg=None, roofs=ROOFS, digest="abc"):
    ops = [op_row("emb.all", kind="embedding_bag", phase="forward", device="cpu",
                  backend="numba", samples=emb_t, bytes=10_000_000, flops=1_000_000,
                  shape={"rows": 10_000_000, "row_bytes": 64}),
           op_row("top_mlp", kind="mlp", phase="forward", device="cpu", backend="torch",
                  samples=mlp_t, bytes=1_000_000, flops=20_000_000)]
    ceil = {"roofs": {"1": roofs}, "llc_bytes": 32 << 20}
    return Report.new({"host_id": host_id, "cpu": {"vendor": "AMD", "logical_cpus": 2}},
                      ops, roofline=roofline.section(ops, ceil, threads=1),
                      config=dict({"preset": "kaggle", "batch_size": 2048, "threads": 1},
                                  **(cfg or {})),
                      trace={"digest": digest}, end_to_end={"samples_per_s": 1000.0})


def _pair(tmp_path, **kw):
    a = _report("hostA", [1e-3, 1.1e-3, 0.9e-3], [1e-3, 1.02e-3, 0.98e-3])
    # host B: gathers 2x slower; MLP equal within noise but over a lower compute roof so
    # its verdict flips from compute-bound to memory-bound
    b = _report("hostB", [2e-3, 2.1e-3, 1.9e-3], [1.01e-3, 1.03e-3, 0.99e-3],
                roofs=dict(ROOFS, fp32_gflops=1000.0, stream_gbs=5.0), **kw)
    pa, pb = a.save(tmp_path / "a.json"), b.save(tmp_path / "b.json")
    return pa, pb


def test_compare_rows(tmp_path):
    pa, pb = _pair(tmp_path)
    res = compare.compare(compare.load_all([pa, pb]), ["a", "b"])
    rows = {r.name: r for r in res.ops}
    emb = rows["emb.all"].cells
    assert emb[1].ratio == pytest.approx(2.0) and not emb[1].within_noise
    mlp = rows["top_mlp"].cells
    assert mlp[1].within_noise
    assert res.verdict_changes == ["top_mlp (forward)"]
    assert mlp[0].verdict == "compute-bound" and mlp[1].verdict == "memory-bound"
    assert res.hosts_shared["CPU"] == "AMD None"
    assert res.hosts_differ["host id"] == ["hostA", "hostB"]
    assert res.hosts_differ["stream GB/s"] == [20.0, 5.0]


def test_rows_timed_differently_are_marked(tmp_path):
    """Per-table figures from inside one kernel call (tsc) against perf_counter around a
    call per table: the row is marked and the footnote says what each report used."""
    a = _report("hostA", [1e-3, 1.1e-3, 0.9e-3], [1e-3, 1.02e-3, 0.98e-3])
    b = _report("hostB", [0.9e-3, 1e-3, 1.1e-3], [1e-3, 1.02e-3, 0.98e-3])
    a.ops[0]["timer"], b.ops[0]["timer"] = "perf_counter", "tsc"
    a.ops[1]["timer"] = b.ops[1]["timer"] = "perf_counter"
    res = compare.compare([a, b], ["a", "b"])
    assert res.timer_differs == ["emb.all (forward)"]
    md = compare.markdown(res)
    assert "| emb.all † | forward |" in md and "| top_mlp | forward |" in md
    assert "a: perf_counter, b: tsc" in md
    assert "†" not in compare.markdown(compare.compare([a, a], ["a", "a2"]))


def test_cli_markdown_json_png(tmp_path):
    pa, pb = _pair(tmp_path)
    r = CliRunner().invoke(cli, ["compare", str(pa), str(pb)])
    assert r.exit_code == 0, r.output
    assert "| emb.all | forward |" in r.output and "2.00x" in r.output
    assert "~1.01x" in r.output and "**top_mlp**" in r.output
    assert "Verdict changes between hosts:** top_mlp" in r.output
    md, png = tmp_path / "c.md", tmp_path / "c.png"
    r = CliRunner().invoke(cli, ["compare", str(pa), str(pb), "--md", str(md), "--png", str(png)])
    assert r.exit_code == 0 and md.read_text().startswith("# dlrmprof compare")
    assert png.read_bytes()[:4] == b"\x89PNG"
    r = CliRunner().invoke(cli, ["compare", str(pa), str(pb), "--json"])
    assert json.loads(r.output)["baseline"] == "a"


def test_incompatible_configs_refused_unless_forced(tmp_path):
    pa, pb = _pair(tmp_path, cfg={"batch_size": 128})
    md = tmp_path / "c.md"
    r = CliRunner().invoke(cli, ["compare", str(pa), str(pb), "--md", str(md)])
    assert r.exit_code == 2 and "config batch_size: 2048 in a vs 128 in b" in r.output
    assert "--force" in r.output and r.output.count("\n") == 1 and not md.exists()
    r = CliRunner().invoke(cli, ["compare", str(pa), str(pb), "--force"])
    assert r.exit_code == 0 and "Compared with --force despite" in r.output


def test_different_trace_refused(tmp_path):
    a = _report("hostA", [1e-3], [1e-3]).save(tmp_path / "a.json")
    b = _report("hostB", [1e-3], [1e-3], digest="zzz").save(tmp_path / "b.json")
    r = CliRunner().invoke(cli, ["compare", str(a), str(b)])
    assert r.exit_code == 2 and "trace digest" in r.output


def test_virtual_hosts_threads_and_backend_may_differ(tmp_path):
    a = _report("h", [1e-3], [1e-3]).save(tmp_path / "t1.json")
    b = _report("h", [1e-3], [1e-3], cfg={"threads": 2, "backend": "torch",
                                          "simd_level": "avx2"}).save(tmp_path / "t2.json")
    r = CliRunner().invoke(cli, ["compare", str(a), str(b)])
    assert r.exit_code == 0, r.output
    assert "| threads | 1 | 2 |" in r.output


@pytest.mark.parametrize("content, needle", [
    ("{\"schema\": \"dlrmprof-report\", \"schema_vers", "truncated JSON"),
    ("this is not json", "corrupt JSON"),
    ('{"hello": "world"}', "not a dlrmprof report"),
    ('{"schema": "dlrmprof-report", "schema_version": 999}', "newer than this dlrmprof"),
    ("", "empty file"),
])
def test_bad_report_files(tmp_path, content, needle):
    good, _ = _pair(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    md, png = tmp_path / "out.md", tmp_path / "out.png"
    r = CliRunner().invoke(cli, ["compare", str(good), str(bad), "--md", str(md),
                                 "--png", str(png)])
    assert r.exit_code == 2
    assert needle in r.output and "bad.json" in r.output and r.output.count("\n") == 1
    assert not md.exists() and not png.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json", "bad.json"]


@pytest.mark.parametrize("section, value, needle", [
    ("roofline", {"rows": "nope"}, "bad.json: field roofline.rows: expected a list, got 'nope'"),
    ("host", {"host_id": "h", "caches": [{"level": 1}]},
     "bad.json: field host.caches[0].size_bytes: missing"),
    ("cache", {"simulation": {"emb.all": 3}},
     "bad.json: field cache.simulation.emb.all: expected an object, got 3"),
])
def test_a_report_section_of_the_wrong_shape_is_one_line(tmp_path, section, value, needle):
    """A file that parses and validates but whose section has another shape: one line naming
    the file and the field (not a traceback from deep in the renderer)."""
    good, b = _pair(tmp_path)
    data = json.loads(b.read_text())
    data[section] = value
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    md = tmp_path / "out.md"
    r = CliRunner().invoke(cli, ["compare", str(good), str(bad), "--md", str(md)])
    assert r.exit_code == 2, r.output
    assert needle in r.output and r.output.count("\n") == 1
    assert not md.exists()


def test_needs_two_reports(tmp_path):
    pa, _ = _pair(tmp_path)
    r = CliRunner().invoke(cli, ["compare", str(pa)])
    assert r.exit_code == 2 and "at least two" in r.output


def test_older_schema_upgraded(tmp_path, monkeypatch):
    """A v1 golden file loads through the upgrader chain when the tool is at v2."""
    def v1_to_v2(d):
        d = dict(d)
        d["noise"] = dict(d.get("noise") or {}, upgraded_from=1)
        return d
    monkeypatch.setattr(R, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(R._UPGRADERS, 1, v1_to_v2)
    old = Report.load(GOLDEN)
    assert old.schema_version == 2 and old.loaded_from_version == 1
    assert old.noise["upgraded_from"] == 1
    new = old.replace(created="2026-11-26T12:00:00+00:00")
    p = new.save(tmp_path / "new.json")
    res = compare.compare([Report.load(GOLDEN), Report.load(p)], ["old", "new"])
    assert res.schema_versions == [1, 2]
    assert "(upgraded)" in compare.markdown(res)


def test_the_serving_comparison_renders_to_its_committed_markdown():
    """Golden file: reports/examples/serving/compare.md is `dlrmprof compare` of the four
    serving reports labelled without their common prefix."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "reports" / "examples" / "serving"
    names = ["1x-b1024-w2ms", "1x-b256-w0", "2x-b1024-w2ms", "2x-b256-w0"]
    reps = compare.load_all([root / f"kaggle-1m-{n}.json" for n in names])
    res = compare.compare(reps, names)
    assert compare.markdown(res) == (root / "compare.md").read_text()
    assert json.loads(json.dumps(res.to_json()))["baseline"] == names[0]
