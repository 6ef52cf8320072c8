"""Every kernel backend against the float64 numpy reference, on fresh random inputs."""

import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from dlrmprof import kernels
from dlrmprof.errors import UserError
from dlrmprof.kernels import numba_cpu, numba_embedding, numba_embedding_sgd, numba_util, reference


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """numba outputs start as NaN: a kernel that forgets to write an element fails."""
    monkeypatch.setattr(numba_util, "alloc", lambda shape, dtype: np.full(shape, np.nan, dtype))


@pytest.fixture
def rng(request):
    # fresh inputs per test, reproducible from the test name when a failure needs replaying
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def _bags(rng, R, B, max_len, idx_dtype=np.int64):
    """Random jagged bags with empty bags at the start, middle and end, and a bag that
    repeats one row."""
    lengths = rng.integers(0, max_len + 1, size=B)
    lengths[0] = 0
    lengths[B // 2] = 0
    lengths[-1] = 0
    lengths[1] = max(lengths[1], 3)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(idx_dtype)
    indices = rng.integers(0, R, size=int(offsets[-1])).astype(idx_dtype)
    s = int(offsets[1])
    indices[s:s + 3] = indices[s]          # repeated row inside one bag
    indices[-1] = indices[s]               # ... and across bags
    return indices, offsets


def _cpu_backends(op):
    return [b for b in kernels.backends(op) if b != "numba-cuda"]


def _tol(x):
    return dict(rtol=2e-5, atol=2e-5 * max(1.0, float(np.abs(x).max(initial=0.0))))


# ---------------------------------------------------------------------------- embedding bag

# (R, B, max_len, D, index dtype).  D % 4 == 0 takes numba's D-specialised kernels, others
# the generic loop; the big cases take the parallel path.  Each specialised (D, dtype) pair
# costs a compile, so the list covers each path once per dtype rather than every product.
CASES = [
    (40, 33, 6, 1, np.int32), (40, 33, 6, 3, np.int64), (200, 65, 9, 17, np.int64),
    (1000, 64, 20, 64, np.int64), (5000, 600, 25, 16, np.int32),
    (5000, 600, 25, 17, np.int32),
    (20000, 64, 6, 17, np.int64),   # a table beyond L2 (1.4 MB): the prefetching paths
]


@pytest.mark.parametrize("backend", _cpu_backends("embedding_bag"))
@pytest.mark.parametrize("R,B,max_len,D,idx_dtype", CASES)
@pytest.mark.parametrize("mode", ["sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
def test_embedding_bag_matches_reference(rng, backend, R, B, max_len, D, idx_dtype, mode,
                                         weighted):
    weight = rng.standard_normal((R, D)).astype(np.float32)
    indices, offsets = _bags(rng, R, B, max_len, idx_dtype)
    psw = rng.standard_normal(len(indices)).astype(np.float32) if weighted else None
    want = reference.embedding_bag(weight.astype(np.float64), indices, offsets, mode,
                                   None if psw is None else psw.astype(np.float64))
    got = kernels.embedding_bag(weight, indices, offsets, mode=mode, per_sample_weights=psw,
                                backend=backend)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (B, D)
    np.testing.assert_allclose(got, want, **_tol(want))
    empty = np.flatnonzero(np.diff(offsets) == 0)
    assert len(empty) >= 3 and np.all(got[empty] == 0)


@pytest.mark.parametrize("backend", _cpu_backends("embedding_bag"))
def test_embedding_bag_torch_in_torch_out(rng, backend):
    weight = torch.from_numpy(rng.standard_normal((50, 8)).astype(np.float32))
    indices, offsets = _bags(rng, 50, 10, 5)
    got = kernels.embedding_bag(weight, torch.from_numpy(indices), torch.from_numpy(offsets),
                                backend=backend)
    assert isinstance(got, torch.Tensor) and got.shape == (10, 8)
    want = reference.embedding_bag(weight.numpy().astype(np.float64), indices, offsets, "sum",
                                   None)
    np.testing.assert_allclose(got.numpy(), want, **_tol(want))


def test_resolve_gives_the_backend_function(rng):
    weight = rng.standard_normal((20, 8)).astype(np.float32)
    indices, offsets = _bags(rng, 20, 6, 4)
    fn = kernels.resolve("embedding_bag", "numba")
    np.testing.assert_array_equal(fn(weight, indices, offsets, "sum", None),
                                  kernels.embedding_bag(weight, indices, offsets))
    with pytest.raises(UserError, match="unknown kernel backend"):
        kernels.resolve("embedding_bag", "cpu")


def test_embedding_bag_numba_zero_copy_of_torch_weight(rng):
    weight = torch.from_numpy(rng.standard_normal((30, 4)).astype(np.float32))
    indices, offsets = np.array([5, 5]), np.array([0, 2])
    weight[5] = 1.5   # the numba view sees writes made through torch
    got = kernels.embedding_bag(weight, indices, offsets, backend="numba")
    np.testing.assert_array_equal(got.numpy(), np.full((1, 4), 3.0, np.float32))


# ------------------------------------------------------------------------------ fused SGD

@pytest.mark.parametrize("backend", _cpu_backends("embedding_bag_sgd"))
@pytest.mark.parametrize("R,B,max_len,D,idx_dtype", CASES)
@pytest.mark.parametrize("mode,weighted", [("sum", False), ("mean", False), ("sum", True),
                                           ("mean", True)])
def test_embedding_bag_sgd_matches_reference(rng, backend, R, B, max_len, D, idx_dtype, mode,
                                             weighted):
    weight = rng.standard_normal((R, D)).astype(np.float32)
    indices, offsets = _bags(rng, R, B, max_len, idx_dtype)
    psw = rng.standard_normal(len(indices)).astype(np.float32) if weighted else None
    grad = rng.standard_normal((B, D)).astype(np.float32)
    lr = 0.37
    want = weight.astype(np.float64)
    reference.embedding_bag_sgd(want, indices, offsets, grad, lr, mode,
                                None if psw is None else psw.astype(np.float64))
    got = weight.copy()
    assert kernels.embedding_bag_sgd(got, indices, offsets, grad, lr, mode=mode,
                                     per_sample_weights=psw, backend=backend) is None
    np.testing.assert_allclose(got, want, **_tol(want))
    untouched = np.setdiff1d(np.arange(R), indices)
    np.testing.assert_array_equal(got[untouched], weight[untouched])
    assert np.bincount(indices).max() >= 4   # the repeated-row case really was exercised


@pytest.mark.parametrize("threads", [1, 2])
def test_numba_sgd_on_a_strided_weight_updates_it_in_place(rng, threads):
    """A non-contiguous table (every other column of a wider one) is updated in place, on
    the serial and on the parallel kernel, the columns in between untouched."""
    import numba
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip("needs 2 numba threads")
    wide = rng.standard_normal((3000, 64)).astype(np.float32)
    before = wide.copy()
    weight = wide[:, ::2]
    indices, offsets = _bags(rng, 3000, 600, 25)
    grad = rng.standard_normal((600, 32)).astype(np.float32)
    want = weight.astype(np.float64)
    reference.embedding_bag_sgd(want, indices, offsets, grad, 0.2, "sum", None)
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        kernels.embedding_bag_sgd(weight, indices, offsets, grad, 0.2, backend="numba")
    finally:
        numba.set_num_threads(old)
    np.testing.assert_allclose(wide[:, ::2], want, **_tol(want))
    np.testing.assert_array_equal(wide[:, 1::2], before[:, 1::2])


@pytest.mark.parametrize("backend", _cpu_backends("embedding_bag_sgd"))
def test_embedding_bag_sgd_updates_torch_weight_in_place(rng, backend):
    weight = torch.zeros((10, 3))
    indices, offsets = torch.tensor([2, 2, 7]), torch.tensor([0, 2, 3])
    grad = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]])
    kernels.embedding_bag_sgd(weight, indices, offsets, grad, 0.5, backend=backend)
    want = torch.zeros((10, 3))
    want[2] = -0.5 * 2 * grad[0]
    want[7] = -0.5 * grad[1]
    torch.testing.assert_close(weight, want)


# ------------------------------------------------------- all tables in one call (numba, TSC)

def _tables(rng, D, specs, B):
    """Tables in one buffer: specs = [(rows, max_len, mode)]; bags per table (B each)."""
    rows = np.array([r for r, _, _ in specs], np.int64)
    base = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
    weight = rng.standard_normal((int(rows.sum()), D)).astype(np.float32)
    bags = [_bags(rng, r, B, m) for r, m, _ in specs]
    means = np.array([mode == "mean" for _, _, mode in specs])
    return weight, rows, base, means, bags


_TABLE_SPECS = [(7, 1, "sum"), (3000, 4, "mean"), (20000, 2, "sum"), (50, 6, "sum")]


@pytest.mark.skipif(numba_cpu.tsc_period_s() is None, reason="no invariant TSC on this host")
@pytest.mark.parametrize("D", [16, 20, 64])
def test_all_tables_forward_matches_each_table(rng, D):
    B = 33
    weight, rows, base, means, bags = _tables(rng, D, _TABLE_SPECS, B)
    idx = np.concatenate([i for i, _ in bags])
    off = np.concatenate([o for _, o in bags])
    out = np.full((B, len(rows) * D), np.nan, np.float32)
    cycles = np.full(len(rows), -1, np.int64)
    bad = numba_embedding._eb_tables_kernel(D)(weight, rows, base, means, idx, off, B, out, cycles,
                                         numba_cpu.L2_BYTES, numba_cpu.L3_BYTES)
    assert bad == 0 and (cycles > 0).all()
    for t, (i, o) in enumerate(bags):
        want = reference.embedding_bag(weight[base[t]:base[t] + rows[t]].astype(np.float64), i,
                                       o, "mean" if means[t] else "sum", None)
        np.testing.assert_allclose(out[:, t * D:(t + 1) * D], want, **_tol(want))
    # an index past its own table (though inside the buffer) is refused
    idx[-1] = rows[-1]
    assert numba_embedding._eb_tables_kernel(D)(weight, rows, base, means, idx, off, B, out, cycles,
                                          numba_cpu.L2_BYTES, numba_cpu.L3_BYTES) == 1


@pytest.mark.skipif(numba_cpu.tsc_period_s() is None, reason="no invariant TSC on this host")
def test_all_tables_sgd_matches_each_table_and_is_all_or_nothing(rng):
    D, B, lr = 16, 40, np.float32(0.3)
    weight, rows, base, means, bags = _tables(rng, D, _TABLE_SPECS, B)
    idx = np.concatenate([i for i, _ in bags])
    off = np.concatenate([o for _, o in bags])
    grad = rng.standard_normal((B, len(rows) * D)).astype(np.float32)
    want = weight.astype(np.float64)
    for t, (i, o) in enumerate(bags):
        view = want[base[t]:base[t] + rows[t]]
        reference.embedding_bag_sgd(view, i, o, grad[:, t * D:(t + 1) * D], float(lr),
                                    "mean" if means[t] else "sum", None)
    got = weight.copy()
    cycles = np.zeros(len(rows), np.int64)
    assert numba_embedding_sgd.eb_tables_sgd(got, rows, base, means, idx, off, B, grad, lr, cycles,
                                   16, 1024) == 0
    np.testing.assert_allclose(got, want, **_tol(want))
    assert (cycles > 0).all()
    bad_idx = idx.copy()
    bad_idx[-1] = rows[-1]             # the last table's last lookup is out of its range
    before = got.copy()
    assert numba_embedding_sgd.eb_tables_sgd(got, rows, base, means, bad_idx, off, B, grad, lr, cycles,
                                   16, 1024) == 1
    np.testing.assert_array_equal(got, before)   # nothing written, not even the first table


def test_tsc_period_is_plausible_or_absent():
    p = numba_cpu.tsc_period_s()
    assert p is None or 1e-10 < p < 5e-9


# ----------------------------------------------------------------------------- interaction

@pytest.mark.parametrize("backend", _cpu_backends("interaction"))
# D % 16 == 0 takes the vector kernels: 1, 2 and 3 blocks of 16 pairs per row, N = T + 1 odd
# and even, a block count over the batch that is not whole
@pytest.mark.parametrize("B,T,D", [(1, 1, 1), (7, 3, 3), (33, 26, 16), (128, 8, 17),
                                   (2, 1, 16), (17, 16, 64), (5, 40, 32)])
def test_interaction_matches_reference(rng, backend, B, T, D):
    dense = rng.standard_normal((B, D)).astype(np.float32)
    pooled = rng.standard_normal((B, T, D)).astype(np.float32)
    want = reference.interaction(dense.astype(np.float64), pooled.astype(np.float64))
    got = kernels.interaction(dense, pooled, backend=backend)
    assert got.shape == (B, D + (T + 1) * T // 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, **_tol(want))
    g = rng.standard_normal(got.shape).astype(np.float32)
    want_d, want_p = reference.interaction_backward(dense.astype(np.float64),
                                                    pooled.astype(np.float64), g)
    got_d, got_p = kernels.interaction_backward(dense, pooled, g, backend=backend)
    np.testing.assert_allclose(got_d, want_d, **_tol(want_d))
    np.testing.assert_allclose(got_p, want_p, **_tol(want_p))


def test_interaction_layout_by_hand():
    dense = np.array([[1.0, 0.0]])
    pooled = np.array([[[2.0, 1.0], [0.0, 3.0]]])   # z0=(1,0) z1=(2,1) z2=(0,3)
    got = kernels.interaction(dense, pooled, backend="numba")
    # dense, then (1,0)=2, (2,0)=0, (2,1)=3
    np.testing.assert_allclose(got, [[1.0, 0.0, 2.0, 0.0, 3.0]])


def test_interaction_backward_is_the_gradient(rng):
    """The reference backward agrees with torch autograd through the torch forward."""
    dense = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    pooled = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    out = kernels.interaction(dense, pooled, backend="torch")
    g = torch.from_numpy(rng.standard_normal(tuple(out.shape)))
    out.backward(g)
    gd, gp = reference.interaction_backward(dense.detach().numpy(), pooled.detach().numpy(),
                                            g.numpy())
    np.testing.assert_allclose(gd, dense.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gp, pooled.grad.numpy(), rtol=1e-12)


def test_numba_bce_with_logits_matches_torch(rng):
    """The training loss of the numba backend: torch's BCEWithLogitsLoss (float64) and its
    gradient, including logits far in both tails."""
    from dlrmprof.kernels.numba_cpu import bce_with_logits_grad
    z = (rng.standard_normal(257) * 4).astype(np.float32)
    z[:4] = [-90.0, 90.0, -0.0, 30.0]
    y = (rng.random(257) < 0.3).astype(np.float32)
    grad = np.full(257, np.nan, np.float32)
    loss = bce_with_logits_grad(z, y, grad)
    zt = torch.from_numpy(z.astype(np.float64)).requires_grad_()
    want = torch.nn.functional.binary_cross_entropy_with_logits(zt, torch.from_numpy(
        y.astype(np.float64)))
    want.backward()
    assert loss == pytest.approx(want.item(), rel=1e-12)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-6, atol=1e-12)


def test_numba_mlp_backward_helpers_match_torch(rng):
    """relu_grad_ is threshold_backward(g, y, 0) in place (-0.0 masked, NaN passed, as there);
    bias_sgd_ is b -= lr * g.sum(0)."""
    from dlrmprof.kernels.numba_cpu import bias_sgd_, relu_grad_
    g = rng.standard_normal((37, 70)).astype(np.float32)
    y = rng.standard_normal((37, 70)).astype(np.float32)
    y[0, :3] = [np.nan, -0.0, 0.0]
    want = torch.ops.aten.threshold_backward(torch.from_numpy(g), torch.from_numpy(y), 0)
    got = g.copy()
    relu_grad_(got, y)
    np.testing.assert_array_equal(got, want.numpy())
    b = rng.standard_normal(70).astype(np.float32)
    want_b = b.astype(np.float64) - 0.3 * g.astype(np.float64).sum(0)
    bias_sgd_(b, g, np.float32(0.3))
    np.testing.assert_allclose(b, want_b, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------- linear

@pytest.mark.parametrize("backend", _cpu_backends("linear"))
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (5, 13, 3), (130, 64, 300), (9, 517, 17)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_reference(rng, backend, M, K, N, bias):
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32) if bias else None
    want = reference.linear(x.astype(np.float64), w.astype(np.float64),
                            None if b is None else b.astype(np.float64))
    got = kernels.linear(x, w, b, backend=backend)
    assert got.shape == (M, N) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.sqrt(K))
    g = rng.standard_normal((M, N)).astype(np.float32)
    wants = reference.linear_backward(x.astype(np.float64), w.astype(np.float64), g)
    for got_i, want_i in zip(kernels.linear_backward(x, w, g, backend=backend), wants):
        np.testing.assert_allclose(got_i, want_i, rtol=1e-4, atol=1e-4 * np.sqrt(max(M, N)))


def test_linear_torch_bf16(rng):
    x = torch.from_numpy(rng.standard_normal((64, 128)).astype(np.float32))
    w = torch.from_numpy(rng.standard_normal((32, 128)).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal(32).astype(np.float32))
    got = kernels.linear(x.bfloat16(), w.bfloat16(), b.bfloat16(), backend="torch")
    assert got.dtype == torch.bfloat16
    want = reference.linear(x.bfloat16().double().numpy(), w.bfloat16().double().numpy(),
                            b.bfloat16().double().numpy())
    np.testing.assert_allclose(got.double().numpy(), want, rtol=0.02, atol=0.5)
    with pytest.raises(UserError, match="bfloat16"):
        kernels.linear(x.bfloat16(), w.bfloat16(), b.bfloat16(), backend="numba")


# ------------------------------------------------------------------------------ bad input

def test_unknown_and_unavailable_backends():
    w, i, o = np.zeros((3, 2), np.float32), np.array([1]), np.array([0, 1])
    with pytest.raises(UserError, match="unknown kernel backend 'fbgemm'"):
        kernels.embedding_bag(w, i, o, backend="fbgemm")
    with pytest.raises(UserError, match="has no linear kernel"):
        kernels.linear(w, w, None, backend="numba-cuda")
    with pytest.raises(UserError, match="unknown kernel op"):
        kernels.backends("conv2d")
    if "numba-cuda" not in kernels.backends("embedding_bag"):
        with pytest.raises(UserError, match="'numba-cuda' is not available"):
            kernels.embedding_bag(w, i, o, backend="numba-cuda")


@pytest.mark.parametrize("backend", _cpu_backends("embedding_bag"))
def test_out_of_range_index_raises_and_sgd_writes_nothing(backend):
    w = np.ones((4, 2), np.float32)
    for bad in (4, -1):
        i, o = np.array([0, bad, 1]), np.array([0, 1, 3])
        with pytest.raises((IndexError, RuntimeError)):
            kernels.embedding_bag(w, i, o, backend=backend)
        if backend != "torch":   # torch's index_add_ checks too, but may have written first
            with pytest.raises(IndexError):
                kernels.embedding_bag_sgd(w, i, o, np.ones((2, 2), np.float32), 1.0,
                                          backend=backend)
            np.testing.assert_array_equal(w, 1.0)


def test_shape_errors_are_clear():
    w, i = np.zeros((3, 2), np.float32), np.array([1, 2])
    with pytest.raises(ValueError, match="start at 0 and end at len"):
        kernels.embedding_bag(w, i, np.array([0, 1]))
    with pytest.raises(ValueError, match="mode must be"):
        kernels.embedding_bag(w, i, np.array([0, 2]), mode="max")
    with pytest.raises(ValueError, match="grad_output must be"):
        kernels.embedding_bag_sgd(w, i, np.array([0, 2]), np.zeros((2, 2), np.float32), 0.1)
    with pytest.raises(ValueError, match="per_sample_weights"):
        kernels.embedding_bag(w, i, np.array([0, 2]), per_sample_weights=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="disagree"):
        kernels.interaction(np.zeros((2, 3)), np.zeros((2, 4, 5)))
    frozen = np.zeros((3, 2), np.float32)
    frozen.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        kernels.embedding_bag_sgd(frozen, i, np.array([0, 2]), np.zeros((1, 2), np.float32),
                                  0.1)


# -------------------------------------------------------------------------------- cost model

def test_cost_embedding_bag_by_hand():
    c = kernels.cost("embedding_bag", batch=2, dim=4, nnz=5)
    # rows 5*4*4 + indices 5*8 + offsets 3*8 ; output 2*4*4 ; one add per gathered element
    assert (c.bytes_read, c.bytes_written, c.flops) == (144, 32, 20)
    assert c.bytes == 176
    assert kernels.cost("embedding_bag", batch=2, dim=4, pooling=2.5) == c
    d = kernels.cost("embedding_bag", batch=2, dim=4, nnz=5, distinct_rows=2)
    assert d.bytes_read == 144 - 3 * 16
    s = kernels.cost("embedding_bag_sgd", batch=2, dim=4, nnz=5)
    assert (s.bytes_read, s.bytes_written, s.flops) == (144 + 32, 80, 40)


def test_cost_interaction_linear_mlp_by_hand():
    c = kernels.cost("interaction", batch=3, tables=2, dim=4)
    # Z is 3*3*4 floats in; out 3*(4+3) floats; 3 pairs * 4 mul-adds per sample
    assert (c.bytes_read, c.bytes_written, c.flops) == (144, 84, 72)
    lin = kernels.cost("linear", batch=2, in_features=3, out_features=4)
    assert (lin.bytes_read, lin.bytes_written, lin.flops) == ((6 + 12 + 4) * 4, 32, 56)
    mlp = kernels.cost("mlp", batch=2, sizes=[3, 4, 1])
    assert mlp == lin + kernels.cost("linear", batch=2, in_features=4, out_features=1)
    assert lin.intensity == pytest.approx(56 / 120)


def test_cost_bad_arguments():
    with pytest.raises(UserError, match="unknown op"):
        kernels.cost("conv", batch=1)
    with pytest.raises(UserError, match="missing shape argument 'dim'"):
        kernels.cost("embedding_bag", batch=1, nnz=2)
    with pytest.raises(UserError, match="unknown shape argument"):
        kernels.cost("linear", batch=1, in_features=2, out_features=3, color=1)


# ------------------------------------------------------------------------------ assembly

def _wide_registers(asm):
    return asm.count("%ymm") + asm.count("%zmm")


def test_numba_asm_follows_the_cpu_target():
    """The default target uses AVX registers; NUMBA_CPU_NAME=generic (child process) none:
    the profiler's SIMD sweep relies on both the knob and this check."""
    code = ("from dlrmprof import kernels\n"
            "for op in ('linear', 'embedding_bag'):\n"
            "    a = kernels.numba_asm(op, dim=64)\n"
            "    print(a.count('%ymm') + a.count('%zmm'), a.count('%xmm'))\n")
    env = dict(os.environ, NUMBA_CPU_NAME="generic")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=180, check=True).stdout.split()
    wide, xmm = [int(x) for x in out[0::2]], [int(x) for x in out[1::2]]
    assert wide == [0, 0] and min(xmm) > 0
    if "avx2" in open("/proc/cpuinfo").read():
        assert _wide_registers(kernels.numba_asm("linear")) > 0
        assert _wide_registers(kernels.numba_asm("embedding_bag", dim=64)) > 0
    with pytest.raises(UserError, match="dim must be"):
        kernels.numba_asm("embedding_bag", dim=0)


@pytest.mark.skipif("numba" not in kernels.backends("embedding_bag"), reason="no numba")
def test_numba_fast_path_agrees_and_hands_faults_to_the_checked_path():
    """The one-layer numpy path (numba_cpu.embedding_bag_fast) gives the reference's result
    for every layout it takes, declines the ones it does not, and every fault still gets the
    checked path's message."""
    from dlrmprof.kernels import numba_cpu
    rng = np.random.default_rng(7)
    w32 = rng.standard_normal((50, 16)).astype(np.float32)
    cases = [(w32, np.int64, np.int64), (w32.astype(np.float64), np.int32, np.int32),
             (w32, np.uint32, np.uint64)]
    for w, it, ot in cases:
        idx = rng.integers(0, 50, 30).astype(it)
        offs = np.array([0, 3, 3, 10, 30]).astype(ot)
        for mode in ("sum", "mean"):
            got = numba_cpu.embedding_bag_fast(w, idx, offs, mode)
            assert got is not None and got.dtype == w.dtype
            want = kernels.embedding_bag(w, idx, offs, mode=mode, backend="reference")
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    idx, offs = np.array([1, 2, 3]), np.array([0, 1, 3])
    declined = [(w32[:, ::2], idx, offs, "sum"),            # not contiguous
                (w32[:, :6].copy(), idx, offs, "sum"),      # D not a multiple of 4
                (w32.astype(">f4"), idx, offs, "sum"),      # foreign byte order
                (w32, idx.astype(np.float64), offs, "sum"),
                (w32, idx, offs, "max"),
                (w32, idx, np.array([], np.int64), "sum"),
                (w32, idx, np.array([0, 1, 2]), "sum"),     # does not end at len(indices)
                (w32, idx, np.array([1, 1, 3]), "sum")]     # does not start at 0
    for w, i, o, mode in declined:
        assert numba_cpu.embedding_bag_fast(w, i, o, mode) is None
    for w, i, o, mode in declined[:2]:
        np.testing.assert_allclose(kernels.embedding_bag(w, i, o, mode=mode),
                                   kernels.embedding_bag(w, i, o, mode=mode,
                                                         backend="reference"), rtol=1e-6)
    with pytest.raises(ValueError, match="indices must be a 1-D integer"):
        kernels.embedding_bag(*declined[3][:3])
    with pytest.raises(ValueError, match="mode must be"):
        kernels.embedding_bag(*declined[4][:3], mode="max")
    with pytest.raises(ValueError, match="offsets must be a 1-D integer array of B\\+1"):
        kernels.embedding_bag(*declined[5][:3])
    for w, i, o, _ in declined[6:]:
        with pytest.raises(ValueError, match="start at 0 and end at len"):
            kernels.embedding_bag(w, i, o)
    for i, o in ((np.array([1, 50, 3]), offs), (idx, np.array([0, 2, 1, 3]))):
        with pytest.raises(IndexError, match="out-of-range indices or decreasing offsets"):
            kernels.embedding_bag(w32, i, o)


@pytest.mark.skipif("numba" not in kernels.backends("embedding_bag"), reason="no numba")
def test_numba_rejects_foreign_byte_order_clearly():
    w = np.ones((4, 8), ">f4")
    i, o = np.array([0, 1]), np.array([0, 2])
    with pytest.raises(ValueError, match="byte order; weight is >f4: pass weight.astype\\('<f4'\\)"):
        kernels.embedding_bag(w, i, o)
    with pytest.raises(ValueError, match="indices is >i8"):
        kernels.embedding_bag(w.astype("<f4"), i.astype(">i8"), o)
    with pytest.raises(ValueError, match="weight is >f4"):
        kernels.embedding_bag_sgd(w, i, o, np.ones((1, 8), np.float32), 0.1)
    with pytest.raises(ValueError, match="dense is >f4"):
        kernels.interaction(np.ones((2, 8), ">f4"), np.ones((2, 3, 8), np.float32))
    np.testing.assert_array_equal(w, 1.0)


@pytest.mark.parametrize("module", ["numba_embedding", "numba_embedding_sgd",
                                    "numba_interaction", "numba_dense", "numba_quant"])
def test_kernel_modules_name_the_sources_they_were_compiled_with(module):
    # numba's cache is keyed on a kernel module's own content only: its digest of the
    # intrinsics and inlined helpers it compiles in must follow them, or kernels compiled
    # with older ones are loaded from the cache
    import importlib
    mod = importlib.import_module(f"dlrmprof.kernels.{module}")
    sha = numba_util.deps_digest(*mod._DEPS)
    assert mod._DEPS_SHA256 == sha, (
        f"update {module}._DEPS_SHA256 to {sha!r} ({', '.join(mod._DEPS)} changed)")
    # every kernels/ module it takes jitted code from is named
    text = Path(mod.__file__).read_text()
    for dep in ("_simd", "_qsimd", "numba_prefetch"):
        if f"dlrmprof.kernels.{dep} import" in text:
            assert f"{dep}.py" in mod._DEPS, f"{module} compiles in {dep}.py but does not name it"


@pytest.mark.parametrize("D", [12, 24, 48, 80, 96])
def test_vectors_of_other_lengths_are_held_as_power_of_two_pieces(D):
    # a <48 x float> LLVM vector ran 3-5x slower than torch; the pieces run like <64 x float>
    import numba

    from dlrmprof.kernels import _simd
    pieces = _simd._chunks(D, 4)
    assert sum(pieces) == D and all(p & (p - 1) == 0 and p <= 16 for p in pieces)
    assert _simd._chunks(64, 4) is None and _simd._chunks(24, 8) == [8, 8, 8]

    @numba.njit
    def bag(w, idx, out):
        acc = _simd.vzero(w, D)
        for i in idx:
            acc = _simd.vadd(acc, _simd.vload(w, i, 0, D))
        acc = _simd.vfma(acc, _simd.vload(w, 0, 0, D), 0.5)
        acc = _simd.vfmadd(acc, _simd.vload(w, 1, 0, D), 2.0)
        _simd.vstore(out, 0, 0, _simd.vscale(acc, 3.0))

    rng = np.random.default_rng(D)
    w = rng.standard_normal((9, D)).astype(np.float32)
    idx = rng.integers(0, 9, 7)
    out = np.full((1, D), np.nan, np.float32)
    bag(w, idx, out)
    want = 3.0 * (w[idx].astype(np.float64).sum(0) + 0.5 * w[0] + 2.0 * w[1])
    np.testing.assert_allclose(out[0], want, rtol=1e-5, atol=1e-5)
    ir = bag.inspect_llvm(bag.signatures[0])
    assert f"<{D} x float>" not in ir and ("<16 x float>" in ir or "<8 x float>" in ir)


@pytest.mark.skipif("numba" not in kernels.backends("embedding_bag"), reason="no numba")
@pytest.mark.parametrize("aligned", [True, False])
def test_every_prefetch_plan_gives_the_reference_result(rng, aligned):
    # small tables take plan 0 through the public call: drive the serial kernel with each
    # (distance, level) directly, on a line-aligned table and on one whose rows start off a
    # line (the tail-line prefetch), with an out-of-range index and a decreasing offset
    from dlrmprof.kernels import numba_cpu
    R, D, B = 300, 48, 40
    buf = np.empty(R * D + 16 + 1, np.float32)
    start = (-buf.ctypes.data % 64) // 4 + (0 if aligned else 1)
    w = buf[start:start + R * D].reshape(R, D)
    w[:] = rng.standard_normal((R, D))
    assert (w.ctypes.data % 64 == 0) == aligned
    indices, offsets = _bags(rng, R, B, 12)
    want = kernels.embedding_bag(w, indices, offsets, backend="reference")
    ser = numba_embedding._eb_vec_kernels(D, 4)[1]
    bad_idx = indices.copy()
    bad_idx[5] = R
    bad_off = offsets.copy()
    bad_off[3] = bad_off[4] + 1
    for dist in (1, 3, 16, 64):
        for level in (0, 1, 2, 3, 4):
            out = np.full((B, D), np.nan, np.float32)
            assert ser(w, indices, offsets, None, False, out, 0, B, dist, level) == 0
            np.testing.assert_allclose(out, want, **_tol(want))
            assert ser(w, bad_idx, offsets, None, False, out, 0, B, dist, level) == 1
            assert ser(w, indices, bad_off, None, False, out, 0, B, dist, level) >= 1


def test_empty_table_is_line_aligned_and_advised_into_huge_pages():
    from pathlib import Path

    from dlrmprof.kernels import tables
    t = tables.empty_table(3000, 1400)            # 16 MiB: past the advice threshold
    assert t.shape == (3000, 1400) and t.dtype == torch.float32 and t.data_ptr() % 64 == 0
    t.fill_(1.5)
    assert float(t.sum()) == 1.5 * t.numel()
    small = tables.empty_table(10, 16)
    assert small.shape == (10, 16) and small.data_ptr() % 64 == 0
    assert not tables.advise_huge_pages(small.data_ptr(), small.numel() * 4)   # too small
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if sys.platform.startswith("linux") and thp.exists() and "[never]" not in thp.read_text():
        # the advice is taken (whether 2 MiB pages then back it is the kernel's affair)
        assert tables.advise_huge_pages(t.data_ptr(), t.numel() * 4)
        share = tables.huge_page_share(t.data_ptr(), t.numel() * 4)
        assert share is not None and 0.0 <= share <= 1.0
    assert tables.huge_page_share(0, 4096) in (0.0, None)   # no mapping there


def test_embedding_kernel_closures_hold_ints_only():
    # numba's cache keys a jitted closure on its cells' values; a cell holding another kernel
    # gets a fresh key in every process, which then compiles the kernel again (seconds per
    # process: benchmarks/bench_kernel_load.py)
    for D in (16, 64):
        for kern in (*numba_embedding._eb_vec_kernels(D, 4),
                     numba_embedding._eb_tables_kernel(D, 4)):
            cells = [c.cell_contents for c in kern.py_func.__closure__ or ()]
            assert cells and all(type(c) is int for c in cells), (kern, cells)
