"""numba-cuda kernels for the embedding-bag ops (float32 tables).

Takes torch CUDA tensors zero-copy through `__cuda_array_interface__` and runs on torch's
current stream; numpy inputs are copied to the device and the result copied back (handy for
tests, slow for real use).

Layout: a group of `tpb` threads per bag (`tpb` = D rounded up to a power of two, at most a
warp: D 16 puts two bags in a warp, D >= 32 one), thread `l` of the group owning columns
l, l + tpb, l + 2 tpb, ...: each warp-wide load reads contiguous row bytes.  Every thread keeps
its ceil(D / tpb) column sums in registers (the kernels are compiled per (tpb, columns)), so
a bag's indices are read once, and the bag is walked four lookups at a time: four indices,
then 4 x columns independent loads in flight before the adds (a gather is latency-bound:
HBM wants megabytes in flight, Little's law).

Per call, numba-cuda itself costs about 0.5 ms of host time on an H200's host (converting
each torch tensor, marshalling the launch in Python; upstream numba-cuda issues #98, #477),
against 66 us for the kernel on 65,536 one-lookup bags of D 256: batch the tables into one
call (`run --fused-tables`) where calls are small.

The fused SGD update adds each lookup's scaled gradient with atomics, so rows repeated
inside a batch (or inside a bag) accumulate correctly; summation order is not fixed.

Out-of-range indices are counted on the device and raise `IndexError` after the kernel
(that read synchronises the stream); an out-of-range lookup reads row 0 with weight 0 rather
than leaving the table.  The SGD update checks first and writes nothing when any index is
bad.
"""

from __future__ import annotations

import math
import sys

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

from dlrmprof.errors import UserError

WARP = 32
THREADS = 128        # threads per block: 128 / tpb bags


def layout(D: int) -> tuple[int, int]:
    """(threads per bag, columns per thread) for rows of D floats."""
    tpb = 1
    while tpb < D and tpb < WARP:
        tpb *= 2
    return tpb, -(-D // tpb)


def _make_fwd(TPB, COLS, FULL):
    GROUPS = THREADS // TPB

    @cuda.jit
    def fwd(weight, indices, offsets, psw, has_w, mean, out, err):
        t = cuda.threadIdx.x
        b = cuda.blockIdx.x * GROUPS + t // TPB
        lane = t % TPB
        if b >= offsets.shape[0] - 1:
            return
        R = weight.shape[0]
        D = weight.shape[1]
        s = offsets[b]
        e = offsets[b + 1]
        bad = 0
        if e < s:
            bad += 1
        acc = cuda.local.array(COLS, float32)
        for j in range(COLS):
            acc[j] = float32(0.0)
        p = s
        while p + 4 <= e:
            i0 = indices[p]
            i1 = indices[p + 1]
            i2 = indices[p + 2]
            i3 = indices[p + 3]
            w0 = float32(1.0)
            w1 = float32(1.0)
            w2 = float32(1.0)
            w3 = float32(1.0)
            if has_w:
                w0 = psw[p]
                w1 = psw[p + 1]
                w2 = psw[p + 2]
                w3 = psw[p + 3]
            if i0 < 0 or i0 >= R:
                bad += 1
                i0 = 0
                w0 = float32(0.0)
            if i1 < 0 or i1 >= R:
                bad += 1
                i1 = 0
                w1 = float32(0.0)
            if i2 < 0 or i2 >= R:
                bad += 1
                i2 = 0
                w2 = float32(0.0)
            if i3 < 0 or i3 >= R:
                bad += 1
                i3 = 0
                w3 = float32(0.0)
            for j in range(COLS):
                k = lane + j * TPB
                if FULL or k < D:
                    acc[j] += (weight[i0, k] * w0 + weight[i1, k] * w1
                               + weight[i2, k] * w2 + weight[i3, k] * w3)
            p += 4
        while p < e:
            i0 = indices[p]
            w0 = float32(1.0)
            if has_w:
                w0 = psw[p]
            if i0 < 0 or i0 >= R:
                bad += 1
                i0 = 0
                w0 = float32(0.0)
            for j in range(COLS):
                k = lane + j * TPB
                if FULL or k < D:
                    acc[j] += weight[i0, k] * w0
            p += 1
        for j in range(COLS):
            k = lane + j * TPB
            if FULL or k < D:
                v = acc[j]
                if mean and e > s:
                    v /= float32(e - s)
                out[b, k] = v
        if bad > 0 and lane == 0:
            cuda.atomic.add(err, 0, bad)

    return fwd


def _make_sgd(TPB, COLS, FULL):
    GROUPS = THREADS // TPB

    @cuda.jit
    def sgd(weight, indices, offsets, grad, psw, has_w, mean, lr):
        t = cuda.threadIdx.x
        b = cuda.blockIdx.x * GROUPS + t // TPB
        lane = t % TPB
        if b >= offsets.shape[0] - 1:
            return
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
        for p in range(s, e):
            idx = indices[p]
            c = float32(1.0)
            if has_w:
                c = psw[p]
            for j in range(COLS):
                k = lane + j * TPB
                if FULL or k < D:
                    cuda.atomic.add(weight, (idx, k), -(g[j] * c))

    return sgd


_KERNELS: dict = {}


def kernel(op: str, D: int):
    """The compiled kernel for `op` ('fwd' or 'sgd') and row width D, built on first use."""
    tpb, cols = layout(D)
    key = (op, tpb, cols, tpb * cols == D)
    k = _KERNELS.get(key)
    if k is None:
        make = _make_fwd if op == "fwd" else _make_sgd
        k = _KERNELS[key] = make(tpb, cols, tpb * cols == D)
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


def _is_torch(x):
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


class _Args:
    """Device views of the inputs, the stream to launch on, and how to hand results back."""

    def __init__(self, **arrays):
        self.torch = any(_is_torch(v) for v in arrays.values() if v is not None)
        if self.torch:
            import torch
            devices = {v.device for v in arrays.values() if v is not None}
            if len(devices) != 1 or next(iter(devices)).type != "cuda":
                raise UserError("backend 'numba-cuda' needs every tensor on one CUDA device, "
                                f"got {sorted(map(str, devices))}")
            self.device = next(iter(devices))
            self.stream = cuda.external_stream(torch.cuda.current_stream(self.device).cuda_stream)
            self.dev = {k: (None if v is None else cuda.as_cuda_array(v.detach()))
                        for k, v in arrays.items()}
        else:
            self.stream = cuda.stream()
            self.dev = {k: (None if v is None else cuda.to_device(np.ascontiguousarray(v),
                                                                   stream=self.stream))
                        for k, v in arrays.items()}
        self.arrays = arrays

    def empty(self, shape, dtype=np.float32):
        if self.torch:
            import torch
            t = torch.empty(shape, dtype=getattr(torch, np.dtype(dtype).name), device=self.device)
            return t, cuda.as_cuda_array(t)
        d = cuda.device_array(shape, dtype=dtype, stream=self.stream)
        return d, d

    def psw(self):
        w = self.dev["per_sample_weights"]
        if w is not None:
            return w, True
        if self.torch:  # a placeholder the kernel never reads: one per device, kept
            d = _PLACEHOLDER.get(self.device)
            if d is None:
                import torch
                t = torch.zeros(1, dtype=torch.float32, device=self.device)
                d = _PLACEHOLDER[self.device] = (t, cuda.as_cuda_array(t))
            return d[1], False
        return cuda.device_array(1, dtype=np.float32, stream=self.stream), False

    def errors(self):
        """A zeroed int64 counter the kernels add bad indices to.  With torch inputs it
        comes from torch's caching allocator rather than numba's (a cuMemAlloc per call, and
        frees that synchronise the device): on an H200 that took the backend call from 0.62x
        to 0.97x torch's forward speed, 1.80x to 2.25x its sparse SGD (geomean of 24 cells
        with B 65536, L >= 20, D >= 64)."""
        if self.torch:
            import torch
            self._err_t = torch.zeros(1, dtype=torch.int64, device=self.device)
            return cuda.as_cuda_array(self._err_t)
        return cuda.to_device(np.zeros(1, dtype=np.int64), stream=self.stream)

    def to_host(self, dev):
        """Device array -> numpy, complete (a copy on a stream is asynchronous)."""
        host = dev.copy_to_host(stream=self.stream)
        self.stream.synchronize()
        return host

    def count(self, err):
        if self.torch:
            return int(self._err_t.item())   # a copy on torch's stream, which the kernel used
        return int(self.to_host(err)[0])


_PLACEHOLDER: dict = {}


def _check_float32(weight):
    dt = str(weight.dtype)
    if not dt.endswith("float32"):
        raise UserError(f"backend 'numba-cuda' takes float32 tables, got {dt}; use 'torch'")


def embedding_bag(weight, indices, offsets, mode, per_sample_weights):
    _check_float32(weight)
    a = _Args(weight=weight, indices=indices, offsets=offsets,
              per_sample_weights=per_sample_weights)
    B, D = offsets.shape[0] - 1, weight.shape[1]
    result, out = a.empty((B, D))
    psw, has_w = a.psw()
    err = a.errors()
    blocks, threads = grid(B, D)
    kernel("fwd", D)[blocks, threads, a.stream](a.dev["weight"], a.dev["indices"],
                                                a.dev["offsets"], psw, has_w, mode == "mean",
                                                out, err)
    bad = a.count(err)
    if bad:
        raise IndexError(f"{bad} out-of-range indices or decreasing offsets")
    return result if a.torch else a.to_host(out)


def embedding_bag_sgd(weight, indices, offsets, grad_output, lr, mode, per_sample_weights):
    _check_float32(weight)
    a = _Args(weight=weight, indices=indices, offsets=offsets, grad_output=grad_output,
              per_sample_weights=per_sample_weights)
    B, D = offsets.shape[0] - 1, weight.shape[1]
    err = a.errors()
    blocks = max(1, min(256, math.ceil(max(indices.shape[0], B) / 256)))
    _check_kernel[blocks, 256, a.stream](a.dev["indices"], a.dev["offsets"], weight.shape[0], err)
    bad = a.count(err)
    if bad:
        raise IndexError(f"{bad} out-of-range indices or decreasing offsets")
    psw, has_w = a.psw()
    blocks, threads = grid(B, D)
    kernel("sgd", D)[blocks, threads, a.stream](a.dev["weight"], a.dev["indices"],
                                                a.dev["offsets"], a.dev["grad_output"], psw,
                                                has_w, mode == "mean", np.float32(lr))
    if not a.torch:
        weight[...] = a.to_host(a.dev["weight"])
