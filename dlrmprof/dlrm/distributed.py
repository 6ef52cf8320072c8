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

Process group: gloo on CPU, NCCL on CUDA (`resolve_backend`); every collective has the
group's timeout.  Starting the ranks, each rank's report and the merged report belong to
the run layer (`dlrmprof.session.launch`, `session.ranks`, `session.merge`).

Timed ops (per rank; `session.ranks` turns them into op rows of phase ``comm``):

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

import math
from typing import Sequence

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
