"""Dense optimizers of the training wrapper that run inside the MLP backward.

`InBackwardSGD` is a `dlrmprof.dlrm.mlp.LayerUpdate`: `DLRMTrain` sets it on the MLP arches,
and their backward hands it each layer's gradient factors (dY, X) as soon as they exist, so
the layer's plain SGD step runs while they are in cache and no dW buffer is written and read
back: W -= lr dY^T X is one GEMM into W (``W.addmm_``) where the layer's shape allows
(`mlp.folds_into_gemm`; the gain is measured in docs/performance.md, "DLRM training step"),
else dW is formed (`mlp.weight_grad`) and added.  The same update as the separate
multi-tensor step (`DLRMTrain.sgd_dense`), up to the last bit of rounding.
"""

from __future__ import annotations

import torch

from dlrmprof.dlrm.mlp import folds_into_gemm, weight_grad


class InBackwardSGD:
    """Plain SGD (no momentum, no weight decay), one layer at a time from the MLP backward.

    `numba_bias` (the numba backend): on fp32 CPU tensors the bias step b -= lr * (column
    sums of dY) runs as one numba kernel (`kernels.numba_dense.bias_sgd_`, float64 sums)
    instead of torch's sum and add_ (a reduction set-up each)."""

    def __init__(self, lr: float, numba_bias: bool = False):
        self.lr = float(lr)
        self.numba_bias = bool(numba_bias)
        self._bias_sgd = None
        if self.numba_bias:
            from dlrmprof.kernels.numba_dense import bias_sgd_
            self._bias_sgd = bias_sgd_

    def step(self, weight, bias, dy, x, need_weight, need_bias) -> None:
        """The layer's step, in place (called from the backward, where autograd records
        nothing; elsewhere wrap it in torch.no_grad())."""
        lr = self.lr
        if need_weight:
            if folds_into_gemm(weight, dy):
                weight.addmm_(dy.t(), x, alpha=-lr)
            else:
                weight.add_(weight_grad(dy, x), alpha=-lr)  # fp32 += bf16: in fp32
        if not need_bias:
            return
        if (self._bias_sgd is not None and dy.dtype == torch.float32
                and bias.dtype == torch.float32 and dy.device.type == "cpu"):
            self._bias_sgd(bias.detach().numpy(), dy.numpy(), lr)
        elif dy.dtype == bias.dtype:
            bias.add_(dy.sum(0), alpha=-lr)
        else:
            bias.add_(dy.sum(0, dtype=torch.float32), alpha=-lr)
