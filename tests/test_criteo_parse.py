"""The numba Criteo parser (`_criteo_parse.parse_block`) against a plain-Python reference on
random, damaged blocks: the same rows, values, positions and error records (line, code, field)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from dlrmprof.tracegen import _criteo_parse as cp
from dlrmprof.tracegen.readers import BUNDLED_SAMPLE

LINES = BUNDLED_SAMPLE.read_bytes().split(b"\n")[:200]
_DEC = re.compile(rb"-?[0-9]*")
_HEX = re.compile(rb"[0-9a-fA-F]{1,8}")


def _wrap(v: int) -> int:
    return (v + (1 << 63)) % (1 << 64) - (1 << 63)


def ref_line(line: bytes):
    """(error code, field, values) of one line without its newline (and trailing CR)."""
    fields = line.split(b"\t")
    vals = []
    for f, x in enumerate(fields):
        if f >= cp.N_FIELDS:
            return cp.ERR_FIELDS, f, None
        if f <= cp.N_DENSE:
            bad = (not _DEC.fullmatch(x) or (x == b"-") or (f == 0 and x == b""))
            if bad:
                return (cp.ERR_LABEL if f == 0 else cp.ERR_DENSE), f, None
            vals.append(_wrap(int(x)) if x not in (b"", b"-") else 0)
        elif x == b"":
            vals.append(int(cp.MISSING))
        elif not _HEX.fullmatch(x):
            return cp.ERR_HEX, f, None
        else:
            vals.append(int(x, 16))
    if len(fields) != cp.N_FIELDS:
        return cp.ERR_FIELDS, len(fields), None
    return 0, cp.N_FIELDS, vals


def ref_block(data: bytes, max_rows: int, stop_on_error: bool):
    pos = rows = lines = 0
    first, errs, out = -1, [], []
    while pos < len(data) and rows < max_rows:
        eol = data.find(b"\n", pos)
        if eol < 0:
            break
        line = data[pos:eol]
        if line.endswith(b"\r"):
            line = line[:-1]
        code, field, vals = ref_line(line)
        lines += 1
        pos = eol + 1
        if code:
            errs.append((lines - 1, code, field))
            if stop_on_error:
                break
            continue
        first = lines - 1 if rows == 0 else first
        rows += 1
        out.append(vals)
    return (pos, rows, lines, len(errs), first), out, errs


def numba_block(data: bytes, max_rows: int, stop_on_error: bool):
    buf = np.frombuffer(data, dtype=np.uint8)
    m = max(max_rows, 1)
    labels, dense, cats = (np.empty(m, np.int64), np.empty((m, cp.N_DENSE), np.int64),
                           np.empty((m, cp.N_SPARSE), np.int64))
    err = [np.full(256, -1, np.int64) for _ in range(3)]
    res = cp.parse_block(buf, 0, buf.shape[0], labels, dense, cats, max_rows, *err,
                         stop_on_error)
    n = res[1]
    out = [[int(labels[r])] + dense[r].tolist() + cats[r].tolist() for r in range(n)]
    errs = [tuple(int(e[i]) for e in err) for i in range(min(res[3], 256))]
    return tuple(int(x) for x in res), out, errs


def damaged(rng) -> bytes:
    """Some bundled lines, a few of them damaged with the bytes a parser must tell apart."""
    pick = [LINES[i] for i in rng.integers(0, len(LINES), int(rng.integers(1, 30)))]
    alphabet = b"\t\r\n-+0129aAfFgG x"
    for i in rng.choice(len(pick), int(rng.integers(0, len(pick) + 1))):
        b = bytearray(pick[i])
        for _ in range(int(rng.integers(1, 4))):
            op, at = int(rng.integers(0, 4)), int(rng.integers(0, len(b) + 1))
            if op == 0:
                b[at:at] = bytes([alphabet[int(rng.integers(0, len(alphabet)))]])
            elif op == 1:
                del b[at:at + int(rng.integers(1, 12))]
            elif op == 2:
                b[at:at] = b"123456789"
            else:
                b[at:at] = b"\r"
        pick[i] = bytes(b)
    data = b"\n".join(pick)
    return data + (b"\n" if rng.random() < 0.7 else b"") + (b"\r\n" if rng.random() < 0.1 else b"")


@pytest.mark.parametrize("seed", range(8))
def test_parser_matches_the_reference_on_damaged_blocks(seed):
    rng = np.random.default_rng(seed)
    for _ in range(150):
        data = damaged(rng)
        stop = bool(rng.random() < 0.2)
        max_rows = int(rng.integers(1, 40))
        assert numba_block(data, max_rows, stop) == ref_block(data, max_rows, stop), data


def test_parser_edge_lines():
    good = LINES[0]
    for data in (b"", b"\n", b"\r\n", good, good + b"\r", good + b"\r\n", good + b"\t\n",
                 good + b"\r\r\n", b"-\n", b"1\t-\n", b"1\t\t\n", good.replace(b"\t", b"\t-", 1)
                 + b"\n", good + b"\n" + good[:50], b"9" * 30 + good[1:] + b"\n"):
        for stop in (False, True):
            assert numba_block(data, 5, stop) == ref_block(data, 5, stop), data


@pytest.mark.parametrize("seed", range(4))
def test_dense_ids_match_a_plain_map(seed):
    """`read_criteo.dense_ids` (map_tables writing each table's ids contiguously, resumed
    after each growth of the shared map) against a dict per table: ids in order of first
    appearance, with and without --table-rows, a subset of the columns in another order."""
    from dlrmprof.tracegen import hashmap
    from dlrmprof.tracegen.readers import read_criteo

    rng = np.random.default_rng(seed)
    rows, distinct = int(rng.integers(1, 3000)), int(rng.choice([3, 50, 5000]))
    cats = rng.integers(0, distinct, (rows, cp.N_SPARSE)).astype(np.int64)
    cats[rng.random((rows, cp.N_SPARSE)) < 0.05] = cp.MISSING
    table_rows = [None, 7][seed % 2]
    tables = ["C3", "C1", "C26"] if seed >= 2 else None
    reader = read_criteo(BUNDLED_SAMPLE, tables=tables, table_rows=table_rows)
    reader._keys, reader._vals = hashmap.empty(64)          # grown (and resumed) many times
    cols = reader._cols
    maps = [dict() for _ in cols]
    want = np.empty((rows, len(cols)), dtype=np.int64)
    for r in range(rows):
        for j, c in enumerate(cols):
            v = int(cats[r, c]) % table_rows if table_rows else int(cats[r, c])
            want[r, j] = maps[j].setdefault(v, len(maps[j]))
    got = np.concatenate([reader.dense_ids(part, cols) for part in
                          np.array_split(cats, int(rng.integers(1, 4)))])
    np.testing.assert_array_equal(got, want)
    assert reader.table_distinct == [len(m) for m in maps]
