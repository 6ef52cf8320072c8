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


class _FakeDevice:
    """A stand-in for torch.cuda's timing events: a device clock (ms) that the timed work
    advances; elapsed_time refuses an end event the device has not reached yet."""

    def __init__(self):
        self.clock_ms = 0.0
        self.done_ms = 0.0   # how far the device has executed (synchronize catches up)
        self.syncs = 0
        dev = self

        class Event:
            def __init__(self, enable_timing=False):
                assert enable_timing
                self.t = None

            def record(self):
                self.t = dev.clock_ms

            def synchronize(self):
                dev.done_ms = max(dev.done_ms, self.t)

            def elapsed_time(self, end):
                assert end.t <= dev.done_ms, "read before the end event completed"
                return end.t - self.t

        self.Event = Event

    def synchronize(self):
        self.syncs += 1
        self.done_ms = self.clock_ms


@pytest.fixture
def fake_cuda(monkeypatch):
    import torch

    dev = _FakeDevice()
    monkeypatch.setattr(torch.cuda, "Event", dev.Event)
    monkeypatch.setattr(torch.cuda, "synchronize", dev.synchronize)
    return dev


def test_cuda_times_reads_one_span_per_call_after_warmup(fake_cuda):
    durations = iter([9.0, 1.0, 2.0, 4.0])   # ms; the first call is the warm-up

    def work():
        fake_cuda.clock_ms += next(durations)

    assert timers.cuda_times(work, repeats=3) == pytest.approx([1e-3, 2e-3, 4e-3])
    assert fake_cuda.syncs == 1


def test_op_timer_on_cuda_reads_spans_at_the_iteration_end(fake_cuda):
    t = OpTimer(device="cuda", noise=False)
    assert t.method == "cuda-events"
    for it in range(3):
        t.begin_iteration()
        with t.op("gemm"):
            fake_cuda.clock_ms += 1.0 + it
        with t.op("data", host=True):       # host-side work: perf_counter, not events
            pass
        t.end_iteration()
    assert t.samples("gemm").tolist() == pytest.approx([1e-3, 2e-3, 3e-3])
    assert t._ops["gemm"].iters == [0, 1, 2]
    assert t.method_of("gemm") == "cuda-events" and t.method_of("data") == "perf_counter"
    assert fake_cuda.syncs == 3           # one synchronize per iteration, none inside ops
