"""The DLRM step as one callable over static input buffers, and its capture as a CUDA graph.

At batch 128 a GPU step is a few hundred small kernels; launching them one by one from Python
costs more than running them.  A CUDA graph records the step's launches once and replays them
with one call.  A graph reads and writes fixed addresses, so the step reads its inputs from
*static buffers* that each batch is copied into::

    batch (numpy) --copy_in--> static buffers (dense, labels, indices[t], offsets[t])
                                      |
                          StaticStep.body(): DLRMTrain.train_on / infer_on
                                      |
                          outputs (loss, logits | probabilities), reused per shape

`StaticStep` is that step without CUDA: it runs the body eagerly (on CPU too, where tests
check it against the normal step).  `GraphStep` adds the capture: per batch *shape* (B and
every table's lookup count) one graph, captured when a shape comes back a second time (a
shape seen once runs the normal eager step), after warm-up iterations on a side stream run
with the learning rates at 0 (`zero_lr`: the whole step runs, the weights stay as they
were).  Traces whose bag lengths differ from batch to batch give new shapes every batch:
those steps run eagerly and `GraphInfo` says how many did.  A graph holds its own memory pool, its buffers and the model's pooled
buffer of its batch size alive.

Inside a graph there are no per-op timings (the ops are not separate host calls any more):
`run` times the replayed step end to end and gets per-op times from an eager profiling pass
after the timed loop (`GraphInfo.per_op_source` says so in the report).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from dlrmprof.dlrm.data import Batch
from dlrmprof.dlrm.model import NULL_TIMER

MAX_GRAPHS = 8        # captured shapes kept; later new shapes run eagerly
WARMUP = 3            # side-stream iterations before a capture (cuBLAS handles, autograd)


@dataclass
class GraphInfo:
    """How `run` stepped: the report's ``cuda_graph`` section."""
    enabled: bool
    reason: str                      # why on or off
    mode: str = "train"
    captures: int = 0                # shapes captured
    replays: int = 0                 # steps that ran as a graph replay
    eager_steps: int = 0             # steps that ran eagerly (first sight of a shape, cap)
    distinct_shapes: int = 0
    profile_iters: int = 0           # eager iterations of the per-op profiling pass
    per_op_source: str = ""
    graph_step_median_s: float | None = None
    eager_step_median_s: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GraphInfo:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def batch_shape(batch: Batch) -> tuple:
    """The key a graph is captured for: batch size and every table's lookup count."""
    return (int(batch.dense.shape[0]),) + tuple(int(i.shape[0]) for i in batch.indices)


class _Buffers:
    """Static inputs of one shape, in the form `DLRMTrain.inputs` makes them.

    On a GPU the inputs are views into two flat device buffers (int64: every table's indices
    and offsets; float32: dense features and labels), filled from two pinned host buffers
    with one copy each: two host-to-device copies a step instead of 2T + 2.  A pinned
    buffer is refilled only after its previous copy has completed (an event)."""

    def __init__(self, trainer, batch: Batch, pack: bool | None = None):
        dense, labels, idx, off = trainer.inputs(batch)
        self._packed = None
        if pack is None:   # on a GPU (pack=True: on the CPU too, to test the packing)
            pack = isinstance(dense, torch.Tensor) and dense.device.type == "cuda"
        if pack and isinstance(dense, torch.Tensor) and \
                all(t.dtype == torch.int64 for t in list(idx) + list(off)):
            self._pack(dense, labels, idx, off)
            return
        own = _clone
        self.dense, self.labels = own(dense), own(labels)
        self.idx = [own(i) for i in idx]
        self.off = [own(o) for o in off]

    def _pack(self, dense, labels, idx, off) -> None:
        groups = []
        for dtype, tensors in ((torch.int64, list(idx) + list(off)),
                               (torch.float32, [dense, labels])):
            n = sum(t.numel() for t in tensors)
            dev = torch.empty(n, dtype=dtype, device=dense.device)
            host = torch.empty(n, dtype=dtype, pin_memory=dense.device.type == "cuda")
            views, spans, s = [], [], 0
            for t in tensors:
                views.append(dev[s:s + t.numel()].view(t.shape))
                views[-1].copy_(t)
                spans.append((s, s + t.numel()))
                s += t.numel()
            groups.append((dev, host, host.numpy(), spans, views))
        (_, _, _, _, iv), (_, _, _, _, fv) = groups
        T = len(idx)
        self.idx, self.off = iv[:T], iv[T:]
        self.dense, self.labels = fv
        self._packed = groups
        self._event = torch.cuda.Event() if dense.device.type == "cuda" else None
        if self._event is not None:
            self._event.record()

    def copy_in(self, batch: Batch) -> None:
        if self._packed is not None:
            if self._event is not None:
                self._event.synchronize()  # the pinned buffers' last copy has completed
            sources = (list(batch.indices) + list(batch.offsets), [batch.dense, batch.labels])
            for (dev, host, host_np, spans, _), srcs in zip(self._packed, sources):
                for (a, b), src in zip(spans, srcs):
                    np.copyto(host_np[a:b], src.reshape(-1), casting="same_kind")
                dev.copy_(host, non_blocking=True)
            if self._event is not None:
                self._event.record()
            return
        _copy(self.dense, batch.dense)
        _copy(self.labels, batch.labels)
        for dst, src in zip(self.idx, batch.indices):
            _copy(dst, src)
        for dst, src in zip(self.off, batch.offsets):
            _copy(dst, src)

    def args(self) -> tuple:
        # fresh lists each call: SparseArch caches combined inputs by the lists' identity,
        # which must not survive into the next batch's data
        return self.dense, self.labels, list(self.idx), list(self.off)


def _clone(x):
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    return np.array(x, copy=True)


def _copy(dst, src: np.ndarray) -> None:
    if isinstance(dst, torch.Tensor):
        s = torch.from_numpy(np.ascontiguousarray(src))
        if s.dtype != dst.dtype:
            s = s.to(dst.dtype)
        dst.copy_(s, non_blocking=dst.device.type == "cuda")
    else:
        np.copyto(dst, src, casting="same_kind")


class StaticStep:
    """The train or infer step over static buffers, one set per batch shape (run eagerly).

    ``step(batch)`` copies the batch into its shape's buffers and runs the body; the outputs
    are the body's (train: detached loss and logits; infer: probabilities)."""

    def __init__(self, trainer, mode: str, pack: bool | None = None):
        if mode not in ("train", "infer"):
            raise ValueError(f"mode must be train or infer, got {mode!r}")
        self.pack = pack
        self.trainer = trainer
        self.mode = mode
        self._body = trainer.train_on if mode == "train" else trainer.infer_on
        self._bufs: dict[tuple, _Buffers] = {}

    def buffers(self, batch: Batch) -> _Buffers:
        key = batch_shape(batch)
        b = self._bufs.get(key)
        if b is None:
            b = self._bufs[key] = _Buffers(self.trainer, batch, self.pack)
        return b

    def body(self, bufs: _Buffers, timer=NULL_TIMER):
        return self._body(*bufs.args(), timer)

    def __call__(self, batch: Batch, timer=NULL_TIMER):
        bufs = self.buffers(batch)
        with timer.op("to_device"):
            bufs.copy_in(batch)
        return self.body(bufs, timer)


@contextmanager
def zero_lr(trainer):
    """The trainer's learning rates (sparse, dense, the MLPs' in-backward SGD) at 0 inside:
    every update then adds -0 * gradient, which leaves each weight as it is (for finite
    gradients), so warm-up steps run the whole step without training the model."""
    updates = [a.param_update for a in (trainer.model.dense_arch, trainer.model.over_arch)
               if getattr(a, "param_update", None) is not None]   # InBackwardSGD objects
    saved = trainer.lr, [u.lr for u in updates]
    trainer.lr = 0.0
    for u in updates:
        u.lr = 0.0
    try:
        yield
    finally:
        trainer.lr = saved[0]
        for u, lr in zip(updates, saved[1]):
            u.lr = lr


class GraphStep(StaticStep):
    """`StaticStep` whose body is captured as a CUDA graph per batch shape and replayed."""

    def __init__(self, trainer, mode: str, max_graphs: int = MAX_GRAPHS,
                 warmup: int = WARMUP):
        super().__init__(trainer, mode)
        self.max_graphs = max_graphs
        self.warmup = warmup
        self._graphs: dict[tuple, tuple] = {}   # shape -> (graph, outputs, kept alive)
        self._seen: dict[tuple, int] = {}
        self.info = GraphInfo(True, "", mode=mode)
        self._eager = trainer.train_step if mode == "train" else trainer.infer_step

    def __call__(self, batch: Batch, timer=NULL_TIMER):
        key = batch_shape(batch)
        g = self._graphs.get(key)
        if g is None:
            n = self._seen[key] = self._seen.get(key, 0) + 1
            if n < 2 or len(self._graphs) >= self.max_graphs:
                self.info.eager_steps += 1
                return self._eager(batch, timer)
            bufs = self.buffers(batch)
            bufs.copy_in(batch)
            g = self._graphs[key] = self._capture(bufs)
            self.info.captures += 1
        else:
            bufs = self._bufs[key]
            with timer.op("to_device"):
                bufs.copy_in(batch)
        with timer.op("graph_replay"):
            g[0].replay()
        self.info.replays += 1
        return g[1]

    def warm_up(self, bufs: _Buffers) -> None:
        """`warmup` steps of the body on `bufs` (first-use work: cuBLAS handles, autograd,
        compiled kernels) with the learning rates at 0: the model is left as it was."""
        with zero_lr(self.trainer):
            for _ in range(self.warmup):
                self.body(bufs)

    def _capture(self, bufs: _Buffers) -> tuple:
        model = self.trainer.model
        side = torch.cuda.Stream(device=model.device)
        side.wait_stream(torch.cuda.current_stream(model.device))
        with torch.cuda.stream(side):
            self.warm_up(bufs)
        torch.cuda.current_stream(model.device).wait_stream(side)
        torch.cuda.synchronize(model.device)
        graph = torch.cuda.CUDAGraph()
        # captured on the warm-up stream: what was built per stream there (numba-cuda's
        # stream wrappers) is reused, not created inside the capture
        with torch.cuda.graph(graph, stream=side):
            out = self.body(bufs)
        pooled = model.sparse_arch._pooled
        return graph, out, (bufs, pooled)

    def distinct_shapes(self) -> int:
        return len(self._seen)

    def check(self) -> None:
        """Raise for lookups the captured numba-cuda kernels found out of range (inside a
        graph they count on the device instead of raising: `numba_cuda.check_deferred`)."""
        model = self.trainer.model
        if model.backend == "numba-cuda":
            from dlrmprof.kernels import numba_cuda
            numba_cuda.check_deferred(model.device)


def plan(requested: bool | None, device: str, backend: str, fused_tables: bool,
         emb_dtype: str) -> GraphInfo:
    """Whether `run` steps as a CUDA graph: `requested` None (the default) means "where it
    applies"; True where it cannot apply is a UserError naming why."""
    ok, why = graph_support(device, backend, fused_tables, emb_dtype)
    if requested is True and not ok:
        from dlrmprof.errors import UserError
        raise UserError(f"--cuda-graph: {why}")
    if requested is False:
        return GraphInfo(False, "--no-cuda-graph: every step ran eagerly")
    return GraphInfo(ok, why if ok else f"not used: {why}")


PROFILED_IN_GRAPH_LOOP = ("data", "to_device", "step")


def merge_rows(graph_rows: list[dict], profile_rows: list[dict], info: GraphInfo) -> list[dict]:
    """Report rows of a graph run: data, to_device and step from the timed graph loop; every
    other op from the eager profiling pass, marked as such."""
    keep = [r for r in graph_rows if r["name"] in PROFILED_IN_GRAPH_LOOP]
    for r in keep:
        if r["name"] == "step":
            r["timed_in"] = "cuda graph replay (timed loop)"
    for r in profile_rows:
        if r["name"] in PROFILED_IN_GRAPH_LOOP:
            continue
        keep.append(dict(r, timed_in=f"eager profiling pass ({info.profile_iters} "
                                      "iterations after the graph loop)"))
    return keep


def graph_support(device: str, backend: str, fused_tables: bool,
                  emb_dtype: str) -> tuple[bool, str]:
    """(can the step run as a CUDA graph here, why)."""
    if not device.startswith("cuda"):
        return False, "CUDA graphs need --device cuda"
    if emb_dtype != "fp32":
        return False, f"--emb-dtype {emb_dtype} runs on the CPU"
    if backend not in ("torch", "numba-cuda"):
        return False, f"backend {backend!r} has no CUDA graph path"
    return True, (f"{backend} step captured per batch shape and replayed"
                  + (" (all tables in one call)" if fused_tables else ""))
