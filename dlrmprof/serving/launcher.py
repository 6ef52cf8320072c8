"""Co-located instances and the one load generator that drives them.

`Launcher` starts `instances` model processes (`multiprocessing` with the *spawn* start method:
no forked OpenMP/numba state), each with its own model copy, and pins them to disjoint cores
when the host has ``instances x threads`` cores to give (`os.sched_setaffinity`); otherwise
they share the cores and the report says so.  The dispatcher is the calling thread: it walks
the open-loop `Schedule`, feeds the `Batcher`, and puts each batch on one task queue shared by
all instances (whichever instance is free takes the next batch: work-conserving).  A collector
thread receives the instances' timestamps.

`run_point(schedule, policy)` returns a `RawPoint` (every query's scheduled and dispatch time,
every batch's pieces and timestamps); `probe(indices, n, iters)` runs closed loops with every op
timed, on the given instances at once (solo: one index; co-located: all).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import psutil

from dlrmprof.errors import UserError
from dlrmprof.serving.batcher import Batch, Batcher, Policy
from dlrmprof.serving.loadgen import Schedule
from dlrmprof.serving.worker import ModelSpec, worker_main


@dataclass(frozen=True)
class Placement:
    mode: str                        # "pinned" (disjoint cores) or "shared"
    cores: tuple[tuple[int, ...], ...]
    available: tuple[int, ...]
    note: str

    def to_json(self) -> dict:
        return {"mode": self.mode, "cores": [list(c) for c in self.cores],
                "available": list(self.available), "note": self.note}


def plan_placement(instances: int, threads: int, available: list[int] | None = None,
                   pin: bool = True) -> Placement:
    """Disjoint cores per instance when there are enough, else every instance on all cores."""
    avail = tuple(sorted(available if available is not None else os.sched_getaffinity(0)))
    need = instances * threads
    if pin and need <= len(avail):
        cores = tuple(avail[i * threads:(i + 1) * threads] for i in range(instances))
        spare = len(avail) - need
        note = (f"each instance pinned to {threads} core(s) of its own; the dispatcher is not "
                f"pinned and " + (f"has {spare} spare core(s)" if spare else
                                  "shares the instances' cores"))
        return Placement("pinned", cores, avail, note)
    why = "--no-pin" if not pin else f"{instances} x {threads} threads > {len(avail)} cores"
    note = f"instances share cores {list(avail)} ({why}); the dispatcher shares them too"
    return Placement("shared", tuple(avail for _ in range(instances)), avail, note)


@dataclass
class RawPoint:
    """What one load point recorded (all times in seconds on the shared monotonic clock)."""

    schedule: Schedule
    policy: Policy
    t0: float                                  # the schedule's time zero
    dispatched: np.ndarray                     # per query: when the batcher got it
    batches: list[Batch] = field(default_factory=list)
    served: dict = field(default_factory=dict)  # batch id -> (instance, t_recv, t_model,
    #                                             t_end, cpu_s)
    skipped: set = field(default_factory=set)   # batch ids received after the drain deadline
    drain_deadline: float = 0.0
    noise: dict = field(default_factory=dict)


class Launcher:
    """``with Launcher(spec, instances=2, threads=1) as la: la.run_point(...)``"""

    def __init__(self, spec: ModelSpec, instances: int = 1, threads: int = 1, pin: bool = True,
                 start_timeout_s: float = 600.0):
        if instances < 1:
            raise UserError(f"--instances must be at least 1, got {instances}")
        self.spec = spec
        self.instances = instances
        self.threads = threads
        self.placement = plan_placement(instances, threads, pin=pin)
        self.start_timeout_s = start_timeout_s
        self.info: list[dict] = []
        self._procs: list = []

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> "Launcher":
        ctx = mp.get_context("spawn")
        self._tasks = ctx.Queue()
        self._results = ctx.Queue()
        self._abort = ctx.RawValue("d", math.inf)
        self._ctrls = [ctx.Queue() for _ in range(self.instances)]
        for i in range(self.instances):
            cores = list(self.placement.cores[i]) if self.placement.mode == "pinned" else None
            p = ctx.Process(target=worker_main, name=f"dlrmprof-serve-{i}", daemon=True,
                            args=(i, self.spec, cores, self._ctrls[i], self._tasks,
                                  self._results, self._abort))
            p.start()
            self._procs.append(p)
        try:
            ready = self._collect("ready", self.instances, self.start_timeout_s)
        except BaseException:
            self.close()
            raise
        self.info = [ready[i] for i in range(self.instances)]
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for i, p in enumerate(self._procs):
            if p.is_alive():
                self._ctrls[i].put(("exit",))
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        self._procs = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def _collect(self, kind: str, count: int, timeout_s: float) -> dict:
        """Wait for `count` messages of `kind`; UserError / RuntimeError on a worker's error
        or death."""
        got: dict = {}
        deadline = time.monotonic() + timeout_s
        while len(got) < count:
            try:
                msg = self._results.get(timeout=0.5)
            except queue.Empty:
                dead = [p.name for p in self._procs if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"serving instance(s) {', '.join(dead)} died "
                                       f"(exit codes {[p.exitcode for p in self._procs]})")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no {kind!r} from the instances in {timeout_s:.0f} s")
                continue
            _raise_if_error(msg)
            if msg[0] == kind:
                got[msg[1]] = msg[2] if len(msg) == 3 else msg[2:]
        return got

    def own_cpu_s(self) -> float:
        """CPU seconds of this process and every instance (for the noise record)."""
        total = 0.0
        for pid in [os.getpid()] + self.pids:
            try:
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
            except psutil.Error:
                continue
        return total

    def noise_monitor(self):
        from dlrmprof.profile.timers import NoiseMonitor

        return NoiseMonitor(self.instances * self.threads, window_s=0.5,
                            own_time=self.own_cpu_s)

    # -- a load point -------------------------------------------------------------------
    def run_point(self, schedule: Schedule, policy: Policy, drain_s: float = 10.0) -> RawPoint:
        for c in self._ctrls:
            c.put(("serve",))
        clock = time.perf_counter
        t0 = clock() + 0.05
        raw = RawPoint(schedule, policy, t0, np.zeros(schedule.num_queries))
        raw.drain_deadline = t0 + schedule.duration + drain_s
        self._abort.value = raw.drain_deadline
        collector = _Collector(self._results, self._procs, raw)
        collector.start()
        noise = self.noise_monitor()
        try:
            self._dispatch(schedule, Batcher(policy), raw, noise, collector)
        finally:
            for _ in range(self.instances):
                self._tasks.put(None)
        collector.join()
        noise.mark(10**9, force=True)
        raw.noise = noise.summary()
        self._abort.value = math.inf
        if collector.error is not None:
            _raise_if_error(collector.error)
        return raw

    def _dispatch(self, schedule: Schedule, batcher: Batcher, raw: RawPoint, noise,
                  collector: "_Collector") -> None:
        clock, sleep = time.perf_counter, time.sleep
        times = raw.t0 + schedule.times
        first, sizes = schedule.first_sample, schedule.sizes
        put = self._tasks.put
        i, n, ticks = 0, schedule.num_queries, 0
        while i < n or batcher.pending_samples:
            now = clock()
            while i < n and times[i] <= now:
                batcher.add(i, int(first[i]), int(sizes[i]), float(times[i]))
                raw.dispatched[i] = now
                i += 1
            for b in batcher.due(now):
                put((b.batch_id, b.start, b.size))
                raw.batches.append(b)
            ticks += 1
            noise.mark(ticks)
            if collector.error is not None:
                return
            nxt = min(times[i] if i < n else math.inf, batcher.deadline() or math.inf)
            if nxt == math.inf:
                break
            dt = nxt - clock()
            if dt > 0:
                sleep(dt)

    def predict(self, instance: int, start: int, n: int, timeout_s: float = 120.0) -> list:
        """The instance's click probabilities for samples [start, start + n)."""
        self._ctrls[instance].put(("predict", start, n))
        return self._collect("predict", 1, timeout_s)[instance]

    def bare(self, instance: int, batches: list[tuple[int, int]], gap_s: float = 0.0,
             timeout_s: float = 600.0) -> list[tuple[float, float, float]]:
        """(service, model, CPU) seconds per batch, run by the instance in a bare loop (with a
        sleep of `gap_s` before each batch)."""
        self._ctrls[instance].put(("bare", list(batches), gap_s))
        return self._collect("bare", 1, timeout_s)[instance]

    # -- per-op probe -------------------------------------------------------------------
    def probe(self, indices: list[int], n: int, iters: int, timeout_s: float = 600.0) -> dict:
        """Closed loops of `iters` batches of `n` samples on `indices` at once; returns
        {instance: (ops, nnz_mean, wall_s)} and the noise over the probe as ``["noise"]``."""
        noise = self.noise_monitor()
        noise.mark(0)
        for i in indices:
            self._ctrls[i].put(("probe", n, iters))
        got = self._collect("probe", len(indices), timeout_s)
        noise.mark(1, force=True)
        got["noise"] = noise.summary()
        return got


class _Collector(threading.Thread):
    """Receives the instances' batch timestamps until every instance said "served"."""

    def __init__(self, results, procs: list, raw: RawPoint):
        super().__init__(daemon=True, name="dlrmprof-serve-collector")
        self.results = results
        self.procs = procs
        self.raw = raw
        self.error = None

    def run(self) -> None:
        done = 0
        while done < len(self.procs):
            try:
                msg = self.results.get(timeout=1.0)
            except queue.Empty:
                dead = [i for i, p in enumerate(self.procs) if not p.is_alive()]
                if dead:
                    self.error = ("error", dead[0], "bug", f"instance {dead[0]} died (exit "
                                  f"code {self.procs[dead[0]].exitcode})")
                    return
                continue
            kind = msg[0]
            if kind == "batch":
                self.raw.served[msg[2]] = (msg[1],) + tuple(msg[3:])
            elif kind == "skipped":
                self.raw.skipped.add(msg[2])
            elif kind == "served":
                done += 1
            elif kind == "error":
                self.error = msg
                return


def _raise_if_error(msg) -> None:
    if msg[0] != "error":
        return
    _, index, kind, text = msg
    if kind == "user":
        raise UserError(text)
    raise RuntimeError(f"serving instance {index} failed:\n{text}")
