"""Any tabular log as index streams: one table per chosen column of a CSV/TSV or Parquet file.

Avazu's ``train.csv``, interaction logs (user, item, ...) and other recsys logs go in without
conversion: each chosen column is a table, each row one access per table (pooling factor 1),
rows in file order.  A column's values are strings; they are remapped densely per column in
order of first appearance, so no source value is kept.  An empty field is a value of its own
("missing"), as Criteo's empty categoricals are.

Options, as `gen-trace --from csv` passes them:

* ``columns``: names (needs a header) or 0-based indices, and index ranges ``a-b``
  (inclusive), comma-separated; default every column;
* ``sep``: the field separator (default: sniffed from the first line among ``, \\t ; |``);
* ``header``: ``"auto"`` (see `_looks_like_header`), ``"yes"``, ``"no"``.

Malformed rows (a different number of fields than the first row) are counted and skipped, or
stop the read under ``strict``: the error names the file, line and field count.  gzip input is
detected by its magic bytes.

`read_parquet` reads TorchRec-style Parquet logs the same way (names or indices in
``columns``, rows in file order); it needs pyarrow (the ``parquet`` extra).
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlrmprof.errors import input_error
from dlrmprof.tracegen.readers import TableStream, _check_file, _is_gzip

SEPARATORS = (",", "\t", ";", "|")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass
class CsvRead:
    """The streams read and what happened on the way."""
    streams: list[TableStream]
    rows_read: int
    header: list[str] | None
    sep: str
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)


def _open_text(path: Path):
    raw = gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")
    # utf-8-sig: a byte-order mark is not part of the first field
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")


def _sniff_sep(line: str) -> str:
    counts = {s: line.count(s) for s in SEPARATORS}
    best = max(counts, key=lambda s: counts[s])
    return best if counts[best] else ","


def _looks_like_header(first: list[str], second: list[str] | None) -> bool:
    """A header has no numeric field and distinct names; and either some column of the
    second row is numeric (where the first row has a name) or every name is an identifier.
    Logs of hashed ids only (no numbers anywhere) are ambiguous: `--header` decides."""
    if any(_NUMBER.match(f.strip()) for f in first) or len(set(first)) != len(first):
        return False
    if second is None or len(second) != len(first):
        return True
    return any(_NUMBER.match(s.strip()) for s in second) or all(
        f.isidentifier() for f in first)


def parse_columns(spec: str | None, header: list[str] | None, nfields: int,
                  path: Path) -> list[int]:
    """0-based column indices from a ``--columns`` spec (names, indices, ranges a-b)."""
    if spec is None or not spec.strip():
        return list(range(nfields))
    out: list[int] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)-(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo > hi:
                raise input_error(path, "a column range a-b with a <= b", field="--columns",
                                  got=repr(part))
            idx = list(range(lo, hi + 1))
        elif part.isdigit():
            idx = [int(part)]
        else:
            if header is None:
                raise input_error(path, "column indices (the file has no header line)",
                                  field="--columns", got=repr(part))
            if part not in header:
                raise input_error(path, f"a column name of the header ({', '.join(header[:8])}"
                                  f"{', ...' if len(header) > 8 else ''})", field="--columns",
                                  got=repr(part))
            idx = [header.index(part)]
        for i in idx:
            if i >= nfields:
                raise input_error(path, f"column indices below {nfields} (fields per row)",
                                  field="--columns", got=str(i))
            if i in out:
                raise input_error(path, "each column once", field="--columns", got=f"{i} twice")
            out.append(i)
    if not out:
        raise input_error(path, "at least one column", field="--columns", got=repr(spec))
    return out


def read_csv(path, columns: str | None = None, sep: str | None = None, header: str = "auto",
             max_rows: int | None = None, strict: bool = False) -> CsvRead:
    """Read the chosen columns of a delimited log as index streams (see the module doc)."""
    path = Path(path)
    try:
        return _read_csv(path, columns, sep, header, max_rows, strict)
    except (OSError, EOFError, zlib.error, csv.Error) as exc:
        what = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        raise input_error(path, "a readable delimited text file (plain or gzip)",
                          got=f"{type(exc).__name__}: {what}") from None


def _read_csv(path: Path, columns, sep, header, max_rows, strict) -> CsvRead:
    _check_file(path)
    if header not in ("auto", "yes", "no"):
        raise input_error(path, "--header auto, yes or no", field="--header", got=repr(header))
    if sep is not None and len(sep) != 1:
        sep = {"\\t": "\t", "tab": "\t"}.get(sep, sep)
        if len(sep) != 1:
            raise input_error(path, "a one-character separator (or \\t)", field="--sep",
                              got=repr(sep))
    with _open_text(path) as fh:
        first_line = fh.readline()
        second_line = fh.readline()
    if not first_line.strip():
        raise input_error(path, "a first line with fields", line=1, got="an empty line")
    sep = sep or _sniff_sep(first_line)
    first = next(csv.reader([first_line], delimiter=sep))
    second = next(csv.reader([second_line], delimiter=sep)) if second_line.strip() else None
    has_header = header == "yes" or (header == "auto" and _looks_like_header(first, second))
    names = first if has_header else None
    nfields = len(first)
    cols = parse_columns(columns, names, nfields, path)
    maps = [dict() for _ in cols]
    ids = [[] for _ in cols]
    rows = malformed = 0
    examples: list[str] = []
    with _open_text(path) as fh:
        reader = csv.reader(fh, delimiter=sep)
        for line_no, rec in enumerate(reader, start=1):
            if line_no == 1 and has_header:
                continue
            if max_rows is not None and rows >= max_rows:
                break
            if len(rec) != nfields:
                if not rec:          # a blank line
                    continue
                msg = f"line {line_no}: {len(rec)} fields, expected {nfields}"
                if strict:
                    raise input_error(path, f"{nfields} fields (as the first row)",
                                      line=line_no, got=f"{len(rec)} fields")
                malformed += 1
                if len(examples) < 5:
                    examples.append(msg)
                continue
            for j, c in enumerate(cols):
                m = maps[j]
                v = rec[c]
                ids[j].append(m.setdefault(v, len(m)))
            rows += 1
    if rows == 0:
        raise input_error(path, "at least one well-formed data row",
                          got="none" + (f" ({malformed} malformed)" if malformed else ""))
    streams = []
    for j, c in enumerate(cols):
        name = names[c] if names else f"col{c}"
        arr = np.asarray(ids[j], dtype=np.int64)
        streams.append(TableStream(name=name, ids=arr, lengths=np.ones(arr.size, dtype=np.int64),
                                   rows=max(len(maps[j]), 1)))
    return CsvRead(streams=streams, rows_read=rows, header=names, sep=sep, malformed=malformed,
                   malformed_examples=examples)


def read_parquet(path, columns: str | None = None, max_rows: int | None = None) -> CsvRead:
    """The chosen columns of a Parquet file as index streams, one table each, rows in file
    order; values of any type remapped densely per column in order of first appearance
    (nulls are a value of their own)."""
    path = Path(path)
    _check_file(path)
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:
        raise input_error(path, "pyarrow for --from parquet (pip install 'dlrmprof[parquet]')",
                          got="no pyarrow") from None
    try:
        pf = pq.ParquetFile(path)
        names = list(pf.schema_arrow.names)
        cols = parse_columns(columns, names, len(names), path)
        table = pf.read(columns=[names[c] for c in cols])
    except (pa.ArrowException, OSError, ValueError) as exc:
        what = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        raise input_error(path, "a readable Parquet file",
                          got=f"{type(exc).__name__}: {what}") from None
    rows = table.num_rows if max_rows is None else min(table.num_rows, int(max_rows))
    if rows == 0:
        raise input_error(path, "at least one data row", got="none")
    streams = []
    for c in cols:
        col = table.column(names[c]).slice(0, rows).combine_chunks()
        try:
            enc = pc.dictionary_encode(col, null_encoding="encode")
        except pa.ArrowNotImplementedError:
            raise input_error(path, "columns of scalar values (numbers, strings, bytes)",
                              field=names[c], got=str(col.type)) from None
        ids = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        streams.append(TableStream(name=names[c], ids=ids,
                                   lengths=np.ones(ids.size, dtype=np.int64),
                                   rows=max(len(enc.dictionary), 1)))
    return CsvRead(streams=streams, rows_read=rows, header=names, sep="")
