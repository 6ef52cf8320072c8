"""numba-cuda kernels for the embedding-bag ops: float32 tables, and the packed fp16 / int8
tables of `kernels.quant` (`numba_cuda_quant` is their entry point), one bag loop for all.

Takes torch CUDA tensors zero-copy through `__cuda_array_interface__` and runs on torch's
current stream; numpy inputs are copied to the device and the result copied back (handy for
tests, slow for real use).

Layout: a group of `tpb` threads per bag (`tpb` = D rounded up to a power of two, at most a
warp: D 16 puts two bags in a warp, D >= 32 one), thread `l` of the group owning columns
l, l + tpb, l + 2 tpb, ...: each warp-wide load reads contiguous row bytes.  Every thread keeps
its ceil(D / tpb) column sums in registers (the kernels are compiled per (tpb, columns, row
kind)), so a bag's indices are read once, and the bag is walked four lookups at a time: four
indices, then 4 x columns independent loads in flight before the adds (a gather is
latency-bound: HBM wants megabytes in flight, Little's law).  A packed row is widened as it is
read: fp16 halves to float32; int8 codes times the row's scale, and the bag's sum of
``w * bias`` added once after its lookups (the scale and bias are float32 words D/4 and D/4+1
of the row, read through a float32 view of the same bytes, so D % 4 == 0).

The launch (`Launcher`): numba's own kernel call types every argument and converts every
torch tensor (`__cuda_array_interface__`, a pointer-attribute query) on each call, about
0.5 ms of host time (upstream numba-cuda issues #98, #477).  Here (`numba_cuda_launch`) the
kernel is specialised once per argument signature and launched straight through cuda.core
with each device array's arguments packed once, the device views of torch tensors are
cached by (pointer, shape, strides, dtype) (a view holds only the pointer: the same key is
the same memory, whichever tensor owns it now), the stream wrapper is cached per torch
stream, and out-of-range lookups are counted in one persistent device counter per device
(no allocation per call).

The fused SGD update adds each lookup's scaled gradient with atomics, so rows repeated
inside a batch (or inside a bag) accumulate correctly; summation order is not fixed.

Out-of-range indices are counted on the device and raise `IndexError` after the kernel
(that read synchronises the stream); an out-of-range lookup reads row 0 with weight 0 rather
than leaving the table, and the SGD update skips it.  Outside a CUDA-graph capture the SGD
update checks first and writes nothing when any index is bad.  While torch's stream is being
captured (`dlrmprof.dlrm.graphs`) nothing may synchronise: the kernels only count, and
`check_deferred` raises for what they counted.
"""

from __future__ import annotations

import math

import numpy as np

if not hasattr(np, "row_stack"):
    # numba-cuda 0.30 registers an overload for np.row_stack when it builds its typing
    # registries (at the first kernel compile); numpy 2.5 removed the alias of np.vstack, so
    # every compile failed with "module 'numpy' has no attribute 'row_stack'" (seen on the
    # H200 image: numba-cuda 0.30.4, numpy 2.5.2).  Put the alias back for it.
    np.row_stack = np.vstack

from numba import config as _numba_config  # noqa: E402
from numba import cuda, float32  # noqa: E402

# the index check launches few blocks on purpose: not a performance problem to warn about
_numba_config.CUDA_LOW_OCCUPANCY_WARNINGS = 0

from dlrmprof.errors import UserError  # noqa: E402
from dlrmprof.kernels.numba_cuda_launch import launcher_for  # noqa: E402

WARP = 32
THREADS = 128        # threads per block: 128 / tpb bags
KINDS = {"fp32": 0, "fp16": 1, "int8": 2}


def layout(D: int) -> tuple[int, int]:
    """(threads per bag, columns per thread) for rows of D floats."""
    tpb = 1
    while tpb < D and tpb < WARP:
        tpb *= 2
    return tpb, -(-D // tpb)


def _make_fwd(TPB, COLS, FULL, KIND):
    """The pooled forward for rows of `KIND` (0 fp32, 1 fp16, 2 int8 row-wise); `sb` is the
    float32 view of an int8 table's bytes (the scale and bias words), unused otherwise."""
    GROUPS = THREADS // TPB
    INT8 = KIND == 2

    @cuda.jit(device=True, inline=True)
    def lookup(indices, psw, has_w, p, R, sb, D4):
        """(row, row weight, weight for the bias sum, bad) of lookup p."""
        i = indices[p]
        w = float32(1.0)
        if has_w:
            w = psw[p]
        bad = 0
        if i < 0 or i >= R:
            bad = 1
            i = 0
            w = float32(0.0)
        if INT8:
            return i, sb[i, D4] * w, w, bad
        return i, w, w, bad

    @cuda.jit
    def fwd(data, sb, D, indices, offsets, psw, has_w, mean, out, err):
        t = cuda.threadIdx.x
        b = cuda.blockIdx.x * GROUPS + t // TPB
        lane = t % TPB
        if b >= offsets.shape[0] - 1:
            return
        R = data.shape[0]
        D4 = D // 4
        s = offsets[b]
        e = offsets[b + 1]
        bad = 0
        if e < s:
            bad += 1
        acc = cuda.local.array(COLS, float32)
        for j in range(COLS):
            acc[j] = float32(0.0)
        bsum = float32(0.0)
        p = s
        while p + 4 <= e:
            i0, c0, v0, b0 = lookup(indices, psw, has_w, p, R, sb, D4)
            i1, c1, v1, b1 = lookup(indices, psw, has_w, p + 1, R, sb, D4)
            i2, c2, v2, b2 = lookup(indices, psw, has_w, p + 2, R, sb, D4)
            i3, c3, v3, b3 = lookup(indices, psw, has_w, p + 3, R, sb, D4)
            bad += b0 + b1 + b2 + b3
            if INT8:
                bsum += (sb[i0, D4 + 1] * v0 + sb[i1, D4 + 1] * v1
                         + sb[i2, D4 + 1] * v2 + sb[i3, D4 + 1] * v3)
            for j in range(COLS):
                k = lane + j * TPB
                if FULL or k < D:
                    acc[j] += (float32(data[i0, k]) * c0 + float32(data[i1, k]) * c1
                               + float32(data[i2, k]) * c2 + float32(data[i3, k]) * c3)
            p += 4
        while p < e:
            i0, c0, v0, b0 = lookup(indices, psw, has_w, p, R, sb, D4)
            bad += b0
            if INT8:
                bsum += sb[i0, D4 + 1] * v0
            for j in range(COLS):
                k = lane + j * TPB
                if FULL or k < D:
                    acc[j] += float32(data[i0, k]) * c0
            p += 1
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


def _make_sgd(TPB, COLS, FULL):
    GROUPS = THREADS // TPB

    @cuda.jit
    def sgd(weight, indices, offsets, grad, psw, has_w, mean, lr, err):
        t = cuda.threadIdx.x
        b = cuda.blockIdx.x * GROUPS + t // TPB
        lane = t % TPB
        if b >= offsets.shape[0] - 1:
            return
        R = weight.shape[0]
        D = weight.shape[1]
        s = offsets[b]
        e = offsets[b + 1]
        if e <= s:
            return
        scale = lr
        if mean:
            scale = lr / float32(e - s)
        g = cuda.local.array(COLS, float32)
        for j in range(COLS):
            k = lane + j * TPB
            g[j] = float32(0.0)
            if FULL or k < D:
                g[j] = grad[b, k] * scale
        bad = 0
        for p in range(s, e):
            idx = indices[p]
            if idx < 0 or idx >= R:
                bad += 1
                continue
            c = float32(1.0)
            if has_w:
                c = psw[p]
            for j in range(COLS):
                k = lane + j * TPB
                if FULL or k < D:
                    cuda.atomic.add(weight, (idx, k), -(g[j] * c))
        if bad > 0 and lane == 0:
            cuda.atomic.add(err, 0, bad)

    return sgd


_KERNELS: dict = {}


def kernel(op: str, D: int, kind: str = "fp32"):
    """The compiled kernel for `op` ('fwd' or 'sgd'), row width D and row kind ('fp32',
    'fp16', 'int8'; the SGD takes fp32 rows), built on first use."""
    tpb, cols = layout(D)
    key = (op, tpb, cols, tpb * cols == D, kind)
    k = _KERNELS.get(key)
    if k is None:
        if op == "fwd":
            k = _make_fwd(tpb, cols, tpb * cols == D, KINDS[kind])
        else:
            k = _make_sgd(tpb, cols, tpb * cols == D)
        _KERNELS[key] = k
    return k


def grid(B: int, D: int) -> tuple[int, int]:
    """(blocks, threads per block) for B bags of rows of D floats."""
    tpb, _ = layout(D)
    return max(1, math.ceil(B / (THREADS // tpb))), THREADS


@cuda.jit(cache=True)
def _check_kernel(indices, offsets, R, err):
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for p in range(start, indices.shape[0], stride):
        if indices[p] < 0 or indices[p] >= R:
            cuda.atomic.add(err, 0, 1)
    for b in range(start, offsets.shape[0] - 1, stride):
        if offsets[b + 1] < offsets[b]:
            cuda.atomic.add(err, 0, 1)


def _check_float32(weight):
    dt = str(weight.dtype)
    if not dt.endswith("float32"):
        raise UserError(f"backend 'numba-cuda' takes float32 tables, got {dt}; use 'torch'")


def _raise_bad(bad: int) -> None:
    if bad:
        raise IndexError(f"{bad} out-of-range indices or decreasing offsets")


def forward(kind: str, data, sb, D: int, indices, offsets, mode, per_sample_weights):
    """Pooled [B, D] float32 of rows of `kind` (see `kernel`); torch CUDA tensors in, a torch
    tensor out; numpy in, numpy out (copied through the device)."""
    L = launcher_for(data, indices, offsets, per_sample_weights)
    B = offsets.shape[0] - 1
    result, out = L.empty((B, D))
    blocks, threads = grid(B, D)
    args = L.args(data, sb, indices, offsets, per_sample_weights)
    L.launch(kernel("fwd", D, kind), blocks, threads,
             (args[0], args[1], D, args[2], args[3], args[4], args[5], mode == "mean", out,
              L.err))
    if not L.capturing():
        _raise_bad(L.bad())
    return L.result(result, out)


def embedding_bag(weight, indices, offsets, mode, per_sample_weights):
    _check_float32(weight)
    return forward("fp32", weight, weight, weight.shape[1], indices, offsets, mode,
                   per_sample_weights)


def embedding_bag_sgd(weight, indices, offsets, grad_output, lr, mode, per_sample_weights):
    _check_float32(weight)
    L = launcher_for(weight, indices, offsets, per_sample_weights, grad_output)
    B, D = offsets.shape[0] - 1, weight.shape[1]
    dw, _, di, do, psw, has_w = L.args(weight, None, indices, offsets, per_sample_weights)
    if not L.capturing():   # check first: a bad batch writes nothing
        blocks = max(1, min(256, math.ceil(max(indices.shape[0], B) / 256)))
        L.launch(_check_kernel, blocks, 256, (di, do, weight.shape[0], L.err))
        _raise_bad(L.bad())
    blocks, threads = grid(B, D)
    L.launch(kernel("sgd", D), blocks, threads,
             (dw, di, do, L.view(grad_output), psw, has_w, mode == "mean", np.float32(lr),
              L.err))
    L.writeback(weight, dw)


def check_deferred(device=None) -> None:
    """Raise IndexError for out-of-range lookups counted while a graph was captured or
    replayed (they are not checked per call there)."""
    from dlrmprof.kernels.numba_cuda_launch import deferred_bad
    _raise_bad(deferred_bad(device))
