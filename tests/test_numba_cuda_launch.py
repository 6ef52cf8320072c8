"""The numba-cuda lean launch and its one bag loop (fp32, fp16, int8 rows) under numba's CUDA
simulator, in a child process (NUMBA_ENABLE_CUDASIM=1 must be set before numba is imported
and must not leak into this process).  The torch-tensor path (cached device views, the
specialised kernel's launch, the per-device error counter) needs a GPU: marked `cuda`.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SIMULATED = textwrap.dedent("""
    import numpy as np
    from dlrmprof import kernels
    from dlrmprof.kernels import numba_cuda as nc, numba_cuda_launch as ncl, quant
    rng = np.random.default_rng(int(__import__("sys").argv[1]))
    checked = 0

    def bags(R, B, dt):
        # lengths 0..9: empty bags, the four-at-a-time walk and its tail; a repeated row
        lengths = rng.integers(0, 10, B)
        lengths[0] = 0
        lengths[1] = 6
        off = np.concatenate([[0], np.cumsum(lengths)]).astype(dt)
        idx = rng.integers(0, R, int(off[-1])).astype(dt)
        idx[int(off[1]):int(off[1]) + 3] = idx[int(off[1])]
        return idx, off

    # every row kind through the one bag loop, against the float64 reference
    for kind, D, dt in (("fp32", 3, np.int64), ("fp32", 40, np.int32), ("fp16", 8, np.int64),
                        ("int8", 12, np.int32), ("int8", 36, np.int64)):
        R, B = 23, 5
        qt = quant.quantize(rng.standard_normal((R, D)).astype(np.float32), kind)
        idx, off = bags(R, B, dt)
        psw = rng.standard_normal(idx.shape[0]).astype(np.float32)
        for mode in ("sum", "mean"):
            for p in (None, psw):
                want = kernels.qembedding_bag(qt, idx, off, mode, p, backend="reference")
                got = kernels.qembedding_bag(qt, idx, off, mode, p, backend="numba-cuda")
                big = max(1.0, float(np.abs(want).max()))
                np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * big)
                assert np.all(got[0] == 0)
                checked += 1

    # the signature cache: one entry per (kernel, argument types), reused by later calls
    n0 = len(ncl._COMPILED._cache)
    w = rng.standard_normal((11, 4)).astype(np.float32)
    idx, off = bags(11, 3, np.int64)
    for _ in range(3):
        nc.embedding_bag(w, idx, off, "sum", None)
    n1 = len(ncl._COMPILED._cache)
    nc.embedding_bag(w, idx.astype(np.int32), off.astype(np.int32), "sum", None)
    assert n1 == n0 + 1 and len(ncl._COMPILED._cache) == n1 + 1, (n0, n1)
    assert ncl.launch_path() == "dispatcher"   # the simulator has no compiled kernels

    # SGD as inside a graph capture: no check first, no synchronising read; the bad lookup
    # is skipped and counted, the good ones applied
    class Capturing(ncl.HostLauncher):
        def capturing(self):
            return True

    w = rng.standard_normal((9, 5)).astype(np.float32)
    idx = np.array([0, 3, 9, 3, -2, 8], np.int64)     # 9 and -2 are out of range
    off = np.array([0, 2, 4, 6], np.int64)
    g = rng.standard_normal((3, 5)).astype(np.float32)
    L = Capturing()
    orig = ncl.launcher_for
    ncl.launcher_for = lambda *a: L
    nc.launcher_for = ncl.launcher_for
    try:
        got = w.copy()
        nc.embedding_bag_sgd(got, idx, off, g, 0.5, "sum", None)
        out = nc.embedding_bag(w, idx, off, "sum", None)   # counted, not raised
    finally:
        ncl.launcher_for = nc.launcher_for = orig
    assert L.bad() == 4, L.bad()
    good = idx.copy()
    keep = (good >= 0) & (good < 9)
    want = w.astype(np.float64)
    for b in range(3):
        for p in range(off[b], off[b + 1]):
            if keep[p]:
                want[idx[p]] -= 0.5 * g[b]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1], w[3], rtol=1e-6)            # row 9 read as weight 0
    np.testing.assert_allclose(out[2], w[8], rtol=1e-6)

    # outside a capture the same bad batch raises and writes nothing
    got = w.copy()
    try:
        nc.embedding_bag_sgd(got, idx, off, g, 0.5, "sum", None)
    except IndexError:
        pass
    else:
        raise AssertionError("out-of-range index not reported")
    assert np.array_equal(got, w)
    print("checked", checked)
""")


def test_lean_launch_and_the_one_bag_loop_under_the_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    seed = int(np.random.SeedSequence().entropy % 2**31)
    done = subprocess.run([sys.executable, "-c", SIMULATED, str(seed)], env=env, check=False,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"seed {seed}: " + done.stderr[-3000:]
    assert "checked 20" in done.stdout


@pytest.mark.cuda
def test_lean_launch_on_torch_tensors():
    import torch

    from dlrmprof import kernels
    from dlrmprof.kernels import numba_cuda as nc
    from dlrmprof.kernels import numba_cuda_launch as ncl
    if not torch.cuda.is_available():
        pytest.skip("no GPU")
    rng = np.random.default_rng(5)
    w = torch.from_numpy(rng.standard_normal((1000, 64)).astype(np.float32)).cuda()
    idx = torch.from_numpy(rng.integers(0, 1000, 4096)).cuda()
    off = torch.arange(0, 4097, 8, device="cuda")
    want = kernels.embedding_bag(w.cpu().numpy().astype(np.float64), idx.cpu().numpy(),
                                 off.cpu().numpy(), backend="reference")
    for _ in range(3):      # cached views and kernels give the same answer each time
        got = nc.embedding_bag(w, idx, off, "sum", None)
        np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-5, atol=1e-5)
    assert ncl.launch_path() == "packed"
    bad = idx.clone()
    bad[17] = 1000
    with pytest.raises(IndexError):
        nc.embedding_bag(w, bad, off, "sum", None)
    got = nc.embedding_bag(w, idx, off, "sum", None)   # the counter moved on: no stale error
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-5, atol=1e-5)



def _needs_cuda_core_dispatcher():
    """The packed and specialised launch paths drive numba-cuda's dispatcher (cuda.core's
    `launch` / `LaunchConfig`): the `.[cuda]` extra.  numba's own deprecated numba.cuda
    lacks them; there `launch_path()` falls back to the plain call, tested above."""
    from numba.cuda import dispatcher as nd

    if not (hasattr(nd, "launch") and hasattr(nd, "LaunchConfig")):
        pytest.skip("needs numba-cuda's dispatcher (pip install -e '.[cuda]')")


def test_specialised_launch_path_with_a_stand_in_dispatcher():
    """The real (non-simulator) launch logic, with numba's dispatcher replaced by a stand-in:
    one specialisation per argument signature, the compiled kernel's own launch called with
    the raw device arrays, 3-d grid and block and the launcher's stream; a dispatcher
    without `specialize` falls back to numba's configured call."""
    _needs_cuda_core_dispatcher()
    from numba import config

    from dlrmprof.kernels import numba_cuda_launch as ncl
    if config.ENABLE_CUDASIM:
        pytest.skip("this process runs the simulator")
    calls = {"specialize": 0, "launch": [], "configured": []}

    class Kernel:
        def launch(self, args, griddim, blockdim, stream, sharedmem):
            calls["launch"].append((args, griddim, blockdim, stream, sharedmem))

    class Disp:
        def specialize(self, *args):
            calls["specialize"] += 1
            return type("Spec", (), {"overloads": {"sig": Kernel()}})()

    class Plain:
        def __getitem__(self, cfg):
            return lambda *a: calls["configured"].append((cfg, a))

    class Arr:      # what a device array shows the signature key
        def __init__(self, dt, nd, c=True):
            self.dtype, self.ndim, self._c = np.dtype(dt), nd, c

        def is_c_contiguous(self):
            return self._c

    class L(ncl._Base):
        def __init__(self):
            self.compiled = ncl._Compiled()

        def core_stream(self):
            return "core-stream"

        def stream(self):
            return "numba-stream"

    la = L()
    d, a64, a32 = Disp(), ncl._View(Arr("f4", 2)), ncl._View(Arr("i8", 1))
    la.launch(d, 7, 128, (a64, a32, 3, True))
    la.launch(d, 9, 128, (a64, a32, 5, False))       # same types: no new specialisation
    assert calls["specialize"] == 1 and la.compiled.path == "specialised kernel"
    args, grid, block, stream, shm = calls["launch"][-1]
    assert args == [a64.arr, a32.arr, 5, False]
    assert (grid, block, stream, shm) == ((9, 1, 1), (128, 1, 1), "core-stream", 0)
    la.launch(d, 1, 32, (a64, ncl._View(Arr("i4", 1)), 3, True))   # int32 indices
    la.launch(d, 1, 32, (ncl._View(Arr("f4", 2, c=False)), a32, 3, True))  # strided
    assert calls["specialize"] == 3
    la.launch(Plain(), 4, 64, (a64, 1.5))
    assert calls["configured"] == [((4, 64, "numba-stream"), (a64.arr, 1.5))]


def test_packed_launch_packs_each_array_once(monkeypatch):
    """`_Packed`: numba's own `_prepare_args` packs each device array once (kept on its
    view), scalars every call; cuda.core's launch gets the stream, a configuration kept per
    grid and the compiled kernel; a launch that cuda.core refuses falls back to
    `_Kernel.launch`."""
    _needs_cuda_core_dispatcher()
    from numba.cuda import dispatcher as nd

    from dlrmprof.kernels import numba_cuda_launch as ncl
    packs, launches, fallbacks = [], [], []

    class Kern:
        argument_types = ("array", "array", "int64")
        cooperative = False
        debug = False
        _codelibrary = type("Lib", (), {"get_cufunc": lambda self: type(
            "F", (), {"kernel": "cu-kernel"})()})()

        def _prepare_args(self, ty, val, stream, retr, out):
            packs.append((ty, val))
            out.extend([f"{ty}:{val}"])

        def launch(self, *a):
            fallbacks.append(a)

    monkeypatch.setattr(nd, "LaunchConfig", lambda **kw: ("cfg", tuple(sorted(kw.items()))))
    monkeypatch.setattr(nd, "launch", lambda *a: launches.append(a))
    k = ncl._Packed(Kern())

    class Arr:
        def __init__(self, name):
            self.name, self.dtype, self.ndim = name, np.dtype("f4"), 1

        def is_c_contiguous(self):
            return True

        def __str__(self):
            return self.name

    a, b = ncl._View(Arr("a")), ncl._View(Arr("b"))
    k(4, 128, (a, b, 7), "stream")
    k(4, 128, (a, b, 8), "stream")
    assert [v for _, v in packs] == [a.arr, b.arr, 7, 8]      # arrays once, scalars each time
    assert launches[-1][0] == "stream" and launches[-1][2] == "cu-kernel"
    assert launches[-1][3:] == ("array:a", "array:b", "int64:8")
    assert launches[0][1] is launches[1][1] and len(k._configs) == 1
    assert dict(launches[0][1][1])["grid"] == (4, 1, 1)

    # cuda.core refusing the packed call: the launcher falls back to _Kernel.launch
    def refuse(*a):
        raise TypeError("no")
    monkeypatch.setattr(nd, "launch", refuse)

    class L(ncl._Base):
        def __init__(self):
            self.compiled = ncl._Compiled()

        def core_stream(self):
            return "core"

    la = L()
    disp = object()
    la.compiled._cache[(id(disp), la.compiled.signature((a, b, 1)))] = (disp, ncl._Packed(Kern()))
    la.launch(disp, 2, 64, (a, b, 1))
    assert len(fallbacks) == 1 and "packed launch failed" in la.compiled.path
    la.launch(disp, 2, 64, (a, b, 1))
    assert len(fallbacks) == 2
