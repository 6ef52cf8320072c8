"""Plain numpy reference kernels: obviously correct, float64 accumulation, slow.

Every other backend is tested against these.  Inputs are numpy arrays already validated by
`dlrmprof.kernels`; results come back in the weight's dtype (pass float64 inputs to get the
float64 result itself).
"""

from __future__ import annotations

import numpy as np


def _bag_scales(offsets, nnz, per_sample_weights, mode):
    """Per-lookup multiplier (weight, / bag length for mean) and per-lookup bag id."""
    lengths = np.diff(offsets).astype(np.int64)
    bag = np.repeat(np.arange(len(lengths)), lengths)
    scale = np.ones(nnz, dtype=np.float64)
    if per_sample_weights is not None:
        scale *= per_sample_weights.astype(np.float64)
    if mode == "mean":
        scale /= np.maximum(lengths, 1)[bag]
    return bag, scale


def _check_indices(weight, indices, offsets):
    if len(indices) and (indices.min() < 0 or indices.max() >= weight.shape[0]):
        raise IndexError(f"indices must lie in [0, {weight.shape[0]}), got "
                         f"{indices.min()} .. {indices.max()}")
    if np.any(np.diff(offsets) < 0):
        raise IndexError("offsets must not decrease")


def embedding_bag(weight, indices, offsets, mode, per_sample_weights):
    _check_indices(weight, indices, offsets)
    B, D = len(offsets) - 1, weight.shape[1]
    bag, scale = _bag_scales(offsets, len(indices), per_sample_weights, mode)
    rows = weight[indices].astype(np.float64) * scale[:, None]
    out = np.zeros((B, D), dtype=np.float64)
    np.add.at(out, bag, rows)
    return out.astype(weight.dtype, copy=False)


def embedding_bag_sgd(weight, indices, offsets, grad_output, lr, mode, per_sample_weights):
    _check_indices(weight, indices, offsets)
    bag, scale = _bag_scales(offsets, len(indices), per_sample_weights, mode)
    grad_rows = grad_output.astype(np.float64)[bag] * scale[:, None]
    delta = np.zeros(weight.shape, dtype=np.float64)
    np.add.at(delta, indices, grad_rows)
    touched = np.unique(indices)
    updated = weight[touched].astype(np.float64) - lr * delta[touched]
    weight[touched] = updated.astype(weight.dtype)


def _tril(T1):
    i, j = np.tril_indices(T1, k=-1)
    return i, j


def interaction(dense, pooled):
    B, T, D = pooled.shape
    z = np.concatenate([dense[:, None, :], pooled], axis=1).astype(np.float64)
    zz = np.einsum("bid,bjd->bij", z, z)
    i, j = _tril(T + 1)
    out = np.concatenate([dense.astype(np.float64), zz[:, i, j]], axis=1)
    return out.astype(dense.dtype, copy=False)


def interaction_backward(dense, pooled, grad_out):
    B, T, D = pooled.shape
    z = np.concatenate([dense[:, None, :], pooled], axis=1).astype(np.float64)
    g = grad_out.astype(np.float64)
    i, j = _tril(T + 1)
    gm = np.zeros((B, T + 1, T + 1))
    gm[:, i, j] = g[:, D:]
    gz = np.einsum("bij,bjd->bid", gm + gm.transpose(0, 2, 1), z)
    grad_dense = g[:, :D] + gz[:, 0]
    return grad_dense.astype(dense.dtype), gz[:, 1:].astype(pooled.dtype)


def linear(x, weight, bias):
    y = x.astype(np.float64) @ weight.astype(np.float64).T
    if bias is not None:
        y += bias.astype(np.float64)
    return y.astype(x.dtype, copy=False)


def linear_backward(x, weight, grad_out):
    g = grad_out.astype(np.float64)
    grad_x = g @ weight.astype(np.float64)
    grad_w = g.T @ x.astype(np.float64)
    return (grad_x.astype(x.dtype), grad_w.astype(weight.dtype), g.sum(0).astype(weight.dtype))
