"""numba-cuda embedding bag over packed int8 and fp16 tables (`kernels.quant` layouts).

The kernel is `numba_cuda`'s (one bag loop for fp32, fp16 and int8 rows, see its
docstring): an fp16 row is read as half floats and widened; an int8 row's codes are read as
bytes and its scale and bias through a float32 view of the same bytes (row r's scale is word
D/4 of the row: D must be a multiple of 4 so the words line up), so the fused row-wise table
is used as stored.

Takes torch CUDA tensors zero-copy (on torch's current stream) or numpy arrays (copied in
and out: tests and small checks).  Out-of-range indices are counted on the device, read as
row 0 with weight 0, and raise IndexError after the kernel.  bf16 and int4 tables have no
kernel here (numba or torch take them on the CPU).
"""

from __future__ import annotations

import numpy as np

from dlrmprof.errors import UserError
from dlrmprof.kernels import numba_cuda


def _f32_view(data):
    import sys
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(data, torch.Tensor):
        return data.view(torch.float32)
    return np.ascontiguousarray(data).view(np.float32)


def qembedding_bag(dtype, dim, data, indices, offsets, mode, per_sample_weights):
    """Pooled [B, dim] float32 from a packed int8 or fp16 table on the GPU (fp32 tables go
    to `numba_cuda.embedding_bag`)."""
    if dtype == "fp32":
        return numba_cuda.embedding_bag(data, indices, offsets, mode, per_sample_weights)
    if dtype not in ("int8", "fp16"):
        raise UserError(f"backend 'numba-cuda' looks up fp32, fp16 and int8 tables, not {dtype} "
                        "(use backend 'numba' or 'torch')")
    if dtype == "int8" and dim % 4:
        raise UserError(f"backend 'numba-cuda': int8 tables need D % 4 == 0 (the row's scale "
                        f"and bias are read as float32 words), got D {dim}")
    sb = _f32_view(data) if dtype == "int8" else None
    return numba_cuda.forward(dtype, data, sb, dim, indices, offsets, mode, per_sample_weights)
