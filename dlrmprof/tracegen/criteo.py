"""The Criteo Kaggle / Terabyte TSV reader (label, I1..I13, C1..C26): plain or gzip, one or
several files, streamed in blocks with bounded memory whatever the file size; categorical
values mapped to dense per-table ids.  `readers` re-exports it beside the other readers.

Library code: nothing here prints; progress is reported through an optional callback.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from dlrmprof.errors import UserError, input_error
from dlrmprof.tracegen import _criteo_parse as cp
from dlrmprof.tracegen import hashmap

CRITEO_TABLES = tuple(f"C{i}" for i in range(1, 27))
BUNDLED_SAMPLE = Path(__file__).resolve().parent.parent / "data" / "criteo_kaggle_train_head2k.txt"

_ERR_TEXT = {
    cp.ERR_FIELDS: "40 tab-separated fields (label, I1..I13, C1..C26)",
    cp.ERR_LABEL: "an integer label",
    cp.ERR_DENSE: "an integer or an empty field",
    cp.ERR_HEX: "1-8 hex digits or an empty field",
}


def _field_name(index: int) -> str:
    if index == 0:
        return "label"
    if index <= cp.N_DENSE:
        return f"I{index}"
    if index < cp.N_FIELDS:
        return f"C{index - cp.N_DENSE}"
    return f"#{index + 1}"


@dataclass
class CriteoChunk:
    labels: np.ndarray      # float32 [n]
    dense: np.ndarray       # float32 [n, 13], missing = 0
    sparse: np.ndarray      # int64 [n, T] dense per-table ids
    first_line: int         # 1-based line number (in `file`) of the chunk's first row
    file: str


@dataclass
class Malformed:
    file: str
    line: int
    field: str
    expected: str
    got: str

    def __str__(self) -> str:
        return str(input_error(self.file, self.expected, line=self.line, field=self.field,
                               got=self.got))


def parse_tables(spec: str | Sequence[str] | None) -> list[str] | None:
    """'C3,C12' or ['C3', 'C12'] -> ['C3', 'C12'] (validated), None -> None (all)."""
    if spec is None:
        return None
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    for name in names:
        if name not in CRITEO_TABLES:
            raise UserError(f"--tables: expected names among C1..C26, got {name!r}")
    if len(set(names)) != len(names):
        raise UserError(f"--tables: a table is named twice in {','.join(names)}")
    if not names:
        raise UserError("--tables: expected at least one table name")
    return names


class read_criteo:  # noqa: N801  (used like a function: `for chunk in read_criteo(...)`)
    """Stream Criteo TSV rows as chunks of labels, dense values and dense per-table ids.

    ``for chunk in read_criteo(paths, max_rows=None, tables=None, table_rows=None,
    strict=False)`` yields `CriteoChunk`s.  Categorical values (8 hex digits) are mapped per
    table to dense ids 0, 1, 2, ... in order of first appearance, consistently across chunks
    and files; an empty field (missing) is its own id.  With `table_rows` the raw value is
    first reduced modulo `table_rows` (like DLRM's --max-ind-range; missing hashes too), so
    ids stay below `table_rows` -- this merges values and changes locality.

    After (or during) iteration:
      ``rows_read``         rows returned so far
      ``table_names``       the tables, in column order of ``chunk.sparse``
      ``table_distinct``    per-table number of distinct ids (= the rows a table needs)
      ``malformed``         number of malformed lines skipped
      ``malformed_examples``  the first few as `Malformed` (file, line, field, expected, got)
      ``bytes_read``        uncompressed bytes consumed
    With ``strict=True`` the first malformed line raises `UserError` instead.
    ``threads > 1`` parses each block's lines in that many parallel pieces (same output).
    ``span=(lo, hi)`` reads only the lines starting in bytes [lo, hi) of one uncompressed file
    (`line_spans` gives such spans; line numbers then count from the span's first line), and
    ``raw=True`` yields the tables' raw values instead of dense ids (`dense_ids` maps them):
    the ranks of a table-parallel capture parse a span each and exchange raw columns.  A raw
    reader's chunks are views of its parse buffers, good until the next chunk is asked for
    (its consumer copies what it keeps at once: no copy per block, no fresh pages).
    Memory is bounded by the block size and the per-table maps (O(distinct values)).
    """

    BLOCK_BYTES = 1 << 23
    MAX_EXAMPLES = 5

    def __init__(self, paths, max_rows: int | None = None, tables=None,
                 table_rows: int | None = None, strict: bool = False,
                 progress: Callable[[int], None] | None = None, block_bytes: int | None = None,
                 threads: int | None = None, span: tuple | None = None, raw: bool = False):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise UserError("no input file given")
        for p in self.paths:
            _check_file(p)
        self.max_rows = None if max_rows is None else int(max_rows)
        if self.max_rows is not None and self.max_rows < 1:
            raise UserError(f"--input-rows: expected a positive integer, got {max_rows}")
        self.table_names = parse_tables(tables) or list(CRITEO_TABLES)
        self._cols = np.array([CRITEO_TABLES.index(n) for n in self.table_names], dtype=np.int64)
        if table_rows is not None and int(table_rows) < 1:
            raise UserError(f"--table-rows: expected a positive integer, got {table_rows}")
        self.table_rows = None if table_rows is None else int(table_rows)
        self.strict = strict
        self.progress = progress
        self.block_bytes = int(block_bytes or self.BLOCK_BYTES)
        # threads > 1 parses each block's lines in parallel pieces (numba prange); default 1:
        # on a shared 2-core host a second thread slows it down when the other core is busy
        self.threads = max(1, int(threads or 1))
        self.rows_read = 0
        self.malformed = 0
        self.malformed_examples: list[Malformed] = []
        self.bytes_read = 0
        self._counts = np.zeros(len(self.table_names), dtype=np.int64)
        self._keys, self._vals = hashmap.empty(1 << 16)
        self._started = False
        self.span = None if span is None else (int(span[0]), int(span[1]))
        if self.span is not None and (len(self.paths) != 1 or _is_gzip(self.paths[0])):
            raise ValueError("span: one uncompressed file only")
        self.raw = bool(raw)
        self._all_cols = np.array_equal(self._cols, np.arange(cp.N_SPARSE))
        self._args = (self.paths, max_rows, tables, table_rows, strict, block_bytes, threads)

    def again(self, progress: Callable[[int], None] | None = None) -> "read_criteo":
        """A fresh reader of the same input with the same settings (a second pass over the
        rows, in the same order and with the same ids, since ids follow first appearance)."""
        paths, max_rows, tables, table_rows, strict, block_bytes, threads = self._args
        return read_criteo(paths, max_rows=max_rows, tables=tables, table_rows=table_rows,
                           strict=strict, progress=progress, block_bytes=block_bytes,
                           threads=threads, span=self.span, raw=self.raw)

    @property
    def table_distinct(self) -> list[int]:
        return [int(c) for c in self._counts]

    @property
    def total_bytes(self) -> int | None:
        """Size on disk of all inputs (compressed size for gzip)."""
        return sum(p.stat().st_size for p in self.paths)

    def __iter__(self) -> Iterator[CriteoChunk]:
        if self._started:
            raise RuntimeError("read_criteo can be iterated once")
        self._started = True
        for path in self.paths:
            yield from self._read_file(path)
            if self.max_rows is not None and self.rows_read >= self.max_rows:
                return

    def dense_ids(self, cats: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        """Raw values -> this reader's dense ids, [rows, tables] (the map iteration uses,
        extended in order of first appearance); `cols`: the tables' columns in `cats`
        (default: one column per table, in table order).  The result is the transpose of a
        [tables, rows] array: each table's column is contiguous (the capture reads the
        tables column by column)."""
        cols = np.arange(len(self._cols), dtype=np.int64) if cols is None else cols
        out = np.empty((len(self._cols), cats.shape[0]), dtype=np.int64)
        done = 0
        while done < cats.shape[0]:
            done = cp.map_tables(cats, done, cols, self.table_rows or 0, self._keys,
                                 self._vals, self._counts, out)
            if done < cats.shape[0]:
                self._keys, self._vals = hashmap.doubled(self._keys, self._vals)
        return out.T

    # ------------------------------------------------------------------ internals
    def _map(self, cats: np.ndarray) -> np.ndarray:
        if self.raw:
            return cats if self._all_cols else cats[:, self._cols]
        return self.dense_ids(cats, self._cols)

    def _read_file(self, path: Path) -> Iterator[CriteoChunk]:
        is_gz = _is_gzip(path)
        opener = gzip.open if is_gz else (open if self.span is None else self._open_span)
        block = self.block_bytes
        # rows per block: a well-formed row has 39 tabs, a label and a newline (>= 41 bytes)
        cap_rows = block // 40 + 1
        scratch = (np.empty(cap_rows, dtype=np.float32),
                   np.empty((cap_rows, cp.N_DENSE), dtype=np.float32),
                   np.empty((cap_rows, cp.N_SPARSE), dtype=np.int64),
                   np.empty((3, self.MAX_EXAMPLES), dtype=np.int64))
        line_no = 1                     # 1-based number of the next line to parse
        # one buffer for every block: the unparsed tail of the last block (`clen` bytes) at
        # its start, the next block read in after it (a fresh block of bytes per read, and
        # the tail joined to it, cost a copy and fresh pages each)
        store = bytearray(block + (1 << 16))
        clen = 0
        par = self._parallel_buffers(block) if self.threads > 1 else None
        disk_pos = 0
        with opener(path, "rb") as fh:
            eof = False
            first_block = self.span is None or self.span[0] == 0
            while not eof:
                if len(store) < clen + block:           # a tail longer than the slack
                    bigger = bytearray(clen + block + (1 << 16))
                    bigger[:clen] = store[:clen]
                    store = bigger
                try:
                    got = _read_into(fh, store, clen, block)
                except (EOFError, OSError, zlib.error) as exc:
                    raise input_error(path, "a complete gzip stream",
                                      got=f"a damaged or truncated file ({exc})") from None
                if first_block and got >= len(_BOM) and store[:len(_BOM)] == _BOM:
                    # a UTF-8 byte-order mark is not row text
                    store[:got - len(_BOM)] = store[len(_BOM):got]
                    got -= len(_BOM)
                    self.bytes_read += len(_BOM)
                    first_block = False
                    if not got:
                        continue
                first_block = False
                if not got:
                    eof = True
                    if not clen:
                        break
                    store[clen] = 0x0A                  # last line without a newline
                    end = clen + 1
                else:
                    end = clen + got
                    self.bytes_read += got
                    if self.progress:
                        disk = fh.fileobj.tell() if is_gz else disk_pos + got
                        self.progress(disk - disk_pos)
                        disk_pos = disk
                buf = np.frombuffer(store, dtype=np.uint8, count=end)
                pos = 0
                if par is not None and self.max_rows is None and end > (1 << 20):
                    # whole lines of this block parsed by `threads` threads, in order after
                    last_nl = store.rfind(b"\n", 0, end)
                    cuts = self._cuts(store, last_nl + 1, par) if last_nl > 0 else None
                    if cuts is not None:
                        yield from self._parallel_block(path, buf, cuts, par, line_no)
                        line_no = self._line_no
                        pos = last_nl + 1
                        clen = end - pos
                        store[:clen] = store[pos:end]
                        continue
                pos, line_no, done = yield from self._parse_lines(path, buf, pos, line_no,
                                                                  scratch)
                if done:
                    return
                clen = end - pos
                store[:clen] = store[pos:end]
                if clen > 1 << 26:
                    raise input_error(path, "lines shorter than 64 MiB", line=line_no,
                                      got="a longer line (is this a Criteo TSV file?)")

    def _parse_lines(self, path: Path, buf, pos: int, line_no: int, scratch):
        """Parse the whole lines of `buf` from `pos` into chunks (yielded; views of `scratch`'s
        arrays when raw), up to max_rows.  Returns (position after the last whole line, the
        number of the next line, True once max_rows rows are read)."""
        labels, dense, cats, (err_line, err_code, err_field) = scratch
        cap_rows = labels.shape[0]
        while True:
            left = None if self.max_rows is None else self.max_rows - self.rows_read
            if left is not None and left <= 0:
                return pos, line_no, True
            max_rows = cap_rows if left is None else min(cap_rows, left)
            new_pos, rows, lines, nerr, first_idx = cp.parse_block(
                buf, pos, len(buf), labels, dense, cats, max_rows, err_line, err_code,
                err_field, self.strict)
            if nerr:
                self._record_errors(path, buf, pos, line_no, nerr, err_line, err_code,
                                    err_field)
            if rows:
                self.rows_read += rows
                first = line_no + int(first_idx)
                if self.raw:            # views: see the class docstring
                    yield CriteoChunk(labels=labels[:rows], dense=dense[:rows],
                                      sparse=self._map(cats[:rows]), first_line=first,
                                      file=str(path))
                else:
                    yield CriteoChunk(labels=labels[:rows].copy(), dense=dense[:rows].copy(),
                                      sparse=self._map(cats[:rows]), first_line=first,
                                      file=str(path))
            line_no += lines
            pos = new_pos
            if rows < max_rows or pos >= len(buf):
                return pos, line_no, False

    def _open_span(self, path, mode):
        return _Span(path, *self.span)

    def _parallel_buffers(self, block: int):
        P = self.threads
        cap = (block + (1 << 16)) // 40 // P * 2 + 64        # rows per piece (>= 41 B a row)
        return {"labels": np.empty((P, cap), dtype=np.float32),
                "dense": np.empty((P, cap, cp.N_DENSE), dtype=np.float32),
                "cats": np.empty((P, cap, cp.N_SPARSE), dtype=np.int64),
                "err_line": np.empty((P, self.MAX_EXAMPLES), dtype=np.int64),
                "err_code": np.empty((P, self.MAX_EXAMPLES), dtype=np.int64),
                "err_field": np.empty((P, self.MAX_EXAMPLES), dtype=np.int64),
                "res": np.zeros((P, 5), dtype=np.int64)}

    def _cuts(self, raw: bytes, end: int, par):
        """Piece boundaries (starts, ends) on newlines, or None if a piece would not fit."""
        P = self.threads
        cap = par["labels"].shape[1]
        starts, ends = [], []
        lo = 0
        for i in range(P):
            if i == P - 1:
                hi = end
            else:
                cut = raw.find(b"\n", max(lo, end * (i + 1) // P) - 1, end)
                hi = end if cut < 0 else cut + 1
            if (hi - lo) // 40 + 1 > cap:          # an uneven cut: parse sequentially
                return None
            starts.append(lo)
            ends.append(hi)
            lo = hi
        return starts, ends

    def _parallel_block(self, path, buf, cuts, par, line_no: int):
        P = self.threads
        starts, ends = cuts
        cp.parse_pieces(buf, np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64),
                        par["labels"], par["dense"], par["cats"], par["err_line"],
                        par["err_code"], par["err_field"], par["res"])
        for i in range(P):
            new_pos, rows, lines, nerr, first_idx = (int(v) for v in par["res"][i])
            if new_pos != ends[i]:
                raise AssertionError("parallel piece not fully parsed")
            if nerr:
                self._record_errors(path, buf, starts[i], line_no, nerr, par["err_line"][i],
                                    par["err_code"][i], par["err_field"][i])
            if rows:
                self.rows_read += rows
                yield CriteoChunk(labels=par["labels"][i, :rows].copy(),
                                  dense=par["dense"][i, :rows].copy(),
                                  sparse=self._map(par["cats"][i, :rows]),
                                  first_line=line_no + first_idx, file=str(path))
            line_no += lines
        self._line_no = line_no

    def _record_errors(self, path, buf, block_start, line_no, nerr, err_line, err_code, err_field):
        n = min(nerr, len(err_line))
        for i in range(n):
            line = line_no + int(err_line[i])
            field_idx = int(err_field[i])
            code = int(err_code[i])
            got = _field_text(buf, block_start, int(err_line[i]), field_idx, code)
            bad = Malformed(str(path), line, _field_name(field_idx), _ERR_TEXT[code], got)
            if self.strict:
                raise UserError(str(bad))
            if len(self.malformed_examples) < self.MAX_EXAMPLES:
                self.malformed_examples.append(bad)
        self.malformed += nerr


def _field_text(buf: np.ndarray, start: int, line_index: int, field_idx: int, code: int) -> str:
    """Text shown as 'got ...' for a malformed line (a short excerpt, never the whole line)."""
    raw = bytes(buf[start:])
    lines = raw.split(b"\n", line_index + 1)
    line = lines[line_index].rstrip(b"\r") if line_index < len(lines) else b""
    fields = line.split(b"\t")
    if code == cp.ERR_FIELDS:
        return f"{len(fields)} fields"
    text = fields[field_idx].decode("utf-8", "replace") if field_idx < len(fields) else ""
    if len(text) > 24:
        text = text[:21] + "..."
    return repr(text)


_BOM = b"\xef\xbb\xbf"


def _read_into(fh, store: bytearray, at: int, n: int) -> int:
    """Read up to `n` bytes of `fh` into `store` from offset `at`; the count (0: end)."""
    with memoryview(store) as whole, whole[at:at + n] as part:
        return fh.readinto(part)


class _Span:
    """Bytes [lo, hi) of a file, read like the file itself (`readinto`, a context manager)."""

    def __init__(self, path, lo: int, hi: int):
        self._fh = open(path, "rb")
        self._fh.seek(lo)
        self._left = max(hi - lo, 0)

    def readinto(self, b) -> int:
        with memoryview(b) as whole, whole[:min(len(whole), self._left)] as part:
            got = self._fh.readinto(part)
        self._left -= got
        return got

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


def line_spans(path, parts: int) -> list[tuple[int, int]]:
    """`parts` byte spans of an uncompressed file, cut at line starts near equal sizes: every
    line starts in exactly one span (a span may be empty)."""
    size = Path(path).stat().st_size
    cuts = [0]
    with open(path, "rb") as fh:
        for k in range(1, parts):
            at = max(size * k // parts, cuts[-1])
            if at > 0:                        # the first line start at or after `at`
                fh.seek(at - 1)
                pos = at - 1
                while True:
                    got = fh.read(1 << 16)
                    nl = got.find(b"\n")
                    if nl >= 0 or not got:
                        at = pos + nl + 1 if nl >= 0 else size
                        break
                    pos += len(got)
            cuts.append(min(at, size))
    cuts.append(size)
    return [(cuts[k], cuts[k + 1]) for k in range(parts)]


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise input_error(path, "an existing file", got="no such file")
    if path.is_dir():
        raise input_error(path, "a file", got="a directory")
    if path.stat().st_size == 0:
        raise input_error(path, "a non-empty file", got="an empty file")
