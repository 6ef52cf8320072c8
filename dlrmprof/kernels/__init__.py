"""DLRM kernels: one signature per op, several backends.

Backends: ``reference`` (numpy, float64 accumulation, the oracle for tests), ``numba``
(CPU, parallel), ``torch`` (CPU and CUDA: runs where the tensors live), ``numba-cuda``
(GPU; embedding-bag ops).  Numpy in -> numpy out, torch in -> torch out (the type of the
first array argument decides).  A backend that cannot run here raises `UserError` saying
what is missing; nothing ever falls back silently to another backend.

Jagged bags use the FBGEMM / TorchRec layout (B bags, `offsets` has B+1 entries)::

    indices  = [ 7  2  9 | 4 |   | 1  1 ]      nnz = 6
    offsets  = [ 0        3   4   4      6 ]   bag b = indices[offsets[b]:offsets[b+1]]
    pooled   = [ w7+w2+w9, w4, 0, 2*w1 ]       mode="sum"; an empty bag pools to zeros

Shapes (B batch, T sparse tables, D embedding dim, R table rows)::

    embedding_bag(weight [R, D], indices [nnz], offsets [B+1]) -> [B, D]
    embedding_bag_sgd(weight, indices, offsets, grad_output [B, D], lr)   in place, -> None
    interaction(dense [B, D], pooled [B, T, D]) -> [B, D + T(T+1)/2]
    interaction_backward(dense, pooled, grad_out) -> (grad_dense [B, D], grad_pooled [B, T, D])
    linear(x [M, K], weight [N, K], bias [N] | None) -> [M, N]
    linear_backward(x, weight, grad_out [M, N]) -> (grad_x, grad_weight, grad_bias)

``mode="mean"`` divides each bag by its length (weighted mean: sum of w_i * row_i over the
bag, divided by the bag length).  ``per_sample_weights`` has one weight per index.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from dlrmprof.errors import UserError
from dlrmprof.kernels.cost import COST_OPS, Cost, cost, lines_per_row

__all__ = [
    "BACKENDS", "COST_OPS", "OPS", "Cost", "backends", "cost", "embedding_bag", "resolve",
    "embedding_bag_sgd", "interaction", "interaction_backward", "linear", "linear_backward",
    "numba_asm", "qembedding_bag", "lines_per_row",
]

BACKENDS = ("reference", "numba", "torch", "numba-cuda")
OPS = ("embedding_bag", "embedding_bag_sgd", "interaction", "interaction_backward",
       "linear", "linear_backward", "qembedding_bag")

_IMPLEMENTS = {
    "reference": set(OPS),
    "numba": set(OPS),
    "torch": set(OPS),
    "numba-cuda": {"embedding_bag", "embedding_bag_sgd", "qembedding_bag"},
}
# ops that live outside a backend's main module
_OP_MODULES = {
    ("qembedding_bag", "reference"): "dlrmprof.kernels.quant",
    ("qembedding_bag", "numba"): "dlrmprof.kernels.numba_quant",
    ("qembedding_bag", "torch"): "dlrmprof.kernels.torch_quant",
    ("qembedding_bag", "numba-cuda"): "dlrmprof.kernels.numba_cuda_quant",
}
_MODULES = {
    "reference": "dlrmprof.kernels.reference",
    "numba": "dlrmprof.kernels.numba_cpu",
    "torch": "dlrmprof.kernels.torch_ops",
    "numba-cuda": "dlrmprof.kernels.numba_cuda",
}
# what each backend wants its arrays as
_WANTS = {"reference": "numpy", "numba": "numpy", "torch": "torch", "numba-cuda": "cuda"}


@functools.lru_cache(maxsize=None)
def _unavailable(name: str) -> str | None:
    """Why backend `name` cannot run here, or None when it can."""
    if name == "reference":
        return None
    if name == "numba":
        try:
            import numba  # noqa: F401
        except ImportError:
            return "numba is not installed (pip install numba)"
        return None
    if name == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:
            return "torch is not installed (pip install torch)"
        return None
    if name == "numba-cuda":
        try:
            from numba import cuda
        except ImportError:
            return "numba's CUDA target is not installed (pip install numba-cuda)"
        try:
            ok = cuda.is_available()
        except Exception as exc:  # a broken driver install reports itself this way
            return f"numba cannot use CUDA here ({type(exc).__name__}: {exc})"
        if not ok:
            return "no CUDA GPU / driver visible to numba on this host"
        return None
    raise AssertionError(name)


def backends(op: str) -> list[str]:
    """Backends that implement `op` and can run on this host."""
    if op not in OPS:
        raise UserError(f"unknown kernel op {op!r}; known: {', '.join(OPS)}")
    return [b for b in BACKENDS if op in _IMPLEMENTS[b] and _unavailable(b) is None]


_RESOLVED: dict = {}


def _impl(op: str, backend: str):
    """The backend's function for `op` (resolved once; UserError if it cannot run here)."""
    fn = _RESOLVED.get((op, backend))
    if fn is None:
        fn = _RESOLVED[(op, backend)] = _resolve(op, backend)
    return fn


def resolve(op: str, backend: str):
    """The backend's own function for `op`, for hot loops that check their inputs once up
    front: it takes the backend's native arrays (numpy for reference/numba, torch for torch
    and numba-cuda) positionally, in the order of the public function, with `mode` and
    `per_sample_weights` (and `lr` for the SGD) given explicitly, and skips the public
    entry point's shape checks and conversions.  Index range checks stay in the kernels.
    UserError if the backend cannot run here."""
    return _impl(op, backend)


def _resolve(op: str, backend: str):
    if backend not in BACKENDS:
        raise UserError(f"unknown kernel backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if op not in _IMPLEMENTS[backend]:
        offered = ", ".join(sorted(_IMPLEMENTS[backend]))
        raise UserError(f"backend {backend!r} has no {op} kernel (it offers: {offered})")
    why = _unavailable(backend)
    if why is not None:
        raise UserError(f"kernel backend {backend!r} is not available: {why}")
    name = _OP_MODULES.get((op, backend), _MODULES[backend])
    module = sys.modules.get(name)
    if module is None:
        import importlib
        module = importlib.import_module(name)
    return getattr(module, op)


# ------------------------------------------------------------------------- array plumbing

def _is_torch(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _to_numpy(x, backend: str, name: str):
    if x is None or isinstance(x, np.ndarray):
        return x
    if _is_torch(x):
        if x.device.type != "cpu":
            raise UserError(f"backend {backend!r} runs on the CPU but {name} is on {x.device}; "
                            f"use backend 'torch' or 'numba-cuda' for GPU tensors")
        x = x.detach()
        try:
            return x.numpy()
        except TypeError as exc:  # bfloat16 and friends have no numpy dtype
            raise UserError(f"backend {backend!r} cannot take {name} of dtype {x.dtype} "
                            f"({exc}); use backend 'torch'") from None
    return np.asarray(x)


def _to_torch(x, device=None):
    import torch
    if x is None or isinstance(x, torch.Tensor):
        return x
    t = torch.from_numpy(np.asarray(x))
    return t if device is None else t.to(device)


def _convert(backend: str, arrays: dict) -> dict:
    want = _WANTS[backend]
    if backend == "numba":
        for k, v in arrays.items():
            _check(not isinstance(v, np.ndarray) or v.dtype.isnative,
                   lambda: f"backend 'numba' takes arrays in this machine's byte order; {k} is "
                   f"{v.dtype.str}: pass {k}.astype({v.dtype.newbyteorder('=').str!r})")
    if want == "numpy" and all(v is None or type(v) is np.ndarray for v in arrays.values()):
        return arrays
    if want == "numpy":
        return {k: _to_numpy(v, backend, k) for k, v in arrays.items()}
    if want == "torch":
        return {k: _to_torch(v) for k, v in arrays.items()}
    # numba-cuda: torch CUDA tensors stay (zero-copy views); with any tensor present the
    # numpy arrays join it on its device; all-numpy inputs are copied in and out
    like = next((v for v in arrays.values() if _is_torch(v)), None)
    if like is None:
        return arrays
    return {k: (v if v is None or _is_torch(v) else _to_torch(v, like.device))
            for k, v in arrays.items()}


def _back(result, like_torch: bool):
    """Return `result` in the caller's array kind."""
    if isinstance(result, tuple):
        return tuple(_back(r, like_torch) for r in result)
    if like_torch:
        return _to_torch(result)
    if _is_torch(result):
        return result.detach().cpu().numpy()
    return result


# ----------------------------------------------------------------------------- validation

def _ndim(x):
    return len(x.shape)


def _check(cond: bool, msg):
    """Raise ValueError(msg()) unless cond (the message is only formatted on failure)."""
    if not cond:
        raise ValueError(msg())


def _is_float(x) -> bool:
    if isinstance(x, np.ndarray):
        return x.dtype.kind == "f"
    if _is_torch(x):
        return x.is_floating_point()
    return np.asarray(x).dtype.kind == "f"


def _is_int(x) -> bool:
    if isinstance(x, np.ndarray):
        return x.dtype.kind in "iu"
    if _is_torch(x):
        torch = sys.modules["torch"]
        return not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool
    return np.asarray(x).dtype.kind in "iu"


def _check_bags(op, weight, indices, offsets, mode, per_sample_weights) -> bool:
    """UserError on malformed bags; True when they took the all-numpy fast check (numpy
    arrays, no per-sample weights), False when they were checked the long way."""
    if (type(weight) is np.ndarray and type(indices) is np.ndarray
            and type(offsets) is np.ndarray and per_sample_weights is None
            and mode in ("sum", "mean") and weight.ndim == 2 and weight.dtype.kind == "f"
            and indices.ndim == 1 and indices.dtype.kind in "iu" and offsets.ndim == 1
            and offsets.dtype.kind in "iu" and offsets.shape[0] >= 1
            and offsets[0] == 0 and offsets[-1] == indices.shape[0]
            and weight.dtype.isnative and indices.dtype.isnative and offsets.dtype.isnative):
        return True  # the common all-numpy case, checked without building messages
    _check(mode in ("sum", "mean"), lambda: f"{op}: mode must be 'sum' or 'mean', got {mode!r}")
    _check(_ndim(weight) == 2 and _is_float(weight),
           lambda: f"{op}: weight must be a 2-D float array [R, D], got shape "
           f"{tuple(weight.shape)} dtype {weight.dtype}")
    _check(_ndim(indices) == 1 and _is_int(indices),
           lambda: f"{op}: indices must be a 1-D integer array, got shape {tuple(indices.shape)} "
           f"dtype {indices.dtype}")
    _check(_ndim(offsets) == 1 and _is_int(offsets) and offsets.shape[0] >= 1,
           lambda: f"{op}: offsets must be a 1-D integer array of B+1 entries, got shape "
           f"{tuple(offsets.shape)} dtype {offsets.dtype}")
    if per_sample_weights is not None:
        _check(_ndim(per_sample_weights) == 1 and _is_float(per_sample_weights)
               and per_sample_weights.shape[0] == indices.shape[0],
               lambda: f"{op}: per_sample_weights must be 1-D float with one entry per index "
               f"({indices.shape[0]}), got shape {tuple(per_sample_weights.shape)}")
    on_cpu = not _is_torch(offsets) or offsets.device.type == "cpu"
    if on_cpu:  # reading offsets on a GPU would synchronise every call
        first, last = int(offsets[0]), int(offsets[-1])
        _check(first == 0 and last == indices.shape[0],
               lambda: f"{op}: offsets must start at 0 and end at len(indices)={indices.shape[0]}, "
               f"got {first} .. {last}")
    return False


# -------------------------------------------------------------------------------- the ops

_FAST: list = []


def _numba_fast():
    """numba_cpu.embedding_bag_fast once the numba backend has resolved, else None."""
    if not _FAST:
        try:
            _impl("embedding_bag", "numba")
        except UserError:
            return None   # the general path raises it
        _FAST.append(sys.modules[_MODULES["numba"]].embedding_bag_fast)
    return _FAST[0]


def embedding_bag(weight, indices, offsets, mode="sum", per_sample_weights=None,
                  backend="numba"):
    """Pool the rows of `weight` named by each bag: [R, D] x jagged bags -> [B, D]."""
    if (backend == "numba" and per_sample_weights is None and type(weight) is np.ndarray
            and type(indices) is np.ndarray and type(offsets) is np.ndarray):
        fast = _numba_fast()
        if fast is not None:
            out = fast(weight, indices, offsets, mode)
            if out is not None:
                return out
    fn = _impl("embedding_bag", backend)
    if _WANTS[backend] == "numpy" and _is_torch(weight):
        # CPU tensors: zero-copy numpy views first, so the checks below take the fast path
        out = embedding_bag(*(_to_numpy(x, backend, name) for x, name in (
            (weight, "weight"), (indices, "indices"), (offsets, "offsets"))), mode=mode,
            per_sample_weights=_to_numpy(per_sample_weights, backend, "per_sample_weights"),
            backend=backend)
        return _to_torch(out)
    if _check_bags("embedding_bag", weight, indices, offsets, mode, per_sample_weights) and \
            _WANTS[backend] == "numpy":
        return fn(weight, indices, offsets, mode, None)   # all numpy, no weights: fast path
    a = _convert(backend, dict(weight=weight, indices=indices, offsets=offsets,
                               per_sample_weights=per_sample_weights))
    out = fn(a["weight"], a["indices"], a["offsets"], mode, a["per_sample_weights"])
    return _back(out, _is_torch(weight))


def embedding_bag_sgd(weight, indices, offsets, grad_output, lr, mode="sum",
                      per_sample_weights=None, backend="numba"):
    """Fused sparse SGD, in place: for every lookup (bag b, position p) with index i,
    ``weight[i] -= lr * grad_output[b] * w_p / (len_b if mode == "mean")``.  Contributions
    to a row that repeats (inside a bag or across bags) all add up.  Returns None."""
    fn = _impl("embedding_bag_sgd", backend)
    _check_bags("embedding_bag_sgd", weight, indices, offsets, mode, per_sample_weights)
    B, D = offsets.shape[0] - 1, weight.shape[1]
    _check(tuple(grad_output.shape) == (B, D),
           lambda: f"embedding_bag_sgd: grad_output must be [B, D] = [{B}, {D}], got "
           f"{tuple(grad_output.shape)}")
    a = _convert(backend, dict(weight=weight, indices=indices, offsets=offsets,
                               grad_output=grad_output, per_sample_weights=per_sample_weights))
    if _WANTS[backend] == "numpy":
        _check(a["weight"].flags.writeable,
               lambda: "embedding_bag_sgd: weight must be writeable (it is updated in place)")
    fn(a["weight"], a["indices"], a["offsets"], a["grad_output"], float(lr), mode,
       a["per_sample_weights"])


def _call_dense(fn, backend: str, like, **arrays):
    """fn(*arrays) with the arrays in the backend's kind (numpy ones C-contiguous; None
    stays None), the result back in the kind of `like`."""
    a = _convert(backend, arrays)
    if _WANTS[backend] == "numpy":
        a = {k: (None if v is None else np.ascontiguousarray(v)) for k, v in a.items()}
    return _back(fn(*a.values()), _is_torch(like))


def _check_interaction(op, dense, pooled):
    _check(_ndim(dense) == 2 and _ndim(pooled) == 3 and _is_float(dense) and _is_float(pooled),
           lambda: f"{op}: dense must be [B, D] and pooled [B, T, D] float arrays, got "
           f"{tuple(dense.shape)} and {tuple(pooled.shape)}")
    _check(pooled.shape[0] == dense.shape[0] and pooled.shape[2] == dense.shape[1],
           lambda: f"{op}: dense {tuple(dense.shape)} and pooled {tuple(pooled.shape)} "
           "disagree on B or D")


def interaction(dense, pooled, backend="numba"):
    """Dense vector concatenated with the strictly lower triangle of Z Z^T, Z = [dense;
    pooled] ([B, T+1, D]), pairs ordered row-major over i > j: (1,0), (2,0), (2,1), ..."""
    fn = _impl("interaction", backend)
    _check_interaction("interaction", dense, pooled)
    return _call_dense(fn, backend, dense, dense=dense, pooled=pooled)


def interaction_backward(dense, pooled, grad_out, backend="numba"):
    """Gradients of `interaction` w.r.t. dense and pooled: (grad_dense, grad_pooled)."""
    fn = _impl("interaction_backward", backend)
    _check_interaction("interaction_backward", dense, pooled)
    B, T, D = pooled.shape
    _check(tuple(grad_out.shape) == (B, D + (T + 1) * T // 2),
           lambda: f"interaction_backward: grad_out must be [{B}, {D + (T + 1) * T // 2}], got "
           f"{tuple(grad_out.shape)}")
    return _call_dense(fn, backend, dense, dense=dense, pooled=pooled, grad_out=grad_out)


def _check_linear(op, x, weight):
    _check(_ndim(x) == 2 and _ndim(weight) == 2 and _is_float(x) and _is_float(weight),
           lambda: f"{op}: x must be [M, K] and weight [N, K] float arrays, got "
           f"{tuple(x.shape)} and {tuple(weight.shape)}")
    _check(x.shape[1] == weight.shape[1],
           lambda: f"{op}: x has {x.shape[1]} features but weight expects {weight.shape[1]}")


def linear(x, weight, bias=None, backend="torch"):
    """x @ weight.T + bias (torch: fp32 or bf16 GEMM; numba: blocked kernel for SIMD study)."""
    fn = _impl("linear", backend)
    _check_linear("linear", x, weight)
    if bias is not None:
        _check(tuple(bias.shape) == (weight.shape[0],),
               lambda: f"linear: bias must be [{weight.shape[0]}], got {tuple(bias.shape)}")
    return _call_dense(fn, backend, x, x=x, weight=weight, bias=bias)


def linear_backward(x, weight, grad_out, backend="torch"):
    """Gradients of `linear`: (grad_x [M, K], grad_weight [N, K], grad_bias [N])."""
    fn = _impl("linear_backward", backend)
    _check_linear("linear_backward", x, weight)
    _check(tuple(grad_out.shape) == (x.shape[0], weight.shape[0]),
           lambda: f"linear_backward: grad_out must be [{x.shape[0]}, {weight.shape[0]}], got "
           f"{tuple(grad_out.shape)}")
    return _call_dense(fn, backend, x, x=x, weight=weight, grad_out=grad_out)


def qembedding_bag(table, indices, offsets, mode="sum", per_sample_weights=None,
                   backend="numba"):
    """Pool the rows of a packed table (`quant.QTable`: fp32, fp16, bf16, row-wise int8 or
    int4) named by each bag -> [B, D]: float32, float64 from the reference.  Numpy inputs."""
    fn = _impl("qembedding_bag", backend)
    from dlrmprof.kernels import quant
    quant.check_bags(table, indices, offsets, mode, per_sample_weights)
    return fn(table.dtype, table.dim, table.data, indices, offsets, mode, per_sample_weights)


def numba_asm(op: str, dim: int = 64) -> str:
    """Assembly text of the numba CPU kernel behind `op` (float32 weights, int64 indices), as
    this process compiles it: set NUMBA_CPU_NAME / NUMBA_CPU_FEATURES before importing numba
    (a child process per ISA level) and count xmm / ymm / zmm registers in the text.
    `dim`: the embedding width whose specialised embedding_bag kernel to show."""
    _impl(op, "numba")
    if op == "qembedding_bag":
        raise UserError("numba_asm shows the fp32 kernels; for qembedding_bag use "
                        "kernels.numba_quant.kernels(dtype, D)[1].inspect_asm()")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise UserError(f"numba_asm: dim must be a positive int, got {dim!r}")
    from dlrmprof.kernels.numba_inspect import numba_asm as asm
    return asm(op, dim)
