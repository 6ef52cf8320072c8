"""dlrmprof.profile.harness: interleaved rounds, ratios, checks before timing, results JSON.

A fake clock (patched into profile.timers, whose OpTimer the harness times with) makes each
variant cost a known time, so ratios and their spread are exact."""

import json
import types

import numpy as np
import pytest

from dlrmprof.errors import UserError
from dlrmprof.profile import harness, timers


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def perf_counter(self):
        return self.t

    def process_time(self):
        return self.t

    def spend(self, s):
        self.t += s


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(timers, "time", types.SimpleNamespace(
        perf_counter=c.perf_counter, process_time=c.process_time))
    return c


def test_ratio_of_known_costs_and_interleaved_order(clock):
    order, args = [], []

    def variant(name, cost):
        def fn(i):
            order.append(name)
            args.append(i)
            clock.spend(cost)
            return cost
        return fn

    cmp = harness.compare({"base": variant("base", 3e-3), "fast": variant("fast", 1e-3)},
                          baseline="base", rounds=6, warmup=0, nargs=4, label="cell")
    assert cmp.rounds == 6 and cmp.names == ("base", "fast")
    assert cmp.samples_s["base"] == pytest.approx([3e-3] * 6)
    assert cmp.median_s("fast") == pytest.approx(1e-3)
    s = cmp.speedup("fast")
    assert (s.median, s.q25, s.q75, s.min, s.max) == pytest.approx((3.0,) * 5)
    assert s.numerator == "base" and s.denominator == "fast" and s.rounds == 6
    assert cmp.ratio("fast").median == pytest.approx(1 / 3)
    # the check call (index 0 for both), then rounds alternating which variant goes first
    assert order[:2] == ["base", "fast"]
    assert order[2:] == ["base", "fast", "fast", "base"] * 3
    # each timed call gets its own index from the pool of nargs inputs
    assert args[2:] == [i % 4 for i in range(12)]


def test_three_variants_rotate_and_calls_per_sample(clock):
    order = []
    costs = {"a": 1e-3, "b": 2e-3, "c": 4e-3}
    fns = {n: (lambda n: lambda i: (order.append(n), clock.spend(costs[n])))(n) for n in costs}
    cmp = harness.compare(fns, baseline="a", rounds=3, warmup=0, calls=5)
    assert order[3:] == ["a"] * 5 + ["b"] * 5 + ["c"] * 5 + ["b"] * 5 + ["c"] * 5 + \
        ["a"] * 5 + ["c"] * 5 + ["a"] * 5 + ["b"] * 5
    assert cmp.median_s("c") == pytest.approx(4e-3)     # per call, not per sample of 5
    assert cmp.speedup("b").median == pytest.approx(0.5)


def test_ratio_spread_comes_from_per_round_ratios(clock):
    k = {"n": 0}
    slow = [1.0, 1.0, 2.0, 2.0, 4.0]    # the machine slows down across rounds

    def base(i):
        clock.spend(2e-3 * slow[min(k["n"], 4)])

    def cand(i):
        clock.spend(1e-3 * slow[min(k["n"], 4)])
        k["n"] += 1

    cmp = harness.compare({"base": base, "cand": cand}, baseline="base", rounds=5,
                          warmup=0, check=None)
    # drift cancels within each round: every per-round ratio is exactly 2
    assert cmp.speedup("cand").median == pytest.approx(2.0)
    assert cmp.speedup("cand").q25 == pytest.approx(cmp.speedup("cand").q75)


def test_check_failure_times_nothing(clock):
    calls = []

    def a(i):
        calls.append(i)
        clock.spend(1e-3)
        return np.zeros(3)

    def b(i):
        calls.append(i)
        clock.spend(1e-3)
        return np.ones(3)

    with pytest.raises(harness.CheckFailed, match="disagree"):
        harness.compare({"a": a, "b": b}, baseline="a", rounds=3,
                        check=lambda out: np.allclose(out["a"], out["b"]))
    assert calls == [0, 0]           # one call each for the check, no warm-up, no rounds

    def strict(out):
        assert np.allclose(out["a"], out["b"]), "b is off by one"

    with pytest.raises(harness.CheckFailed, match="b is off by one"):
        harness.compare({"a": a, "b": b}, baseline="a", rounds=3, check=strict)
    # a passing check (None or True) lets the rounds run
    cmp = harness.compare({"a": a, "b": a}, baseline="a", rounds=2, warmup=1,
                          check=lambda out: None)
    assert cmp.rounds == 2


def test_bad_arguments():
    with pytest.raises(ValueError, match="baseline"):
        harness.compare({"a": lambda i: 0}, baseline="z", rounds=1)
    with pytest.raises(ValueError, match="rounds or seconds"):
        harness.compare({"a": lambda i: 0}, baseline="a")


def test_seconds_budget_runs_at_least_min_rounds():
    cmp = harness.compare({"a": lambda i: None, "b": lambda i: None}, baseline="a",
                          seconds=0.0, min_rounds=4, warmup=0)
    assert cmp.rounds == 4
    cmp = harness.compare({"a": lambda i: None}, baseline="a", seconds=10.0, min_rounds=1,
                          max_rounds=7, warmup=0)
    assert cmp.rounds == 7


def _cmp(flags, base, cand):
    return harness.Comparison(label="x", baseline="base", names=("base", "cand"),
                              samples_s={"base": base, "cand": cand}, contaminated=flags,
                              other_cores=[1.5 if f else 0.1 for f in flags])


def test_contaminated_rounds_are_left_out_when_enough_are_clean():
    # rounds 1 and 3 contaminated: their 10x ratio must not reach the median
    c = _cmp([False, True, False, True, False, False],
             [2.0, 20.0, 2.0, 20.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert c.used == "clean" and c.clean_rounds == 4
    assert c.speedup("cand").median == pytest.approx(2.0)
    assert c.speedup("cand").rounds == 4 and c.speedup("cand").used == "clean"
    assert c.stats("base")["contaminated"] == 2
    # too few clean rounds: all are used, and the comparison says so
    c = _cmp([True, True, True, True, False, True], [2.0, 20.0, 20.0, 20.0, 2.0, 20.0],
             [1.0] * 6)
    assert c.used == "all" and c.speedup("cand").median == pytest.approx(20.0)


def test_real_clock_and_noise_record():
    """Without a fake clock: busy-waits of 2:1 give a ratio near 2, and the noise record is
    the profiler's (psutil windows, per round)."""
    import time

    def spin(s):
        def fn(i):
            end = time.perf_counter() + s
            while time.perf_counter() < end:
                pass
        return fn

    cmp = harness.compare({"slow": spin(2e-3), "fast": spin(1e-3)}, baseline="slow",
                          rounds=21, warmup=1, window_s=0.0)
    assert 1.2 < cmp.speedup("fast").median < 3.5   # 2 on a quiet host; loose on a busy one
    assert len(cmp.other_cores) == 21 and len(cmp.contaminated) == 21
    assert cmp.noise["source"].startswith("measured")
    assert cmp.noise["windows"] >= 1


def test_results_json_roundtrip_and_schema(tmp_path):
    c = _cmp([False, True, False], [2.0, 3.0, 2.0], [1.0, 1.0, 1.0])
    c.samples_s["cand"][0] = 1.0000000001     # kept to 5 significant digits
    c.params = {"R": 1000, "D": 16}
    doc = harness.results_doc("dlrmprof.bench.test/1", source="measured (test)",
                              comparisons=[c], command="python benchmarks/x.py --quick",
                              summary={"geomean": 2.0})
    path = harness.write_results(tmp_path / "r.json", doc)
    back = json.loads(path.read_text())
    assert '"base": [2.0, 3.0, 2.0]' in path.read_text()    # number lists on one line
    assert back["schema"] == "dlrmprof.bench.test/1"
    assert back["harness"] == harness.HARNESS_SCHEMA
    assert back["command"] == "python benchmarks/x.py --quick"
    assert back["host"]["cpus"] >= 1 and back["source"] == "measured (test)"
    assert back["summary"] == {"geomean": 2.0}
    j = back["comparisons"][0]
    assert j["speedup"]["cand"]["median"] == pytest.approx(2.0)
    assert j["params"] == {"R": 1000, "D": 16} and j["used"] == "clean"
    again = harness.Comparison.from_json(j)
    assert again.samples_s == {"base": [2.0, 3.0, 2.0], "cand": [1.0, 1.0, 1.0]}
    assert again.contaminated == c.contaminated
    assert harness.RatioStat.from_json(j["speedup"]["cand"]) == c.speedup("cand")
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]   # nothing left beside it


def test_long_runs_keep_statistics_not_every_round():
    n = harness.MAX_SAMPLES + 1
    c = _cmp([False] * n, [2.0] * n, [1.0] * n)
    j = c.to_json()
    assert j["samples_s"] is None and j["stats"]["base"]["n"] == n
    with pytest.raises(ValueError, match="statistics only"):
        harness.Comparison.from_json(j)


def test_results_without_a_versioned_schema_are_refused(tmp_path):
    with pytest.raises(ValueError, match="schema"):
        harness.results_doc("kernels", source="x")
    with pytest.raises(ValueError, match="versioned schema"):
        harness.write_results(tmp_path / "r.json", {"schema": 1})
    assert not (tmp_path / "r.json").exists()


def test_results_path_that_is_a_directory_is_a_user_error(tmp_path):
    doc = harness.results_doc("dlrmprof.bench.test/1", source="x")
    with pytest.raises(UserError, match="directory"):
        harness.write_results(tmp_path, doc)


def test_nan_becomes_null(tmp_path):
    doc = harness.results_doc("dlrmprof.bench.test/1", source="x",
                              summary={"a": float("nan"), "b": np.float64(1.5)})
    back = json.loads(harness.write_results(tmp_path / "r.json", doc).read_text())
    assert back["summary"] == {"a": None, "b": 1.5}


def test_command_line_is_relative_and_quoted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "benchmarks").mkdir()
    script = tmp_path / "benchmarks" / "b.py"
    assert harness.command_line([str(script), "--quick", "a b"]) == \
        "python benchmarks/b.py --quick 'a b'"


def test_groups_with_their_own_baselines(clock):
    costs = {"train/base": 4e-3, "train/ours": 2e-3, "infer/base": 1e-3, "infer/ours": 0.5e-3}
    fns = {n: (lambda c: lambda i: clock.spend(c))(c) for n, c in costs.items()}
    cmp = harness.compare(fns, baseline="train/base", rounds=4, warmup=0,
                          baseline_of={"infer/ours": "infer/base"})
    assert cmp.candidates == ["train/ours", "infer/ours"]
    assert cmp.speedup("infer/ours").median == pytest.approx(2.0)
    assert cmp.speedup("infer/ours").numerator == "infer/base"
    j = cmp.to_json()
    assert set(j["speedup"]) == {"train/ours", "infer/ours"}
    assert harness.Comparison.from_json(j).baseline_of == {"infer/ours": "infer/base"}
    with pytest.raises(ValueError, match="baseline 'nope'"):
        harness.compare(fns, baseline="train/base", rounds=1, baseline_of={"x": "nope"})


def test_check_each_sees_a_shared_buffer_right_after_each_call(clock):
    buf = np.zeros(2)
    seen = {}

    def writer(value):
        def fn(i):
            clock.spend(1e-3)
            buf[:] = value
            return buf
        return fn

    def check_each(name, out):
        seen[name] = out.copy()
        return out[0] == {"a": 1.0, "b": 1.0, "c": 2.0}[name]

    with pytest.raises(harness.CheckFailed, match=r"disagree \(c\)"):
        harness.compare({"a": writer(1.0), "b": writer(1.0), "c": writer(3.0)}, baseline="a",
                        rounds=2, check_each=check_each)
    assert seen["a"][0] == 1.0 and seen["c"][0] == 3.0


def test_results_path_is_beside_the_script(tmp_path):
    script = tmp_path / "benchmarks" / "bench_x.py"
    assert harness.results_path(str(script), "x.json") == \
        str(tmp_path / "benchmarks" / "results" / "x.json")
