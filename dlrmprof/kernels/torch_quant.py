"""torch's own lookups over packed tables: the baselines the numba kernels are held to.

int8 / int4: ``torch.ops.quantized.embedding_bag_byte_rowwise_offsets`` /
``embedding_bag_4bit_rowwise_offsets`` (FBGEMM's CPU kernels on the fused row-wise layout
of `kernels.quant`; they return the bag's sum even when asked for mode 1, "mean", so a
mean is their sum divided here); fp16 / bf16 / fp32: ``torch.nn.functional.embedding_bag``
on a table of that dtype (its output is in the table's dtype; returned here as float32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dlrmprof.kernels import quant

_MODES = {"sum": 0, "mean": 1}


def prepare(dtype, data, indices, offsets, per_sample_weights=None):
    """(table, indices, offsets, weights) as the torch ops take them, without copies where
    the inputs allow: indices and offsets share one integer type."""
    t = quant.to_torch(quant.QTable(dtype, quant.packed_dim(dtype, data), data))
    idx = torch.as_tensor(indices)
    off = torch.as_tensor(offsets)
    if idx.dtype not in (torch.int32, torch.int64):
        idx = idx.to(torch.int64)
    if off.dtype != idx.dtype:
        off = off.to(idx.dtype)
    psw = None if per_sample_weights is None else torch.as_tensor(per_sample_weights,
                                                                 dtype=torch.float32)
    return t, idx, off, psw


def lookup(dtype, table, idx, off, mode, psw):
    """One call of torch's op for `dtype` on prepared inputs (the timed call)."""
    if dtype == "int8":
        return torch.ops.quantized.embedding_bag_byte_rowwise_offsets(
            table, idx, off, False, _MODES[mode], False, psw, None, True)
    if dtype == "int4":
        return torch.ops.quantized.embedding_bag_4bit_rowwise_offsets(
            table, idx, off, False, _MODES[mode], False, psw, None, True)
    if psw is not None:
        psw = psw.to(table.dtype)
    return F.embedding_bag(idx, table, off, mode=mode, per_sample_weights=psw,
                           include_last_offset=True)


def qembedding_bag(dtype, dim, data, indices, offsets, mode, per_sample_weights):
    table, idx, off, psw = prepare(dtype, data, indices, offsets, per_sample_weights)
    # torch's quantized ops take mode 1 (mean) but return the sum (torch 2.13): divide here
    if mode == "mean" and (psw is not None or dtype in ("int8", "int4")):
        out = lookup(dtype, table, idx, off, "sum", psw).float()
        lengths = (off[1:] - off[:-1]).clamp(min=1).to(torch.float32)
        return (out / lengths.unsqueeze(1)).numpy()
    return lookup(dtype, table, idx, off, mode, psw).float().numpy()
