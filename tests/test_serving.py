"""serve-bench: load generator schedule, batcher, latency accounting on a sleep model, the
co-location launcher with real processes, the report section, bad options."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from dlrmprof.cli import cli
from dlrmprof.errors import UserError
from dlrmprof.profile.report import Report
from dlrmprof.profile.serving import ServingSection
from dlrmprof.serving import results as R
from dlrmprof.serving.batcher import Batcher, Policy
from dlrmprof.serving.launcher import Launcher, plan_placement
from dlrmprof.serving.loadgen import (ArrivalSpec, SizeSpec, make_schedule, parse_arrivals,
                                      parse_sizes)
from dlrmprof.serving.worker import ModelSpec


# -- load generator -------------------------------------------------------------------------
def test_poisson_schedule_offers_the_rate_with_exponential_gaps():
    s = make_schedule(200.0, 30.0, ArrivalSpec("poisson"), SizeSpec(), seed=3)
    assert s.num_queries == 6000
    assert abs(s.num_queries / s.duration - 200.0) / 200.0 < 0.02
    assert np.all(np.diff(s.times) >= 0) and s.times[0] >= 0 and s.times[-1] < 30.0
    gaps = np.diff(s.times)
    assert abs(gaps.mean() * 200 - 1) < 0.02
    assert abs(gaps.std() / gaps.mean() - 1) < 0.05          # exponential: CV 1
    # memoryless: P(gap > 2/rate) = e^-2
    assert abs(np.mean(gaps > 2 / 200) - np.exp(-2)) < 0.02
    again = make_schedule(200.0, 30.0, ArrivalSpec("poisson"), SizeSpec(), seed=3)
    assert np.array_equal(s.times, again.times) and np.array_equal(s.sizes, again.sizes)
    other = make_schedule(200.0, 30.0, ArrivalSpec("poisson"), SizeSpec(), seed=4)
    assert not np.array_equal(s.times, other.times)


def test_mlperf_sizes_uniform_100_700():
    s = make_schedule(500.0, 20.0, ArrivalSpec("constant"), SizeSpec(), seed=0)
    assert s.sizes.min() == 100 and s.sizes.max() == 700
    assert abs(s.sizes.mean() - 400) < 5
    counts = np.bincount(s.sizes - 100, minlength=601)
    assert counts.max() < 50                                 # no size over-drawn
    assert np.allclose(np.diff(s.times), 1 / 500)
    assert s.first_sample[1] == s.sizes[0] and s.first_sample[-1] == s.sizes[:-1].sum()


def test_histogram_and_fixed_sizes(tmp_path):
    h = tmp_path / "sizes.txt"
    h.write_text("# size weight\n100 1\n300 3\n\n")
    spec = parse_sizes(f"hist:{h}")
    s = make_schedule(1000.0, 10.0, ArrivalSpec("constant"), spec, seed=1)
    assert set(np.unique(s.sizes)) == {100, 300}
    assert abs(np.mean(s.sizes == 300) - 0.75) < 0.02
    assert spec.mean == 250
    assert set(make_schedule(10.0, 2.0, ArrivalSpec(), parse_sizes("fixed:64")).sizes) == {64}
    assert parse_sizes("uniform:5:9") == SizeSpec("uniform", 5, 9)


def test_arrival_file_replayed_and_scaled(tmp_path):
    f = tmp_path / "arr.txt"
    f.write_text("0.0\n0.1\n0.15\n0.4\n")           # 4 arrivals per 0.5333 s period
    spec = parse_arrivals(f"file:{f}")
    native = make_schedule(None, 2.0, spec, SizeSpec("fixed", 1, 1))
    assert native.rate == pytest.approx(4 / (0.4 * 4 / 3))
    assert np.allclose(native.times[:4], [0.0, 0.1, 0.15, 0.4])
    fast = make_schedule(2 * native.rate, 2.0, spec, SizeSpec("fixed", 1, 1))
    assert np.allclose(fast.times[:4], [0.0, 0.05, 0.075, 0.2])
    assert abs(fast.num_queries - 2 * native.num_queries) <= 2


# -- batcher --------------------------------------------------------------------------------
def _batches(sizes, times, policy):
    b = Batcher(policy)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = []
    for q, (n, t) in enumerate(zip(sizes, times)):
        while b.deadline() is not None and b.deadline() < t:   # deadlines before this arrival
            out += b.due(b.deadline())
        b.add(q, int(first[q]), int(n), t)
        out += b.due(t)
    out += b.flush(times[-1] + 1)
    return out


def test_batcher_splits_merges_and_keeps_samples_contiguous():
    sizes, times = [300, 200, 900, 50], [0.0, 0.001, 0.0015, 0.1]
    out = _batches(sizes, times, Policy(512, 0.002))
    assert [b.size for b in out] == [512, 512, 376, 50]
    assert out[0].pieces == [(0, 300), (1, 200), (2, 12)]
    assert out[1].pieces == [(2, 512)] and out[2].pieces == [(2, 376)]
    # contiguous runs that cover every sample exactly once, in order
    starts = [b.start for b in out]
    assert starts == list(np.concatenate([[0], np.cumsum([b.size for b in out])[:-1]]))
    assert sum(b.size for b in out) == sum(sizes)
    assert out[2].formed == pytest.approx(0.0035)            # partial: oldest + max-wait


def test_batcher_no_wait_cuts_every_arrival():
    out = _batches([100, 100, 700], [0.0, 0.001, 0.002], Policy(256, 0.0))
    assert [b.size for b in out] == [100, 100, 256, 256, 188]


# -- latency accounting on a model with a known service time --------------------------------
def test_latency_of_sleep_model_matches_its_known_service_time():
    """Light load, one query per batch: latency = service = 5 ms + 10 us x size (+ small
    harness share); the recorded timestamps give the same percentiles when recomputed."""
    spec = ModelSpec("sleep", base_s=0.005, per_sample_s=1e-5)
    sched = make_schedule(20.0, 2.0, ArrivalSpec("constant"), SizeSpec("fixed", 200, 200))
    with Launcher(spec, instances=1) as la:
        raw = la.run_point(sched, Policy(256, 0.0))
    p = R.point_figures(raw, warmup_s=0.2, slo_s=0.06, instances=1,
                        placement=la.placement.to_json())
    assert p.unfinished == 0 and p.measured == 36 and p.batch_sizes["max"] == 200
    assert 0.007 <= p.service.p50 < 0.0085                   # sleep(7 ms) + overshoot
    assert p.latency.p50 >= p.service.p50
    assert p.latency.p50 - p.service.p50 < 0.003             # no queueing at 20 q/s
    # independent recomputation from the raw timestamps
    sched_t = raw.t0 + sched.times
    ends = np.array([raw.served[b.batch_id][3] for b in raw.batches])
    lat = (ends - sched_t)[sched.times >= 0.2]
    assert p.latency.p50 == pytest.approx(np.percentile(lat, 50), rel=1e-9)
    assert p.latency.p99 == pytest.approx(np.percentile(lat, 99), rel=1e-9)
    assert p.meets_slo and abs(p.achieved_qps - 20.0) / 20 < 0.02


def test_overload_queues_and_the_reference_replay_agrees():
    """A 10 ms model offered 150 q/s of one-query batches (1.5x its capacity): latency grows
    through the run; the ideal-queue replay of the same batches predicts it."""
    spec = ModelSpec("sleep", base_s=0.010)
    sched = make_schedule(150.0, 1.5, ArrivalSpec("constant"), SizeSpec("fixed", 10, 10))
    with Launcher(spec, instances=1) as la:
        raw = la.run_point(sched, Policy(10, 0.0), drain_s=5.0)
    p = R.point_figures(raw, warmup_s=0.0, slo_s=0.06, instances=1,
                        placement=la.placement.to_json())
    assert p.unfinished == 0
    assert p.latency.p99 > 0.2 and not p.meets_slo            # backlog of ~0.5 s of work
    assert p.wait.p50 > 5 * p.service.p50                     # mostly queueing
    assert p.latency.p99 == pytest.approx(p.reference.p99, rel=0.05)
    assert p.latency.p50 == pytest.approx(p.reference.p50, rel=0.05)


def test_drain_deadline_leaves_queries_unfinished():
    spec = ModelSpec("sleep", base_s=0.05)
    sched = make_schedule(100.0, 0.5, ArrivalSpec("constant"), SizeSpec("fixed", 1, 1))
    with Launcher(spec, instances=1) as la:
        raw = la.run_point(sched, Policy(1, 0.0), drain_s=0.2)
    p = R.point_figures(raw, warmup_s=0.0, slo_s=0.06, instances=1,
                        placement=la.placement.to_json())
    assert p.unfinished > 20 and p.latency.p99 is None and not p.meets_slo
    assert R.latency_bounded([p]) is None


def test_placement_pins_disjoint_cores_or_says_shared():
    pl = plan_placement(2, 1, available=[0, 1])
    assert pl.mode == "pinned" and pl.cores == ((0,), (1,))
    pl = plan_placement(3, 1, available=[0, 1])
    assert pl.mode == "shared" and "3 x 1 threads > 2 cores" in pl.note
    assert plan_placement(2, 2, available=[0, 1, 2, 3]).cores == ((0, 1), (2, 3))


# -- co-location with real model processes, through the CLI ---------------------------------
@pytest.fixture(scope="module")
def two_instance_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "two.json"
    r = CliRunner().invoke(cli, ["serve-bench", "--config", "tiny", "--data", "random",
                                 "--rate", "30,60", "--duration", "1.5s", "--warmup", "0.3s",
                                 "--instances", "2", "--max-batch", "256", "--probe-iters", "5",
                                 "--no-roofline", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out, r.output


def test_two_instances_serve_and_report(two_instance_report):
    out, text = two_instance_report
    rep = Report.load(out)
    sec = ServingSection.from_json(rep.serving)
    assert sec.instances == 2 and len(sec.points) == 2
    assert [p.offered_qps for p in sec.points] == [30.0, 60.0]
    pids = {i["pid"] for i in rep.config["instances_info"]}
    assert len(pids) == 2 and os.getpid() not in pids
    if len(os.sched_getaffinity(0)) >= 2:
        assert sec.placement["mode"] == "pinned"
        assert [i["cores"] for i in rep.config["instances_info"]] == sec.placement["cores"]
    for p in sec.points:
        assert p.unfinished == 0 and p.latency.p50 is not None
        assert sum(i.batches for i in p.instances) == p.batch_sizes["batches"]
        assert p.batch_sizes["max"] <= 256
    inter = sec.interference
    assert inter is not None and inter.grouped_by == "kind" and inter.rows
    kinds = {c.group for c in inter.classes}
    assert {"embedding_bag", "mlp"} <= kinds
    assert all(c.factor > 0 for c in inter.classes)
    assert rep.op("bottom_mlp") is not None                   # solo probe rows as ops
    assert "Latency-bounded throughput" in text
    assert out.with_suffix(".latency.png").stat().st_size > 1000
    assert "## Serving" in out.with_suffix(".md").read_text()


def test_compare_sets_serving_configs_side_by_side(two_instance_report, tmp_path):
    two, _ = two_instance_report
    one = tmp_path / "one.json"
    r = CliRunner().invoke(cli, ["serve-bench", "--config", "tiny", "--data", "random",
                                 "--rate", "30", "--duration", "1s", "--warmup", "0.2s",
                                 "--max-batch", "128", "--max-wait", "0", "--probe-iters", "0",
                                 "--no-roofline", "--out", str(one), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output[r.output.index("{"):])["instances"] == 1
    md, png = tmp_path / "c.md", tmp_path / "c.png"
    r = CliRunner().invoke(cli, ["compare", str(one), str(two), "--md", str(md),
                                 "--png", str(png)])
    assert r.exit_code == 0, r.output
    text = md.read_text()
    assert "## Serving" in text and "max-batch 128, max-wait 0 ms" in text
    assert "max-batch 256, max-wait 2 ms" in text
    assert png.with_suffix(".latency.png").exists()


# -- report section -------------------------------------------------------------------------
def test_bad_serving_section_is_one_line(two_instance_report, tmp_path):
    out, _ = two_instance_report
    d = json.loads(out.read_text())
    d["serving"]["points"][0]["latency"]["p99"] = "slow"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    with pytest.raises(UserError, match=r"bad.json: serving.points\[0\].latency: field p99"):
        Report.load(bad)


def test_v1_report_loads_with_empty_serving():
    rep = Report.load("tests/data/reports/report_v1.json")
    assert rep.loaded_from_version == 1 and rep.serving == {}


# -- bad options ----------------------------------------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["--rate", "-5"], "--rate must be positive"),
    (["--rate", "abc"], "--rate: expected queries/s"),
    (["--rate", "10", "--max-batch", "0"], "--max-batch must be at least 1"),
    (["--rate", "10", "--max-wait", "soon"], "--max-wait: expected a time"),
    (["--rate", "10", "--slo", "0ms"], "--slo must be positive"),
    (["--rate", "10", "--duration", "2s", "--warmup", "3s"], "--warmup must be"),
    (["--rate", "10", "--instances", "0"], "--instances must be at least 1"),
    (["--rate", "10", "--query-size", "uniform:9:3"], "--query-size: expected"),
    (["--rate", "10", "--arrivals", "bursty"], "--arrivals: expected poisson"),
    (["--rate", "10", "--arrivals", "file:/nonexistent/a.txt"], "no such file"),
    (["--rate", "10", "--device", "cuda"], None),
    ([], "--rate: give at least one rate"),
])
def test_bad_options_one_line_exit_2(args, needle, tmp_path):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    out = tmp_path / "r.json"
    r = CliRunner().invoke(cli, ["serve-bench", "--config", "tiny", "--data", "random",
                                 "--out", str(out)] + args)
    assert r.exit_code == 2, r.output
    err = r.output.strip().splitlines()[-1]
    assert err.startswith("dlrmprof: error:") and (needle or "no CUDA GPU") in err
    assert "Traceback" not in r.output and not out.exists()


@pytest.mark.parametrize("content, needle", [
    ("100 1\n200\n", "sizes.txt:2: expected two fields"),
    ("100 x\n", "sizes.txt:1: expected an integer size"),
    ("0 1\n", "sizes.txt:1: expected size >= 1"),
    ("# nothing\n", "sizes.txt: expected at least one"),
])
def test_bad_histogram_file(tmp_path, content, needle):
    f = tmp_path / "sizes.txt"
    f.write_text(content)
    r = CliRunner().invoke(cli, ["serve-bench", "--config", "tiny", "--data", "random",
                                 "--rate", "10", "--query-size", f"hist:{f}"])
    assert r.exit_code == 2 and needle in r.output and r.output.count("\n") <= 2


@pytest.mark.parametrize("content, needle", [
    ("0.1\n0.05\n", "arr.txt:2: expected finite, non-negative, non-decreasing"),
    ("0.1\nsoon\n", "arr.txt:2: expected an arrival time"),
    ("0.1\n", "arr.txt: expected at least two arrival times"),
])
def test_bad_arrival_file(tmp_path, content, needle):
    f = tmp_path / "arr.txt"
    f.write_text(content)
    r = CliRunner().invoke(cli, ["serve-bench", "--config", "tiny", "--data", "random",
                                 "--arrivals", f"file:{f}"])
    assert r.exit_code == 2 and needle in r.output


@pytest.mark.cuda
def test_serve_bench_on_cuda(tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    out = tmp_path / "cuda.json"
    r = CliRunner().invoke(cli, ["serve-bench", "--device", "cuda", "--config", "tiny",
                                 "--data", "random", "--rate", "50", "--duration", "1.5s",
                                 "--warmup", "0.3s", "--instances", "2", "--probe-iters", "5",
                                 "--no-roofline", "--out", str(out)])
    assert r.exit_code == 0, r.output
    sec = ServingSection.from_json(Report.load(out).serving)
    assert sec.device.startswith("cuda") and sec.points[0].unfinished == 0
    assert sec.interference is not None and sec.interference.rows
