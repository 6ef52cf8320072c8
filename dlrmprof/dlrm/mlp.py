"""The MLPs of DLRM (bottom and top) as one autograd op each, and the arch they share.

An MLP runs as one autograd node (`_MLPFunction`) instead of 2 per layer (Linear, ReLU) with
their transposes, views and per-parameter bookkeeping: at batch 128 those tiny ops cost
about as much as a small GEMM each.  It issues the GEMMs autograd would (forward
``addmm(b, x, W^T)``, backward dX = dY W, dW = dY^T X, db = sum of dY) and the same ReLU
masks, so the numbers are autograd's; in addition the ReLU runs in place, the first layer's
dX is skipped when its input needs no gradient, and a thin layer (4 K <= N, e.g. 13 -> 512)
gets dW as (X^T dY)^T, the GEMM shape MKL runs faster (`weight_grad`).

What happens to a layer's parameter gradient is the caller's choice:

* no `update` (the default): the backward returns dW and db as autograd does (what DDP
  and any other optimizer need);
* an `update` (a `LayerUpdate`, e.g. `dlrmprof.dlrm.optim.InBackwardSGD`, set by the
  training wrapper): the backward hands it each layer's factors (dY, X) as soon as they
  exist, after dX = dY W has used the old W, and returns no parameter gradients.  The
  update may apply them without forming dW at all (W -= lr dY^T X as one GEMM into W).

`numba_helpers` (the numba backend, fp32 CPU): the ReLU masks of the backward run as a
numba kernel (`kernels.numba_dense.relu_grad_`, torch's threshold_backward in place).
"""

from __future__ import annotations

import math
from typing import Protocol, Sequence

import torch
from torch import nn

_threshold_backward = torch.ops.aten.threshold_backward.default  # ReLU's own backward


class LayerUpdate(Protocol):
    """Receives each layer's gradient factors from the MLP backward, last layer first."""

    def step(self, weight: torch.Tensor, bias: torch.Tensor, dy: torch.Tensor,
             x: torch.Tensor, need_weight: bool, need_bias: bool) -> None:
        """Update `weight` [N, K] and `bias` [N] (the fp32 parameters) from dY [B, N] and
        X [B, K] (in the GEMMs' dtype): dW = dY^T X, db = column sums of dY."""


def _dw_transposed(k: int, n: int) -> bool:
    """dW [n, k] as (X^T dY)^T rather than dY^T X (same products and sums; MKL's speed)."""
    return 4 * k <= n


def weight_grad(dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dW = dY^T X [N, K], in the GEMM shape MKL runs faster for the layer's shape."""
    if _dw_transposed(x.shape[1], dy.shape[1]):
        return torch.mm(x.t(), dy).t()
    return torch.mm(dy.t(), x)


def folds_into_gemm(weight: torch.Tensor, dy: torch.Tensor) -> bool:
    """Whether W -= lr dY^T X can run as one GEMM into W (``W.addmm_``): dY in W's dtype
    and dW not taken transposed (`weight_grad`)."""
    return dy.dtype == weight.dtype and not _dw_transposed(weight.shape[1], weight.shape[0])


def _relu_mask(g: torch.Tensor, grad: torch.Tensor, numba: bool, masks_grad: bool):
    """(g ready to mask, mask(g, y) -> g): ReLU's backward, by numba in place (g then made
    contiguous, and a copy where the first mask (`masks_grad`) would write into the incoming
    `grad`) or by torch's threshold_backward (a new tensor)."""
    if not numba:
        return g, lambda g, y: _threshold_backward(g, y, 0)
    from dlrmprof.kernels.numba_dense import relu_grad_
    g = g.contiguous()
    if masks_grad and g.data_ptr() == grad.data_ptr():
        g = g.clone()

    def mask(g, y):
        relu_grad_(g.numpy(), y.numpy())
        return g
    return g, mask


class _MLPFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, last_relu, update, opts, *params):
        compute_dtype, numba_helpers = opts
        n = len(params) // 2
        ctx.params = params if update is not None else None  # the fp32 parameters
        ctx.out_dtype = x.dtype
        ctx.cast = compute_dtype is not None and compute_dtype != params[0].dtype
        if ctx.cast:  # reduced-precision GEMMs (opt-in): bf16 copies, fp32 master weights
            params = tuple(p.detach().to(compute_dtype) for p in params)
            x = x.detach().to(compute_dtype)
        h = x
        acts = [x]
        for i in range(n):
            w, b = params[2 * i], params[2 * i + 1]
            h = torch.addmm(b, h, w.t())
            if last_relu or i < n - 1:
                h.relu_()
            acts.append(h)
        ctx.last_relu = last_relu
        ctx.update = update
        ctx.numba = (numba_helpers and not ctx.cast and x.device.type == "cpu"
                     and params[0].dtype == torch.float32)
        ctx.save_for_backward(*acts, *params[0::2])
        if ctx.cast:
            return h.to(ctx.out_dtype)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable  # no double backward through the MLPs
    def backward(ctx, grad):
        saved = ctx.saved_tensors
        n = (len(saved) - 1) // 2
        acts, weights = saved[:n + 1], saved[n + 1:]
        need = ctx.needs_input_grad
        update = ctx.update
        grads: list = [None] * (2 * n)
        g = grad.to(weights[0].dtype) if ctx.cast else grad
        g, mask = _relu_mask(g, grad, ctx.numba and g.dtype == torch.float32, ctx.last_relu)
        gx = None
        for i in range(n - 1, -1, -1):
            y, x_in, w = acts[i + 1], acts[i], weights[i]
            if ctx.last_relu or i < n - 1:
                g = mask(g, y)
            need_w, need_b = need[4 + 2 * i], need[5 + 2 * i]
            if update is None:
                if need_w:
                    grads[2 * i] = weight_grad(g, x_in)
                if need_b:
                    grads[2 * i + 1] = g.sum(0, dtype=torch.float32) if ctx.cast else g.sum(0)
            dx = torch.mm(g, w) if i > 0 or need[0] else None
            if update is not None and (need_w or need_b):  # dX has used the old W
                update.step(ctx.params[2 * i], ctx.params[2 * i + 1], g, x_in, need_w, need_b)
            if i > 0:
                g = dx
            else:
                gx = dx
        if ctx.cast:
            grads = [None if t is None else t.to(ctx.out_dtype) for t in grads]
            gx = None if gx is None else gx.to(ctx.out_dtype)
        return (gx, None, None, None, *grads)


def mlp_forward(mlp: nn.Sequential, x: torch.Tensor, last_relu: bool,
                update: LayerUpdate | None = None,
                compute_dtype: torch.dtype | None = None,
                numba_helpers: bool = False) -> torch.Tensor:
    """Run `mlp` (Linear / ReLU as `build_mlp` builds it) as one fused op; the same values
    as ``mlp(x)`` and, under autograd, the same gradients (or, with `update`, each layer's
    gradient handed to it in the backward instead).  `compute_dtype` (opt-in, e.g.
    torch.bfloat16) runs the GEMMs on copies in that type: different numbers, fp32 in/out.
    `numba_helpers`: on fp32 CPU tensors the ReLU masks of the backward run as a numba
    kernel; the GEMMs stay torch's."""
    params = [p for m in mlp if isinstance(m, nn.Linear) for p in (m.weight, m.bias)]
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        return _MLPFunction.apply(x, last_relu, update, (compute_dtype, numba_helpers),
                                  *params)
    out_dtype = x.dtype
    if compute_dtype is not None and compute_dtype != params[0].dtype:
        params = [p.to(compute_dtype) for p in params]
        x = x.to(compute_dtype)
    n = len(params) // 2
    h = x
    for i in range(n):
        h = torch.addmm(params[2 * i + 1], h, params[2 * i].t())
        if last_relu or i < n - 1:
            h.relu_()
    return h.to(out_dtype)


def build_mlp(layers: Sequence[int], last_relu: bool, generator) -> nn.Sequential:
    """Linear layers (DLRM reference init: weights N(0, sqrt(2/(m+n))), bias N(0, sqrt(1/m)),
    drawn from `generator`, never the global RNG) with a ReLU after each but the last (and
    after the last too with `last_relu`)."""
    mods: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(layers[:-1], layers[1:])):
        lin = torch.nn.utils.skip_init(nn.Linear, n_in, n_out)
        with torch.no_grad():
            lin.weight.normal_(0.0, math.sqrt(2.0 / (n_in + n_out)), generator=generator)
            lin.bias.normal_(0.0, math.sqrt(1.0 / n_out), generator=generator)
        mods.append(lin)
        if last_relu or i < len(layers) - 2:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


class MLPArch(nn.Module):
    """An MLP run by `mlp_forward`; `DenseArch` and `OverArch` differ only in the last ReLU.

    Set by their owners: ``param_update`` (a `LayerUpdate`: the training wrapper's in-backward
    optimizer, or None for autograd's gradients), ``compute_dtype`` (opt-in bf16 GEMMs) and
    ``numba_helpers`` (the numba backend's ReLU masks), see `mlp_forward`."""

    last_relu = True

    def __init__(self, layers: Sequence[int], generator: torch.Generator | None = None):
        super().__init__()
        self.layers = tuple(layers)
        self.mlp = build_mlp(layers, last_relu=self.last_relu, generator=generator)
        self.param_update: LayerUpdate | None = None
        self.compute_dtype: torch.dtype | None = None
        self.numba_helpers = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mlp_forward(self.mlp, x, last_relu=self.last_relu, update=self.param_update,
                           compute_dtype=self.compute_dtype,
                           numba_helpers=self.numba_helpers)
