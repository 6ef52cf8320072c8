"""Readers of real embedding index streams.

* `read_criteo` (module `criteo`, re-exported here): Criteo Kaggle / Terabyte TSV (label,
  I1..I13, C1..C26), plain or gzip, one or several files, streamed in blocks with bounded
  memory whatever the file size.
* `read_index`: one stream per table from `.npy` (1-D integers), text (one integer per line)
  or `.npz` (several named 1-D integer arrays, one table each).
* `read_tbe`: FBGEMM/TorchRec request tensors `indices`, `offsets` (T*B+1) and/or `lengths`
  from `.pt` (torch.load(weights_only=True)) or `.npz`.

Library code: nothing here prints; progress is reported through an optional callback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlrmprof.errors import UserError, input_error
from dlrmprof.tracegen.criteo import (BUNDLED_SAMPLE, CRITEO_TABLES, CriteoChunk,  # noqa: F401
                                      Malformed, _check_file, _is_gzip, parse_tables,
                                      read_criteo)


# ---------------------------------------------------------------------------- streams
@dataclass
class TableStream:
    """One table's access stream: ids (dense, >= 0) in access order and bag lengths."""
    name: str
    ids: np.ndarray               # int64 [accesses]
    lengths: np.ndarray           # int64 [bags]; sum == len(ids)
    rows: int                     # rows the table needs (> max id)


@dataclass
class SourceInfo:
    kind: str
    files: list[str]
    rows_read: int = 0
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    bundled_sample: bool = False
    table_rows_cap: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"kind": self.kind, "files": self.files, "rows_read": self.rows_read,
                "malformed_lines": self.malformed,
                "malformed_examples": self.malformed_examples,
                "bundled_sample": self.bundled_sample, "table_rows_cap": self.table_rows_cap,
                "notes": self.notes}


def _int_stream(path: Path, arr: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 1:
        raise input_error(path, "a 1-D array of integers", field=what,
                          got=f"a {arr.ndim}-D array of shape {tuple(arr.shape)}")
    if arr.dtype.kind not in "iu":
        raise input_error(path, "a 1-D array of integers", field=what, got=f"dtype {arr.dtype}")
    if arr.size == 0:
        raise input_error(path, "at least one index", field=what, got="an empty array")
    arr = arr.astype(np.int64, copy=False)
    if int(arr.min()) < 0:
        i = int(np.argmax(arr < 0))
        raise input_error(path, "non-negative indices", field=what,
                          got=f"{int(arr[i])} at position {i}")
    return arr


def _load_npz(path: Path) -> dict:
    from dlrmprof.tracegen.tracefile import damage_text

    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise input_error(path, "a .npz archive of named arrays",
                                  got="a single .npy array")
            return {k: z[k] for k in z.files}
    except UserError:
        raise
    except Exception as exc:   # ValueError, OSError, zipfile.BadZipFile, zlib.error and friends
        raise input_error(path, "a readable .npz archive", got=damage_text(exc)) from None


def read_index(path, max_rows: int | None = None) -> list[TableStream]:
    """Index streams, one table each: .npy (1-D ints), .npz (named 1-D ints), .bin (raw
    little-endian int64, the DLRM reference's binary trace log), or text: integers one per
    line, or several per line separated by commas and/or spaces (the reference's text trace
    log is one line ``"3, 7, 3, ..."``).

    Each access is its own bag (pooling factor 1).  Ids are remapped densely in order of
    first appearance (the source's values are never kept).
    """
    from dlrmprof.tracegen.reuse import DenseMap

    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix in (".npy", ".bin", ".npz"):
        # the ids as int64, their dense remap and the remap's table: about 3x the values
        from dlrmprof import memcheck

        values = path.stat().st_size // 8
        if max_rows is not None and suffix != ".npz":
            values = min(values, int(max_rows))
        memcheck.check_fits([(str(path), 24 * values)], what="reading its indices",
                            hint="read a prefix with --input-rows")
    arrays: list[tuple[str, np.ndarray]] = []
    if suffix == ".npy":
        from dlrmprof.tracegen.tracefile import damage_text

        _check_npy_size(path)
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:  # ValueError, OSError, EOFError, zipfile errors
            raise input_error(path, "a readable .npy array", got=damage_text(exc)) from None
        if not isinstance(arr, np.ndarray):
            if hasattr(arr, "close"):
                arr.close()
            raise input_error(path, "a single .npy array", got="a .npz archive")
        arrays.append((path.stem, _int_stream(path, arr, "array")))
    elif suffix == ".npz":
        data = _load_npz(path)
        if not data:
            raise input_error(path, "at least one named 1-D integer array", got="an empty archive")
        for name, arr in data.items():
            arrays.append((name, _int_stream(path, arr, name)))
    elif suffix == ".bin":
        size = path.stat().st_size
        if size == 0 or size % 8:
            raise input_error(path, "raw little-endian int64 values (a size that is a "
                              "non-zero multiple of 8 bytes)", got=f"{size} bytes")
        count = size // 8 if max_rows is None else min(size // 8, int(max_rows))
        arr = np.fromfile(path, dtype="<i8", count=count)
        if arr.min() < 0:
            i = int(np.argmax(arr < 0))
            raise input_error(path, "non-negative int64 values",
                              got=f"{int(arr[i])} at value {i} (byte {8 * i})")
        arrays.append((path.stem, arr.astype(np.int64, copy=False)))
    else:
        arrays.append((path.stem, _read_text_ints(path, max_rows)))
    out = []
    for name, arr in arrays:
        if max_rows is not None:
            arr = arr[: int(max_rows)]
        ids = DenseMap(min(arr.size, 1 << 22) * 2).map(arr)
        out.append(TableStream(name=name, ids=ids, lengths=np.ones(ids.size, dtype=np.int64),
                               rows=int(ids.max()) + 1))
    return out


def _check_npy_size(path: Path) -> None:
    """A .npy header promising more data than the file holds (a truncated file, or a damaged
    shape) is refused before numpy allocates what the header promises."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            reader = fmt.read_array_header_1_0 if version == (1, 0) else \
                fmt.read_array_header_2_0
            shape, _, dtype = reader(fh, max_header_size=1 << 16)
            start = fh.tell()
    except Exception:  # noqa: BLE001  not a .npy header: np.load says what is wrong
        return
    if dtype.hasobject:
        return                                  # np.load refuses pickled objects itself
    need = int(np.prod([int(d) for d in shape], dtype=object)) * dtype.itemsize
    have = path.stat().st_size - start
    if need > have:
        raise input_error(path, f"{need} bytes of data for the header's shape "
                          f"{tuple(int(d) for d in shape)} and dtype {dtype}",
                          got=f"{have} bytes (a truncated file or a damaged header)")


_TEXT_INTS = "non-negative integers, one per line or separated by commas/spaces"


def _read_text_ints(path: Path, max_rows: int | None) -> np.ndarray:
    vals: list[int] = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if max_rows is not None and len(vals) >= max_rows:
                break
            for tok in raw.replace(b",", b" ").split():
                try:
                    v = int(tok)
                except ValueError:
                    txt = tok[:24].decode("utf-8", "replace")
                    raise input_error(path, _TEXT_INTS, line=lineno, got=repr(txt)) from None
                if v < 0 or v >= 1 << 63:
                    raise input_error(path, _TEXT_INTS, line=lineno, got=str(v))
                vals.append(v)
    if not vals:
        raise input_error(path, "at least one integer", got="no integers")
    if max_rows is not None:
        del vals[int(max_rows):]
    return np.array(vals, dtype=np.int64)


def read_tbe(path) -> list[TableStream]:
    """FBGEMM TBE requests: `indices`, `offsets` (T*B+1, starting at 0, monotone, ending at
    len(indices)) and/or `lengths` (T*B); optional `T` (tables) or `B` (batch size)."""
    from dlrmprof.tracegen.reuse import DenseMap

    path = Path(path)
    _check_file(path)
    if path.suffix.lower() == ".npz":
        data = _load_npz(path)
    else:
        data = _load_pt(path)
    if "indices" not in data:
        raise input_error(path, "an 'indices' tensor", got=f"keys {sorted(data)}")
    indices = _int_stream(path, data["indices"], "indices")
    offsets = data.get("offsets")
    lengths = data.get("lengths")
    if offsets is None and lengths is None:
        raise input_error(path, "an 'offsets' or a 'lengths' tensor", got=f"keys {sorted(data)}")
    if offsets is not None:
        offsets = np.asarray(offsets)
        if offsets.ndim != 1 or offsets.dtype.kind not in "iu" or offsets.size < 2:
            raise input_error(path, "1-D integer offsets with T*B+1 >= 2 entries",
                              field="offsets", got=f"shape {offsets.shape} dtype {offsets.dtype}")
        offsets = offsets.astype(np.int64)
        if offsets[0] != 0:
            raise input_error(path, "offsets starting at 0", field="offsets",
                              got=str(int(offsets[0])))
        dif = np.diff(offsets)
        if (dif < 0).any():
            i = int(np.argmax(dif < 0))
            raise input_error(path, "non-decreasing offsets", field=f"offsets[{i + 1}]",
                              got=f"{int(offsets[i + 1])} after {int(offsets[i])}")
        if offsets[-1] != indices.size:
            raise input_error(path, f"offsets ending at len(indices) = {indices.size}",
                              field="offsets[-1]", got=str(int(offsets[-1])))
        lens = dif
        if lengths is not None:
            lengths = np.asarray(lengths).astype(np.int64).ravel()
            if lengths.shape != lens.shape or not (lengths == lens).all():
                raise input_error(path, "lengths equal to the differences of offsets",
                                  field="lengths", got="a mismatch")
    else:
        lens = np.asarray(lengths)
        if lens.dtype.kind not in "iu" or (lens < 0).any():
            raise input_error(path, "non-negative integer lengths", field="lengths",
                              got=f"dtype {lens.dtype}")
        lens = lens.astype(np.int64).ravel()
        if lens.sum() != indices.size:
            raise input_error(path, f"lengths summing to len(indices) = {indices.size}",
                              field="lengths", got=str(int(lens.sum())))
    nbags = lens.size
    T = _scalar(data.get("T"))
    B = _scalar(data.get("B"))
    if T is None and B is None:
        T = 1
    if T is None:
        T = nbags // B if B else 0
    if T < 1 or nbags % T != 0:
        raise input_error(path, f"T*B bags with T = {T}", field="offsets",
                          got=f"{nbags} bags")
    B = nbags // T
    names = data.get("table_names")
    if names is not None and (isinstance(names, (str, bytes)) or not hasattr(names, "__len__")
                              or len(names) != T):
        raise input_error(path, f"a list of {T} table names", field="table_names",
                          got=repr(names)[:40])
    bounds = np.concatenate([[0], np.cumsum(lens)])
    out = []
    for t in range(T):
        lo, hi = bounds[t * B], bounds[(t + 1) * B]
        arr = indices[lo:hi]
        tl = lens[t * B:(t + 1) * B]
        ids = DenseMap(max(arr.size, 1) * 2).map(arr) if arr.size else arr
        name = str(names[t]) if names is not None else f"t{t}"
        out.append(TableStream(name=name, ids=ids, lengths=tl.copy(),
                               rows=int(ids.max()) + 1 if ids.size else 1))
    return out


def _scalar(x) -> int | None:
    if x is None:
        return None
    a = np.asarray(x)
    if a.size != 1:
        return None
    return int(a.reshape(()))


def _load_pt(path: Path) -> dict:
    import torch

    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises many types for bad pickles/zips
        msg = str(exc)
        if "weights_only" in msg or "Unsupported global" in msg:
            got = ("a file holding Python objects other than tensors, numbers and lists "
                   "(refused: loading them could run code)")
        else:
            first = " ".join(msg.split())[:80]
            got = f"a damaged or truncated file ({type(exc).__name__}: {first})"
        raise input_error(path, "a torch file of tensors (torch.save of a dict of indices, "
                          "offsets/lengths)", got=got) from None
    if isinstance(obj, (tuple, list)) and len(obj) >= 2:
        obj = {"indices": obj[0], "offsets": obj[1]}
    if not isinstance(obj, dict):
        raise input_error(path, "a dict of tensors (indices, offsets/lengths)",
                          got=type(obj).__name__)
    out = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            out[str(k)] = v.numpy()
        elif isinstance(v, (int, list, tuple)):
            out[str(k)] = np.asarray(v)
    return out
