"""Packed embedding tables (kernels.quant) against torch's prepack / unpack, and every
qembedding_bag backend against the float64 reference of the dequantized table."""

import hashlib
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
from dlrmprof.kernels import quant


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def _table(rng, R, D, scale=1.0):
    """Random rows with the corner cases: a constant row, a tiny-range row, a row of one
    repeated extreme, and a row spanning a huge range."""
    w = (rng.standard_normal((R, D)) * scale).astype(np.float32)
    w[0] = 0.375
    w[1] = rng.standard_normal(D).astype(np.float32) * 1e-30
    w[2, ::2] = -3.0
    w[3] = np.linspace(-1e4, 1e4, D, dtype=np.float32)
    return w


@pytest.mark.parametrize("D", [2, 8, 16, 34, 64, 128])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 300.0])
def test_int8_and_int4_bytes_equal_torch_prepack(rng, D, scale):
    w = _table(rng, 257, D, scale)
    t = torch.from_numpy(w)
    np.testing.assert_array_equal(quant.quantize(w, "int8").data,
                                  torch.ops.quantized.embedding_bag_byte_prepack(t).numpy())
    np.testing.assert_array_equal(quant.quantize(w, "int4").data,
                                  torch.ops.quantized.embedding_bag_4bit_prepack(t).numpy())


@pytest.mark.parametrize("dtype", ["int8", "int4"])
@pytest.mark.parametrize("D", [2, 16, 64])
def test_dequantize_rounds_to_torch_unpack(rng, dtype, D):
    # torch's unpack computes q * scale + bias in float32; the float64 reference rounded
    # to float32 gives the same bits (and both differ from the fp32 rows by < one step)
    w = _table(rng, 300, D)
    qt = quant.quantize(w, dtype)
    unpack = {"int8": torch.ops.quantized.embedding_bag_byte_unpack,
              "int4": torch.ops.quantized.embedding_bag_4bit_unpack}[dtype]
    got = unpack(quant.to_torch(qt)).numpy()
    ref = quant.dequantize(qt)
    assert ref.dtype == np.float64
    np.testing.assert_array_equal(ref.astype(np.float32), got)
    # within half a step of the row's grid, plus what rounding its min to the bias cost
    # (float16 for int4) and int8's 1e-8 guard against a zero range
    scale, bias = quant.scale_bias(qt)
    slack = 0.5 * scale * (1 + 1e-5) + np.abs(w.min(axis=1) - bias) + 1e-7
    assert np.all(np.abs(ref - w) <= slack[:, None])


def test_float_dtypes_match_torch_rounding(rng):
    w = _table(rng, 200, 24)
    w[5, 0] = np.nan
    w[5, 1] = np.inf
    t = torch.from_numpy(w)
    bf = quant.quantize(w, "bf16")
    theirs = t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    ok = ~np.isnan(w)   # a NaN stays a NaN; its payload bits are not part of the contract
    np.testing.assert_array_equal(bf.data[ok], theirs[ok])
    assert np.isnan(quant.bf16_bits_to_float(bf.data[5, :1]))
    np.testing.assert_array_equal(quant.to_torch(bf).float().numpy(), quant.dequantize(bf))
    h = quant.quantize(w, "fp16")
    np.testing.assert_array_equal(h.data, t.half().numpy())
    assert quant.as_qtable("bf16", quant.to_torch(bf)).data.tobytes() == bf.data.tobytes()


def test_row_bytes_and_bad_dtypes():
    assert [quant.row_bytes(d, 64) for d in quant.EMB_DTYPES] == [256, 128, 128, 72, 36]
    assert quant.quantize(np.zeros((3, 16), np.float32), "int8").data.shape == (3, 24)
    assert quant.quantize(np.zeros((3, 16), np.float32), "int4").data.shape == (3, 12)
    with pytest.raises(UserError, match="unknown embedding dtype 'int2'"):
        quant.check_emb_dtype("int2")
    with pytest.raises(UserError, match="int4 packs two values a byte: D must be even"):
        quant.quantize(np.zeros((3, 15), np.float32), "int4")
    with pytest.raises(UserError, match="2-D float"):
        quant.quantize(np.zeros(5, np.float32), "int8")
    with pytest.raises(UserError, match="uint8"):
        quant.as_qtable("int8", np.zeros((3, 24), np.float32))


def _bags(rng, R, B, max_len, idx_dtype=np.int64):
    lengths = rng.integers(0, max_len + 1, size=B)
    lengths[0] = lengths[B // 2] = lengths[-1] = 0
    lengths[1] = max(lengths[1], 3)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(idx_dtype)
    indices = rng.integers(0, R, size=int(offsets[-1])).astype(idx_dtype)
    s = int(offsets[1])
    indices[s:s + 3] = indices[s]
    return indices, offsets


def _tol(dtype, backend, ref):
    big = max(1.0, float(np.abs(ref).max(initial=0.0)))
    if backend == "torch" and dtype in ("fp16", "bf16"):   # torch returns the table's dtype
        return dict(rtol=1e-2 if dtype == "bf16" else 2e-3, atol=1e-2 * big)
    return dict(rtol=2e-5, atol=2e-5 * big)


# (dtype, R, B, max_len, D, index dtype): each (dtype, D) is a compile of the numba kernel
# (several seconds), so the cases cover each dtype at D 16, the two packed ones also at a
# D whose vectors are held in pieces (24: int4's halves are 8 + 4 lanes), a table beyond L2
# (the prefetch paths), int4 rows over 32 bytes within L2 (prefetched into L1), int32
# indices and the parallel path (nnz * D >= 2^16)
CASES = [(dt, 300, 50, 6, 16, np.int64) for dt in quant.EMB_DTYPES] + [
    ("int8", 2000, 40, 9, 24, np.int32), ("int4", 2000, 40, 9, 24, np.int32),
    ("int4", 3000, 200, 9, 64, np.int64),
    ("fp16", 60000, 700, 12, 16, np.int64), ("int8", 60000, 700, 12, 16, np.int32),
    ("int4", 60000, 700, 12, 16, np.int64), ("bf16", 60000, 700, 12, 16, np.int32)]


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("dtype,R,B,max_len,D,idx_dtype", CASES)
def test_qembedding_bag_matches_float64_reference(rng, backend, dtype, R, B, max_len, D,
                                                  idx_dtype):
    qt = quant.quantize(_table(rng, R, D), dtype)
    indices, offsets = _bags(rng, R, B, max_len, idx_dtype)
    psw = rng.standard_normal(indices.shape[0]).astype(np.float32)
    for mode in ("sum", "mean"):
        for w in (None, psw):
            ref = kernels.qembedding_bag(qt, indices, offsets, mode, w, backend="reference")
            got = kernels.qembedding_bag(qt, indices, offsets, mode, w, backend=backend)
            assert got.dtype == np.float32 and got.shape == (B, D)
            np.testing.assert_allclose(got, ref, **_tol(dtype, backend, ref))


def test_reference_is_the_sum_of_dequantized_rows_by_hand():
    w = np.array([[0.0, 1.0], [2.0, -2.0], [0.5, 0.25]], np.float32)
    qt = quant.quantize(w, "int8")
    deq = quant.dequantize(qt)
    out = kernels.qembedding_bag(qt, np.array([2, 0, 2]), np.array([0, 2, 2, 3]),
                                 backend="reference")
    np.testing.assert_array_equal(out, [deq[2] + deq[0], [0, 0], deq[2]])


@pytest.mark.parametrize("dtype", ["int8", "int4", "fp16"])
def test_numba_every_prefetch_plan_and_bad_index(rng, dtype):
    from dlrmprof.kernels import numba_quant
    R, D, B = 500, 16, 60
    qt = quant.quantize(_table(rng, R, D), dtype)
    data = numba_quant.storage(dtype, qt.data)
    indices, offsets = _bags(rng, R, B, 10)
    refs = {mean: kernels.qembedding_bag(qt, indices, offsets, "mean" if mean else "sum",
                                         backend="reference") for mean in (False, True)}
    ser = numba_quant.kernels(dtype, D)[1]
    bad_idx = indices.copy()
    bad_idx[4] = R
    for dist in (1, 5, 32):
        for level in (0, 1, 2, 3, 4):
            for mean, ref in refs.items():   # the loop is compiled once per literal mean
                out = np.full((B, D), np.nan, np.float32)
                assert ser(data, indices, offsets, None, mean, out, 0, B, dist, level, 0) == 0
                np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-5 * np.abs(ref).max())
            assert ser(data, bad_idx, offsets, None, False, out, 0, B, dist, level, 0) == 1
    with pytest.raises(IndexError, match="out-of-range"):
        kernels.qembedding_bag(qt, bad_idx, offsets, backend="numba")


def test_packed_prefetch_plan():
    from dlrmprof.kernels import numba_quant as nq
    from dlrmprof.kernels.numba_prefetch import prefetch_plan
    l2, l3 = 1 << 20, 32 << 20

    def plan(nbytes, rb, aligned=False):
        return (tuple(nq.packed_plan(nbytes, rb, aligned, l2, l3)),
                tuple(nq.fp32_plan_at(nbytes, rb, aligned, l2, l3)))
    # within L2: rows over 32 bytes into L1 16 ahead, smaller ones none (as fp32)
    assert plan(680_000, 68) == ((16, 1), (0, 0))
    assert plan(240_000, 24) == ((0, 0), (0, 0))
    assert plan(320_000, 32, True) == ((0, 0), (0, 0))
    # where the fp32 plan prefetches into L2 alone: the two-stage plan
    assert plan(12_800_000, 128, True) == ((16, 4), (64, 2))
    assert plan(720_000_000, 72) == ((16, 4), (32, 2))
    # elsewhere the fp32 plan at the packed row's bytes (rows under a line beyond L3 / 4:
    # the one-line plan even where they straddle two)
    assert plan(1_360_000, 136) == ((16, 3), (16, 3))
    assert plan(240_000_000, 24) == ((32, 4), (32, 4))
    assert plan(2_400_000, 24) == (prefetch_plan(2_400_000, 24, 1, False),) * 2


@pytest.mark.parametrize("dtype", ["int8", "int4", "fp16"])
def test_packed_kernels_are_closures_over_ints_only(dtype):
    # numba's cache keys a closure on its cells' values: a cell holding a kernel gets a fresh
    # key in every process, and the kernel compiles again in each (bench_kernel_load.py)
    from dlrmprof.kernels import numba_quant
    for k in numba_quant.kernels(dtype, 16):
        cells = [c.cell_contents for c in k.py_func.__closure__ or ()]
        assert cells and all(type(c) is int for c in cells), (k, cells)


def test_qembedding_bag_bad_inputs():
    qt = quant.quantize(np.zeros((4, 8), np.float32), "int8")
    idx, off = np.array([0, 1]), np.array([0, 2])
    with pytest.raises(ValueError, match="QTable"):
        kernels.qembedding_bag(np.zeros((4, 8), np.float32), idx, off)
    with pytest.raises(ValueError, match="offsets must start at 0"):
        kernels.qembedding_bag(qt, idx, np.array([0, 1]))
    with pytest.raises(ValueError, match="mode"):
        kernels.qembedding_bag(qt, idx, off, mode="max")
    with pytest.raises(UserError, match="unknown kernel backend"):
        kernels.qembedding_bag(qt, idx, off, backend="tpu")
    with pytest.raises(UserError, match="numba_asm shows the fp32 kernels"):
        kernels.numba_asm("qembedding_bag")


def _uncached_ir(dtype, D):
    """LLVM IR of the packed serial kernel (uint8 table, int64 indices, no weights); a
    cached dispatcher may hold only object code, so an uncached twin gives the text."""
    from dlrmprof.kernels import numba_quant
    import numba
    i1 = numba.types.Array(numba.int64, 1, "C")
    u2 = numba.types.Array(numba.uint8, 2, "C")
    f2 = numba.types.Array(numba.float32, 2, "C")
    ser = numba_quant.kernels(dtype, D)[1]
    sig = (u2, i1, i1, numba.types.none, numba.boolean, f2, numba.int64, numba.int64,
           numba.int64, numba.int64, numba.int64)
    twin = numba.njit(sig, cache=False, boundscheck=False, error_model="numpy")(ser.py_func)
    return twin.inspect_llvm(sig)


def test_numba_quant_converts_in_registers():
    # the int8 row is widened in vector registers (no scalar loop over the row's bytes)
    ir = _uncached_ir("int8", 16)
    assert "uitofp <" in ir and "x i8> " in ir


def test_numba_int4_widens_bytes_before_splitting_nibbles():
    # each byte widened to 32 bits, then masked / shifted: no byte-wide shift (x86 has none)
    # and no extract-and-widen from registers per 16 bytes
    import re
    ir = _uncached_ir("int4", 64)
    assert re.search(r"and <\d+ x i32>", ir) and re.search(r"lshr <\d+ x i32>", ir)
    assert not re.search(r"(and|lshr) <\d+ x i8>", ir)


SIMULATED = """
import numpy as np
from dlrmprof import kernels
from dlrmprof.kernels import quant
rng = np.random.default_rng(3)
checked = 0
for dtype in ("int8", "fp16"):
    for D in (4, 16, 40, 64):
        R = 9
        qt = quant.quantize(rng.standard_normal((R, D)).astype(np.float32), dtype)
        r = int(rng.integers(R))
        idx = np.array([r, r, rng.integers(R), rng.integers(R), r, rng.integers(R)], np.int64)
        off = np.array([0, 3, 3, 4, 6], np.int64)
        psw = rng.standard_normal(len(idx)).astype(np.float32)
        for mode in ("sum", "mean"):
            for p in (None, psw):
                got = kernels.qembedding_bag(qt, idx, off, mode, p, backend="numba-cuda")
                want = kernels.qembedding_bag(qt, idx, off, mode, p, backend="reference")
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
                assert np.all(got[1] == 0)
                checked += 1
qt = quant.quantize(np.ones((9, 8), np.float32), "int8")
try:
    kernels.qembedding_bag(qt, np.array([0, 9]), np.array([0, 2]), backend="numba-cuda")
except IndexError:
    pass
else:
    raise AssertionError("out-of-range index not reported")
print("checked", checked)
qt = quant.quantize(np.ones((9, 8), np.float32), "bf16")
try:
    kernels.qembedding_bag(qt, np.array([0, 1]), np.array([0, 2]), backend="numba-cuda")
except Exception as exc:
    assert type(exc).__name__ == "UserError" and "not bf16" in str(exc), exc
else:
    raise AssertionError("bf16 accepted")
print("refused bf16")
"""


def test_numba_cuda_int8_and_fp16_under_the_simulator():
    # NUMBA_ENABLE_CUDASIM must be set before numba is imported: a child process
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run([sys.executable, "-c", SIMULATED], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "checked 32" in done.stdout and "refused bf16" in done.stdout


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_numba_writes_into_a_table_column_of_a_wider_buffer(rng, dtype):
    from dlrmprof.kernels import numba_quant
    R, D, B, T = 300, 16, 50, 3
    qt = quant.quantize(_table(rng, R, D), dtype)
    indices, offsets = _bags(rng, R, B, 6)
    ref = kernels.qembedding_bag(qt, indices, offsets, backend="reference")
    out = np.full((B, T * D), np.nan, np.float32)
    got = numba_quant.qembedding_bag(dtype, D, qt.data, indices, offsets, "sum", None,
                                     out=out, ocol=D)
    assert got is out
    np.testing.assert_allclose(out[:, D:2 * D], ref, rtol=2e-5, atol=2e-5 * np.abs(ref).max())
    assert np.isnan(out[:, :D]).all() and np.isnan(out[:, 2 * D:]).all()
    with pytest.raises(ValueError, match="C-contiguous float32"):
        numba_quant.qembedding_bag(dtype, D, qt.data, indices, offsets, "sum", None,
                                   out=out, ocol=2 * D + 1)
