"""Numba parser for Criteo TSV blocks (label, I1..I13, C1..C26) and the per-table dense map."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dlrmprof.tracegen.hashmap import slot

# numba's cache keys kernels on this file only: the files they compile in (dlrmprof.jitdeps)
_DEPS = ('hashmap.py',)
_DEPS_SHA256 = '97d3eab76e531ae5'

N_DENSE = 13
N_SPARSE = 26
N_FIELDS = 1 + N_DENSE + N_SPARSE
MISSING = np.int64(1) << np.int64(32)          # raw value of an empty categorical field

# error codes (per malformed line)
ERR_FIELDS = 1      # wrong field count
ERR_LABEL = 2       # label not an integer
ERR_DENSE = 3       # dense field not an integer
ERR_HEX = 4         # categorical field not 1-8 hex digits


# Each byte's class: a hex digit's value (0-15), TAB, NL, CR, or OTHER.  Decimal digits are
# the classes 0-9 of '0'..'9' (their hex value is their decimal value).
_TAB, _NL, _CR, _OTHER = 16, 17, 18, 19
_CLASS = np.full(256, _OTHER, dtype=np.uint8)
_CLASS[48:58] = np.arange(10)
_CLASS[97:103] = np.arange(10, 16)
_CLASS[65:71] = np.arange(10, 16)
_CLASS[9], _CLASS[10], _CLASS[13] = _TAB, _NL, _CR


@njit(cache=True, inline="always")
def _ends_field(buf, k, end, c):
    """Byte k (class c) ends a field: a tab, a newline, or a CR right before a newline."""
    return c == _TAB or c == _NL or (c == _CR and k + 1 < end and buf[k + 1] == 10)


@njit(cache=True, inline="always")
def _eol(buf, k, end):
    """The newline at or after k, or -1 when the block ends first (an incomplete line)."""
    while k < end and buf[k] != 10:
        k += 1
    return k if k < end else -1


# One pass over each line's bytes: every field is parsed as it is scanned (fields, digits and
# the line's end found together); an error skips to the newline.  The decimal and hex digit
# loops stay two inline loops with constant bases: one loop with a runtime base, or an
# inlined helper returning (value, position, class), measured slower (docs/performance.md).
@njit(cache=True, inline="always")
def _parse_line(buf, pos, end, labels, dense, cats, row):
    """Parse the line starting at buf[pos] into row slot `row`: label and dense fields decimal
    integers (optional '-'; an empty dense field is 0), categorical fields 1-8 hex digits
    (MISSING when empty); a CR before the newline is not part of the line.  Returns (error
    code, field, position of the line's newline), (0, N_FIELDS, newline) when well formed;
    the newline is -1 when the block ends before it (nothing is recorded then)."""
    k = pos
    f = 0
    while True:
        if f >= N_FIELDS:
            return ERR_FIELDS, f, _eol(buf, k, end)
        if k >= end:
            return 0, f, -1
        c = _CLASS[buf[k]]
        if f <= N_DENSE:
            neg = False
            if buf[k] == 45:
                neg = True
                k += 1
                c = _CLASS[buf[k]] if k < end else _OTHER
            v = np.int64(0)
            start = k
            while c < 10:
                v = v * 10 + c
                k += 1
                c = _CLASS[buf[k]] if k < end else _OTHER
            if k >= end:
                return 0, f, -1
            if not _ends_field(buf, k, end, c) or (k == start and (f == 0 or neg)):
                return (ERR_LABEL if f == 0 else ERR_DENSE), f, _eol(buf, k, end)
            if neg:
                v = -v
            if f == 0:
                labels[row] = v
            else:
                dense[row, f - 1] = v
        else:
            v = np.int64(0)
            start = k
            while c < 16:
                v = v * 16 + c
                k += 1
                c = _CLASS[buf[k]] if k < end else _OTHER
            if k >= end:
                return 0, f, -1
            if not _ends_field(buf, k, end, c) or k - start > 8:
                return ERR_HEX, f, _eol(buf, k, end)
            cats[row, f - 1 - N_DENSE] = MISSING if k == start else v
        f += 1
        if c != _TAB:
            q = k if c == _NL else k + 1          # the newline (after a CR)
            if f != N_FIELDS:
                return ERR_FIELDS, f, q
            return 0, f, q
        k += 1


@njit(cache=True, no_cfunc_wrapper=True)
def parse_block(buf, start, end, labels, dense, cats, max_rows, err_line, err_code, err_field,
                stop_on_error):
    """Parse complete lines in buf[start:end] into row slots 0..max_rows-1.

    Returns (position after the last consumed line, rows parsed, lines consumed, errors,
    index of the first parsed row's line within the block).
    Malformed lines are skipped and recorded (line index within the block, code, field index).
    """
    pos = start
    rows = 0
    lines = 0
    nerr = 0
    first_row_line = -1
    maxerr = err_line.shape[0]
    while pos < end and rows < max_rows:
        code, field, eol = _parse_line(buf, pos, end, labels, dense, cats, rows)
        if eol < 0:
            break                      # incomplete line: caller supplies more data
        if code != 0:
            if nerr < maxerr:
                err_line[nerr] = lines
                err_code[nerr] = code
                err_field[nerr] = field
            nerr += 1
            lines += 1
            pos = eol + 1
            if stop_on_error:
                return pos, rows, lines, nerr, first_row_line
            continue
        if rows == 0:
            first_row_line = lines
        rows += 1
        lines += 1
        pos = eol + 1
    return pos, rows, lines, nerr, first_row_line


@njit(cache=True, no_cfunc_wrapper=True)
def map_tables(cats, r0, cols, modulo, keys, vals, counts, out):
    """Map raw categorical values of the chosen columns to dense per-table ids, rows r0.. of
    `cats` into out[table, row]: each table's ids contiguous, as the capture reads them
    (column by column), so it takes no strided copy of each column.

    keys/vals: one `hashmap` for all tables, key = table << 34 | value.
    Returns the rows done, counted from 0 (stops early when the map is half full: grow,
    resume from there).
    """
    mask = keys.shape[0] - 1
    limit = keys.shape[0] // 2
    total = 0
    for t in range(counts.shape[0]):
        total += counts[t]
    n = cats.shape[0]
    for r in range(r0, n):
        if total + cols.shape[0] > limit:
            return r
        for j in range(cols.shape[0]):
            v = cats[r, cols[j]]
            if modulo > 0:
                v = v % modulo
            k = (np.int64(j) << np.int64(34)) | v
            p = slot(keys, vals, k, mask)
            cur = vals[p]
            if cur < 0:
                keys[p] = k
                vals[p] = counts[j]
                out[j, r] = counts[j]
                counts[j] += 1
                total += 1
            else:
                out[j, r] = cur
    return n


@njit(cache=True, parallel=True)
def parse_pieces(buf, starts, ends, labels, dense, cats, err_line, err_code, err_field, res):
    """parse_block on each piece [starts[i], ends[i]) in parallel (pieces end on newlines);
    piece i writes rows into labels[i], dense[i], cats[i] and its errors into err_*[i];
    res[i] = (end position, rows, lines, errors, first row's line)."""
    for i in prange(starts.shape[0]):
        r = parse_block(buf, starts[i], ends[i], labels[i], dense[i], cats[i],
                        labels.shape[1], err_line[i], err_code[i], err_field[i], False)
        res[i, 0] = r[0]
        res[i, 1] = r[1]
        res[i, 2] = r[2]
        res[i, 3] = r[3]
        res[i, 4] = r[4]
