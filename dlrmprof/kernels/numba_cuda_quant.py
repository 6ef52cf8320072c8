"""numba-cuda embedding bag over packed int8 and fp16 tables (`kernels.quant` layouts).

The layout of the fp32 kernel (`numba_cuda`): a group of `tpb` threads per bag, thread `l`
owning columns l, l + tpb, ...; each column sum in a register.  An fp16 row is read as
half floats and widened; an int8 row's codes are read as bytes and its scale and bias
through a float32 view of the same bytes (row r's scale is word D/4 of the row: D must be a
multiple of 4 so the words line up), so the fused row-wise table is used as stored.  The sum
of a bag's ``w * bias`` is added once, after its lookups.

Takes torch CUDA tensors zero-copy (as `numba_cuda` does, on torch's current stream) or
numpy arrays (copied in and out: tests and small checks).  Out-of-range indices are
counted on the device, skipped, and raise IndexError after the kernel.  bf16 and int4
tables have no kernel here (numba or torch take them on the CPU).
"""

from __future__ import annotations

import numpy as np

from dlrmprof.errors import UserError
from dlrmprof.kernels.numba_cuda import THREADS, _Args, cuda, float32, grid, layout

_KERNELS: dict = {}


def _make_fwd(TPB, COLS, FULL, INT8):
    GROUPS = THREADS // TPB

    @cuda.jit
    def fwd(data, sb, D, indices, offsets, psw, has_w, mean, out, err):
        t = cuda.threadIdx.x
        b = cuda.blockIdx.x * GROUPS + t // TPB
        lane = t % TPB
        if b >= offsets.shape[0] - 1:
            return
        R = data.shape[0]
        s = offsets[b]
        e = offsets[b + 1]
        bad = 0
        if e < s:
            bad += 1
        acc = cuda.local.array(COLS, float32)
        for j in range(COLS):
            acc[j] = float32(0.0)
        bsum = float32(0.0)
        for p in range(s, e):
            i = indices[p]
            w = float32(1.0)
            if has_w:
                w = psw[p]
            if i < 0 or i >= R:
                bad += 1
                continue
            sc = w
            if INT8:
                sc = sb[i, D // 4] * w
                bsum += sb[i, D // 4 + 1] * w
            for j in range(COLS):
                k = lane + j * TPB
                if FULL or k < D:
                    acc[j] += float32(data[i, k]) * sc
        for j in range(COLS):
            k = lane + j * TPB
            if FULL or k < D:
                v = acc[j] + bsum
                if mean and e > s:
                    v /= float32(e - s)
                out[b, k] = v
        if bad > 0 and lane == 0:
            cuda.atomic.add(err, 0, bad)

    return fwd


def kernel(dtype: str, D: int):
    tpb, cols = layout(D)
    key = (dtype, tpb, cols, tpb * cols == D)
    k = _KERNELS.get(key)
    if k is None:
        k = _KERNELS[key] = _make_fwd(tpb, cols, tpb * cols == D, dtype == "int8")
    return k


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
        from dlrmprof.kernels import numba_cuda
        return numba_cuda.embedding_bag(data, indices, offsets, mode, per_sample_weights)
    if dtype not in ("int8", "fp16"):
        raise UserError(f"backend 'numba-cuda' looks up fp32, fp16 and int8 tables, not {dtype} "
                        "(use backend 'numba' or 'torch')")
    if dtype == "int8" and dim % 4:
        raise UserError(f"backend 'numba-cuda': int8 tables need D % 4 == 0 (the row's scale "
                        f"and bias are read as float32 words), got D {dim}")
    sb = _f32_view(data) if dtype == "int8" else data
    a = _Args(weight=data, sb=sb, indices=indices, offsets=offsets,
              per_sample_weights=per_sample_weights)
    B = offsets.shape[0] - 1
    result, out = a.empty((B, dim))
    psw, has_w = a.psw()
    err = a.errors()
    blocks, threads = grid(B, dim)
    kernel(dtype, dim)[blocks, threads, a.stream](a.dev["weight"], a.dev["sb"], dim,
                                                  a.dev["indices"], a.dev["offsets"], psw,
                                                  has_w, mode == "mean", out, err)
    bad = a.count(err)
    if bad:
        raise IndexError(f"{bad} out-of-range indices or decreasing offsets")
    return result if a.torch else a.to_host(out)
