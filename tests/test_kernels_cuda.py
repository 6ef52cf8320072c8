"""GPU backends: numba-cuda and torch on CUDA tensors.

Real-GPU tests are marked `cuda` (skipped without a GPU).  The numba-cuda kernel logic is
also run under numba's CUDA simulator in a child process (NUMBA_ENABLE_CUDASIM=1 must be set
before numba is imported, and must not leak into this process).
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dlrmprof import kernels
from dlrmprof.kernels import reference

SIMULATED = textwrap.dedent("""
    import numpy as np
    from dlrmprof import kernels
    from dlrmprof.kernels import reference
    assert "numba-cuda" in kernels.backends("embedding_bag")
    rng = np.random.default_rng(7)
    checked = 0
    # D 1 and 3: many bags per warp; 16: two; 40 and 70: a warp with 2 and 3 columns a
    # thread, the last partly masked
    for D, idx_dtype in ((1, np.int64), (3, np.int32), (16, np.int64), (40, np.int64),
                         (70, np.int32)):
        R = 9
        w = rng.standard_normal((R, D)).astype(np.float32)
        # bags: [r, r, x], [], [y], [r, z], [], and 9 lookups (four at a time, then one)
        # (row r repeats inside and across bags)
        r = int(rng.integers(R))
        idx = np.array([r, r, rng.integers(R), rng.integers(R), r, rng.integers(R)]
                       + [r] + list(rng.integers(R, size=8)), idx_dtype)
        off = np.array([0, 3, 3, 4, 6, 6, 15], idx_dtype)
        psw = rng.standard_normal(len(idx)).astype(np.float32)
        g = rng.standard_normal((6, D)).astype(np.float32)
        for mode in ("sum", "mean"):
            for p in (None, psw):
                p64 = None if p is None else p.astype(np.float64)
                got = kernels.embedding_bag(w, idx, off, mode=mode, per_sample_weights=p,
                                            backend="numba-cuda")
                want = reference.embedding_bag(w.astype(np.float64), idx, off, mode, p64)
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
                assert np.all(got[[1, 4]] == 0)
                upd = w.copy()
                kernels.embedding_bag_sgd(upd, idx, off, g, 0.3, mode=mode,
                                          per_sample_weights=p, backend="numba-cuda")
                want_w = w.astype(np.float64)
                reference.embedding_bag_sgd(want_w, idx, off, g, 0.3, mode, p64)
                np.testing.assert_allclose(upd, want_w, rtol=1e-5, atol=1e-5)
                checked += 1
    bad = np.array([0, 1, 9, 2, 3, 0, -1], np.int64)   # bad in the four-at-a-time walk, then the tail
    for fn in (lambda w: kernels.embedding_bag(w, bad, np.array([0, 7]), backend="numba-cuda"),
               lambda w: kernels.embedding_bag_sgd(w, bad, np.array([0, 7]),
                                                   np.ones((1, 2), np.float32), 1.0,
                                                   backend="numba-cuda")):
        w = np.ones((9, 2), np.float32)
        try:
            fn(w)
        except IndexError:
            pass
        else:
            raise AssertionError("out-of-range index not reported")
        assert np.all(w == 1)
    print("checked", checked)
""")


def test_numba_cuda_kernels_under_the_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run([sys.executable, "-c", SIMULATED], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "checked 20" in done.stdout


def _bags(rng, R, B, max_len):
    lengths = rng.integers(0, max_len + 1, size=B)
    lengths[::7] = 0
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    indices = rng.integers(0, R, size=int(offsets[-1]))
    indices[: min(5, len(indices))] = indices[0] if len(indices) else 0
    return indices, offsets


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["numba-cuda", "torch"])
@pytest.mark.parametrize("D", [1, 17, 64, 130])
@pytest.mark.parametrize("mode,weighted", [("sum", False), ("mean", False), ("sum", True),
                                           ("mean", True)])
@pytest.mark.parametrize("idx_dtype", ["int32", "int64"])
def test_cuda_embedding_bag_and_sgd_match_reference(backend, D, mode, weighted, idx_dtype):
    import torch
    rng = np.random.default_rng(D * 31 + len(mode) + weighted)
    R, B = 3000, 257
    indices, offsets = _bags(rng, R, B, 12)
    weight = rng.standard_normal((R, D)).astype(np.float32)
    psw = rng.standard_normal(len(indices)).astype(np.float32) if weighted else None
    dev = torch.device("cuda")
    tdt = getattr(torch, idx_dtype)
    t = dict(weight=torch.from_numpy(weight).to(dev),
             indices=torch.from_numpy(indices).to(dev, tdt),
             offsets=torch.from_numpy(offsets).to(dev, tdt),
             per_sample_weights=None if psw is None else torch.from_numpy(psw).to(dev))
    got = kernels.embedding_bag(t["weight"], t["indices"], t["offsets"], mode=mode,
                                per_sample_weights=t["per_sample_weights"], backend=backend)
    assert isinstance(got, torch.Tensor) and got.device.type == "cuda"
    p64 = None if psw is None else psw.astype(np.float64)
    want = reference.embedding_bag(weight.astype(np.float64), indices, offsets, mode, p64)
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-4, atol=1e-4)

    grad = rng.standard_normal((B, D)).astype(np.float32)
    kernels.embedding_bag_sgd(t["weight"], t["indices"], t["offsets"],
                              torch.from_numpy(grad).to(dev), 0.1, mode=mode,
                              per_sample_weights=t["per_sample_weights"], backend=backend)
    want_w = weight.astype(np.float64)
    reference.embedding_bag_sgd(want_w, indices, offsets, grad, 0.1, mode, p64)
    np.testing.assert_allclose(t["weight"].cpu().numpy(), want_w, rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
def test_cuda_numba_backend_refuses_gpu_tensors():
    import torch
    from dlrmprof.errors import UserError
    w = torch.zeros((4, 2), device="cuda")
    with pytest.raises(UserError, match="runs on the CPU"):
        kernels.embedding_bag(w, torch.tensor([1], device="cuda"),
                              torch.tensor([0, 1], device="cuda"), backend="numba")


@pytest.mark.cuda
@pytest.mark.parametrize("B,T,D", [(128, 26, 16), (7, 3, 5)])
def test_cuda_torch_interaction_and_linear(B, T, D):
    import torch
    rng = np.random.default_rng(B)
    dense = rng.standard_normal((B, D)).astype(np.float32)
    pooled = rng.standard_normal((B, T, D)).astype(np.float32)
    got = kernels.interaction(torch.from_numpy(dense).cuda(), torch.from_numpy(pooled).cuda(),
                              backend="torch")
    want = reference.interaction(dense.astype(np.float64), pooled.astype(np.float64))
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-3, atol=1e-3)
    w = rng.standard_normal((9, D)).astype(np.float32)
    y = kernels.linear(torch.from_numpy(dense).cuda(), torch.from_numpy(w).cuda(), None,
                       backend="torch")
    np.testing.assert_allclose(y.cpu().numpy(), dense.astype(np.float64) @ w.T.astype(np.float64),
                               rtol=1e-2, atol=1e-2)   # TF32 may be on
