"""Hybrid-parallel DLRM on `torch.distributed`: tables model-parallel, MLPs data-parallel.

One global minibatch of B samples per step, N ranks, local batch B/N; rank r's slice is
samples [r B/N, (r+1) B/N).  Every rank reads the *same* data stream (same source, same seed),
so N ranks see exactly the samples of a single-process run::

    every rank: global batch (dense [B, F], labels [B], bags of all T tables)
      |  rank r keeps: its tables' bags for all B samples, dense/labels of its slice
      v
    SparseArch (rank r's tables T_r only) -> pooled_local [B, T_r, D]
      |  all_to_all_single ("butterfly shuffle"): rank r sends rows j B/N..(j+1) B/N of
      |  pooled_local to rank j and receives [B/N, T_j, D] from every rank j
      v
    pooled [B/N, T, D] (global table order) -> interaction + MLPs under DistributedDataParallel
      |  loss = mean over the local slice; DDP averages the MLP gradients (all-reduce / N)
      v
    backward: d loss / d pooled [B/N, T, D] -> reverse all-to-all -> [B, T_r, D] on the owner,
    scaled by 1/N (each rank's loss is a mean over B/N samples, the single-process loss over
    B), then the fused sparse SGD of `SparseArch.sgd_update` on the owning rank only.

The result equals the single-process run up to float summation order (tested: loss
trajectory and final embedding rows of a 2-rank gloo run against one process).

Initialisation matches `build_dlrm(config, seed)` exactly: the same generator is consumed in
the same order (every table's uniform draws, then the bottom and top MLPs); a rank draws the
values of tables it does not own into a small scratch buffer and drops them, so it never
allocates them.

Launch: `launch()` starts the ranks through torchrun's machinery (`elastic_launch`, c10d
rendezvous, standalone on localhost unless an endpoint is given, no restarts); a process
started by plain `torchrun` finds its rank in the environment (`under_torchrun()`) and calls
`run_rank()` itself.  Backend: gloo on CPU, NCCL on CUDA.  Every collective has the process
group's timeout; a failing rank makes the launcher stop the others.

Profiling (per rank, op rows of phase ``comm``):

    wait.alltoall.fwd / wait.alltoall.bwd / wait.allreduce
                        a 1-element all-reduce right before the collective: how long this
                        rank waited for the slowest one (load imbalance) plus one latency
    alltoall.fwd, alltoall.bwd   the pooled-embedding exchange and its gradient
    allreduce           DDP's gradient buckets, through a comm hook that runs each bucket's
                        all-reduce synchronously and times it (no overlap with backward
                        compute: on a CPU host the two would share the same cores)

``bytes`` of a collective row follow the nccl-tests convention: per rank, the size of the
data the collective is about (all-to-all: this rank's send buffer; all-reduce: the bucket),
so bytes / time is the "algorithm bandwidth"; ``shape.bus_bytes`` = bytes x (N-1)/N
(all-to-all) or x 2(N-1)/N (ring all-reduce) gives the "bus bandwidth".
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from dlrmprof.errors import UserError

DIST_BACKENDS = ("auto", "gloo", "nccl")
COMM_OPS = ("wait.alltoall.fwd", "alltoall.fwd", "wait.alltoall.bwd", "alltoall.bwd",
            "wait.allreduce", "allreduce")
# ops timed at the top level of a step (their sum is what the step's time is checked against)
TOP_LEVEL = ("to_device", "emb", "wait.alltoall.fwd", "alltoall.fwd", "alltoall.layout",
             "dense_forward", "loss", "backward", "optimizer", "emb_update", "sigmoid")
IN_BACKWARD = ("wait.alltoall.bwd", "alltoall.bwd", "wait.allreduce", "allreduce")
_SKIP_CHUNK = 1 << 22
_PEER_GRACE_S = 2.0  # a rank failing with a non-user error waits this long before exiting
_SHUTDOWN_S = 5  # after a rank fails: seconds between SIGTERM and SIGKILL of the others


class RankFailed(UserError):
    """A rank failed or died during a distributed run (one line, exit code 1)."""

    exit_code = 1


@dataclass(frozen=True)
class DistOptions:
    """How to start and run the ranks (the `run --nproc` options)."""

    nproc: int = 1                      # processes per node
    nnodes: int = 1
    rdzv_endpoint: str | None = None    # host:port of the c10d rendezvous (default: standalone)
    rdzv_id: str | None = None          # job id shared by all nodes (default: a fresh uuid)
    rdzv_timeout_s: float = 60.0        # how long nodes wait for each other to join
    backend: str = "auto"               # gloo on CPU, nccl on CUDA
    timeout_s: float = 120.0            # process-group timeout: no collective waits longer
    shard_by: str = "both"
    miss_penalty: float = 10.0
    barriers: bool = True               # time a wait (1-element all-reduce) before collectives


# -- environment ---------------------------------------------------------------------------
def under_torchrun(env: dict | None = None) -> bool:
    """True in a process started by torchrun / elastic_launch (its rank is in the env)."""
    env = os.environ if env is None else env
    return all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"))


def rank_env(env: dict | None = None) -> dict:
    env = os.environ if env is None else env
    world = int(env["WORLD_SIZE"])
    return {"rank": int(env["RANK"]), "world_size": world,
            "local_rank": int(env.get("LOCAL_RANK", 0)),
            "local_world_size": int(env.get("LOCAL_WORLD_SIZE", world)),
            "master": f"{env.get('MASTER_ADDR')}:{env.get('MASTER_PORT')}",
            "run_id": env.get("TORCHELASTIC_RUN_ID")}


def resolve_backend(requested: str, device: str) -> str:
    """gloo for CPU, nccl for CUDA; UserError for nccl without a visible GPU."""
    if requested not in DIST_BACKENDS:
        raise UserError(f"--dist-backend: expected one of {', '.join(DIST_BACKENDS)}, "
                        f"got {requested!r}")
    cuda = device.startswith("cuda")
    backend = requested if requested != "auto" else ("nccl" if cuda else "gloo")
    if backend == "nccl":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--dist-backend nccl needs CUDA GPUs but torch sees none on this "
                            f"host (torch {torch.__version__}, CUDA build: "
                            f"{torch.version.cuda or 'no'}); use gloo on CPU")
        if not cuda:
            raise UserError("--dist-backend nccl works on CUDA tensors: add --device cuda "
                            "(or use gloo for --device cpu)")
        import torch.distributed as dist

        if not dist.is_nccl_available():
            raise UserError("--dist-backend nccl: this torch build has no NCCL")
    return backend


def check_global_batch(batch: int, world: int) -> int:
    if batch % world:
        raise UserError(f"--batch-size {batch} is not divisible by the {world} ranks: each rank "
                        f"takes an equal slice of the global batch")
    return batch // world


# -- sharding --------------------------------------------------------------------------------
def make_plan(prep, world_size: int, local_world_size: int, dopts: DistOptions):
    """The table placement for `prep` (a runner.Prepared) over `world_size` ranks."""
    from dlrmprof.dlrm import sharding as S

    cfg = prep.config
    llc, sharing = S.last_level_cache_bytes()
    per_rank = None
    if llc:
        # ranks on this host split the cache (at most one share per CPU sharing it)
        per_rank = int(llc // max(1, min(local_world_size, sharing)))
    if prep.trace is not None and prep.opts.data == "trace":
        loads = S.table_loads(cfg.tables, profiles=list(prep.trace.profiles),
                              cache_bytes=per_rank, miss_penalty=dopts.miss_penalty,
                              source="trace profile")
    elif prep.opts.data == "kaggle" and prep.train_data is not None:
        from dlrmprof.tracegen import build_profile

        sp = prep.train_data.sparse
        profiles = [build_profile(t.name, sp[:, i], rows=t.rows)
                    for i, t in enumerate(cfg.tables)]
        loads = S.table_loads(cfg.tables, profiles=profiles, cache_bytes=per_rank,
                              miss_penalty=dopts.miss_penalty, source="criteo rows")
    else:
        lookups = None
        if prep.trace is not None:  # random indices, the trace's bag lengths
            lookups = [p.accesses / max(1, p.num_bags) for p in prep.trace.profiles]
        loads = S.table_loads(cfg.tables, lookups=lookups, cache_bytes=per_rank,
                              miss_penalty=dopts.miss_penalty)
    return S.plan_tables(loads, world_size, by=dopts.shard_by, cache_bytes=per_rank,
                         miss_penalty=dopts.miss_penalty)


# -- the model on one rank -------------------------------------------------------------------
def build_rank_parts(config, owned: Sequence[int], backend: str, device: str, seed: int,
                     fused_tables: bool = False):
    """(SparseArch of the `owned` tables, DenseArch, InteractionArch, OverArch), initialised
    exactly as `build_dlrm(config, backend, device, seed)` would initialise them."""
    import torch

    from dlrmprof.dlrm.model import (DenseArch, InteractionArch, OverArch, SparseArch,
                                     check_backend)

    check_backend(device, backend)
    owned = list(owned)
    kw = {"fused": True} if fused_tables else {}
    # built on its device with throwaway values, then filled with build_dlrm's draws
    sparse = SparseArch([config.tables[t] for t in owned], backend=backend, device=device,
                        generator=torch.Generator().manual_seed(0), **kw)
    gen = torch.Generator().manual_seed(int(seed))
    scratch = torch.empty(0)
    mine = {t: i for i, t in enumerate(owned)}
    with torch.no_grad():
        for t, tab in enumerate(config.tables):
            bound = 1.0 / math.sqrt(tab.rows)
            if t in mine:
                w = torch.empty(tab.rows, tab.dim, dtype=torch.float32)
                w.uniform_(-bound, bound, generator=gen)
                sparse.weights[mine[t]].copy_(w)
                continue
            left = tab.rows * tab.dim  # same draws, dropped (CPU uniform_ draws serially)
            while left:
                n = min(left, _SKIP_CHUNK)
                if scratch.numel() != n:
                    scratch = torch.empty(n)
                scratch.uniform_(-bound, bound, generator=gen)
                left -= n
    dense = DenseArch(config.bottom_mlp, generator=gen)
    inter = InteractionArch(config.num_tables, config.embedding_dim,
                            backend="numba" if backend == "numba" else "torch")
    over = OverArch(config.top_layers, generator=gen)
    dense.to(device)
    over.to(device)
    return sparse, dense, inter, over


def _dense_module():
    import torch
    from torch import nn

    class DenseParts(nn.Module):
        """Bottom MLP, interaction and top MLP: the data-parallel part (wrapped in DDP)."""

        def __init__(self, dense_arch, interaction_arch, over_arch):
            super().__init__()
            self.dense_arch = dense_arch
            self.interaction_arch = interaction_arch
            self.over_arch = over_arch

        def forward(self, dense: torch.Tensor, pooled: torch.Tensor, timer) -> torch.Tensor:
            with timer.op("bottom_mlp"):
                x = self.dense_arch(dense)
            with timer.op("interaction"):
                z = self.interaction_arch(x, pooled)
            with timer.op("top_mlp"):
                return self.over_arch(z)

    return DenseParts


class PooledExchange:
    """The forward all-to-all of pooled embeddings and its backward, timed."""

    def __init__(self, plan, rank: int, local_batch: int, dim: int, device, group,
                 barriers: bool = True):
        import torch

        self.plan = plan
        self.rank = rank
        self.N = plan.world_size
        self.Bl = local_batch
        self.D = dim
        self.group = group
        self.barriers = barriers
        self.device = device
        self.counts = [len(plan.tables_of(r)) for r in range(self.N)]
        self.Tr = self.counts[rank]
        order = plan.rank_order()                       # rank-major position -> global table
        self.rank_major = torch.tensor(order, dtype=torch.int64, device=device)
        inv = [0] * len(order)
        for pos, t in enumerate(order):
            inv[t] = pos
        self.to_global = torch.tensor(inv, dtype=torch.int64, device=device)
        self.cols = np.concatenate([[0], np.cumsum(self.counts)]).tolist()
        self._token = torch.zeros(1, device=device)  # all-reduced as a barrier: stays 0
        self.timer = None
        self.bytes: dict[str, list[tuple[int, int]]] = {}  # op -> [(iteration, bytes)]
        self.cuda = str(device).startswith("cuda")

    # timing helpers --------------------------------------------------------------------
    def _record(self, name: str, nbytes: int) -> None:
        tm = self.timer
        if tm is not None and hasattr(tm, "iteration"):
            self.bytes.setdefault(name, []).append((tm.iteration, int(nbytes)))

    def wait(self, name: str) -> None:
        """Time a 1-element all-reduce: every rank leaves it when the slowest arrives."""
        if not self.barriers:
            return
        import torch.distributed as dist

        with self.timer.op("wait." + name):
            dist.all_reduce(self._token, group=self.group)
            if self.cuda:
                import torch

                torch.cuda.synchronize()

    def _a2a(self, name: str, recv, send, out_splits, in_splits) -> None:
        import torch.distributed as dist

        self.wait(name)
        with self.timer.op(name):
            dist.all_to_all_single(recv, send, out_splits, in_splits, group=self.group)
            if self.cuda:
                import torch

                torch.cuda.synchronize()
        self._record(name, send.numel() * send.element_size())

    # the exchange ----------------------------------------------------------------------
    def forward(self, pooled_local):
        """[B, T_r, D] (this rank's tables, whole batch) -> [B/N, T, D] (its slice, all)."""
        import torch

        Bl, D = self.Bl, self.D
        send = pooled_local.detach().reshape(-1)
        out_splits = [Bl * c * D for c in self.counts]
        recv = torch.empty(sum(out_splits), dtype=send.dtype, device=send.device)
        self._a2a("alltoall.fwd", recv, send, out_splits, [Bl * self.Tr * D] * self.N)
        with self.timer.op("alltoall.layout"):
            parts = [p.view(Bl, c, D) for p, c in zip(torch.split(recv, out_splits),
                                                      self.counts)]
            rank_major = torch.cat(parts, dim=1)
            return rank_major.index_select(1, self.to_global)

    def backward(self, grad):
        """d loss/d pooled [B/N, T, D] -> [B, T_r, D] for this rank's tables, scaled 1/N."""
        import torch

        Bl, D = self.Bl, self.D
        g = grad.index_select(1, self.rank_major)
        send = torch.cat([g[:, s:e, :].reshape(-1)
                          for s, e in zip(self.cols[:-1], self.cols[1:])])
        in_splits = [Bl * c * D for c in self.counts]
        recv = torch.empty(self.N * Bl * self.Tr * D, dtype=g.dtype, device=g.device)
        self._a2a("alltoall.bwd", recv, send, [Bl * self.Tr * D] * self.N, in_splits)
        # each rank's loss is a mean over B/N samples; the single-process loss is over B
        return recv.view(self.N * Bl, self.Tr, D).div_(self.N)

    def allreduce_hook(self, state, bucket):
        """DDP comm hook: this bucket's gradient all-reduce, synchronous and timed."""
        import torch
        import torch.distributed as dist

        buf = bucket.buffer()
        self.wait("allreduce")
        with self.timer.op("allreduce"):
            dist.all_reduce(buf, group=self.group)
            if self.cuda:
                torch.cuda.synchronize()
        self._record("allreduce", buf.numel() * buf.element_size())
        buf.div_(self.N)
        fut = torch.futures.Future()
        fut.set_result(buf)
        return fut


def _exchange_fn():
    import torch

    class PooledAllToAll(torch.autograd.Function):
        @staticmethod
        def forward(ctx, pooled_local, exchange):
            ctx.exchange = exchange
            return exchange.forward(pooled_local)

        @staticmethod
        def backward(ctx, grad):
            return ctx.exchange.backward(grad.contiguous()), None

    return PooledAllToAll


class _RankModel:
    """What `run_loop` needs of a model (`device`) plus the parts."""

    def __init__(self, sparse, dense_parts, ddp, device):
        self.sparse_arch = sparse
        self.dense_parts = dense_parts
        self.ddp = ddp
        self.device = device
        self.backend = sparse.backend


class DistributedTrain:
    """One rank's training/inference step (the distributed counterpart of `DLRMTrain`)."""

    def __init__(self, config, plan, rank: int, backend: str, device: str, seed: int,
                 group=None, barriers: bool = True, fused_tables: bool = False):
        import torch
        from torch import nn
        from torch.nn.parallel import DistributedDataParallel as DDP

        import torch.distributed as dist

        from dlrmprof.dlrm.train import NumbaBCE, loss_and_backward

        N = plan.world_size
        self.rank = rank
        self.B = config.batch_size
        self.Bl = check_global_batch(self.B, N)
        self.lo, self.hi = rank * self.Bl, (rank + 1) * self.Bl
        self.owned = plan.tables_of(rank)
        self.lr = float(config.lr)
        dev = torch.device(device)
        sparse, dense, inter, over = build_rank_parts(config, self.owned, backend, device, seed,
                                                      fused_tables)
        parts = _dense_module()(dense, inter, over)
        ddp = DDP(parts, device_ids=[dev.index] if dev.type == "cuda" else None,
                  process_group=group)
        self.exchange = PooledExchange(plan, rank, self.Bl, config.embedding_dim, dev,
                                       group if group is not None else dist.group.WORLD,
                                       barriers=barriers)
        ddp.register_comm_hook(None, self.exchange.allreduce_hook)
        self.model = _RankModel(sparse, parts, ddp, dev)
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.params = [p for p in ddp.parameters() if p.requires_grad]
        self._a2a = _exchange_fn()
        self._numpy_sparse = backend == "numba"
        self._cuda = dev.type == "cuda"
        self._bce = NumbaBCE() if self._numpy_sparse else None
        self._loss_and_backward = loss_and_backward

    def sgd_dense(self) -> None:
        """Plain SGD on the (all-reduced) dense gradients, one multi-tensor update, as
        `DLRMTrain.sgd_dense` does it; then drop the gradients."""
        import torch

        with torch.no_grad():
            params = [p for p in self.params if p.grad is not None]
            if params:
                torch._foreach_add_(params, [p.grad for p in params], alpha=-self.lr)
            for p in self.params:
                p.grad = None

    def inputs(self, batch):
        """This rank's dense/labels slice and its tables' bags for the whole batch."""
        import torch

        dense = torch.from_numpy(batch.dense[self.lo:self.hi])
        labels = torch.from_numpy(batch.labels[self.lo:self.hi])
        idx = [batch.indices[t] for t in self.owned]
        off = [batch.offsets[t] for t in self.owned]
        if not self._numpy_sparse:
            idx = [torch.from_numpy(i) for i in idx]
            off = [torch.from_numpy(o) for o in off]
        if self._cuda:
            dev = self.model.device
            dense, labels = dense.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
            idx = [i.to(dev, non_blocking=True) for i in idx]
            off = [o.to(dev, non_blocking=True) for o in off]
        return dense, labels, idx, off

    def train_step(self, batch, timer):
        m = self.model
        self.exchange.timer = timer
        with timer.op("to_device"):
            dense, labels, idx, off = self.inputs(batch)
        with timer.op("emb"):
            pooled_local = m.sparse_arch(idx, off, self.B, True, timer)
        pooled = self._a2a.apply(pooled_local, self.exchange)
        with timer.op("dense_forward"):
            logits = m.ddp(dense, pooled, timer)
        loss = self._loss_and_backward(logits, labels, self._bce, self.loss_fn, timer)
        with timer.op("optimizer"):
            self.sgd_dense()
        with timer.op("emb_update"):
            m.sparse_arch.sgd_update(idx, off, pooled_local.grad, self.lr, timer)
        return loss.detach(), logits.detach()

    def infer_step(self, batch, timer):
        import torch

        m = self.model
        self.exchange.timer = timer
        with torch.no_grad():
            with timer.op("to_device"):
                dense, _, idx, off = self.inputs(batch)
            with timer.op("emb"):
                pooled_local = m.sparse_arch(idx, off, self.B, False, timer)
            pooled = self.exchange.forward(pooled_local)
            with timer.op("dense_forward"):
                logits = m.dense_parts(dense, pooled, timer)
            with timer.op("sigmoid"):
                return torch.sigmoid(logits)

    def table_weights(self) -> dict[int, np.ndarray]:
        """{global table index: weight copy} of this rank's tables."""
        return {t: self.model.sparse_arch.weights[i].detach().cpu().numpy().copy()
                for i, t in enumerate(self.owned)}


# -- one rank's run ----------------------------------------------------------------------------
def _per_iter(timer, name: str, n: int) -> np.ndarray:
    """Per-iteration sum of op `name`'s samples (zeros if it never ran)."""
    if name not in timer.names:
        return np.zeros(n)
    o = timer._ops[name]
    it = np.asarray(o.iters, np.int64)
    keep = (it >= 0) & (it < n)
    return np.bincount(it[keep], weights=np.asarray(o.samples)[keep], minlength=n)[:n]


def _timer_name(row: dict) -> str:
    name, phase = row["name"], row["phase"]
    if name == "emb.all":
        return "emb" if phase == "forward" else "emb_update"
    if name.startswith("emb."):
        return name if phase == "forward" else "emb_update." + name[4:]
    return name


def _comm_rows(timer, exchange, n_iters: int, world: int, device: str) -> list[dict]:
    from dlrmprof.profile.report import op_row

    flags = timer.noise.flags(n_iters) if timer.noise is not None else np.zeros(n_iters, bool)
    rows = []
    for name in COMM_OPS + ("alltoall.layout", "dense_forward"):
        if name not in timer.names:
            continue
        per_it = _per_iter(timer, name, n_iters)
        calls = len(timer._ops[name].samples) / max(1, n_iters)
        nbytes, shape = None, {"calls_per_step": calls, "world_size": world}
        kind = "other"
        phase = "comm"
        if name in ("alltoall.layout", "dense_forward"):
            phase = "forward"
            shape["note"] = ("pooled rows put back in global table order" if name ==
                             "alltoall.layout" else "DDP forward: bottom MLP, interaction, "
                                                    "top MLP and DDP's own bookkeeping")
        elif name.startswith("wait."):
            kind = "barrier"
            shape["note"] = ("1-element all-reduce before the collective: time waiting for "
                             "the slowest rank plus one latency")
        else:
            kind = "alltoall" if name.startswith("alltoall") else "allreduce"
            rec = exchange.bytes.get(name, [])
            if rec:
                it = np.array([i for i, _ in rec], np.int64)
                b = np.array([v for _, v in rec], np.float64)
                keep = (it >= 0) & (it < n_iters)
                per_step = np.bincount(it[keep], weights=b[keep], minlength=n_iters)[:n_iters]
                nbytes = int(round(float(np.median(per_step))))
                factor = (world - 1) / world if kind == "alltoall" else 2 * (world - 1) / world
                shape.update({"bytes_per_step": nbytes, "bus_factor": factor,
                              "bus_bytes": int(round(nbytes * factor)),
                              "bytes_convention": "nccl-tests: per-rank data size "
                                                  "(algbw = bytes / time)"})
        backend = "torch" if phase == "forward" else "torch.distributed"
        rows.append(op_row(name, phase=phase, device=device, backend=backend,
                           samples=per_it.tolist(), bytes=nbytes, kind=kind, shape=shape,
                           flagged=int(flags.sum()), timer=timer.method))
    return rows


def _accounting(timer, n: int) -> dict:
    step = _per_iter(timer, "step", n)
    top = sum((_per_iter(timer, k, n) for k in TOP_LEVEL), np.zeros(n))
    comm = sum((_per_iter(timer, k, n) for k in COMM_OPS), np.zeros(n))
    wait = sum((_per_iter(timer, k, n) for k in COMM_OPS if k.startswith("wait.")),
               np.zeros(n))
    compute = top - comm
    per = {k: float(np.mean(_per_iter(timer, k, n))) for k in COMM_OPS}
    s = float(np.mean(step))
    return {
        "step_s": s,
        "step_median_s": float(np.median(step)),
        "comm_s": float(np.mean(comm)),
        "wait_s": float(np.mean(wait)),
        "transfer_s": float(np.mean(comm - wait)),
        "compute_s": float(np.mean(compute)),
        "unaccounted_s": float(np.mean(step - top)),
        "accounting_error": float(abs(np.mean(step - top)) / s) if s > 0 else None,
        "alltoall_s": per["alltoall.fwd"] + per["alltoall.bwd"],
        "allreduce_s": per["allreduce"],
        "per_op_s": per,
        "definition": "per-step means; compute = top-level op timers minus the collectives "
                      "timed inside them (backward holds the gradient all-to-all and the "
                      "all-reduce); unaccounted = step - (compute + comm)",
    }


def _fail(rank: int, exc: BaseException) -> UserError:
    return UserError(f"rank {rank}: {exc}")


def _init_group(backend: str, dopts: DistOptions, rank: int, device: str):
    import torch
    import torch.distributed as dist

    kw = {}
    if backend == "nccl":
        kw["device_id"] = torch.device(device)
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=dopts.timeout_s),
                                **kw)
    except (RuntimeError, TimeoutError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"rank {rank}: rendezvous failed ({type(exc).__name__}: {first}); "
                        f"the other ranks did not join within {dopts.timeout_s:g} s or the "
                        f"master address is unreachable") from None


def run_rank(opts, dopts: DistOptions, *, progress: Callable[[int], None] | None = None,
             keep_weights: bool = False, fingerprint: bool = True) -> dict:
    """Run this process's rank (rank and world from the environment, set by torchrun or
    `launch`).  Rank 0 writes the per-rank reports and the merged one; every rank returns
    ``{"rank", "losses" (global, per timed step), "summary" (rank 0), "weights" (if asked)}``.
    """
    import torch
    import torch.distributed as dist

    env = rank_env()
    rank, world = env["rank"], env["world_size"]
    device = opts.device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise _fail(rank, UserError(f"--device {device}: no CUDA GPU is visible"))
        device = f"cuda:{env['local_rank']}"
        torch.cuda.set_device(device)
    try:
        backend = resolve_backend(dopts.backend, device)
    except UserError as exc:
        raise _fail(rank, exc) from None
    _init_group(backend, dopts, rank, device)
    try:
        return _run_rank(opts, dopts, env, device, backend, progress, keep_weights, fingerprint)
    except UserError as exc:
        msg = str(exc)
        raise UserError(msg if msg.startswith(f"rank {rank}:") else f"rank {rank}: {msg}") \
            from None
    except Exception as exc:
        text = str(exc)
        if world > 1 and ("Timed out" in text or "timed out" in text or "Watchdog" in text):
            first = text.strip().splitlines()[0][:160]
            raise RankFailed(f"rank {rank}: a collective waited longer than --dist-timeout "
                             f"{dopts.timeout_s:g} s (another rank is stuck or far slower): "
                             f"{first}") from None
        if world > 1:
            # usually the consequence of another rank failing ("connection closed by peer"):
            # give the launcher a moment to see and report that rank's failure first
            time.sleep(_PEER_GRACE_S)
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _run_rank(opts, dopts, env, device, backend, progress, keep_weights, fingerprint) -> dict:
    import torch
    import torch.distributed as dist

    from dlrmprof.dlrm import runner
    from dlrmprof.dlrm.train import run_loop
    from dlrmprof.profile.report import Report, time_stats
    from dlrmprof.profile.timers import OpTimer

    rank, world = env["rank"], env["world_size"]
    ropts = dataclasses.replace(opts, device="cpu" if device == "cpu" else "cuda",
                                out=opts.out if rank == 0 else None,
                                roofline=False, cache_study=False)
    prep = runner.prepare(ropts)
    prep.device = device
    cfg = prep.config
    if world > cfg.num_tables:  # every rank finds this itself (no rank waits on another)
        raise UserError(f"{world} ranks but only {cfg.num_tables} embedding tables: table-wise "
                        f"sharding needs at least one table per rank")
    check_global_batch(cfg.batch_size, world)
    # rank 0 places the tables (its host's cache size) and tells the others
    plan_box = [make_plan(prep, world, env["local_world_size"], dopts) if rank == 0 else None]
    dist.broadcast_object_list(plan_box, src=0)
    plan = plan_box[0]

    runner.set_threads(opts.threads, prep.backend)
    source = runner.make_source(prep)
    trainer = DistributedTrain(cfg, plan, rank, prep.backend, device, opts.seed,
                               barriers=dopts.barriers,
                               fused_tables=bool(getattr(opts, "fused_tables", False)))
    # the ranks on this host compete for its cores: count them all as "ours" for noise flags
    timer = OpTimer(device=device, threads=opts.threads * env["local_world_size"])
    loop = run_loop(trainer, source, mode=opts.mode, iters=opts.iters, warmup=opts.warmup,
                    timer=timer, progress=progress)
    n = opts.iters

    # -- this rank's report --------------------------------------------------------------
    Bl = trainer.Bl
    dev = "cuda" if device.startswith("cuda") else "cpu"
    local_prep = dataclasses.replace(prep, config=dataclasses.replace(cfg, batch_size=Bl))
    own_tables = tuple(cfg.tables[t] for t in trainer.owned)
    emb_prep = dataclasses.replace(prep, config=dataclasses.replace(cfg, tables=own_tables))
    rows_local, dropped = runner.op_rows(timer, local_prep, loop.nnz_mean)
    rows_emb, dropped_e = runner.op_rows(timer, emb_prep,
                                         [loop.nnz_mean[t] for t in trainer.owned])
    rows = [r for r in rows_local if not r["name"].startswith("emb.")] + \
           [r for r in rows_emb if r["name"].startswith("emb.")]
    rows += _comm_rows(timer, trainer.exchange, n, world, dev)
    acct = _accounting(timer, n)
    step = _per_iter(timer, "step", n)
    data_s = float(np.sum(_per_iter(timer, "data", n)))
    wall = float(sum(timer.iter_wall))
    comm_rows = {r["name"]: r for r in rows if r["phase"] == "comm"}

    def bw(name):
        r = comm_rows.get(name)
        if r is None or not r.get("bytes") or r["time"]["median"] <= 0:
            return None
        t = r["time"]["median"]
        return {"bytes_per_step": r["bytes"], "median_s": t, "mean_s": r["time"]["mean"],
                "algbw_gbs": r["bytes"] / t / 1e9,
                "busbw_gbs": r["shape"]["bus_bytes"] / t / 1e9,
                "calls_per_step": r["shape"]["calls_per_step"]}

    wins = timer.noise.windows if timer.noise is not None else []
    wsum = sum(w.wall_s for w in wins)
    own_cores = (sum(w.own_cores * w.wall_s for w in wins) / wsum) if wsum > 0 else None
    other_cores = (sum(w.other_cores * w.wall_s for w in wins) / wsum) if wsum > 0 else None
    dist_info = {
        "rank": rank, "world_size": world,
        # CPU this rank actually got while timing (process CPU time / wall), and what all
        # other processes (the other ranks on this host included) used, in cores
        "own_cores_mean": own_cores, "other_cores_mean": other_cores,
        "local_rank": env["local_rank"],
        "local_world_size": env["local_world_size"], "backend": backend, "device": device,
        "global_batch": cfg.batch_size, "local_batch": Bl,
        "tables": [cfg.tables[t].name for t in trainer.owned],
        "collectives": {k: bw(k) for k in ("alltoall.fwd", "alltoall.bwd", "allreduce")},
        "accounting": acct, "hostname": os.uname().nodename,
    }
    end_to_end = {
        "samples_per_s": n * cfg.batch_size / wall,
        "model_samples_per_s": n * cfg.batch_size / float(np.sum(step)),
        "data_fraction": data_s / wall if wall > 0 else None,
        "iterations": n, "batch_size": cfg.batch_size, "warmup": opts.warmup, "wall_s": wall,
        "time": time_stats(timer.iter_wall),
        "definition": "global samples (all ranks) per second of this rank's timed iterations",
        "source": "measured", "distributed": dist_info,
    }
    noise = dict(timer.noise.summary()) if timer.noise is not None else {}
    noise["dropped"] = {**dropped, **dropped_e}
    noise["flagged"] = int(sum(r["time"]["flagged"] for r in rows))
    config = {"run": dataclasses.asdict(opts), "model": cfg.to_dict(), "device": dev,
              "backend": prep.backend, "mode": opts.mode, "data": opts.data,
              "threads": opts.threads, "batch_size": cfg.batch_size, "preset": cfg.name,
              "torch_threads": torch.get_num_threads(), "source": source.describe(),
              "distributed": {"world_size": world, "rank": rank, "backend": backend,
                              "plan": plan.to_dict(), "options": dataclasses.asdict(dopts),
                              "roofline": "not run under torch.distributed (single-process "
                                          "runs give verdicts)"}}
    config["run"]["input"] = list(opts.input)
    fp = _fingerprint() if fingerprint else {"host_id": "unknown", "hostname": os.uname().nodename}
    rep = Report.new(fp, rows, config=config, trace=prep.trace_info, end_to_end=end_to_end,
                     noise=noise, training={})
    per_iter = {k: _per_iter(timer, k, n).tolist() for k in timer.names}
    per_iter["__iter_wall__"] = list(timer.iter_wall)
    payload = {"report": rep.to_dict(), "per_iter": per_iter, "losses": loop.losses}

    gathered = [None] * world if rank == 0 else None
    dist.gather_object(payload, gathered, dst=0)
    # global loss per step = mean of the ranks' local means (equal local batches)
    losses_box = [None] * world
    dist.all_gather_object(losses_box, loop.losses)
    global_losses = np.mean(np.array(losses_box, np.float64), axis=0).tolist() \
        if opts.mode == "train" else []
    result: dict[str, Any] = {"rank": rank, "losses": global_losses, "owned": trainer.owned}
    if keep_weights:
        result["weights"] = trainer.table_weights()
    if rank == 0:
        result["summary"] = write_reports(gathered, prep, opts, global_losses)
    dist.barrier()
    return result


def _fingerprint() -> dict:
    from dlrmprof.profile import host as hostmod

    return hostmod.collect(counters=False)


# -- rank 0: per-rank and merged reports -------------------------------------------------------
def rank_report_path(merged: Path, rank: int) -> Path:
    return merged.with_name(f"{merged.stem}.rank{rank}{merged.suffix or '.json'}")


def merge(payloads: list[dict], global_losses: list[float], mode: str):
    """The merged report: ops rows take, per iteration, the slowest rank's time (the ranks
    run in parallel and meet at every collective) and the sum of the ranks' bytes/FLOPs (the
    whole job's work); `end_to_end.distributed` compares the ranks."""
    from dlrmprof.profile.report import Report, op_row, time_stats

    reps = [Report.from_dict(p["report"], where=f"rank {i} report")
            for i, p in enumerate(payloads)]
    world = len(reps)
    n = reps[0].end_to_end["iterations"]
    seen: dict[tuple, list] = {}
    for r, rep in enumerate(reps):
        for row in rep.ops:
            seen.setdefault((row["name"], row["phase"]), []).append((r, row))
    rows = []
    for (name, phase), lst in seen.items():
        tname = _timer_name(lst[0][1])
        per = [np.asarray(payloads[r]["per_iter"].get(tname, [0.0] * n)) for r, _ in lst]
        samples = np.max(np.vstack(per), axis=0) if per else np.zeros(n)
        first = lst[0][1]

        def tot(key):
            vals = [row.get(key) for _, row in lst]
            return None if any(v is None for v in vals) else int(sum(vals))

        extra = {k: v for k, v in first.items()
                 if k not in ("name", "phase", "device", "backend", "time", "bytes", "flops",
                              "kind", "shape", "sources")}
        extra["merge"] = "time: slowest rank per iteration; bytes/flops: sum over ranks"
        extra["per_rank_median_s"] = {str(r): row["time"]["median"] for r, row in lst}
        rows.append(op_row(name, phase=phase, device=first["device"], backend=first["backend"],
                           samples=samples.tolist(), bytes=tot("bytes"), flops=tot("flops"),
                           kind=first.get("kind"), shape=first.get("shape"),
                           flagged=max(row["time"]["flagged"] for _, row in lst),
                           **extra))
    walls = np.vstack([np.asarray(p["per_iter"]["__iter_wall__"]) for p in payloads])
    iter_wall = walls.max(axis=0)
    accts = [rep.end_to_end["distributed"]["accounting"] for rep in reps]
    B = reps[0].end_to_end["batch_size"]
    compute = [a["compute_s"] for a in accts]
    step_max = np.max(np.vstack([np.asarray(p["per_iter"]["step"]) for p in payloads]), axis=0)
    a2a = [a["alltoall_s"] for a in accts]
    steps = [a["step_s"] for a in accts]
    summary = {
        "world_size": world,
        "ranks": [rep.end_to_end["distributed"] for rep in reps],
        "step_s": float(np.mean(step_max)),
        "alltoall_per_step_s": float(np.mean(a2a)),
        "alltoall_fraction_of_step": float(np.mean(a2a) / np.mean(steps)),
        "comm_per_step_s": float(np.mean([a["comm_s"] for a in accts])),
        "wait_per_step_s": [a["wait_s"] for a in accts],
        "transfer_per_step_s": [a["transfer_s"] for a in accts],
        "compute_per_step_s": compute,
        "load_imbalance_compute": float(max(compute) / np.mean(compute))
        if np.mean(compute) > 0 else 1.0,
        "accounting_error_max": float(max(a["accounting_error"] or 0.0 for a in accts)),
        "hosts": sorted({rep.end_to_end["distributed"]["hostname"] for rep in reps}),
        "definition": "per-step means; load_imbalance_compute = slowest rank's compute / "
                      "mean (1.0 = balanced); wait = time in the pre-collective barrier",
    }
    e2e = {
        "samples_per_s": n * B / float(iter_wall.sum()),
        "model_samples_per_s": n * B / float(step_max.sum()),
        "iterations": n, "batch_size": B, "warmup": reps[0].end_to_end["warmup"],
        "wall_s": float(iter_wall.sum()), "time": time_stats(iter_wall.tolist()),
        "definition": "global samples per second; an iteration lasts as long as its slowest "
                      "rank", "source": "measured", "distributed": summary,
    }
    config = dict(reps[0].config)
    config["distributed"] = dict(config["distributed"], rank=None, merged_from_ranks=world)
    noise = {"per_rank": [rep.noise for rep in reps],
             "flagged": int(sum(rep.noise.get("flagged", 0) for rep in reps))}
    training = {}
    if mode == "train" and global_losses:
        training = {"losses": global_losses, "first_loss": global_losses[0],
                    "last_loss": global_losses[-1], "lr": config["model"]["lr"],
                    "loss": config["model"]["loss"],
                    "definition": "global loss per step = mean of the ranks' local losses"}
    return Report.new(reps[0].host, rows, config=config, trace=reps[0].trace, end_to_end=e2e,
                      noise=noise, training=training), reps


def write_reports(payloads: list[dict], prep, opts, global_losses: list[float]) -> dict:
    """Rank 0: per-rank reports and the merged one, each written atomically; the merged one
    last, so it exists only when everything before it succeeded."""
    merged, reps = merge(payloads, global_losses, opts.mode)
    if global_losses:
        for i, rep in enumerate(reps):
            reps[i] = rep.replace(training={"local_losses": payloads[i]["losses"],
                                            "global_losses": global_losses})
    if prep.out is not None:
        out = Path(prep.out)
    else:  # reports/<host_id>/<time>-<config>-<device>-<backend>-<N>ranks.json
        d = merged.default_path("reports")
        out = d.with_name(f"{d.stem}-{len(payloads)}ranks{d.suffix}")
    paths = []
    for r, rep in enumerate(reps):
        p = rank_report_path(out, r)
        rep.save(p)
        paths.append(str(p))
    merged.save(out)
    rendered = []
    if getattr(opts, "render", False):
        from dlrmprof.profile.render import render_report

        rendered = [str(p) for p in render_report(merged, out)]
    return {"out": str(out), "rank_reports": paths, "merged": merged.to_dict(),
            "rendered": rendered}


# -- the launcher (the `run --nproc N` parent process) -----------------------------------------
def _rank_entry(opts, dopts, keep_weights, fingerprint=True):
    """What each spawned rank runs (module level: picklable for the spawn start method)."""
    return run_rank(opts, dopts, keep_weights=keep_weights, fingerprint=fingerprint)


def _child_message(failure) -> tuple[str, str]:
    """(one-line cause, traceback or '') of an elastic ProcessFailure."""
    msg = failure.message
    tb = ""
    if isinstance(msg, dict):
        tb = (msg.get("extraInfo") or {}).get("py_callstack", "") or ""
        msg = msg.get("message", "")
    return str(msg).strip(), tb


def _is_user(msg: str) -> bool:
    return msg.startswith(("UserError: ", "RankFailed: "))


def _user_messages(log_dir: str | None) -> list[str]:
    """User-error messages in the ranks' error files (a rank failing second may be the one
    the launcher reports; the first one's file still says what happened)."""
    import json

    out = []
    if not log_dir:
        return out
    for path in sorted(Path(log_dir).rglob("error.json")):
        try:
            msg = json.loads(path.read_text()).get("message")
        except (OSError, ValueError):
            continue
        if isinstance(msg, dict):
            msg = msg.get("message", "")
        if isinstance(msg, str) and _is_user(msg.strip()):
            out.append(msg.strip())
    return out


def translate_failure(exc, log_dir: str | None = None) -> Exception:
    """ChildFailedError -> one-line RankFailed (user errors, deaths) or RuntimeError (bugs).

    The root cause is picked over its consequences: a rank's user error first, then a rank
    killed by a signal, then the earliest failure (a rank whose peer died fails too, with
    "connection closed by peer", at about the same second)."""
    failures = exc.failures

    def key(item):
        rank, f = item
        msg, _ = _child_message(f)
        dead = f.exitcode is not None and f.exitcode < 0
        return (0 if _is_user(msg) else 1 if dead else 2, f.timestamp, rank)

    rank, failure = min(failures.items(), key=key)
    msg, tb = _child_message(failure)
    if not _is_user(msg) and not (failure.exitcode is not None and failure.exitcode < 0):
        found = _user_messages(log_dir)
        if found:
            msg = found[0]
    if _is_user(msg):
        text = msg.split(": ", 1)[1]
        if not text.startswith("rank "):
            text = f"rank {rank}: {text}"
        err = RankFailed(text + "; all ranks stopped")
        err.exit_code = 2
        return err
    if failure.exitcode is not None and failure.exitcode < 0:
        import signal

        try:
            sig = signal.Signals(-failure.exitcode).name
        except ValueError:
            sig = f"signal {-failure.exitcode}"
        return RankFailed(f"rank {rank} (pid {failure.pid}) died ({sig}) mid-run; the other "
                          f"ranks were stopped and no report was written")
    if not msg or msg.startswith("To enable traceback") or msg == "<N/A>":
        return RankFailed(f"rank {rank} (pid {failure.pid}) exited with code "
                          f"{failure.exitcode}; the other ranks were stopped and no report "
                          f"was written")
    return RuntimeError(f"rank {rank} failed: {msg}\n{tb}")


def launch(opts, dopts: DistOptions, *, entry: Callable | None = None,
           args: tuple | None = None, keep_weights: bool = False,
           fingerprint: bool = True) -> dict[int, Any]:
    """Start `dopts.nproc` ranks on this node (torchrun's elastic agent, c10d rendezvous, no
    restarts) and return {rank: result}.  One-line errors: rendezvous failure, a rank's
    user error or death (the agent stops the other ranks)."""
    import logging
    import tempfile

    from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if dopts.nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {dopts.nproc}")
    if dopts.nnodes < 1:
        raise UserError(f"--nnodes must be at least 1, got {dopts.nnodes}")
    if dopts.nnodes > 1 and not dopts.rdzv_endpoint:
        raise UserError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (the same on every node)")
    endpoint = dopts.rdzv_endpoint or "localhost:0"
    log_dir = tempfile.mkdtemp(prefix="dlrmprof-ranks-")
    cfg = LaunchConfig(
        logs_specs=DefaultLogsSpecs(log_dir=log_dir),
        min_nodes=dopts.nnodes, max_nodes=dopts.nnodes, nproc_per_node=dopts.nproc,
        run_id=dopts.rdzv_id or f"dlrmprof-{uuid.uuid4().hex[:12]}", rdzv_backend="c10d",
        rdzv_endpoint=endpoint,
        rdzv_configs={"join_timeout": int(max(1, dopts.rdzv_timeout_s)),
                      "timeout": int(max(1, dopts.rdzv_timeout_s))},
        max_restarts=0, monitor_interval=0.1, start_method="spawn",
        shutdown_timeout=_SHUTDOWN_S)
    entry = entry or _rank_entry
    args = args if args is not None else (opts, dopts, keep_weights, fingerprint)
    # failures come back as one line below, not as log spam
    logs = [logging.getLogger(n) for n in ("torch.distributed.elastic",
                                           "torch.multiprocessing.spawn")]
    levels = [lg.level for lg in logs]
    for lg in logs:
        lg.setLevel(logging.CRITICAL)
    try:
        return elastic_launch(cfg, entry)(*args)
    except ChildFailedError as exc:
        raise translate_failure(exc, log_dir) from None
    except RendezvousError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RankFailed(f"rendezvous at {endpoint} failed: {type(exc).__name__}: {first} "
                         f"(waited {dopts.rdzv_timeout_s:g} s for {dopts.nnodes} node(s))") \
            from None
    finally:
        for lg, lv in zip(logs, levels):
            lg.setLevel(lv)
        import shutil

        shutil.rmtree(log_dir, ignore_errors=True)


def precheck(opts, dopts: DistOptions):
    """Checks the parent can make before spawning anything: (Prepared, plan)."""
    from dlrmprof.dlrm import runner

    world = dopts.nproc * dopts.nnodes
    if dopts.nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {dopts.nproc}")
    dev = "cpu" if opts.device == "cpu" else "cuda"
    resolve_backend(dopts.backend, dev if dev == "cpu" else "cuda:0")
    if dev == "cuda":
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() < dopts.nproc:
            raise UserError(f"--nproc {dopts.nproc} with --device cuda needs one GPU per "
                            f"process; {torch.cuda.device_count()} visible")
    prep = runner.prepare(dataclasses.replace(opts, roofline=False, cache_study=False))
    plan = make_plan(prep, world, dopts.nproc, dopts)
    check_global_batch(prep.config.batch_size, world)
    return prep, plan
