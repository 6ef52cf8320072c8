"""DLRM as four parts wired together (the TorchRec shape): SparseArch, DenseArch,
InteractionArch, OverArch, connected by `DLRM`.  The loss and optimizer live in the training
wrapper (`dlrmprof.dlrm.train.DLRMTrain`), not here.

Shapes (B batch, F dense features, T tables, D embedding dim)::

    dense [B, F] --DenseArch (bottom MLP, ReLU)--> x [B, D] -------------------+
    sparse: per table t, bags (indices_t, offsets_t [B+1])                     |
        --SparseArch (embedding bag, sum)--> pooled [B, T, D] ----------------+--> InteractionArch
    --> [B, D + T(T+1)/2] --OverArch (top MLP, ReLU between layers)--> logit [B] --sigmoid--> p

Embedding tables are *not* autograd parameters: training treats them as a sparse update.
`SparseArch.forward` fills a preallocated `pooled` buffer (a leaf tensor that requires grad
in training); after `loss.backward()` its gradient goes to `SparseArch.sgd_update`, which
applies the kernels' fused `embedding_bag_sgd` to the touched rows of each table.

Kernel backends (chosen by name, never silently replaced):

    device  backend      embedding bag fwd / sparse SGD       interaction
    cpu     numba        dlrmprof.kernels numba               numba (custom autograd fn)
    cpu     torch        dlrmprof.kernels torch                torch (autograd through bmm)
    cuda    torch        dlrmprof.kernels torch                torch
    cuda    numba-cuda   dlrmprof.kernels numba-cuda           torch

The MLPs are torch `nn.Linear` layers (torch's GEMM, MKL on CPU) on every backend, run as one
autograd op per MLP (`dlrmprof.dlrm.mlp`: autograd's GEMMs and ReLU masks, fewer tiny ops);
`DLRMTrain` hands their backward its optimizer (`dlrmprof.dlrm.optim.InBackwardSGD`), which
steps each layer as soon as its gradient exists.  `build_dlrm(mlp_dtype="bf16")` is an opt-in
that runs those GEMMs in bfloat16 (different numbers; fp32 is the default).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from dlrmprof import kernels
from dlrmprof.dlrm.config import DLRMConfig, TableConfig
from dlrmprof.dlrm.mlp import MLPArch
from dlrmprof.errors import UserError
from dlrmprof.kernels.tables import empty_table

BACKENDS = {"cpu": ("numba", "torch"), "cuda": ("torch", "numba-cuda")}


def check_backend(device: str, backend: str) -> None:
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    if backend not in BACKENDS[kind]:
        raise UserError(f"unknown backend {backend!r} for --device {kind}: choose "
                        f"{' or '.join(BACKENDS[kind])}")


class _NullOp:
    __slots__ = ()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NULL_OP = _NullOp()


class NullTimer:
    """Stands in for `dlrmprof.profile.timers.OpTimer` when nothing is timed."""

    def op(self, name: str, host: bool = False):
        return _NULL_OP

    def add(self, name: str, seconds: float, method: str | None = None) -> None:
        pass

    def add_all(self, names, seconds, method: str | None = None) -> None:
        pass


NULL_TIMER = NullTimer()


class SparseArch(nn.Module):
    """Embedding tables pooled per bag: per table (indices, offsets) -> pooled [B, T, D].

    All tables live in one float32 buffer ``weight_all`` [sum of rows, D] (in `state_dict`);
    table t is the view ``weights[t]`` = rows ``row_base[t] .. row_base[t] + rows_t``.  Rows
    are initialised uniform(-1/sqrt(R), 1/sqrt(R)) per table, as in the DLRM reference.
    `backend` names the embedding-bag kernels.

    Two ways to run the lookups:

    * per table (default): one kernel call per table, each timed (``emb.<table>``);
    * ``fused=True``: the batch's bags of all tables become one jagged batch over the combined
      buffer (indices shifted by ``row_base[t]``, offsets of T*B+1 entries, FBGEMM's TBE
      layout), one kernel call for all tables and one for the sparse update: no per-table
      figures, but 2 calls a step instead of 2T (at batch 128 the per-call overhead of 26
      tables is a visible share of the step).
    """

    def __init__(self, tables: Sequence[TableConfig], backend: str = "numba",
                 device: str | torch.device = "cpu", generator: torch.Generator | None = None,
                 fused: bool = False, emb_dtype: str = "fp32"):
        super().__init__()
        if not tables:
            raise UserError("SparseArch needs at least one table")
        dims = {t.dim for t in tables}
        if len(dims) != 1:
            raise UserError(f"SparseArch: all tables must share one dim for the dot "
                            f"interaction, got {sorted(dims)}")
        check_backend(str(device), backend)
        self.tables = tuple(tables)
        self.backend = backend
        self.device = torch.device(device)
        self.dim = tables[0].dim
        self.names = tuple(t.name for t in tables)
        self.modes = tuple(t.pooling for t in tables)
        if fused and len(set(self.modes)) != 1:
            raise UserError("fused tables need one pooling mode for every table, got "
                            f"{sorted(set(self.modes))}")
        self.fused = bool(fused)
        self.op_names = tuple(f"emb.{n}" for n in self.names)
        self.upd_names = tuple(f"emb_update.{n}" for n in self.names)
        rows = np.array([t.rows for t in tables], dtype=np.int64)
        self.row_base = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
        # 2 MiB pages where the OS gives them (kernels.tables): a lookup into a table beyond
        # the TLB's reach otherwise pays a page walk per row, both backends alike
        w = empty_table(int(rows.sum()), self.dim)
        for t, b in zip(tables, self.row_base):
            bound = 1.0 / math.sqrt(t.rows)
            w[int(b):int(b) + t.rows].uniform_(-bound, bound, generator=generator)
        self.register_buffer("weight_all", w.to(self.device), persistent=True)
        self._refresh_views()
        self._pooled: torch.Tensor | None = None
        self._tbe_src = None
        self._tbe = None
        self._idx_buf = np.empty(0, np.int64)
        # The backend's kernels, resolved once (UserError here if the backend cannot run).
        # They are called without the public entry points' per-call checks (26 tables x 2
        # calls a step): the data sources check every index against its table's rows once,
        # up front, and the numba kernels still refuse (never wrap) an out-of-range index.
        self._eb = kernels.resolve("embedding_bag", backend)
        self._sgd = kernels.resolve("embedding_bag_sgd", backend)
        self._all = self._all_tables_kernels()
        self._all_src = None
        self.emb_dtype = "fp32"
        self.packed: list | None = None
        if emb_dtype != "fp32":
            self.set_emb_dtype(emb_dtype)

    def set_emb_dtype(self, emb_dtype: str) -> None:
        """Look the tables up in `emb_dtype` (`kernels.quant`): each fp32 table is packed
        (post-training, row-wise for int8 / int4) and the lookups read the packed copy, one
        `qembedding_bag` call per table.  The fp32 rows stay the master copy: a sparse SGD
        step updates them and re-packs the rows it touched (fp16 / bf16 training with fp32
        master rows).  numba or torch on the CPU, per table (not fused)."""
        from dlrmprof.kernels import quant
        quant.check_emb_dtype(emb_dtype, self.dim)
        if emb_dtype == "fp32":
            self.emb_dtype, self.packed = "fp32", None
            self._all = self._all_tables_kernels()
            return
        if self.device.type != "cpu" or self.fused:
            raise UserError(f"--emb-dtype {emb_dtype}: packed tables run on the CPU, one call "
                            "per table (not --device cuda, not --fused-tables)")
        self.emb_dtype = emb_dtype
        self.packed = [quant.quantize(w.detach().numpy(), emb_dtype) for w in self.weights]
        self._qeb = kernels.resolve("qembedding_bag", self.backend)
        self._all = None   # the all-tables kernels read fp32 rows

    def _repack(self, indices: Sequence) -> None:
        """Re-pack the rows a sparse SGD step touched from their fp32 master rows."""
        from dlrmprof.kernels import quant
        for t, qt in enumerate(self.packed):
            idx = indices[t]
            rows = np.unique(idx.numpy() if isinstance(idx, torch.Tensor) else idx)
            qt.data[rows] = quant.quantize(self.weights[t].detach().numpy()[rows],
                                           self.emb_dtype).data

    def _all_tables_kernels(self):
        """numba per table, on a host with an invariant TSC: the kernels that take every
        table's bags in one call (one thread) and time each table inside with the time-stamp
        counter, so the per-table figures stay (method "tsc") without 2T calls a step (the
        gain: docs/performance.md, "Kernel and model choices").  None where they do not
        apply; then (and whenever numba runs more than one thread) one call per table, each
        timed with perf_counter."""
        if self.backend != "numba" or self.fused or self.dim % 4 or self.dim > 1024:
            return None
        from dlrmprof.kernels.numba_embedding import embedding_bag_tables
        from dlrmprof.kernels.numba_embedding_sgd import embedding_bag_tables_sgd
        from dlrmprof.platform import tsc_period_s
        period = tsc_period_s()
        if period is None:
            return None
        return dict(fwd=embedding_bag_tables, sgd=embedding_bag_tables_sgd, tsc=period,
                    rows=np.array([t.rows for t in self.tables], np.int64),
                    means=np.array([m == "mean" for m in self.modes]),
                    cycles=np.zeros(len(self.tables), np.int64))

    def _all_inputs(self, indices: Sequence, offsets: Sequence):
        """(indices, offsets) of all tables concatenated, as the all-tables kernels take them;
        the forward's are reused by the sparse update of the same batch."""
        src = self._all_src
        if src is not None and src[0] is indices and src[1] is offsets:
            return src[2], src[3]
        idx, off = np.concatenate(indices), np.concatenate(offsets)
        self._all_src = (indices, offsets, idx, off)  # held, so their identity cannot be reused
        return idx, off

    def _use_all(self) -> bool:
        if self._all is None:
            return False
        from dlrmprof.kernels.numba_util import num_threads
        return num_threads() == 1

    def _refresh_views(self) -> None:
        w = self.weight_all
        self.weights = [w[int(b):int(b) + t.rows] for t, b in zip(self.tables, self.row_base)]
        self._np_all = w.numpy() if self.backend == "numba" else None
        self._np = [x.numpy() for x in self.weights] if self.backend == "numba" else None

    def __setstate__(self, state):
        # copy.deepcopy / unpickling: the views (torch and numpy) must look into this
        # object's own buffer, not into copies of the original's
        super().__setstate__(state)
        self._refresh_views()
        self._pooled = None

    def _apply(self, fn, *args, **kwargs):  # .to()/.cuda() keep the views in sync
        out = super()._apply(fn, *args, **kwargs)
        self._refresh_views()
        self._pooled = None
        return out

    @property
    def num_tables(self) -> int:
        return len(self.tables)

    def pooled_buffer(self, batch: int, requires_grad: bool) -> torch.Tensor:
        """The [B, T, D] output buffer, reused across iterations of the same batch size."""
        p = self._pooled
        if p is None or p.shape[0] != batch:
            p = torch.empty(batch, self.num_tables, self.dim, dtype=torch.float32,
                            device=self.device)
            self._pooled = p
        p.grad = None
        p.requires_grad_(requires_grad)
        return p

    def combine(self, indices: Sequence, offsets: Sequence, batch: int):
        """All tables' bags as one jagged batch over ``weight_all`` (TBE layout)::

            indices = [ idx_0 + base_0 | idx_1 + base_1 | ... ]
            offsets = [ off_0[:-1] | off_1[:-1] + nnz_0 | ... | total nnz ]   (T*B+1)
        """
        src = self._tbe_src  # the forward's combined batch is reused by the sparse update
        if src is not None and src[0] is indices and src[1] is offsets:
            return self._tbe
        T = len(indices)
        if isinstance(indices[0], np.ndarray):
            total = sum(int(i.shape[0]) for i in indices)
            if self._idx_buf.shape[0] < total:
                self._idx_buf = np.empty(max(total, 2 * self._idx_buf.shape[0]), np.int64)
            idx = self._idx_buf[:total]
            off = np.empty(T * batch + 1, np.int64)
            s = 0
            for t in range(T):
                n = indices[t].shape[0]
                np.add(indices[t], self.row_base[t], out=idx[s:s + n])
                np.add(offsets[t][:-1], s, out=off[t * batch:(t + 1) * batch])
                s += n
            off[-1] = s
        else:
            starts = np.concatenate([[0], np.cumsum([int(i.shape[0]) for i in indices])])
            idx = torch.cat([i + int(b) for i, b in zip(indices, self.row_base)])
            off = torch.cat([o[:-1] + int(starts[t]) for t, o in enumerate(offsets)]
                            + [idx.new_full((1,), int(starts[-1]))])   # no host copy: graph-safe
        self._tbe_src = (indices, offsets)  # held, so their identity cannot be reused
        self._tbe = (idx, off)
        return idx, off

    def forward(self, indices: Sequence, offsets: Sequence, batch: int,
                requires_grad: bool = False, timer=NULL_TIMER) -> torch.Tensor:
        """Pool every table: per table t, bags `indices[t]` / `offsets[t]` (B+1 entries).

        Index arrays are numpy for the numba backend, else torch tensors on the model's
        device (`dlrmprof.dlrm.train.DLRMTrain.inputs` makes them).
        """
        pooled = self.pooled_buffer(batch, requires_grad)
        eb = self._eb
        T = len(self.weights)
        if self.packed is not None:
            out = pooled.detach().numpy()
            flat = out.reshape(batch, T * self.dim)   # numba writes table t's columns there
            for t, qt in enumerate(self.packed):
                idx, off = indices[t], offsets[t]
                if isinstance(idx, torch.Tensor):
                    idx, off = idx.numpy(), off.numpy()
                with timer.op(self.op_names[t]):
                    if self.backend == "numba":
                        self._qeb(qt.dtype, qt.dim, qt.data, idx, off, self.modes[t], None,
                                  out=flat, ocol=t * self.dim)
                    else:
                        out[:, t, :] = self._qeb(qt.dtype, qt.dim, qt.data, idx, off,
                                                 self.modes[t], None)
        elif self.fused:
            idx, off = self.combine(indices, offsets, batch)
            if self._np is not None:
                out = eb(self._np_all, idx, off, self.modes[0], None)
                pooled.detach().numpy()[...] = out.reshape(T, batch, self.dim).transpose(1, 0, 2)
            else:
                out = eb(self.weight_all, idx, off, self.modes[0], None)
                with torch.no_grad():
                    pooled.detach().copy_(out.view(T, batch, self.dim).transpose(0, 1))
        elif self._use_all():
            a = self._all
            idx, off = self._all_inputs(indices, offsets)
            out = pooled.detach().numpy().reshape(batch, T * self.dim)
            a["fwd"](self._np_all, a["rows"], self.row_base, a["means"], idx, off, batch, out,
                     a["cycles"])
            if timer is not NULL_TIMER:
                timer.add_all(self.op_names, (a["cycles"] * a["tsc"]).tolist(), method="tsc")
        elif self._np is not None:
            out = pooled.detach().numpy()
            for t in range(T):
                with timer.op(self.op_names[t]):
                    out[:, t, :] = eb(self._np[t], indices[t], offsets[t], self.modes[t], None)
        else:
            with torch.no_grad():
                dst = pooled.detach()
                for t in range(T):
                    with timer.op(self.op_names[t]):
                        dst[:, t, :] = eb(self.weights[t], indices[t], offsets[t], self.modes[t],
                                          None)
        return pooled

    @torch.no_grad()
    def sgd_update(self, indices: Sequence, offsets: Sequence, grad_pooled: torch.Tensor,
                   lr: float, timer=NULL_TIMER) -> None:
        """Sparse SGD on the touched rows: weight[i] -= lr * d(loss)/d(pooled bag); packed
        tables (`set_emb_dtype`) then re-pack those rows."""
        self._sgd_update(indices, offsets, grad_pooled, lr, timer)
        if self.packed is not None:
            with timer.op("emb_repack"):
                self._repack(indices)

    def _sgd_update(self, indices, offsets, grad_pooled, lr, timer) -> None:
        sgd = self._sgd
        if self._use_all():
            a = self._all
            idx, off = self._all_inputs(indices, offsets)
            B = grad_pooled.shape[0]
            g = np.ascontiguousarray(grad_pooled.detach().numpy()).reshape(B, -1)
            a["sgd"](self._np_all, a["rows"], self.row_base, a["means"], idx, off, B, g, lr,
                     a["cycles"])
            if timer is not NULL_TIMER:
                timer.add_all(self.upd_names, (a["cycles"] * a["tsc"]).tolist(), method="tsc")
            return
        if self._np is not None and not self.fused:
            # numba per table: table t's gradient is the strided view [:, t, :] (rows of D
            # floats, T*D apart); no transposed copy of the whole [B, T, D] gradient
            gb = grad_pooled.detach().numpy()
            for t in range(len(self.weights)):
                with timer.op(self.upd_names[t]):
                    sgd(self._np[t], indices[t], offsets[t], gb[:, t, :], lr, self.modes[t],
                        None)
            return
        g = grad_pooled.transpose(0, 1).contiguous()  # [T, B, D]: one contiguous slab per table
        T, B = g.shape[0], g.shape[1]
        if self.fused:
            idx, off = self.combine(indices, offsets, B)
            g2 = g.view(T * B, self.dim)
            if self._np is not None:
                sgd(self._np_all, idx, off, g2.numpy(), lr, self.modes[0], None)
            else:
                sgd(self.weight_all, idx, off, g2, lr, self.modes[0], None)
        else:
            for t in range(T):
                with timer.op(self.upd_names[t]):
                    sgd(self.weights[t], indices[t], offsets[t], g[t], lr, self.modes[t], None)


class DenseArch(MLPArch):
    """Bottom MLP: F-...-D with ReLU after every layer (as the DLRM reference)."""

    last_relu = True


class _NumbaInteraction(torch.autograd.Function):
    """The numba kernels, resolved once and called without the public entry points' per-call
    checks (the arches' shapes are checked when the DLRM is built)."""

    @staticmethod
    def forward(ctx, dense, pooled):
        ctx.save_for_backward(dense, pooled)
        return torch.from_numpy(kernels.resolve("interaction", "numba")(
            dense.detach().numpy(), pooled.detach().numpy()))

    @staticmethod
    def backward(ctx, grad_out):
        dense, pooled = ctx.saved_tensors
        gd, gp = kernels.resolve("interaction_backward", "numba")(
            dense.detach().numpy(), pooled.detach().numpy(), grad_out.detach().numpy())
        return torch.from_numpy(gd), torch.from_numpy(gp)


class InteractionArch(nn.Module):
    """Dot interaction: [x, lower triangle of Z Z^T], Z = [x; pooled] -> [B, D + T(T+1)/2]."""

    def __init__(self, num_tables: int, dim: int, backend: str = "torch"):
        super().__init__()
        if backend not in ("numba", "torch"):
            raise UserError(f"unknown interaction backend {backend!r} (numba or torch)")
        self.num_tables = num_tables
        self.dim = dim
        self.backend = backend
        self.out_features = dim + (num_tables + 1) * num_tables // 2

    def forward(self, dense: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        if self.backend == "numba":
            return _NumbaInteraction.apply(dense, pooled)
        return kernels.interaction(dense, pooled, backend="torch")


class OverArch(MLPArch):
    """Top MLP: ReLU between layers, none after the last (a logit); `predict` adds the
    sigmoid that gives the click probability."""

    last_relu = False

    def __init__(self, layers: Sequence[int], generator: torch.Generator | None = None):
        if layers[-1] != 1:
            raise UserError(f"OverArch must end in one logit, got layers {list(layers)}")
        super().__init__(layers, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).squeeze(1)

    @staticmethod
    def predict(logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


class DLRM(nn.Module):
    """Wires the four arches; checks their dimensions agree at construction."""

    def __init__(self, sparse_arch: SparseArch, dense_arch: DenseArch,
                 interaction_arch: InteractionArch, over_arch: OverArch):
        super().__init__()
        D = sparse_arch.dim
        if dense_arch.layers[-1] != D:
            raise UserError(f"DLRM: bottom MLP ends at {dense_arch.layers[-1]} but the "
                            f"embeddings have dim {D}")
        if interaction_arch.num_tables != sparse_arch.num_tables or interaction_arch.dim != D:
            raise UserError(f"DLRM: interaction built for {interaction_arch.num_tables} tables x "
                            f"dim {interaction_arch.dim}, sparse arch has "
                            f"{sparse_arch.num_tables} x {D}")
        if over_arch.layers[0] != interaction_arch.out_features:
            raise UserError(f"DLRM: top MLP input is {over_arch.layers[0]} but the interaction "
                            f"gives {interaction_arch.out_features} = {D} + "
                            f"{sparse_arch.num_tables + 1}*{sparse_arch.num_tables}/2")
        self.sparse_arch = sparse_arch
        self.dense_arch = dense_arch
        self.interaction_arch = interaction_arch
        self.over_arch = over_arch

    @property
    def device(self) -> torch.device:
        return self.sparse_arch.device

    @property
    def backend(self) -> str:
        return self.sparse_arch.backend

    def forward(self, dense: torch.Tensor, indices: Sequence, offsets: Sequence,
                requires_grad: bool = False, timer=NULL_TIMER):
        """-> (logits [B], pooled [B, T, D]); `pooled` is kept for the sparse update."""
        with timer.op("emb"):
            pooled = self.sparse_arch(indices, offsets, dense.shape[0], requires_grad, timer)
        with timer.op("bottom_mlp"):
            x = self.dense_arch(dense)
        with timer.op("interaction"):
            z = self.interaction_arch(x, pooled)
        with timer.op("top_mlp"):
            logits = self.over_arch(z)
        return logits, pooled


MLP_DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def build_dlrm(config: DLRMConfig, backend: str = "numba", device: str = "cpu",
               seed: int = 0, fused_tables: bool = False, mlp_dtype: str = "fp32",
               emb_dtype: str = "fp32") -> DLRM:
    """Build the DLRM of `config` (tables as configured) with a seeded generator.

    `mlp_dtype="bf16"` (opt-in, NOT the default: it changes the numbers) runs the two MLPs'
    GEMMs in bfloat16 on copies of the fp32 weights (fp32 master weights, SGD in fp32);
    embeddings and interaction stay fp32.  `emb_dtype` (fp16, bf16, int8, int4; see
    `SparseArch.set_emb_dtype`) looks the tables up in that storage type."""
    check_backend(device, backend)
    if mlp_dtype not in MLP_DTYPES:
        raise UserError(f"unknown MLP dtype {mlp_dtype!r}: choose {' or '.join(MLP_DTYPES)}")
    gen = torch.Generator().manual_seed(int(seed))
    sparse = SparseArch(config.tables, backend=backend, device=device, generator=gen,
                        fused=fused_tables, emb_dtype=emb_dtype)
    dense = DenseArch(config.bottom_mlp, generator=gen)
    inter = InteractionArch(config.num_tables, config.embedding_dim,
                            backend="numba" if backend == "numba" else "torch")
    over = OverArch(config.top_layers, generator=gen)
    model = DLRM(sparse, dense, inter, over)
    model.dense_arch.to(device)
    model.over_arch.to(device)
    for arch in (model.dense_arch, model.over_arch):
        arch.compute_dtype = MLP_DTYPES[mlp_dtype]
        arch.numba_helpers = backend == "numba"
    return model

