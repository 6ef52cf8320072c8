"""Training wrapper (loss + optimizers), inference step, the timed loop and click metrics.

`DLRMTrain` owns what `DLRM` does not: the BCE loss (on logits, numerically stable; with the
numba backend the loss and its gradient come from one numba pass, `NumbaBCE`), SGD on the
dense parameters, and the sparse embedding update (the kernels' fused `embedding_bag_sgd` on the
rows each batch touched, timed as its own op ``emb_update``).  The dense SGD of the two MLPs
runs inside their backward, layer by layer as each weight gradient appears
(`dlrmprof.dlrm.optim.InBackwardSGD`: the same update, W += -lr * dW, while dY and X are in
cache), so it is timed under ``backward``; ``optimizer`` covers any other dense parameter
(none in the built models).  ``DLRMTrain(model, lr, sgd_in_backward=False)`` keeps the
gradients and the separate step.

Op names recorded on the timer (per iteration)::

    data                    the data source's next_batch (loading, cutting, synthesis)
    to_device               numpy -> torch tensors on the model's device
    emb, emb.<table>        embedding-bag forward, all tables and each table
    bottom_mlp, interaction, top_mlp, loss
    backward                loss.backward() (numba backend: logits.backward(dloss/dlogits)):
                            MLPs (with their SGD step), interaction, grad of the pooled
                            embeddings
    optimizer               SGD step on dense parameters not updated in the backward
    emb_update, emb_update.<table>   fused sparse SGD of the embedding tables
    step                    the whole model step (everything but `data`)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from dlrmprof.dlrm.data import Batch
from dlrmprof.dlrm.graphs import GraphInfo, GraphStep
from dlrmprof.dlrm.model import DLRM, NULL_TIMER
from dlrmprof.dlrm.optim import InBackwardSGD


class NumbaBCE:
    """Mean BCE of CPU logits against numpy float32 labels, and d(loss)/d(logits), from one
    numba pass (`dlrmprof.kernels.numba_cpu.bce_with_logits_grad`): the training step then
    calls ``logits.backward(dlogits)``, with no loss node.  The gradient buffer is reused."""

    def __init__(self):
        from dlrmprof.kernels.numba_cpu import bce_with_logits_grad
        self._fn = bce_with_logits_grad
        self._grad: torch.Tensor | None = None

    def __call__(self, logits: torch.Tensor, labels: np.ndarray):
        g = self._grad
        if g is None or g.shape != logits.shape:
            g = self._grad = torch.empty(logits.shape, dtype=logits.dtype)
        loss = self._fn(logits.detach().numpy(), labels, g.numpy())
        return torch.tensor(loss, dtype=logits.dtype), g


def loss_and_backward(logits: torch.Tensor, labels: torch.Tensor, bce: "NumbaBCE | None",
                      loss_fn, timer=NULL_TIMER) -> torch.Tensor:
    """The loss (op "loss") and the backward pass (op "backward"): with `bce` (the numba
    backend, CPU labels) one numba pass gives the loss and d(loss)/d(logits) and the backward
    starts at the logits; otherwise `loss_fn` and ``loss.backward()``.  Returns the loss."""
    if bce is not None:
        with timer.op("loss"):
            loss, dl = bce(logits, labels.numpy())
        with timer.op("backward"):
            logits.backward(dl)
        return loss
    with timer.op("loss"):
        loss = loss_fn(logits, labels)
    with timer.op("backward"):
        loss.backward()
    return loss


class DLRMTrain:
    """BCE loss and SGD (lr from the config) around a `DLRM`."""

    def __init__(self, model: DLRM, lr: float, sgd_in_backward: bool = True):
        self.model = model
        self.lr = float(lr)
        self.sgd_in_backward = bool(sgd_in_backward)
        for arch in (model.dense_arch, model.over_arch):
            arch.param_update = (InBackwardSGD(self.lr, numba_bias=arch.numba_helpers)
                                 if sgd_in_backward else None)
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.params = [p for p in model.parameters() if p.requires_grad]
        self._cuda = model.device.type == "cuda"
        self._numpy_sparse = model.backend == "numba"
        # numba backend: the loss and d(loss)/d(logits) in one numba pass, then the backward
        # starts at the logits (no loss node: torch's BCE is ~10 small ops, 100+ us a step
        # with cold caches between the GEMMs); the torch backends keep torch's loss
        self._bce = NumbaBCE() if self._numpy_sparse else None

    # -- inputs --------------------------------------------------------------------------
    def inputs(self, batch: Batch):
        """(dense, labels, indices, offsets) in the form the model's backend takes."""
        dense = torch.from_numpy(batch.dense)
        labels = torch.from_numpy(batch.labels)
        if self._numpy_sparse:
            return dense, labels, batch.indices, batch.offsets
        idx = [torch.from_numpy(i) for i in batch.indices]
        off = [torch.from_numpy(o) for o in batch.offsets]
        if self._cuda:
            dev = self.model.device
            dense = dense.to(dev, non_blocking=True)
            labels = labels.to(dev, non_blocking=True)
            idx = [i.to(dev, non_blocking=True) for i in idx]
            off = [o.to(dev, non_blocking=True) for o in off]
        return dense, labels, idx, off

    @torch.no_grad()
    def sgd_dense(self) -> None:
        """Plain SGD (no momentum, no weight decay) on the dense parameters, as one fused
        multi-tensor update (what `torch.optim.SGD(foreach=True).step()` does, without its
        per-step bookkeeping: about 0.1 ms a step at batch 128), then drop the gradients."""
        params = [p for p in self.params if p.grad is not None]
        if params:
            torch._foreach_add_(params, [p.grad for p in params], alpha=-self.lr)
        for p in self.params:
            p.grad = None

    # -- steps ---------------------------------------------------------------------------
    def train_step(self, batch: Batch, timer=NULL_TIMER) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step; returns (loss, logits), both detached."""
        with timer.op("to_device"):
            dense, labels, idx, off = self.inputs(batch)
        return self.train_on(dense, labels, idx, off, timer)

    def train_on(self, dense, labels, idx, off, timer=NULL_TIMER):
        """The SGD step on inputs already in the backend's form (`inputs`): what a CUDA graph
        captures (`dlrmprof.dlrm.graphs`).  Returns (loss, logits), both detached."""
        model = self.model
        logits, pooled = model(dense, idx, off, requires_grad=True, timer=timer)
        loss = loss_and_backward(logits, labels, self._bce, self.loss_fn, timer)
        with timer.op("optimizer"):
            self.sgd_dense()
        with timer.op("emb_update"):
            model.sparse_arch.sgd_update(idx, off, pooled.grad, self.lr, timer)
        return loss.detach(), logits.detach()

    def infer_step(self, batch: Batch, timer=NULL_TIMER) -> torch.Tensor:
        """Click probabilities [B] (no gradients)."""
        with timer.op("to_device"):
            dense, _, idx, off = self.inputs(batch)
        return self.infer_on(dense, None, idx, off, timer)

    @torch.no_grad()
    def infer_on(self, dense, labels, idx, off, timer=NULL_TIMER) -> torch.Tensor:
        """Click probabilities [B] from inputs already in the backend's form; `labels` is
        unused (the same signature as `train_on`)."""
        logits, _ = self.model(dense, idx, off, requires_grad=False, timer=timer)
        with timer.op("sigmoid"):
            return self.model.over_arch.predict(logits)

    @torch.no_grad()
    def evaluate(self, data, batch_size: int = 1024) -> dict:
        """Logloss, accuracy and ROC AUC of the model on `data` (a CriteoData)."""
        n = data.labels.shape[0]
        probs = np.empty(n, np.float64)
        for s in range(0, n, batch_size):
            b = data.batch(slice(s, min(n, s + batch_size)))
            probs[s:s + b.size] = self.infer_step(b).double().cpu().numpy()
        return click_metrics(data.labels, probs)


# -- metrics ---------------------------------------------------------------------------------
def logloss(y: np.ndarray, p: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(p, np.float64), eps, 1 - eps)
    y = np.asarray(y, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((np.asarray(p) >= 0.5) == (np.asarray(y) >= 0.5)))


def roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties get average ranks); None if one class."""
    y = np.asarray(y) >= 0.5
    p = np.asarray(p, np.float64)
    n_pos = int(y.sum())
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(p, kind="mergesort")
    ps = p[order]
    ranks = np.empty(len(p), np.float64)
    # average rank (1-based) of every run of equal scores
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    ends = np.r_[starts[1:], len(ps)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def click_metrics(y: np.ndarray, p: np.ndarray) -> dict:
    return {"logloss": logloss(y, p), "accuracy": accuracy(y, p), "auc": roc_auc(y, p),
            "n": int(len(y)), "positive_rate": float(np.mean(np.asarray(y) >= 0.5))}


def base_rate_metrics(train_labels: np.ndarray, test_labels: np.ndarray) -> dict:
    """The predictor that always says the training click rate."""
    rate = float(np.mean(train_labels))
    p = np.full(len(test_labels), rate)
    m = click_metrics(test_labels, p)
    m["auc"] = 0.5
    m["rate"] = rate
    return m


# -- the timed loop --------------------------------------------------------------------------
@dataclass
class LoopResult:
    mode: str
    iters: int
    warmup: int
    batch_size: int
    wall_s: float                 # sum of timed iterations (data loading + model step)
    losses: list[float] = field(default_factory=list)     # per timed training step
    nnz_mean: list[float] = field(default_factory=list)   # mean lookups per table per batch
    curve: list[dict] = field(default_factory=list)       # evaluations, when asked
    graph: GraphInfo | None = None    # how the step ran when CUDA graphs were asked for


def run_loop(trainer: DLRMTrain, source, *, mode: str, iters: int, warmup: int, timer,
             progress: Callable[[int], None] | None = None,
             evaluate: Callable[[int, list[float]], dict] | None = None,
             eval_every: int = 0, graph: GraphInfo | None = None,
             profile_timer=None, profile_iters: int = 0) -> LoopResult:
    """Warm up (untimed), then `iters` timed iterations of data loading + model step.

    `evaluate(step, recent_train_losses)` runs between iterations (outside the timing) every
    `eval_every` steps when given; its dicts form `LoopResult.curve`.

    `graph` (enabled): the step runs as a CUDA graph per batch shape (`GraphStep`); `timer`
    then sees ``data``, ``to_device``, ``graph_replay`` and ``step``, and `profile_iters`
    eager iterations after the timed loop give `profile_timer` the per-op times.
    """
    train = mode == "train"
    step_fn = trainer.train_step if train else trainer.infer_step
    gstep = None
    if graph is not None and graph.enabled:
        gstep = step_fn = GraphStep(trainer, mode)
        gstep.info.reason = graph.reason
    sync = torch.cuda.synchronize if trainer.model.device.type == "cuda" else None
    recent: list[float] = []
    result = LoopResult(mode, iters, warmup, source.B, 0.0)
    step_no = 0
    nnz_sum: np.ndarray | None = None

    def one(tm, record: bool) -> None:
        nonlocal step_no, nnz_sum
        with tm.op("data", host=True):
            batch = source.next_batch()
        if record:
            n = np.fromiter((i.shape[0] for i in batch.indices), np.int64, len(batch.indices))
            nnz_sum = n if nnz_sum is None else nnz_sum + n
        with tm.op("step"):
            out = step_fn(batch, tm)
        if train:
            loss = float(out[0])
            recent.append(loss)
            if record:
                result.losses.append(loss)
        step_no += 1

    for _ in range(warmup):
        one(NULL_TIMER, False)
        if evaluate is not None and eval_every and step_no % eval_every == 0:
            result.curve.append(evaluate(step_no, recent))
            recent = []
    if sync is not None:
        sync()
    timer.reset()
    for _ in range(iters):
        timer.begin_iteration()
        one(timer, True)
        timer.end_iteration()
        if progress is not None:
            progress(1)
        if evaluate is not None and eval_every and step_no % eval_every == 0:
            result.curve.append(evaluate(step_no, recent))
            recent = []
    timer.finish()
    if gstep is not None:
        gstep.check()
        result.graph = _profile_pass(trainer, source, gstep, timer, profile_timer,
                                     profile_iters)
    elif graph is not None:
        result.graph = graph
    if evaluate is not None and eval_every and step_no % eval_every != 0:
        result.curve.append(evaluate(step_no, recent))
    result.wall_s = float(sum(timer.iter_wall))
    result.nnz_mean = [] if nnz_sum is None else (nnz_sum / iters).tolist()
    return result


def _profile_pass(trainer: DLRMTrain, source, gstep: GraphStep, timer, profile_timer,
                  iters: int) -> GraphInfo:
    """After a graph-replayed loop: `iters` eager steps on `profile_timer` (per-op times a
    graph cannot give), and the counts and step medians for the report."""
    info = gstep.info
    info.distinct_shapes = gstep.distinct_shapes()
    if "graph_replay" in timer.names:   # the step time of the iterations that replayed
        replayed = set(timer._ops["graph_replay"].iters)
        o = timer._ops["step"]
        s = [x for x, it in zip(o.samples, o.iters) if it in replayed]
        info.graph_step_median_s = float(np.median(s)) if s else None
    if info.replays == 0:
        info.notes.append("no batch shape repeated (bag lengths vary per batch): every step "
                          "ran eagerly")
    if profile_timer is None or iters <= 0:
        info.per_op_source = "none: only the whole step was timed"
        return info
    step_fn = trainer.train_step if info.mode == "train" else trainer.infer_step
    sync = torch.cuda.synchronize if trainer.model.device.type == "cuda" else None
    if sync is not None:
        sync()
    profile_timer.reset()
    for _ in range(iters):
        profile_timer.begin_iteration()
        with profile_timer.op("data", host=True):
            batch = source.next_batch()
        with profile_timer.op("step"):
            out = step_fn(batch, profile_timer)
        if info.mode == "train":
            float(out[0])
        profile_timer.end_iteration()
    profile_timer.finish()
    info.profile_iters = iters
    info.eager_step_median_s = float(np.median(profile_timer.samples("step")))
    how = "CUDA events" if sync is not None else "perf_counter"
    info.per_op_source = (f"an eager (non-graph) profiling pass of {iters} iterations after "
                          f"the timed graph loop, each op timed with {how}; the step, "
                          "to_device and data rows and samples/s are the graph loop's")
    return info
