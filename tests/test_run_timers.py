import time

import pytest

from dlrmprof.profile import timers
from dlrmprof.profile.timers import NoiseMonitor, OpTimer, summarize


def test_op_timer_keeps_raw_samples_per_iteration():
    t = OpTimer(noise=False)
    for _ in range(5):
        t.begin_iteration()
        with t.op("a"):
            time.sleep(0.002)
        with t.op("b"):
            pass
        t.end_iteration()
    a = t.samples("a")
    assert a.shape == (5,) and a.min() >= 0.0019
    s = t.stats("a")
    assert s["n"] == 5 and s["p10_s"] <= s["median_s"] <= s["p90_s"]
    assert len(s["samples_s"]) == 5 and s["contaminated"] == 0
    assert t.stats("b")["median_s"] < s["median_s"]
    assert len(t.iter_wall) == 5
    t.reset()
    assert t.names == [] and t.iteration == 0


def test_summarize():
    s = summarize([1.0, 2.0, 3.0, 100.0], contaminated=[False, False, False, True])
    assert s["median_s"] == 2.5 and s["median_clean_s"] == 2.0 and s["contaminated"] == 1
    assert s["contaminated_idx"] == [3]


def test_noise_monitor_flags_windows_where_others_took_our_cores(monkeypatch):
    """Fake /proc/stat: other processes busy 0.2 cores, then 1.8 cores (2 CPUs, 1 thread)."""
    clock = {"t": 0.0, "busy": 0.0, "own": 0.0}
    monkeypatch.setattr(timers.time, "perf_counter", lambda: clock["t"])
    monkeypatch.setattr(timers.time, "process_time", lambda: clock["own"])
    monkeypatch.setattr(timers, "_system_busy", lambda: (clock["busy"], 0.0))
    m = NoiseMonitor(threads=1, cpus=2, window_s=0.1)
    m.mark(0)
    for it, other in enumerate([0.2, 0.2, 1.8, 0.2], start=1):
        clock["t"] += 0.2
        clock["own"] += 0.2  # we use one core
        clock["busy"] += 0.2 + other * 0.2
        m.mark(it)
    assert [round(w.other_cores, 3) for w in m.windows] == [0.2, 0.2, 1.8, 0.2]
    assert m.flags(4).tolist() == [False, False, True, False]
    s = m.summary()
    assert s["contaminated_windows"] == 1 and s["other_cores_max"] == pytest.approx(1.8)
    # two threads leave no core free: 0.2 other cores is already contamination
    m2 = NoiseMonitor(threads=2, cpus=2)
    assert m2.free_cores == 0


def test_op_timer_flags_samples_from_contaminated_windows(monkeypatch):
    t = OpTimer(threads=1, window_s=0.0)
    calls = iter([(0.0, 0.0)] + [(10.0 * k, 0.0) for k in range(1, 10)])
    monkeypatch.setattr(timers, "_system_busy", lambda: next(calls))
    for _ in range(3):
        t.begin_iteration()
        with t.op("x"):
            time.sleep(0.001)
        t.end_iteration()
    st = t.stats("x")
    assert st["contaminated"] == 3  # 10 s of others' CPU per ~1 ms window
