"""The lean launch of the numba-cuda kernels (`numba_cuda`): little host work per call.

numba's kernel call (``kernel[grid, block, stream](*args)``) types every argument, converts
every torch tensor through ``__cuda_array_interface__`` and marshals the launch on each
call.  `Launcher` does each of those once:

* the kernel is specialised once per argument signature (numba's ``specialize``) and
  launched straight through cuda.core's ``launch`` as numba's ``_Kernel.launch`` does it,
  each device array's launch arguments packed once by numba's own ``_prepare_args`` and
  kept, the launch configuration kept per grid (`_Packed`); where those names are missing
  it launches through ``_Kernel.launch``, and failing that (another numba-cuda, the CUDA
  simulator) through numba's configured call; `launch_path()` says which;
* a torch tensor's device view is built once per (pointer, shape, strides, dtype), without
  an owner reference (the view is only the pointer: whichever tensor owns that memory now,
  the same key is the same bytes) and without a stream synchronisation;
* the numba stream wrapper is kept per torch stream handle;
* out-of-range lookups add to one persistent device counter per device; `bad()` reads how
  many were added since the last read (a synchronising read, skipped while torch's stream
  is being captured into a CUDA graph).

Numpy inputs (tests, the simulator) get a `HostLauncher` per call: copies in, a numba stream,
results copied back.
"""

from __future__ import annotations

import sys

import numpy as np
from numba import config as _numba_config
from numba import cuda

from dlrmprof.errors import UserError

_VIEWS_MAX = 4096


def _torch():
    return sys.modules.get("torch")


def _is_torch(x) -> bool:
    t = _torch()
    return t is not None and isinstance(x, t.Tensor)


class _Packed:
    """A compiled kernel launched straight through cuda.core, as numba's `_Kernel.launch`
    does it, with each device array's launch arguments packed once (by numba's own
    `_prepare_args`) and kept on its view, and the launch configuration kept per grid."""

    def __init__(self, kern):
        from numba.cuda import dispatcher as nd
        if getattr(kern, "debug", False):
            raise AttributeError("debug kernels check errors after the launch")
        self.kern = kern
        self.types = tuple(kern.argument_types)
        self.cukernel = kern._codelibrary.get_cufunc().kernel
        self._launch, self._config_cls = nd.launch, nd.LaunchConfig
        self._coop = ("is_cooperative" if nd.CUDA_CORE_GE_1_0 else "cooperative_launch",
                      bool(kern.cooperative))
        self._configs: dict = {}
        self.launched = False

    def config(self, blocks: int, threads: int):
        c = self._configs.get((blocks, threads))
        if c is None:
            c = self._configs[blocks, threads] = self._config_cls(
                grid=(blocks, 1, 1), block=(threads, 1, 1), shmem_size=0,
                **{self._coop[0]: self._coop[1]})
        return c

    def kernel_args(self, args, stream) -> list:
        out: list = []
        prep = self.kern._prepare_args
        for ty, a in zip(self.types, args):
            if isinstance(a, _View):
                if a.packed is None:
                    packed: list = []
                    prep(ty, a.arr, stream, [], packed)
                    a.packed = packed
                out.extend(a.packed)
            else:
                prep(ty, a, stream, [], out)
        return out

    def __call__(self, blocks: int, threads: int, args, stream) -> None:
        self._launch(stream, self.config(blocks, threads), self.cukernel,
                     *self.kernel_args(args, stream))


class _Compiled:
    """Specialised kernels per (dispatcher, argument signature), and how they launch:
    'packed' (`_Packed`), 'specialised kernel' (numba's `_Kernel.launch`), or 'dispatcher'
    (numba's configured call: the CUDA simulator, or a numba-cuda without those names)."""

    def __init__(self):
        self._cache: dict = {}
        self.path = "dispatcher"

    @staticmethod
    def signature(args) -> tuple:
        return tuple(a.sig if isinstance(a, _View) else type(a) for a in args)

    def get(self, disp, args):
        key = (id(disp), self.signature(args))
        k = self._cache.get(key)
        if k is None:
            k = self._cache[key] = (disp, self._specialise(disp, args))
        return k[1]

    def unpack(self, disp, args, exc: Exception):
        """Fall back from a packed launch that failed to numba's `_Kernel.launch`."""
        key = (id(disp), self.signature(args))
        kern = self._cache[key][1].kern
        self._cache[key] = (disp, kern)
        self.path = f"specialised kernel (the packed launch failed: {type(exc).__name__}: {exc})"
        return kern

    def _specialise(self, disp, args):
        if _numba_config.ENABLE_CUDASIM:
            return None
        try:
            spec = disp.specialize(*[_raw(a) for a in args])
            kern = next(iter(spec.overloads.values()))
            kern.launch   # noqa: B018 - the method the launch uses
            from numba.cuda.cudadrv import driver
            driver._to_core_stream  # noqa: B018
        except (AttributeError, StopIteration, ImportError):
            return None
        try:
            packed = _Packed(kern)
        except (AttributeError, ImportError):
            self.path = "specialised kernel"
            return kern
        self.path = "packed"
        return packed


class _View:
    """A device array, its numba signature key (dtype, ndim, C-contiguous) and, once
    packed, its launch arguments."""
    __slots__ = ("arr", "sig", "packed")

    def __init__(self, arr):
        self.arr = arr
        self.sig = (arr.dtype.str, arr.ndim, bool(arr.is_c_contiguous()))
        self.packed = None


def _raw(a):
    return a.arr if isinstance(a, _View) else a


class _Base:
    def __init__(self):
        self.compiled = _COMPILED

    def args(self, data, sb, indices, offsets, psw):
        """Device views (data, sb, indices, offsets, per-sample weights or a placeholder,
        has weights)."""
        v = self.view
        dv = v(data)
        return (dv, dv if sb is None or sb is data else v(sb), v(indices), v(offsets),
                self.placeholder() if psw is None else v(psw), psw is not None)

    def launch(self, disp, blocks: int, threads: int, args) -> None:
        kern = self.compiled.get(disp, args)
        if isinstance(kern, _Packed):
            if kern.launched:
                kern(blocks, threads, args, self.core_stream())
                return
            try:        # the first launch tells whether cuda.core takes the packed call
                kern(blocks, threads, args, self.core_stream())
                kern.launched = True
                return
            except (TypeError, AttributeError, ValueError) as exc:
                kern = self.compiled.unpack(disp, args, exc)
        raw = [_raw(a) for a in args]
        if kern is None:
            disp[blocks, threads, self.stream()](*raw)
        else:
            kern.launch(raw, (blocks, 1, 1), (threads, 1, 1), self.core_stream(), 0)


class Launcher(_Base):
    """Launches on one CUDA device from torch tensors, on torch's current stream."""

    def __init__(self, device):
        super().__init__()
        import torch
        self.torch = torch
        self.device = device
        self._views: dict = {}
        self._streams: dict = {}
        self._err_t = torch.zeros(1, dtype=torch.int64, device=device)
        self.err = self.view(self._err_t)
        self._seen = 0
        ph = torch.zeros(1, dtype=torch.float32, device=device)
        self._ph = (ph, self.view(ph))

    def view(self, t) -> _View:
        key = (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype)
        v = self._views.get(key)
        if v is None:
            if len(self._views) >= _VIEWS_MAX:
                self._views.clear()
            desc = dict(t.detach().__cuda_array_interface__)
            desc.pop("stream", None)    # no synchronisation: the launch is on that stream
            v = self._views[key] = _View(cuda.from_cuda_array_interface(desc, owner=None,
                                                                        sync=False))
        return v

    def placeholder(self) -> _View:
        return self._ph[1]

    def _handle(self) -> int:
        return self.torch.cuda.current_stream(self.device).cuda_stream

    def stream(self):
        h = self._handle()
        s = self._streams.get(h)
        if s is None:
            s = self._streams[h] = [cuda.external_stream(h), None]
        return s[0]

    def core_stream(self):
        h = self._handle()
        s = self._streams.get(h)
        if s is None or s[1] is None:
            from numba.cuda.cudadrv import driver
            st = self.stream()
            s = self._streams[h]
            s[1] = driver._to_core_stream(st)
        return s[1]

    def capturing(self) -> bool:
        return bool(self.torch.cuda.is_current_stream_capturing())

    def empty(self, shape):
        t = self.torch.empty(shape, dtype=self.torch.float32, device=self.device)
        return t, self.view(t)

    def bad(self) -> int:
        """Out-of-range lookups counted since the last read (synchronises the stream)."""
        n = int(self._err_t.item())
        new, self._seen = n - self._seen, n
        return new

    def result(self, result, out):
        return result

    def writeback(self, weight, dw) -> None:
        pass


class HostLauncher(_Base):
    """numpy inputs: copied to the device on a numba stream, results copied back."""

    def __init__(self):
        super().__init__()
        self._stream = cuda.stream()
        self._err = cuda.to_device(np.zeros(1, dtype=np.int64), stream=self._stream)
        self.err = _View(self._err)

    def view(self, x) -> _View:
        if hasattr(x, "copy_to_host"):
            return _View(x)
        return _View(cuda.to_device(np.ascontiguousarray(x), stream=self._stream))

    def placeholder(self) -> _View:
        return _View(cuda.device_array(1, dtype=np.float32, stream=self._stream))

    def stream(self):
        return self._stream

    def core_stream(self):
        from numba.cuda.cudadrv import driver
        return driver._to_core_stream(self._stream)

    def capturing(self) -> bool:
        return False

    def empty(self, shape):
        d = cuda.device_array(shape, dtype=np.float32, stream=self._stream)
        return d, _View(d)

    def _host(self, dev):
        host = dev.copy_to_host(stream=self._stream)
        self._stream.synchronize()
        return host

    def bad(self) -> int:
        return int(self._host(self._err)[0])

    def result(self, result, out):
        return self._host(out.arr)

    def writeback(self, weight, dw) -> None:
        weight[...] = self._host(dw.arr)


_COMPILED = _Compiled()
_LAUNCHERS: dict = {}


def launcher_for(*arrays):
    """The launcher for these inputs: torch CUDA tensors -> their device's `Launcher`
    (kept); numpy -> a fresh `HostLauncher`.  UserError for tensors not on one CUDA device."""
    tensors = [a for a in arrays if a is not None and _is_torch(a)]
    if not tensors:
        return HostLauncher()
    devices = {t.device for t in tensors}
    if len(tensors) != sum(a is not None for a in arrays) or len(devices) != 1 \
            or next(iter(devices)).type != "cuda":
        got = sorted({str(getattr(a, "device", "numpy")) for a in arrays if a is not None})
        raise UserError(f"backend 'numba-cuda' needs every tensor on one CUDA device, got {got}")
    dev = next(iter(devices))
    L = _LAUNCHERS.get(dev)
    if L is None:
        L = _LAUNCHERS[dev] = Launcher(dev)
    return L


def deferred_bad(device=None) -> int:
    """Out-of-range lookups counted (and not yet read) on `device`'s launcher (all devices
    when None)."""
    if device is not None:
        torch = _torch()
        device = torch.device(device)
        if device.index is None:
            device = torch.device(device.type, torch.cuda.current_device())
    return sum(L.bad() for d, L in _LAUNCHERS.items() if device is None or d == device)


def launch_path() -> str:
    """How the last kernel compiled here launches: 'packed', 'specialised kernel' or
    'dispatcher' (see `_Compiled`)."""
    return _COMPILED.path
