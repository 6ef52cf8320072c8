"""numba CPU kernels of the dense side: the BCE loss and its gradient in one pass, the
elementwise steps of the MLP backward (ReLU mask, bias SGD), and a register-tiled GEMM
behind the `linear` / `linear_backward` ops (the SIMD study's GEMM: its vector width follows
the numba target).

The elementwise steps run as one call each where torch would issue threshold_backward (a
new tensor) and sum + add_ (a reduction set-up each): at batch 128 the per-op overhead and
the writes into fresh buffers are most of their cost (docs/performance.md).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dlrmprof.kernels import numba_util as nu
from dlrmprof.kernels._simd import vfma, vload, vstore, vzero
from dlrmprof.kernels.numba_util import FAST, OPTS

# the sources these kernels compile in (see numba_util): update when they change
_DEPS = ("_simd.py",)
_DEPS_SHA256 = "fdf529105fd4963e"


@njit(**OPTS)
def bce_with_logits_grad(z, y, grad):
    """Mean binary cross-entropy of logits `z` against labels `y` (what torch's
    BCEWithLogitsLoss gives), and its gradient w.r.t. `z` written into `grad`:
    (sigmoid(z) - y) / n.  One pass, float64 sums, stable for any |z|:
    loss_i = max(z, 0) - z y + log(1 + exp(-|z|))."""
    n = z.shape[0]
    total = 0.0
    inv = 1.0 / n
    for i in range(n):
        zi = np.float64(z[i])
        yi = np.float64(y[i])
        e = np.exp(-abs(zi))
        total += max(zi, 0.0) - zi * yi + np.log1p(e)
        sig = 1.0 / (1.0 + e) if zi >= 0.0 else e / (1.0 + e)
        grad[i] = (sig - yi) * inv
    return total * inv


@njit(**OPTS)
def relu_grad_(g, y):
    """g[i, j] = 0 where y[i, j] <= 0, in place: ReLU's backward, torch's
    threshold_backward(g, y, 0) (a NaN in y passes g through, as there)."""
    M, N = g.shape
    for i in range(M):
        for j in range(N):
            g[i, j] = 0.0 if y[i, j] <= 0 else g[i, j]


@njit(**OPTS)
def bias_sgd_(b, g, lr):
    """b -= lr * (column sums of g): the bias's SGD step from dY [M, N] (float64 sums)."""
    M, N = g.shape
    acc = np.zeros(N, np.float64)
    for i in range(M):
        for j in range(N):
            acc[j] += g[i, j]
    for j in range(N):
        b[j] -= lr * acc[j]


_GEMM_MR = 4     # rows of the output per register tile
_GEMM_NR = 32    # columns per register tile: a <32 x float> per row (2 zmm, 4 ymm, 8 xmm)


@njit(parallel=True, **FAST)
def _gemm(A, Bm, out):
    """out = A @ Bm (C-contiguous).  Register-tiled outer products: a 4 x 32 tile of `out`
    lives in 4 vector values; each k broadcasts A[m, k] and fuses a multiply-add with one
    row of Bm, so the SIMD width of the generated code follows the target (the point of the
    SIMD study).  Edges (M % 4, N % 32) take a scalar loop."""
    M, K = A.shape
    N = Bm.shape[1]
    nfull = N // _GEMM_NR
    nmb = (M + _GEMM_MR - 1) // _GEMM_MR
    for mb in prange(nmb):
        m0 = mb * _GEMM_MR
        if m0 + _GEMM_MR <= M:
            for nb in range(nfull):
                n0 = nb * _GEMM_NR
                c0 = vzero(out, _GEMM_NR)
                c1 = vzero(out, _GEMM_NR)
                c2 = vzero(out, _GEMM_NR)
                c3 = vzero(out, _GEMM_NR)
                for k in range(K):
                    b = vload(Bm, k, n0, _GEMM_NR)
                    c0 = vfma(c0, b, A[m0, k])
                    c1 = vfma(c1, b, A[m0 + 1, k])
                    c2 = vfma(c2, b, A[m0 + 2, k])
                    c3 = vfma(c3, b, A[m0 + 3, k])
                vstore(out, m0, n0, c0)
                vstore(out, m0 + 1, n0, c1)
                vstore(out, m0 + 2, n0, c2)
                vstore(out, m0 + 3, n0, c3)
            n_rest = nfull * _GEMM_NR
        else:
            n_rest = 0
        for m in range(m0, min(m0 + _GEMM_MR, M)):
            for n in range(n_rest, N):
                out[m, n] = 0.0
            for k in range(K):
                a = A[m, k]
                for n in range(n_rest, N):
                    out[m, n] += a * Bm[k, n]


@njit(**FAST)
def _add_bias(y, bias):
    M, N = y.shape
    for m in range(M):
        for n in range(N):
            y[m, n] += bias[n]


# ------------------------------------------------------------------------------ entry points

def linear(x, weight, bias):
    out = nu.alloc((x.shape[0], weight.shape[0]), x.dtype)
    _gemm(x, np.ascontiguousarray(weight.T), out)
    if bias is not None:
        _add_bias(out, bias)
    return out


def linear_backward(x, weight, grad_out):
    g = np.ascontiguousarray(grad_out)
    grad_x = nu.alloc(x.shape, x.dtype)
    _gemm(g, weight, grad_x)
    grad_w = nu.alloc(weight.shape, weight.dtype)
    _gemm(np.ascontiguousarray(g.T), x, grad_w)
    return grad_x, grad_w, g.sum(axis=0, dtype=np.float64).astype(weight.dtype)


