"""Embedding tables stored in fewer bytes: fp16, bf16, and row-wise int8 / int4.

Layouts (one row of a table of dimension D; FBGEMM's "fused row-wise" formats, so a packed
table is exactly what ``torch.ops.quantized.embedding_bag_byte_prepack`` /
``embedding_bag_4bit_prepack`` produce and their lookups and unpack ops take)::

    fp32  [ D x float32 ]                                           4 D bytes
    fp16  [ D x float16 ]                                           2 D bytes
    bf16  [ D x uint16: the upper half of the float32 bits ]        2 D bytes
    int8  [ D x uint8 q | float32 scale | float32 bias ]            D + 8 bytes
    int4  [ D/2 x uint8: column 2k in the low nibble, 2k+1 high |
            float16 scale | float16 bias ]                          D/2 + 4 bytes

A quantized value dequantizes to ``q * scale + bias``.  Row-wise quantization maps the
row's [min, max] onto 0..255 (int8) or 0..15 (int4), rounding to nearest (ties to even, as
``lrintf``), with FBGEMM's float32 arithmetic so the bytes agree with torch's prepack
exactly: int8 ``scale = (max - min) / 255``, ``bias = min``, ``q = rint((x - min) * 255 /
(max - min + 1e-8))``; int4 rounds ``min`` to float16 first, ``scale = (max - min) / 15``
rounded to float16 (1.0 for a constant row), ``q = rint((x - min) / scale)`` clamped to 0..15.
fp16 and bf16 round to nearest even.  int4 takes an even D only (the kernels here unpack
whole bytes).

`quantize` (post-training, from a float32 table) and `dequantize` (to float64: the exact
values a lookup must sum) work on numpy arrays; `from_torch` / `to_torch` move packed
tables to and from torch without copying their bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlrmprof.errors import UserError

EMB_DTYPES = ("fp32", "fp16", "bf16", "int8", "int4")
_STORAGE = {"fp32": np.float32, "fp16": np.float16, "bf16": np.uint16, "int8": np.uint8,
            "int4": np.uint8}


def check_emb_dtype(dtype: str, dim: int | None = None, where: str = "--emb-dtype") -> str:
    """`dtype` if it names an embedding dtype that dimension `dim` can use, else UserError."""
    if dtype not in EMB_DTYPES:
        raise UserError(f"{where}: unknown embedding dtype {dtype!r}; choose one of "
                        f"{', '.join(EMB_DTYPES)}")
    if dim is not None and (dim < 1 or (dtype == "int4" and dim % 2)):
        why = "int4 packs two values a byte: D must be even" if dim >= 1 else "D must be >= 1"
        raise UserError(f"{where} {dtype}: embedding dimension {dim} is not supported ({why})")
    return dtype


def row_bytes(dtype: str, dim: int) -> int:
    """Bytes one row of dimension `dim` takes in `dtype`, scale and bias included."""
    check_emb_dtype(dtype, dim, where="row_bytes")
    return {"fp32": 4 * dim, "fp16": 2 * dim, "bf16": 2 * dim, "int8": dim + 8,
            "int4": dim // 2 + 4}[dtype]


def packed_columns(dtype: str, dim: int) -> int:
    """Columns of the packed [R, C] storage array."""
    return dim if dtype in ("fp32", "fp16", "bf16") else row_bytes(dtype, dim)


def packed_dim(dtype: str, packed) -> int:
    """D of a packed [R, C] table (the inverse of `packed_columns`)."""
    c = int(packed.shape[1])
    return {"int8": c - 8, "int4": 2 * (c - 4)}.get(dtype, c)


@dataclass(frozen=True)
class QTable:
    """A packed table: `data` [R, packed_columns(dtype, dim)] in the dtype's storage type."""
    dtype: str
    dim: int
    data: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.data.shape[0])

    @property
    def row_bytes(self) -> int:
        return row_bytes(self.dtype, self.dim)

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes


def as_qtable(dtype: str, data) -> QTable:
    """Wrap a packed numpy array (checked: storage type, 2-D, a valid D) as a QTable."""
    check_emb_dtype(dtype, where="as_qtable")
    if not isinstance(data, np.ndarray):
        data = from_torch(dtype, data)
    if data.ndim != 2 or data.dtype != np.dtype(_STORAGE[dtype]):
        raise UserError(f"as_qtable: a packed {dtype} table is a 2-D "
                        f"{np.dtype(_STORAGE[dtype]).name} array, got {data.ndim}-D {data.dtype}")
    dim = packed_dim(dtype, data)
    check_emb_dtype(dtype, dim, where="as_qtable")
    return QTable(dtype, dim, data)


# ------------------------------------------------------------------------------- quantize

def float_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even; NaN stays NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + (np.uint32(0x7FFF) + ((u >> 16) & 1))) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


def bf16_bits_to_float(b: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32, exactly."""
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def _int8_rows(w: np.ndarray) -> np.ndarray:
    R, D = w.shape
    out = np.empty((R, D + 8), np.uint8)
    if R == 0:
        return out
    mn = w.min(axis=1, keepdims=True)
    mx = w.max(axis=1, keepdims=True)
    rng = mx - mn
    scale = rng / np.float32(255.0)
    inv = np.float32(255.0) / (rng + np.float32(1e-8))
    out[:, :D] = np.clip(np.rint((w - mn) * inv), 0, 255).astype(np.uint8)
    out[:, D:D + 4] = scale.astype(np.float32).view(np.uint8)
    out[:, D + 4:] = mn.astype(np.float32).view(np.uint8)
    return out


def _int4_rows(w: np.ndarray) -> np.ndarray:
    R, D = w.shape
    out = np.empty((R, D // 2 + 4), np.uint8)
    if R == 0:
        return out
    mn = w.min(axis=1, keepdims=True).astype(np.float16).astype(np.float32)
    mx = w.max(axis=1, keepdims=True)
    rng = mx - mn
    with np.errstate(over="ignore", divide="ignore"):
        scale = np.where(rng == 0, np.float32(1.0), rng / np.float32(15.0))
        scale = scale.astype(np.float16).astype(np.float32)
        scale = np.where(scale == 0, np.float32(1.0), scale)
        inv = np.float32(1.0) / scale
    bad = np.isinf(inv)
    scale = np.where(bad, np.float32(1.0), scale)
    inv = np.where(bad, np.float32(1.0), inv)
    q = np.clip(np.rint((w - mn) * inv), 0, 15).astype(np.uint8)
    out[:, :D // 2] = q[:, 0::2] | (q[:, 1::2] << 4)
    out[:, D // 2:D // 2 + 2] = scale.astype(np.float16).view(np.uint8)
    out[:, D // 2 + 2:] = mn.astype(np.float16).view(np.uint8)
    return out


def quantize(weight: np.ndarray, dtype: str) -> QTable:
    """Pack a float32 [R, D] table into `dtype` (post-training, row-wise for int8/int4)."""
    w = np.asarray(weight)
    if w.ndim != 2 or w.dtype.kind != "f":
        raise UserError(f"quantize: weight must be a 2-D float array [R, D], got "
                        f"{w.ndim}-D {w.dtype}")
    check_emb_dtype(dtype, int(w.shape[1]), where="quantize")
    w = np.ascontiguousarray(w, dtype=np.float32)
    if dtype == "fp32":
        data = w.copy()
    elif dtype == "fp16":
        data = w.astype(np.float16)
    elif dtype == "bf16":
        data = float_to_bf16_bits(w)
    elif dtype == "int8":
        data = _int8_rows(w)
    else:
        data = _int4_rows(w)
    return QTable(dtype, int(w.shape[1]), data)


def scale_bias(table: QTable) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (scale, bias) as float64 [R] (1 and 0 for the float dtypes)."""
    d, D = table.data, table.dim
    if table.dtype == "int8":
        sb = np.ascontiguousarray(d[:, D:]).view(np.float32)
    elif table.dtype == "int4":
        sb = np.ascontiguousarray(d[:, D // 2:]).view(np.float16)
    else:
        return np.ones(table.rows), np.zeros(table.rows)
    return sb[:, 0].astype(np.float64), sb[:, 1].astype(np.float64)


def codes(table: QTable) -> np.ndarray:
    """The stored values as float64 [R, D]: the quantized integers for int8/int4, the
    values themselves for the float dtypes."""
    d, D = table.data, table.dim
    if table.dtype == "int8":
        return d[:, :D].astype(np.float64)
    if table.dtype == "int4":
        q = np.empty((table.rows, D), np.float64)
        q[:, 0::2] = d[:, :D // 2] & 15
        q[:, 1::2] = d[:, :D // 2] >> 4
        return q
    if table.dtype == "bf16":
        return bf16_bits_to_float(d).astype(np.float64)
    return d.astype(np.float64)


def dequantize(table: QTable) -> np.ndarray:
    """The table's values as float64 [R, D]: ``q * scale + bias`` for int8/int4 (exact in
    float64), the stored value for the float dtypes."""
    q = codes(table)
    if table.dtype in ("int8", "int4"):
        scale, bias = scale_bias(table)
        return q * scale[:, None] + bias[:, None]
    return q


# ---------------------------------------------------------------------------- torch interop

def to_torch(table: QTable):
    """The packed table as the torch tensor torch's ops take (no copy): float32 / float16 /
    bfloat16 [R, D], or uint8 [R, C] in the fused row-wise layout."""
    import torch
    t = torch.from_numpy(table.data)
    return t.view(torch.bfloat16) if table.dtype == "bf16" else t


def from_torch(dtype: str, tensor) -> np.ndarray:
    """A packed torch CPU tensor (as `to_torch` gives, or torch's prepack ops) as the numpy
    storage array, without a copy."""
    import torch
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if dtype == "bf16" and t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
        return t.numpy().view(np.uint16)
    return t.numpy()


# ------------------------------------------------------------------------- lookups (oracle)

def qembedding_bag(dtype, dim, data, indices, offsets, mode, per_sample_weights):
    """The float64 reference of a lookup into a packed table: the dequantized rows (exact),
    weighted, summed per bag (and divided by the bag's length for mode "mean")."""
    indices = np.asarray(indices)
    offsets = np.asarray(offsets)
    if len(indices) and (indices.min() < 0 or indices.max() >= data.shape[0]):
        raise IndexError(f"indices must lie in [0, {data.shape[0]}), got "
                         f"{indices.min()} .. {indices.max()}")
    lengths = np.diff(offsets)
    if np.any(lengths < 0):
        raise IndexError("offsets must not decrease")
    B = len(offsets) - 1
    rows = dequantize(QTable(dtype, dim, data[indices]))
    scale = np.ones(len(indices))
    if per_sample_weights is not None:
        scale = scale * np.asarray(per_sample_weights, np.float64)
    bag = np.repeat(np.arange(B), lengths)
    if mode == "mean":
        scale = scale / np.maximum(lengths, 1)[bag]
    out = np.zeros((B, dim))
    np.add.at(out, bag, rows * scale[:, None])
    return out


def check_bags(table, indices, offsets, mode, per_sample_weights) -> None:
    """ValueError naming the fault unless (table, bags) can be looked up."""
    if not isinstance(table, QTable):
        raise ValueError(f"qembedding_bag: table must be a kernels.quant.QTable (see quantize), "
                         f"got {type(table).__name__}")
    if mode not in ("sum", "mean"):
        raise ValueError(f"qembedding_bag: mode must be 'sum' or 'mean', got {mode!r}")
    for name, a in (("indices", indices), ("offsets", offsets)):
        if not isinstance(a, np.ndarray) or a.ndim != 1 or a.dtype.kind not in "iu":
            raise ValueError(f"qembedding_bag: {name} must be a 1-D integer numpy array")
    if offsets.shape[0] < 1 or offsets[0] != 0 or offsets[-1] != indices.shape[0]:
        raise ValueError(f"qembedding_bag: offsets must start at 0 and end at len(indices)="
                         f"{indices.shape[0]}")
    if per_sample_weights is not None and (
            not isinstance(per_sample_weights, np.ndarray) or per_sample_weights.ndim != 1
            or per_sample_weights.shape[0] != indices.shape[0]):
        raise ValueError("qembedding_bag: per_sample_weights must be a 1-D numpy array with "
                         "one entry per index")
    if not table.data.flags.c_contiguous:
        raise ValueError("qembedding_bag: the packed table must be C-contiguous")
