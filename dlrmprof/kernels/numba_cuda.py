"""numba-cuda kernels for the embedding-bag ops (float32 tables).

Takes torch CUDA tensors zero-copy through `__cuda_array_interface__` and runs on torch's
current stream; numpy inputs are copied to the device and the result copied back (handy for
tests, slow for real use).

Layout: one warp per bag, lanes stride over the D columns (blockDim = (32, BAGS_PER_BLOCK)).
The fused SGD update adds each lookup's scaled gradient with atomics, so rows repeated
inside a batch (or inside a bag) accumulate correctly; summation order is not fixed.

Out-of-range indices are counted on the device and raise `IndexError` after the kernel
(that read synchronises the stream); the SGD update checks first and writes nothing when
any index is bad.
"""

from __future__ import annotations

import math
import sys

import numpy as np
from numba import cuda, float32

from dlrmprof.errors import UserError

WARP = 32
BAGS_PER_BLOCK = 4


@cuda.jit(cache=True)
def _eb_fwd_kernel(weight, indices, offsets, psw, has_w, mean, out, err):
    lane = cuda.threadIdx.x
    b = cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y
    if b >= offsets.shape[0] - 1:
        return
    R = weight.shape[0]
    D = weight.shape[1]
    s = offsets[b]
    e = offsets[b + 1]
    if e < s and lane == 0:
        cuda.atomic.add(err, 0, 1)
    for k in range(lane, D, cuda.blockDim.x):
        acc = float32(0.0)
        for p in range(s, e):
            idx = indices[p]
            if idx < 0 or idx >= R:
                if k == lane:
                    cuda.atomic.add(err, 0, 1)
                continue
            v = weight[idx, k]
            if has_w:
                v *= psw[p]
            acc += v
        if mean and e > s:
            acc /= float32(e - s)
        out[b, k] = acc


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


@cuda.jit(cache=True)
def _eb_sgd_kernel(weight, indices, offsets, grad, psw, has_w, mean, lr):
    lane = cuda.threadIdx.x
    b = cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y
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
    for k in range(lane, D, cuda.blockDim.x):
        g = grad[b, k] * scale
        for p in range(s, e):
            c = g
            if has_w:
                c = g * psw[p]
            cuda.atomic.add(weight, (indices[p], k), -c)


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
        if w is None:
            return cuda.device_array(1, dtype=np.float32, stream=self.stream), False
        return w, True

    def errors(self):
        err = cuda.to_device(np.zeros(1, dtype=np.int64), stream=self.stream)
        return err

    def to_host(self, dev):
        """Device array -> numpy, complete (a copy on a stream is asynchronous)."""
        host = dev.copy_to_host(stream=self.stream)
        self.stream.synchronize()
        return host

    def count(self, err):
        return int(self.to_host(err)[0])


def _grid(B):
    return (max(1, math.ceil(B / BAGS_PER_BLOCK)),), (WARP, BAGS_PER_BLOCK)


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
    blocks, threads = _grid(B)
    _eb_fwd_kernel[blocks, threads, a.stream](a.dev["weight"], a.dev["indices"], a.dev["offsets"],
                                              psw, has_w, mode == "mean", out, err)
    bad = a.count(err)
    if bad:
        raise IndexError(f"{bad} out-of-range indices or decreasing offsets")
    return result if a.torch else a.to_host(out)


def embedding_bag_sgd(weight, indices, offsets, grad_output, lr, mode, per_sample_weights):
    _check_float32(weight)
    a = _Args(weight=weight, indices=indices, offsets=offsets, grad_output=grad_output,
              per_sample_weights=per_sample_weights)
    B = offsets.shape[0] - 1
    err = a.errors()
    blocks = max(1, min(256, math.ceil(max(indices.shape[0], B) / 256)))
    _check_kernel[blocks, 256, a.stream](a.dev["indices"], a.dev["offsets"], weight.shape[0], err)
    bad = a.count(err)
    if bad:
        raise IndexError(f"{bad} out-of-range indices or decreasing offsets")
    psw, has_w = a.psw()
    blocks, threads = _grid(B)
    _eb_sgd_kernel[blocks, threads, a.stream](a.dev["weight"], a.dev["indices"], a.dev["offsets"],
                                              a.dev["grad_output"], psw, has_w, mode == "mean",
                                              np.float32(lr))
    if not a.torch:
        weight[...] = a.to_host(a.dev["weight"])
