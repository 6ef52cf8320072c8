"""numba CPU dot interaction, forward and backward: [x, lower triangle of Z Z^T] with
Z = [dense; pooled] per sample, and its gradients.

Two forms: scalar kernels for any D (each pair's dot product alone, the backward accumulated
in memory), and vector kernels for D % 16 == 0 (every preset) that work as a small GEMM on
16-lane vectors (`_simd`), D a closure constant (one cached specialisation per D).  The
vector forward forms the Gram blocks G[t + 1, j0:j0+16] = Z[t + 1] . Z^T[:, j0:j0+16] for
four pooled rows t at a time and copies the lower triangle out; the backward forms the
symmetric pair-gradient matrix G and computes dZ = G Z four rows at a time.  Both are
register-blocked: four rows of Z share every vector load and eight running sums hide the
FMA latency, so the inner loops issue one vector load per four FMAs instead of one per FMA.
tests/test_kernels.py checks both forms against the float64 reference; the timings behind
the choice are in docs/performance.md ("Interaction").
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from dlrmprof.kernels import numba_util as nu
from dlrmprof.kernels._simd import vadd, vfmadd, vload, vstore, vzero
from dlrmprof.kernels.numba_util import FAST

# the sources these kernels compile in (see numba_util): update when they change
_DEPS = ("_simd.py",)
_DEPS_SHA256 = "fdf529105fd4963e"


@njit(parallel=True, **FAST)
def _interaction(dense, pooled, out, zero):
    B, T, D = pooled.shape
    for b in prange(B):
        for k in range(D):
            out[b, k] = dense[b, k]
        o = D
        for i in range(1, T + 1):
            for j in range(i):
                s = zero
                if j == 0:
                    for k in range(D):
                        s += pooled[b, i - 1, k] * dense[b, k]
                else:
                    for k in range(D):
                        s += pooled[b, i - 1, k] * pooled[b, j - 1, k]
                out[b, o] = s
                o += 1


@njit(parallel=True, **FAST)
def _interaction_bwd(dense, pooled, g, gd, gp):
    B, T, D = pooled.shape
    for b in prange(B):
        for k in range(D):
            gd[b, k] = g[b, k]
        for i in range(T):
            for k in range(D):
                gp[b, i, k] = 0.0
        o = D
        for i in range(1, T + 1):
            for j in range(i):
                c = g[b, o]
                o += 1
                if j == 0:
                    for k in range(D):
                        gp[b, i - 1, k] += c * dense[b, k]
                        gd[b, k] += c * pooled[b, i - 1, k]
                else:
                    for k in range(D):
                        gp[b, i - 1, k] += c * pooled[b, j - 1, k]
                        gp[b, j - 1, k] += c * pooled[b, i - 1, k]


_IL = 16   # lanes: one zmm of fp32


@njit(inline="always", **FAST)
def _fma_4x2(acc, v, w, m, r, c):
    """One step of the register-blocked kernels below: the eight running sums `acc` (rows r
    .. r+3 of the block, two each) plus v * m[r + i, c] and w * m[r + i, c + 1]."""
    a0, a1, a2, a3, a4, a5, a6, a7 = acc
    return (vfmadd(a0, v, m[r, c]), vfmadd(a1, w, m[r, c + 1]),
            vfmadd(a2, v, m[r + 1, c]), vfmadd(a3, w, m[r + 1, c + 1]),
            vfmadd(a4, v, m[r + 2, c]), vfmadd(a5, w, m[r + 2, c + 1]),
            vfmadd(a6, v, m[r + 3, c]), vfmadd(a7, w, m[r + 3, c + 1]))


@functools.lru_cache(maxsize=None)
def _interaction_vec_fwd(D):
    """The vector forward for dimension D (a multiple of 16, a closure constant)."""

    @njit(parallel=True, **FAST)
    def fwd(dense, pooled, out):
        B, T, _ = pooled.shape
        N = T + 1
        TP = (T + 3) // 4 * 4                  # pooled rows, padded to the block of four
        J = (N + _IL - 1) // _IL * _IL         # columns of Z^T, padded to 16 lanes
        nblk = (B + _IL - 1) // _IL
        for blk in prange(nblk):
            zp = np.zeros((TP, D), dtype=out.dtype)   # rows T.. stay zero
            zt = np.zeros((D, J), dtype=out.dtype)    # Z^T; columns N.. stay zero
            gm = np.empty((TP, J), dtype=out.dtype)   # gm[t, j] = <z_{t+1}, z_j>
            for b in range(blk * _IL, min(B, (blk + 1) * _IL)):
                pb = pooled[b]
                for k0 in range(0, D, _IL):
                    vstore(out, b, k0, vload(dense, b, k0, _IL))
                for k in range(D):
                    zt[k, 0] = dense[b, k]
                for t in range(T):
                    for k0 in range(0, D, _IL):
                        vstore(zp, t, k0, vload(pb, t, k0, _IL))
                    for k in range(D):
                        zt[k, t + 1] = pb[t, k]
                for t0 in range(0, T, 4):
                    # rows t0+1 .. t0+4 of Z need the pairs j < t0 + 4
                    for j0 in range(0, min(t0 + 4, N), _IL):
                        zero = vzero(zt, _IL)
                        acc = (zero, zero, zero, zero, zero, zero, zero, zero)
                        for k in range(0, D, 2):
                            acc = _fma_4x2(acc, vload(zt, k, j0, _IL), vload(zt, k + 1, j0, _IL),
                                           zp, t0, k)
                        a0, a1, a2, a3, a4, a5, a6, a7 = acc
                        vstore(gm, t0, j0, vadd(a0, a1))
                        vstore(gm, t0 + 1, j0, vadd(a2, a3))
                        vstore(gm, t0 + 2, j0, vadd(a4, a5))
                        vstore(gm, t0 + 3, j0, vadd(a6, a7))
                o = D
                for t in range(T):
                    for j in range(t + 1):
                        out[b, o + j] = gm[t, j]
                    o += t + 1

    return fwd


@functools.lru_cache(maxsize=None)
def _interaction_vec_bwd(D):
    """The vector backward for dimension D (a multiple of 16, a closure constant)."""

    @njit(parallel=True, **FAST)
    def bwd(dense, pooled, g, gd, gp):
        B, T, _ = pooled.shape
        N = T + 1
        NP = (N + 3) // 4 * 4
        nblk = (B + _IL - 1) // _IL
        for blk in prange(nblk):
            z = np.empty((N, D), dtype=gd.dtype)
            # G[i, j] = G[j, i] = d out / d <z_i, z_j>; the diagonal and rows N.. stay zero
            G = np.zeros((NP, N), dtype=gd.dtype)
            for b in range(blk * _IL, min(B, (blk + 1) * _IL)):
                pb = pooled[b]
                for k0 in range(0, D, _IL):
                    vstore(z, 0, k0, vload(dense, b, k0, _IL))
                for t in range(T):
                    for k0 in range(0, D, _IL):
                        vstore(z, t + 1, k0, vload(pb, t, k0, _IL))
                o = D
                for i in range(1, N):
                    for j in range(i):
                        c = g[b, o + j]
                        G[i, j] = c
                        G[j, i] = c
                    o += i
                gpb = gp[b]
                for i0 in range(0, N, 4):
                    for k0 in range(0, D, _IL):
                        zero = vzero(z, _IL)
                        # the dense part passes straight through
                        first = vload(g, b, k0, _IL) if i0 == 0 else zero
                        acc = (first, zero, zero, zero, zero, zero, zero, zero)
                        j = 0
                        while j + 2 <= N:
                            acc = _fma_4x2(acc, vload(z, j, k0, _IL), vload(z, j + 1, k0, _IL),
                                           G, i0, j)
                            j += 2
                        a0, a1, a2, a3, a4, a5, a6, a7 = acc
                        if j < N:   # N odd: the last column
                            v = vload(z, j, k0, _IL)
                            a0 = vfmadd(a0, v, G[i0, j])
                            a2 = vfmadd(a2, v, G[i0 + 1, j])
                            a4 = vfmadd(a4, v, G[i0 + 2, j])
                            a6 = vfmadd(a6, v, G[i0 + 3, j])
                        if i0 == 0:
                            vstore(gd, b, k0, vadd(a0, a1))
                        else:
                            vstore(gpb, i0 - 1, k0, vadd(a0, a1))
                        if i0 + 1 < N:
                            vstore(gpb, i0, k0, vadd(a2, a3))
                        if i0 + 2 < N:
                            vstore(gpb, i0 + 1, k0, vadd(a4, a5))
                        if i0 + 3 < N:
                            vstore(gpb, i0 + 2, k0, vadd(a6, a7))

    return bwd


# ------------------------------------------------------------------------------ entry points

def _interaction_vectorised(dense, pooled):
    return (pooled.shape[2] % _IL == 0 and dense.dtype == pooled.dtype
            and dense.flags.c_contiguous and pooled.flags.c_contiguous)


def interaction(dense, pooled):
    B, T, D = pooled.shape
    out = nu.alloc((B, D + (T + 1) * T // 2), dense.dtype)
    if _interaction_vectorised(dense, pooled):
        _interaction_vec_fwd(D)(dense, pooled, out)
    else:
        _interaction(dense, pooled, out, dense.dtype.type(0))
    return out


def interaction_backward(dense, pooled, grad_out):
    gd = nu.alloc(dense.shape, dense.dtype)
    gp = nu.alloc(pooled.shape, pooled.dtype)
    g = np.ascontiguousarray(grad_out, dtype=dense.dtype)
    if _interaction_vectorised(dense, pooled):
        _interaction_vec_bwd(dense.shape[1])(dense, pooled, g, gd, gp)
    else:
        _interaction_bwd(dense, pooled, g, gd, gp)
    return gd, gp


