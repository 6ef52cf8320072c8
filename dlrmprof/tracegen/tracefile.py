"""The trace file: a self-describing, versioned `.npz` (see docs/formats.md).

::

    header    0-d str array: JSON {format: "dlrmprof-trace", version, num_samples, tables,
              source, seed, generator, fidelity, tool_version, has_indices, storage}
    i{t}      uint8/16/32/64 [nnz_t]  table t's indices, at the narrowest width holding its
                                     rows                               (absent if profile-only)
    l{t}      uint8/16/32 [B]  table t's bag lengths; absent when they are all equal (then
                               header.storage.tables[t].pooling holds the one length)
    p{t}_{f}  int64 arrays     table t's LocalityProfile field f (hist, top_counts, ...)

In memory a trace keeps FBGEMM's TBE layout whatever the file holds: `indices` int64 [nnz],
all tables concatenated table-major, and `offsets` int64 [T*B+1], bag b of table t =
indices[offsets[t*B+b] : offsets[t*B+b+1]].  (Version 1 files stored exactly these two
arrays; they still load.)

    jagged layout (FBGEMM TBE), T=2 tables, B=3 samples:
      offsets  0   1   3   4 | 5   6   7
      indices [a | b  c | d  | e | f | g]
               t0b0 t0b1 t0b2 t1b0 t1b1 t1b2

Arrays are written without pickle, into a zip whose member timestamps are fixed, so the same
content gives the same bytes: the tables' arrays in table order as they come, then the
profiles, the header last (readers go by name); under a temporary name, renamed at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlrmprof import __version__
from dlrmprof.errors import UserError, input_error
from dlrmprof.fsutil import atomic_path
from dlrmprof.tracegen.profile import LocalityProfile

FORMAT = "dlrmprof-trace"
# Schema history:
#   1 (dlrmprof 0.1): header JSON + indices/offsets (TBE layout, int64) + per-table profile
#     arrays p{t}_{field}; profile model = hot ids per window + tail LRU stack with cold
#     schedule.
#   2: indices stored per table (i{t}) at the narrowest unsigned width holding the table's
#     rows, bag lengths (l{t}) instead of offsets and nothing when the pooling factor is
#     constant (header.storage); profiles may carry hot_gap.  The digest keeps its
#     definition: the int64 TBE layout and the header without digest and storage.
#   3: profiles may carry the class model's arrays (class_cold, class_hist, class_max), which
#     a version-2 reader would ignore and synthesize those tables with another model; nothing
#     else changes (a version-2 file loads as it is).
#   4: profiles may carry the budget model's arrays (count_values, count_ids), which a
#     version-3 reader would ignore and synthesize those tables with another model; nothing
#     else changes (a version-3 file loads as it is).
SCHEMA_VERSION = 4
# header keys the digest does not cover: the digest itself and how the arrays are stored
UNHASHED = ("digest", "storage")
_CHECK_STEP = 1 << 22        # offsets checked this many at a time
_BULK = re.compile(r"indices|offsets|[il]\d+")      # arrays written without compression


@dataclass(frozen=True)
class TableMeta:
    name: str
    rows: int
    accesses: int        # accesses in this file's indices (source accesses if profile-only)
    distinct: int        # distinct ids in this file's indices (source distinct if profile-only)


@dataclass(frozen=True, eq=False)
class Trace:
    num_samples: int
    tables: tuple
    profiles: tuple
    header: dict
    indices: np.ndarray | None = None
    offsets: np.ndarray | None = None
    path: str | None = field(default=None, compare=False)

    @property
    def has_indices(self) -> bool:
        return self.indices is not None

    @property
    def num_tables(self) -> int:
        return len(self.tables)

    def table_bags(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices_t, offsets_t) of table t, offsets rebased to 0 (B+1 entries)."""
        if not self.has_indices:
            raise UserError(f"{self.path or 'trace'}: profile-only trace has no indices "
                            "(call materialize() first)")
        B = self.num_samples
        off = self.offsets[t * B:(t + 1) * B + 1]
        return self.indices[off[0]:off[-1]], off - off[0]

    @property
    def digest(self) -> str:
        return content_digest(self.header, self.indices, self.offsets)

    # -------------------------------------------------------------- save / load
    def save(self, path, version: int = SCHEMA_VERSION) -> str:
        """Write atomically; returns the content digest.  `version=1` writes the format-1
        layout (int64 indices and offsets) that dlrmprof 0.1 reads; versions below 3 only for
        profiles without the class model's arrays, below 4 without the budget model's."""
        if version not in (1, 2, 3, SCHEMA_VERSION):
            raise ValueError(f"trace format version 1 to {SCHEMA_VERSION}, not {version}")
        if version < 3 and any(p.class_max.size for p in self.profiles):
            raise ValueError(f"trace format version {version} cannot hold the class model's "
                             "profile arrays (version 3 can)")
        if version < 4 and any(p.count_values.size for p in self.profiles):
            raise ValueError(f"trace format version {version} cannot hold the budget model's "
                             "profile arrays (version 4 can)")
        self.validate()
        if version > 1:
            with PackedWriter(path, self.num_samples, version) as writer:
                for t, meta in enumerate(self.tables if self.has_indices else ()):
                    ids, off = self.table_bags(t)
                    writer.add(ids, off, meta.rows)
                return writer.finish(self)
        header = {k: v for k, v in self.header.items() if k not in UNHASHED}
        header["version"] = 1
        arrays = {k: v for t, p in enumerate(self.profiles)
                  for k, v in p.to_arrays(f"p{t}_")[0].items()}
        if self.has_indices:
            arrays["indices"], arrays["offsets"] = self.indices, self.offsets
        header["digest"] = content_digest(header, self.indices, self.offsets)
        with atomic_path(path) as tmp:
            _write_npz(tmp, header, arrays)
        return header["digest"]

    @classmethod
    def load(cls, path) -> "Trace":
        """Read and validate everything; `UserError` naming the file on any problem."""
        path = Path(path)
        if not path.exists():
            raise input_error(path, "an existing trace file", got="no such file")
        if path.is_dir() or path.stat().st_size == 0:
            raise input_error(path, "a dlrmprof trace file (.npz)",
                              got="a directory" if path.is_dir() else "an empty file")
        try:
            with np.load(path, allow_pickle=False) as z:
                if "header" not in z.files:
                    raise input_error(path, "a 'header' entry (dlrmprof trace .npz)",
                                      got=f"entries {sorted(z.files)[:5]}")
                header = _parse_header(path, z["header"])
                arrays = {k: z[k] for k in z.files if k != "header"}
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001  zipfile/zlib/numpy on a damaged archive raise
            # ValueError, OSError, EOFError, zlib.error, BadZipFile, NotImplementedError (an
            # unknown zip version), MemoryError (a header promising huge arrays), ...
            raise input_error(path, "a complete dlrmprof trace file (.npz zip archive)",
                              got=damage_text(exc)) from None
        return _from_parts(path, header, arrays)

    def validate(self) -> None:
        _validate(self, self.path or "<trace>")

    def summary_rows(self) -> list[dict]:
        rows = []
        fid = self.header.get("fidelity", {})
        for t, meta in enumerate(self.tables):
            p = self.profiles[t]
            row = {"name": meta.name, "rows": meta.rows, "accesses": meta.accesses,
                   "distinct": meta.distinct, "source_accesses": p.accesses,
                   "source_distinct": p.distinct}
            if meta.name in fid:
                row["fidelity"] = fid[meta.name]
            rows.append(row)
        return rows


# ------------------------------------------------------------------ helpers
def damage_text(exc: BaseException) -> str:
    """What a reader says it got when numpy/zipfile could not read a file: one short clause,
    never numpy's advice to load pickled data "if you trust the file"."""
    msg = " ".join(str(exc).split())
    if "pickle" in msg.lower() or "object arrays" in msg.lower():
        return "pickled Python objects (refused: loading them could run code)"
    return f"a damaged or truncated file ({type(exc).__name__}: {msg[:80]})"


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def content_digest(header: dict, indices, offsets) -> str:
    h = hashlib.sha256()
    if indices is not None:     # hashed through the buffer protocol: no copy of the indices
        h.update(memoryview(np.ascontiguousarray(indices, dtype="<i8")).cast("B"))
        h.update(memoryview(np.ascontiguousarray(offsets, dtype="<i8")).cast("B"))
    h.update(_canonical({k: v for k, v in header.items() if k not in UNHASHED}))
    return h.hexdigest()


def index_dtype(rows: int) -> np.dtype:
    """The narrowest unsigned dtype holding a table's ids 0..rows-1 (how a file stores them)."""
    return _narrowest(max(int(rows) - 1, 0))


def _narrowest(top: int) -> np.dtype:
    """The narrowest unsigned dtype holding 0..top."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def _bags_entry(dt: np.dtype, lens: np.ndarray | int) -> tuple[dict, np.ndarray | None]:
    """A table's header.storage entry and its stored bag lengths (None when they are all
    equal: the entry's pooling holds the one length).  `lens` an int: every bag is known to
    hold that many (no array of B lengths to compare)."""
    entry = {"index_dtype": dt.name}
    if isinstance(lens, int):
        entry["pooling"] = lens
        return entry, None
    if lens.size and (lens == lens[0]).all():
        entry["pooling"] = int(lens[0])
        return entry, None
    entry["pooling"] = None
    return entry, lens.astype(_narrowest(int(lens.max()) if lens.size else 0))


class PackedWriter:
    """A trace file written as its tables come, in table order, without the int64 TBE layout
    in memory (gen-trace's path, `generate.synthesize_packed`; `Trace.save` writes through
    it too, so both give the same bytes).  Each table's ids go into the file at its width
    as they are added, hashed as the layout's int64 bytes a piece at a time; `finish` then
    hashes the offsets (arithmetic for a constant pooling factor, else from the bag lengths
    read back from the file, one table at a time), as the digest's definition orders them,
    and writes the profiles and the header (with the digest) last.  Memory: one table.

    The file is written under a temporary name beside `path` (`fsutil.atomic_path`) and
    renamed by `finish`; leaving the `with` block by an exception (KeyboardInterrupt, the
    CLI's SIGTERM) or without `finish` removes it::

        with PackedWriter(path, num_samples) as w:
            for ...: w.add(ids, offsets, rows)
            digest = w.finish(trace)
    """

    def __init__(self, path, num_samples: int | None = None, version: int = SCHEMA_VERSION):
        self.path = path
        self.num_samples = None if num_samples is None else int(num_samples)
        self.version = version
        self.tables: list = []             # header.storage entries
        self._hash = hashlib.sha256()
        self._nnz = 0
        self._zip: zipfile.ZipFile | None = None
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> "PackedWriter":
        stack = contextlib.ExitStack()
        tmp = stack.enter_context(atomic_path(self.path))
        try:
            self._zip = zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED,
                                        allowZip64=True)
        except BaseException:
            stack.__exit__(*sys.exc_info())
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc) -> bool:
        if self._stack is not None:         # an error, or left without finish: no file
            self._close(exc if exc[0] is not None else
                        (_Unfinished, _Unfinished(), None))
        return False

    def _close(self, exc) -> None:
        zf, stack, self._zip, self._stack = self._zip, self._stack, None, None
        try:
            zf.close()
        except BaseException:               # noqa: BLE001  an entry left open: removed anyway
            if exc[0] is None:
                raise
            with contextlib.suppress(OSError):
                zf.fp.close()
        finally:
            stack.__exit__(*exc)            # renames, or removes the temporary file

    def start(self, num_samples: int) -> None:
        """Fix the bags per table (B) before the first `add`, when not given at creation."""
        if self.num_samples not in (None, int(num_samples)):
            raise ValueError(f"this writer holds {self.num_samples} samples, "
                             f"not {num_samples}")
        self.num_samples = int(num_samples)

    def add(self, ids: np.ndarray, offsets: np.ndarray | None, rows: int) -> None:
        """The next table: its ids (any integer dtype), its offsets [B+1] from 0 or None
        when every bag holds ids.size / B of them, its rows (ids must lie in [0, rows))."""
        t, B = len(self.tables), self.num_samples
        if self._zip is None or B is None:
            raise ValueError("PackedWriter.add outside its with block or before start()")
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and (int(ids.min()) < 0 or int(ids.max()) >= rows)):
            raise ValueError(f"table {t}: ids outside [0, {rows}) or not 1-D")
        if offsets is None:
            if ids.size % B:
                raise ValueError(f"table {t}: {ids.size} ids in {B} equal bags")
            lens = ids.size // B    # equal bags: the pooling factor
        else:
            lens = np.diff(offsets)
            if offsets.shape != (B + 1,) or offsets[0] != 0 or offsets[-1] != ids.size \
                    or (lens.size and lens.min() < 0):
                raise ValueError(f"table {t}: offsets are not {B + 1} non-decreasing "
                                 f"values from 0 to {ids.size}")
        for lo in range(0, ids.size, _CHECK_STEP):      # no int64 copy of a whole table
            part = np.ascontiguousarray(ids[lo:lo + _CHECK_STEP], dtype="<i8")
            self._hash.update(memoryview(part).cast("B"))
        dt = index_dtype(rows)
        _put(self._zip, f"i{t}", ids.astype(dt, copy=False))
        entry, stored = _bags_entry(dt, lens)
        if stored is not None:
            _put(self._zip, f"l{t}", stored)
        self.tables.append(entry)
        self._nnz += int(ids.size)

    def _hash_offsets(self) -> None:
        B, base = self.num_samples, 0
        for t, entry in enumerate(self.tables):
            pool = entry["pooling"]
            if pool is None:                # written already: read back, one table's worth
                with self._zip.open(f"l{t}.npy") as fh:
                    lens = np.lib.format.read_array(fh, allow_pickle=False)
            for lo in range(0, B, _CHECK_STEP):
                hi = min(lo + _CHECK_STEP, B)
                if pool is not None:        # one array, not arange and two temporaries
                    part = (np.arange(base + pool * lo, base + pool * hi, pool, dtype=np.int64)
                            if pool else np.full(hi - lo, base, dtype=np.int64))
                else:
                    ends = np.cumsum(lens[lo:hi], dtype=np.int64)
                    part = base + ends - lens[lo:hi]
                    ends += base
                self._hash.update(memoryview(np.ascontiguousarray(part, "<i8")).cast("B"))
                if pool is None:
                    base = int(ends[-1])
            if pool is not None:
                base += pool * B
        self._hash.update(np.array([self._nnz], dtype="<i8").tobytes())

    def finish(self, trace: "Trace") -> str:
        """Write `trace`'s profiles and header (its tables' arrays added already, or none for
        a profile-only trace), close and rename the file; returns the content digest."""
        if self._zip is None:
            raise ValueError("this PackedWriter has written its file already (or was "
                             "not entered)")
        if self.tables and (len(self.tables) != len(trace.tables)
                            or trace.num_samples != self.num_samples):
            raise ValueError(f"{len(self.tables)} tables of {self.num_samples} samples added "
                             f"for a trace of {len(trace.tables)} of {trace.num_samples}")
        _validate_profiles(trace, trace.path or "<trace>")
        for t, p in enumerate(trace.profiles):
            for name, arr in sorted(p.to_arrays(f"p{t}_")[0].items()):
                _put(self._zip, name, arr)
        header = {k: v for k, v in trace.header.items() if k not in UNHASHED}
        header["version"] = self.version
        if self.tables:
            self._hash_offsets()
        self._hash.update(_canonical(header))
        if self.tables:
            header["storage"] = {"layout": "per-table", "tables": self.tables}
        header["digest"] = self._hash.hexdigest()
        _put(self._zip, "header", np.array(json.dumps(header, sort_keys=True)))
        self._close((None, None, None))
        return header["digest"]


class _Unfinished(Exception):
    """Thrown into the temporary file's context when a PackedWriter is left unfinished."""


def _unpack(path, header: dict, arrays: dict, metas: list, B: int):
    """The TBE layout (int64 indices and offsets) from a compact file; one-line errors on
    anything that does not fit the header."""
    def bad(expected, fld=None, got=None):
        return input_error(path, expected, field=fld, got=got)

    st = header.get("storage")
    tabs = st.get("tables") if isinstance(st, dict) else None
    if not isinstance(tabs, list) or len(tabs) != len(metas):
        raise bad(f"a storage entry per table ({len(metas)})", "header.storage",
                  repr(st)[:60])
    sizes = []
    for t, (meta, e) in enumerate(zip(metas, tabs)):
        arr = arrays.get(f"i{t}")
        if arr is None or arr.ndim != 1:
            raise bad("a 1-D index array", f"i{t}", "missing" if arr is None else
                      f"shape {arr.shape}")
        if not isinstance(e, dict) or arr.dtype.name != e.get("index_dtype"):
            raise bad(f"dtype {e.get('index_dtype') if isinstance(e, dict) else '?'}",
                      f"i{t}", f"dtype {arr.dtype}")
        if arr.size != meta.accesses:
            raise bad(f"{meta.accesses} indices for table {meta.name}", f"i{t}",
                      str(arr.size))
        pool = e.get("pooling")
        lens = arrays.get(f"l{t}")
        if pool is None:
            if lens is None or lens.ndim != 1 or lens.size != B or lens.dtype.kind != "u":
                raise bad(f"{B} unsigned bag lengths", f"l{t}",
                          "missing" if lens is None else f"shape {lens.shape} {lens.dtype}")
            if int(lens.sum(dtype=np.int64)) != arr.size:
                raise bad(f"bag lengths summing to {arr.size}", f"l{t}",
                          str(int(lens.sum(dtype=np.int64))))
        elif (not isinstance(pool, int) or isinstance(pool, bool) or pool < 0
              or pool * B != arr.size):
            raise bad(f"a pooling factor with pooling x {B} == {arr.size}",
                      f"storage.tables[{t}].pooling", repr(pool))
        sizes.append((arr, pool, lens))
    nnz = sum(a.size for a, _, _ in sizes)
    indices = np.empty(nnz, dtype=np.int64)
    offsets = np.empty(len(metas) * B + 1, dtype=np.int64)
    base = 0
    for t, (arr, pool, lens) in enumerate(sizes):
        indices[base:base + arr.size] = arr
        if pool is None:
            offsets[t * B] = base
            np.cumsum(lens, out=offsets[t * B + 1:(t + 1) * B + 1], dtype=np.int64)
            offsets[t * B + 1:(t + 1) * B + 1] += base
        else:
            offsets[t * B:(t + 1) * B] = base + pool * np.arange(B, dtype=np.int64)
        base += arr.size
    offsets[-1] = base
    return indices, offsets


def _write_npz(path: Path, header: dict, arrays: dict) -> None:
    """A whole file at once, the arrays in name order and the header last (the format-1
    layout; tests write damaged files with it)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in sorted(arrays.items()):
            _put(zf, name, arr)
        _put(zf, "header", np.array(json.dumps(header, sort_keys=True)))


def _put(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    """One `.npy` entry, its timestamp fixed (the same content gives the same bytes)."""
    info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
    # profiles are small and mostly zeros: deflate them; indices stay stored (fast)
    info.compress_type = zipfile.ZIP_STORED if _BULK.fullmatch(name) else zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=True) as fh:
        np.lib.format.write_array(fh, np.asanyarray(arr), allow_pickle=False)


def _parse_header(path: Path, arr: np.ndarray) -> dict:
    if arr.ndim != 0 or arr.dtype.kind != "U":
        raise input_error(path, "a 0-d string 'header'", field="header",
                          got=f"shape {arr.shape} dtype {arr.dtype}")
    try:
        header = json.loads(str(arr))
    except json.JSONDecodeError as exc:
        raise input_error(path, "JSON", field="header", got=f"invalid JSON ({exc.msg})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise input_error(path, f"format {FORMAT!r}", field="header.format",
                          got=repr(header.get("format") if isinstance(header, dict) else header))
    version = header.get("version")
    if not isinstance(version, int) or version < 1:
        raise input_error(path, "an integer version >= 1", field="header.version",
                          got=repr(version))
    if version > SCHEMA_VERSION:
        raise input_error(path, f"trace format version <= {SCHEMA_VERSION} (this is dlrmprof "
                                f"{__version__}; upgrade dlrmprof to read it)",
                          field="header.version", got=str(version))
    return _upgrade(header)


def _upgrade(header: dict) -> dict:
    """Step-by-step upgraders for older versions.  1 -> 2 changes how indices are stored,
    not what the header says: the loader reads a v1 file's `indices`/`offsets` as they are;
    2 -> 3 and 3 -> 4 add optional profile arrays."""
    return header


def _from_parts(path: Path, header: dict, arrays: dict) -> Trace:
    def bad(expected, fld=None, got=None):
        return input_error(path, expected, field=fld, got=got)

    tables_h = header.get("tables")
    if not isinstance(tables_h, list) or not tables_h:
        raise bad("a non-empty list", "header.tables", repr(tables_h)[:40])
    B = header.get("num_samples")
    if not isinstance(B, int) or isinstance(B, bool) or B < 1:
        raise bad("a positive integer", "header.num_samples", repr(B))
    stored = header.get("digest")
    if not isinstance(stored, str) or len(stored) != 64:
        raise bad("the content digest gen-trace stores (64 hex digits of sha256)",
                  "header.digest", "none" if stored is None else repr(stored)[:40])
    for name, arr in arrays.items():
        if arr.dtype.kind not in "iu":       # every array of the format holds integers
            raise bad("an integer array", name, f"dtype {arr.dtype}")
    profiles = []
    metas = []
    for t, th in enumerate(tables_h):
        try:
            scal = th["profile"]
            prof = LocalityProfile.from_arrays(arrays, f"p{t}_", scal)
            metas.append(TableMeta(name=str(th["name"]), rows=int(th["rows"]),
                                   accesses=int(th["accesses"]), distinct=int(th["distinct"])))
        except KeyError as exc:
            raise bad("every table's profile entries", f"tables[{t}]",
                      f"missing {exc.args[0]!r}") from None
        except (TypeError, ValueError, IndexError, AttributeError, OverflowError) as exc:
            raise bad("a well-formed table entry", f"tables[{t}]",
                      f"{type(exc).__name__}: {str(exc)[:80]}") from None
        profiles.append(prof)
    has = bool(header.get("has_indices", "indices" in arrays))
    indices = offsets = None
    if has and header["version"] == 1:
        if "indices" not in arrays or "offsets" not in arrays:
            raise bad("'indices' and 'offsets' arrays", "indices", "missing")
        indices, offsets = arrays["indices"], arrays["offsets"]
    elif has:
        indices, offsets = _unpack(path, header, arrays, metas, B)
    trace = Trace(num_samples=B, tables=tuple(metas), profiles=tuple(profiles), header=header,
                  indices=indices, offsets=offsets, path=str(path))
    _validate(trace, str(path))
    if stored != trace.digest:
        raise bad("content matching the stored digest", "header.digest",
                  "a different content (file modified or damaged)")
    return trace


def _validate(trace: Trace, where: str) -> None:
    def bad(expected, fld=None, got=None):
        raise input_error(where, expected, field=fld, got=got)

    T = len(trace.tables)
    B = trace.num_samples
    _validate_profiles(trace, where)
    if not trace.has_indices:
        return
    idx, off = trace.indices, trace.offsets
    if idx.ndim != 1 or idx.dtype != np.int64:
        bad("1-D int64", "indices", f"shape {idx.shape} dtype {idx.dtype}")
    if off.ndim != 1 or off.dtype != np.int64:
        bad("1-D int64", "offsets", f"shape {off.shape} dtype {off.dtype}")
    if off.shape[0] != T * B + 1:
        bad(f"T*B+1 = {T * B + 1} offsets", "offsets", str(off.shape[0]))
    if off[0] != 0:
        bad("offsets starting at 0", "offsets[0]", str(int(off[0])))
    step = _CHECK_STEP      # bool masks a piece at a time: no copy the size of the offsets
    for lo in range(0, off.shape[0] - 1, step):
        hi = min(lo + step, off.shape[0] - 1)
        dec = off[lo + 1:hi + 1] < off[lo:hi]
        if dec.any():
            i = lo + int(np.argmax(dec))
            bad("non-decreasing offsets", f"offsets[{i + 1}]",
                f"{int(off[i + 1])} after {int(off[i])}")
    if off[-1] != idx.shape[0]:
        bad(f"offsets ending at len(indices) = {idx.shape[0]}", "offsets[-1]", str(int(off[-1])))
    for t, meta in enumerate(trace.tables):
        seg = idx[off[t * B]:off[(t + 1) * B]]
        if seg.size:
            lo, hi = int(seg.min()), int(seg.max())
            if lo < 0 or hi >= meta.rows:
                badv = lo if lo < 0 else hi
                bad(f"indices in [0, {meta.rows}) for table {meta.name}", "indices",
                    str(badv))
        if seg.size != meta.accesses:
            bad(f"{meta.accesses} accesses for table {meta.name} (header)", "offsets",
                str(seg.size))


def _validate_profiles(trace: Trace, where: str) -> None:
    """The sample count, each table's rows and its locality profile."""
    def bad(expected, fld=None, got=None):
        raise input_error(where, expected, field=fld, got=got)

    T = len(trace.tables)
    if trace.num_samples < 1:
        bad("at least one sample", "num_samples", str(trace.num_samples))
    if len(trace.profiles) != T:
        bad(f"{T} profiles", "profiles", str(len(trace.profiles)))
    for t, (meta, prof) in enumerate(zip(trace.tables, trace.profiles)):
        try:
            prof.validate(f"table {meta.name}")
        except (ValueError, TypeError, IndexError, AttributeError, OverflowError) as exc:
            bad("a consistent locality profile", f"p{t}", " ".join(str(exc).split())[:120])
        if meta.rows < 1:
            bad("rows >= 1", f"tables[{t}].rows", str(meta.rows))


def header_for(tables: list[TableMeta], profiles: list[LocalityProfile], num_samples: int,
               source: dict, seed, generator: dict, fidelity: dict, has_indices: bool) -> dict:
    tabs = []
    for meta, p in zip(tables, profiles):
        _, scal = p.to_arrays("")
        tabs.append({"name": meta.name, "rows": meta.rows, "accesses": meta.accesses,
                     "distinct": meta.distinct, "source_accesses": p.accesses,
                     "source_distinct": p.distinct, "profile": scal})
    return {"format": FORMAT, "version": SCHEMA_VERSION, "num_samples": int(num_samples),
            "tables": tabs, "source": source, "seed": seed, "generator": generator,
            "fidelity": fidelity, "tool_version": __version__, "has_indices": bool(has_indices)}
