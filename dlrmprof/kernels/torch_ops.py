"""torch kernels (CPU and CUDA: they run wherever the tensors live).

Inputs are torch tensors already validated by `dlrmprof.kernels`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _lengths(offsets):
    return offsets[1:] - offsets[:-1]


def embedding_bag(weight, indices, offsets, mode, per_sample_weights):
    if offsets.dtype != indices.dtype:
        offsets = offsets.to(indices.dtype)
    if per_sample_weights is None or mode == "sum":
        return F.embedding_bag(indices, weight, offsets, mode=mode,
                               per_sample_weights=per_sample_weights, include_last_offset=True)
    # torch only weights "sum" bags: weighted mean = weighted sum / bag length
    out = F.embedding_bag(indices, weight, offsets, mode="sum",
                          per_sample_weights=per_sample_weights, include_last_offset=True)
    return out / _lengths(offsets).clamp_(min=1).to(out.dtype).unsqueeze(1)


def embedding_bag_sgd(weight, indices, offsets, grad_output, lr, mode, per_sample_weights):
    lengths = _lengths(offsets)
    B = lengths.shape[0]
    bag = torch.repeat_interleave(torch.arange(B, device=indices.device), lengths,
                                  output_size=indices.shape[0])
    grad_rows = grad_output.index_select(0, bag)
    scale = None
    if per_sample_weights is not None:
        scale = per_sample_weights.to(grad_rows.dtype)
    if mode == "mean":
        inv = (1.0 / lengths.clamp(min=1).to(grad_rows.dtype)).index_select(0, bag)
        scale = inv if scale is None else scale * inv
    if scale is not None:
        grad_rows = grad_rows * scale.unsqueeze(1)
    with torch.no_grad():
        weight.index_add_(0, indices, grad_rows.to(weight.dtype), alpha=-lr)


def _stack(dense, pooled):
    return torch.cat([dense.unsqueeze(1), pooled], dim=1)


def _tril(T1, device):
    return torch.tril_indices(T1, T1, offset=-1, device=device).unbind(0)


def interaction(dense, pooled):
    z = _stack(dense, pooled)
    zz = torch.bmm(z, z.transpose(1, 2))
    i, j = _tril(z.shape[1], z.device)
    return torch.cat([dense, zz[:, i, j]], dim=1)


def interaction_backward(dense, pooled, grad_out):
    B, T, D = pooled.shape
    z = _stack(dense, pooled)
    i, j = _tril(T + 1, z.device)
    gm = torch.zeros((B, T + 1, T + 1), dtype=grad_out.dtype, device=grad_out.device)
    gm[:, i, j] = grad_out[:, D:]
    gz = torch.bmm(gm + gm.transpose(1, 2), z)
    return grad_out[:, :D] + gz[:, 0], gz[:, 1:].contiguous()


def linear(x, weight, bias):
    return F.linear(x, weight, bias)


def linear_backward(x, weight, grad_out):
    return grad_out @ weight, grad_out.t() @ x, grad_out.sum(0)
