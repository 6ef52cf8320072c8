import json

import pytest

from dlrmprof.errors import UserError
from dlrmprof.profile import report as R
from dlrmprof.profile.report import Report, op_row, time_stats

DATA = "tests/data/reports"


def _host(hid="abc123"):
    return {"host_id": hid, "cpu": {"vendor": "AMD", "logical_cpus": 2}}


def _rows():
    return [op_row("emb.all", kind="embedding_bag", phase="forward", device="cpu",
                   backend="numba", samples=[3e-3, 2e-3, 4e-3], bytes=10_000_000, flops=1_000_000,
                   shape={"B": 2048, "D": 16, "rows": 1000}),
            op_row("top_mlp", kind="mlp", phase="forward", device="cpu", backend="torch",
                   samples=[1e-3], bytes=1000, flops=2_000_000_000)]


def test_time_stats_matches_numpy():
    np = pytest.importorskip("numpy")
    xs = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0, 7.5]
    st = time_stats(xs)
    assert st["median"] == pytest.approx(np.median(xs))
    assert st["p10"] == pytest.approx(np.percentile(xs, 10))
    assert st["p90"] == pytest.approx(np.percentile(xs, 90))
    assert st["mean"] == pytest.approx(np.mean(xs))
    assert st["n"] == 7 and st["samples"] == xs


def test_roundtrip(tmp_path):
    rep = Report.new(_host(), _rows(), config={"preset": "kaggle", "device": "cpu"})
    path = rep.save(tmp_path / "r.json")
    back = Report.load(path)
    assert back == rep
    assert back.op("emb.all")["sources"] == {"time": "measured", "bytes": "counted",
                                             "flops": "counted"}
    assert back.loaded_from_version == R.SCHEMA_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_default_path():
    rep = Report.new(_host("h1"), _rows(), config={"preset": "kaggle", "device": "cpu",
                                                   "backend": "numba"})
    p = rep.default_path("reports")
    assert p.parts[:2] == ("reports", "h1")
    assert p.name.endswith("-kaggle-cpu-numba.json")


def test_numpy_values_serialise(tmp_path):
    np = pytest.importorskip("numpy")
    rep = Report.new(_host(), _rows(), cache={"hits": np.array([1, 2]), "x": np.float32(0.5)})
    back = Report.load(rep.save(tmp_path / "r.json"))
    assert back.cache == {"hits": [1, 2], "x": 0.5}


def test_unserialisable_leaves_nothing(tmp_path):
    rep = Report.new(_host(), _rows(), cache={"bad": object()})
    with pytest.raises(TypeError):
        rep.save(tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, needle", [
    ("", "empty file"),
    ('{"schema": "dlrmprof-report", "schema_version": 1, "host": {', "truncated JSON"),
    ("{not json at all}", "corrupt JSON"),
    ('[1, 2, 3]', "not a dlrmprof report"),
    ('{"schema": "something-else", "schema_version": 1}', "not a dlrmprof report"),
    ('{"schema": "dlrmprof-report", "schema_version": 99, "host": {"host_id": "x"}}',
     "newer than this dlrmprof"),
    ('{"schema": "dlrmprof-report", "schema_version": "1"}', "schema_version"),
])
def test_bad_files_one_line(tmp_path, content, needle):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(UserError) as ei:
        Report.load(p)
    msg = str(ei.value)
    assert needle in msg and str(p) in msg and "\n" not in msg


def test_binary_file(tmp_path):
    p = tmp_path / "bin.json"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(UserError, match="not a dlrmprof report|JSON"):
        Report.load(p)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such report"):
        Report.load(tmp_path / "nope.json")


def test_bad_op_row_names_field(tmp_path):
    d = Report.new(_host(), _rows()).to_dict()
    d["ops"][1]["time"]["median"] = "fast"
    p = tmp_path / "r.json"
    p.write_text(json.dumps(d))
    with pytest.raises(UserError, match=r"ops\[1\]\.time\.median"):
        Report.load(p)
    d["ops"][1]["time"]["median"] = 1.0
    d["ops"][1]["sources"]["flops"] = "guessed"
    p.write_text(json.dumps(d))
    with pytest.raises(UserError, match=r"ops\[1\]\.sources\.flops"):
        Report.load(p)
    d["ops"][1]["sources"]["flops"] = "counted"
    d["ops"][1]["phase"] = "sideways"
    p.write_text(json.dumps(d))
    with pytest.raises(UserError, match=r"ops\[1\]\.phase"):
        Report.load(p)


def test_duplicate_rows_refused():
    with pytest.raises(UserError, match="unique"):
        Report.new(_host(), _rows() + _rows()[:1])


def test_new_rejects_unknown_section():
    with pytest.raises(TypeError):
        Report.new(_host(), [], bogus={})


def test_golden_files_every_version():
    """Every past schema version has a golden file; each loads and upgrades to current."""
    import pathlib
    for v in range(1, R.SCHEMA_VERSION + 1):
        path = pathlib.Path(DATA) / f"report_v{v}.json"
        assert path.exists(), f"missing golden file for schema version {v}"
        rep = Report.load(path)
        assert rep.schema_version == R.SCHEMA_VERSION
        assert rep.loaded_from_version == v
        assert rep.ops and rep.host["host_id"]
