"""The typed report model: byte-for-byte round trips of every stored report, the Record rules
(absent keys stay absent, unknown keys kept, bad shapes a one-line UserError), the typed
comparison, and the shared formatting helpers."""

import dataclasses
import glob
import json
from pathlib import Path

import pytest

from dlrmprof import fmt
from dlrmprof.errors import UserError
from dlrmprof.profile import compare, roofline
from dlrmprof.profile.ceilings_model import Ceilings, Roofs
from dlrmprof.profile.compare import Comparison, OpCell
from dlrmprof.profile.model import OpRow, ReportModel, RooflineSection, TimeStats, Verdict
from dlrmprof.profile.report import Report, op_row

ROOT = Path(__file__).resolve().parent.parent


def _report_files() -> list[Path]:
    out = []
    for p in sorted(glob.glob(str(ROOT / "reports" / "**" / "*.json"), recursive=True)
                    + glob.glob(str(ROOT / "tests" / "data" / "reports" / "*.json"))):
        with open(p) as fh:
            if json.load(fh).get("schema") == "dlrmprof-report":
                out.append(Path(p))
    return out


REPORTS = _report_files()


def test_there_are_reports_of_both_schema_versions():
    versions = {json.loads(p.read_text())["schema_version"] for p in REPORTS}
    assert versions == {1, 2} and len(REPORTS) >= 10


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: p.name)
def test_every_stored_report_round_trips_byte_for_byte(path):
    text = path.read_text()
    raw = json.loads(text)
    # the file as it is on disk (v1 included: absent sections stay absent)
    assert json.dumps(ReportModel.from_json(raw, str(path)).to_json(), indent=1) + "\n" == text
    # and loaded (upgraded to the current schema): the model writes what Report writes
    rep = Report.load(path)
    model = ReportModel.of(rep)
    assert json.dumps(model.to_json(), indent=1) == rep.to_json()
    assert model.loaded_from_version == raw["schema_version"]
    assert [op.key for op in model.ops] == [(r["name"], r["phase"]) for r in rep.ops]


def test_typed_fields_read_the_report():
    rep = Report.load(ROOT / "reports/examples/gpu-h200/cpu-kaggle-train-numba.json")
    m = ReportModel.of(rep)
    assert m.host_id == rep.host["host_id"] and m.host.cpu.vendor == rep.host["cpu"]["vendor"]
    op = m.ops[0]
    assert isinstance(op.time, TimeStats) and op.time.median == rep.ops[0]["time"]["median"]
    assert isinstance(m.roofline, RooflineSection) and isinstance(m.roofline.roofs, Roofs)
    v = m.roofline.by_key()[op.key]
    assert isinstance(v, Verdict) and v.label() == roofline.label(rep.roofline["rows"][0])
    c = m.ceilings_record()
    assert isinstance(c, Ceilings) and c.roofs[str(c.threads[-1])].stream_gbs > 0


def test_absent_keys_stay_absent_and_unknown_keys_are_kept():
    d = {"median": 2.0, "n": 1, "p10": 1.0, "p90": 3.0, "mean": 2, "custom": [1, {"x": None}]}
    t = TimeStats.from_json(d)
    assert t.extra == {"custom": [1, {"x": None}]} and t.samples == [] and t.flagged == 0
    assert json.dumps(t.to_json()) == json.dumps(d)        # same keys, same order, no nulls
    v = Verdict.from_json({"verdict": None, "name": "x"})
    assert v.to_json() == {"verdict": None, "name": "x"} and v.label() == "-"
    # a null element of a nested list stays null
    r = RooflineSection.from_json({"rows": [None, {"name": "a"}]})
    assert r.rows[0] is None and r.to_json() == {"rows": [None, {"name": "a"}]}


def test_a_record_built_in_code_writes_its_fields_in_order():
    t = TimeStats(median=1.0, p10=0.5, p90=2.0, mean=1.2, n=3, samples=[1.0, 0.5, 2.0])
    assert list(t.to_json()) == ["median", "p10", "p90", "mean", "n", "samples", "flagged"]
    assert TimeStats.from_json(t.to_json()) == t


@pytest.mark.parametrize("d, needle", [
    ({"name": "a", "phase": "forward", "device": "cpu", "backend": "numba"},
     "r.json: ops[3].time: missing"),
    ({"name": "a", "phase": "forward", "device": "cpu", "backend": "numba", "time": [1]},
     "ops[3].time: expected an object, got [1]"),
    ("not a row", "ops[3]: expected an object, got 'not a row'"),
])
def test_a_bad_shape_is_one_line_naming_the_field(d, needle):
    with pytest.raises(UserError) as e:
        OpRow.from_json(d, "r.json: ops[3]")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_report_whose_section_has_the_wrong_shape_is_refused_in_one_line(tmp_path):
    rep = Report.load(ROOT / "tests/data/reports/report_v2.json")
    bad = rep.replace(roofline={"rows": "nope"})
    with pytest.raises(UserError, match=r"<report>: field roofline\.rows: expected a list"):
        ReportModel.of(bad)


def _ops(t_emb):
    return [op_row("emb.all", kind="embedding_bag", phase="forward", device="cpu",
                   backend="numba", samples=t_emb, bytes=10_000_000, flops=1_000_000,
                   shape={"rows": 10_000_000, "row_bytes": 64}),
            op_row("loss", kind="loss", phase="forward", device="cpu", backend="torch",
                   samples=[1e-5])]


def test_comparison_is_typed_and_its_json_round_trips():
    ceil = {"roofs": {"1": {"stream_gbs": 20.0, "random_gbs": 5.0, "random_ns_per_line": 12.8,
                            "latency_ns": 120.0, "fp32_gflops": 100.0, "bf16_gflops": 300.0}},
            "llc_bytes": 32 << 20}
    reps = []
    for host, t in (("a", [1e-3, 1.1e-3]), ("b", [2e-3, 2.1e-3])):
        ops = _ops(t)
        reps.append(Report.new({"host_id": host, "cpu": {"vendor": "X"}}, ops,
                               roofline=roofline.section(ops, ceil, threads=1)))
    # the second report lacks the loss op: its cell is None, and the first has no ratio key
    reps[1] = reps[1].replace(ops=reps[1].ops[:1])
    res = compare.compare(reps, ["a", "b"])
    assert isinstance(res, Comparison)
    emb, loss = res.ops
    assert emb.cells[1].ratio == pytest.approx(2.05 / 1.05)      # medians b / a
    assert emb.cells[0].ratio == 1.0 and emb.cells[0].within_noise
    assert loss.cells[1] is None and loss.cells[0].ratio == 1.0
    j = res.to_json()
    assert Comparison.from_json(json.loads(json.dumps(j))).to_json() == j
    assert list(j) == ["reports", "baseline", "forced_mismatches", "serving",
                       "schema_versions", "hosts", "ops", "verdict_changes", "timer_differs",
                       "end_to_end"]
    cell = j["ops"][0]["cells"][1]
    assert list(cell)[-2:] == ["ratio", "within_noise"] and "compared" not in cell


def test_a_cell_without_a_baseline_has_no_ratio():
    op = OpRow.from_json(_ops([1e-3])[0])
    cell = OpCell.of(op, None)
    assert "ratio" not in cell.to_json() and cell.achieved_gbs == pytest.approx(10.0)
    assert cell.against(dataclasses.replace(cell, p10=5.0, p90=6.0)).within_noise is False


def test_fmt_helpers():
    assert [fmt.size(n) for n in (None, 512, 32768, 1536 * 1024, 25_000_000_000)] == \
        ["?", "512 B", "32 KiB", "1.5 MiB", "23.3 GiB"]
    assert [fmt.seconds(s) for s in (None, 1.5, 2e-3, 3e-6)] == ["-", "1.50 s", "2.00 ms",
                                                                 "3.0 us"]
    assert fmt.percent(0.1234) == "12.3%" and fmt.percent(0.5, "5.1f") == " 50.0%"
    assert fmt.percent(None) == "-"
    assert fmt.num(float("nan")) == "-" and fmt.num(None) == "-" and fmt.num(12345.0) == "1.23e+04"
    assert fmt.num(0.00123, ".4f") == "0.0012"
    assert fmt.ms(0.01234) == "12.34" and fmt.ms(0.5, unit=True) == "500.00 ms"
    assert fmt.ms(None) == "-" and fmt.ms(None, missing="unbounded") == "unbounded"


def test_unknown_top_level_keys_are_kept_and_a_report_needs_ops():
    d = json.loads((ROOT / "tests/data/reports/report_v2.json").read_text())
    d["from_a_newer_tool"] = {"x": 1}
    assert json.dumps(ReportModel.from_json(d).to_json()) == json.dumps(d)
    del d["ops"]
    with pytest.raises(UserError, match="r.json: field ops: expected a list of op rows"):
        ReportModel.from_json(d, "r.json")
