"""One serving instance: a process with its own model copy, fed batches over a shared queue.

Each instance builds its model from the same options (so the same tables and the same data:
batch ``[start, start + n)`` means the same samples in every instance), optionally pinned to
its own cores with `os.sched_setaffinity`, then obeys commands on its private control queue:

``("serve",)``           take ``(batch_id, start, n)`` messages from the shared task queue until
                         a ``None``; answer each with ``("batch", instance, batch_id, t_recv,
                         t_model, t_end, cpu_s)``: received, data cut (model starts), result
                         on the host, and the process's CPU seconds in between.
``("probe", n, iters)``  a closed loop of `iters` batches of `n` samples (consecutive in the
                         data) with every op timed; answer ``("probe", instance, ops, nnz_mean,
                         wall_s)``.
``("predict", start, n)``  answer ``("predict", instance, probabilities)`` for samples
                         [start, start + n) (a benchmark checks an instance against its own
                         in-process model before timing).
``("bare", [(start, n), ...], gap_s)``  the same batches in a bare loop in this process
                         (no queue, no messages; optionally a sleep of `gap_s` between
                         batches, as a served instance blocks on its queue); answer
                         ``("bare", instance, [(service, model, cpu_s)])``
                         per batch: the baseline of the harness-overhead benchmark.
``("exit",)``

Times are `time.perf_counter()`, which on Linux is CLOCK_MONOTONIC: one clock for every
process on the host, so the dispatcher and the instances share a time axis.

`SleepModel` is the calibration model: it sleeps a known service time (``base + per_sample *
n`` seconds) so the latency accounting can be checked against a known answer.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ModelSpec:
    """What every instance runs: ``kind="dlrm"`` with `opts` (a `RunOptions`), or
    ``kind="sleep"`` with a known service time ``base_s + per_sample_s * n``."""

    kind: str = "dlrm"
    opts: Any = None
    base_s: float = 0.0
    per_sample_s: float = 0.0

    def describe(self) -> str:
        if self.kind == "sleep":
            return (f"sleep model: {self.base_s * 1e3:g} ms + {self.per_sample_s * 1e6:g} us "
                    f"per sample (calibration)")
        o = self.opts
        return f"DLRM {o.config} ({o.backend or 'default backend'} on {o.device})"


class SleepModel:
    device = "cpu"

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def info(self) -> dict:
        return {"model": self.spec.describe()}

    def cut(self, start: int, n: int):
        return n

    def predict(self, batch) -> list[float]:
        return [float(batch)]

    def infer(self, batch, timer=None) -> None:
        time.sleep(self.spec.base_s + self.spec.per_sample_s * batch)


class DLRMModel:
    """`dlrm run`'s preparation and model building, for inference on `(start, n)` batches."""

    def __init__(self, spec: ModelSpec):
        from dlrmprof.dlrm.model import build_dlrm
        from dlrmprof.dlrm.runner import set_threads
        from dlrmprof.dlrm.train import DLRMTrain
        from dlrmprof.session.prepare import make_source, prepare

        prep = prepare(spec.opts)
        set_threads(spec.opts.threads, prep.backend)
        self.prep = prep
        self.source = make_source(prep)
        self.device = prep.device
        model = build_dlrm(prep.config, backend=prep.backend, device=prep.device,
                           seed=spec.opts.seed, fused_tables=spec.opts.fused_tables,
                           mlp_dtype=spec.opts.mlp_dtype)
        model.eval()
        self.trainer = DLRMTrain(model, prep.config.lr)

    def info(self) -> dict:
        import torch

        return {"model": f"DLRM {self.prep.config.name}", "backend": self.prep.backend,
                "device": self.device, "torch_threads": torch.get_num_threads(),
                "table_bytes": int(sum(t.nbytes for t in self.prep.config.tables))}

    def cut(self, start: int, n: int):
        return self.source.batch_at(start, n)

    def predict(self, batch) -> list[float]:
        return self.trainer.infer_step(batch).cpu().tolist()

    def infer(self, batch, timer=None) -> None:
        from dlrmprof.dlrm.model import NULL_TIMER

        probs = self.trainer.infer_step(batch, timer or NULL_TIMER)
        probs.cpu()   # the answer on the host (on CUDA this waits for the device)


def build_model(spec: ModelSpec):
    return SleepModel(spec) if spec.kind == "sleep" else DLRMModel(spec)


def worker_main(index: int, spec: ModelSpec, cores: list[int] | None, ctrl, tasks,
                results, abort_at) -> None:
    """Process entry point (see module doc).  Errors go back as ``("error", index, kind,
    text)``: kind "user" for a `UserError` (one line), "bug" with the traceback."""
    from dlrmprof.errors import UserError

    try:
        if cores:
            os.sched_setaffinity(0, cores)
        model = build_model(spec)
        results.put(("ready", index, dict(model.info(), pid=os.getpid(),
                                          cores=sorted(os.sched_getaffinity(0)))))
        while True:
            cmd = ctrl.get()
            if cmd[0] == "serve":
                _serve(index, model, tasks, results, abort_at)
            elif cmd[0] == "probe":
                results.put(("probe", index) + _probe(model, spec, cmd[1], cmd[2]))
            elif cmd[0] == "bare":
                results.put(("bare", index, _bare(model, cmd[1], cmd[2])))
            elif cmd[0] == "predict":
                results.put(("predict", index, model.predict(model.cut(cmd[1], cmd[2]))))
            elif cmd[0] == "exit":
                return
    except UserError as exc:
        results.put(("error", index, "user", str(exc)))
    except BaseException:  # a bug: keep its traceback for the launcher to show
        results.put(("error", index, "bug", traceback.format_exc()))


def _serve(index: int, model, tasks, results, abort_at) -> None:
    """Serve until the end-of-point sentinel; a batch received after `abort_at` (the point's
    drain deadline, shared with the launcher) is answered ``("skipped", ...)`` unserved."""
    clock, cpu = time.perf_counter, time.process_time
    while True:
        msg = tasks.get()
        if msg is None:
            results.put(("served", index))
            return
        t_recv, c0 = clock(), cpu()
        bid, start, n = msg
        if t_recv > abort_at.value:
            results.put(("skipped", index, bid))
            continue
        batch = model.cut(start, n)
        t_model = clock()
        model.infer(batch)
        t_end = clock()
        results.put(("batch", index, bid, t_recv, t_model, t_end, cpu() - c0))


def _bare(model, batches, gap_s: float = 0.0) -> list[tuple[float, float, float]]:
    clock, cpu = time.perf_counter, time.process_time
    out = []
    for start, n in batches:
        if gap_s:
            time.sleep(gap_s)
        t0, c0 = clock(), cpu()
        batch = model.cut(start, n)
        t1 = clock()
        model.infer(batch)
        t2 = clock()
        out.append((t2 - t0, t2 - t1, cpu() - c0))
    return out


PROBE_WARMUP = 3


def _probe(model, spec: ModelSpec, n: int, iters: int) -> tuple:
    """Closed loop (after `PROBE_WARMUP` untimed batches), every op timed (the run command's `OpTimer`); returns (ops, nnz_mean,
    wall_s) with ops = {name: (samples, iterations, method)}."""
    from dlrmprof.profile.timers import OpTimer

    timer = OpTimer(device=getattr(model, "device", "cpu"), noise=False)
    for it in range(PROBE_WARMUP):
        model.infer(model.cut(it * n, n))
    timer.reset()
    nnz = None
    t0 = time.perf_counter()
    for it in range(iters):
        timer.begin_iteration()
        with timer.op("data", host=True):
            batch = model.cut(it * n, n)
        if spec.kind == "dlrm":
            k = np.fromiter((i.shape[0] for i in batch.indices), np.int64, len(batch.indices))
            nnz = k if nnz is None else nnz + k
        with timer.op("step"):
            model.infer(batch, timer if spec.kind == "dlrm" else None)
        timer.end_iteration()
    wall = time.perf_counter() - t0
    ops = {name: (list(o.samples), list(o.iters), timer.method_of(name))
           for name, o in timer._ops.items()}
    return ops, ([] if nnz is None else (nnz / iters).tolist()), wall


def rebuild_timer(ops: dict, iterations: int, device: str = "cpu"):
    """An `OpTimer` holding samples measured in another process (for `session.rows.op_rows`)."""
    from dlrmprof.profile.timers import OpTimer

    timer = OpTimer(device=device, noise=False)
    for name, (samples, iters, method) in ops.items():
        o = timer.op(name, host=True)
        o.samples.extend(samples)
        o.iters.extend(iters)
        o.method = method
    timer.iteration = iterations
    return timer
