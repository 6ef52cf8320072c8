"""Numba parser for Criteo TSV blocks (label, I1..I13, C1..C26) and the per-table dense map."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dlrmprof.tracegen.hashmap import slot

N_DENSE = 13
N_SPARSE = 26
N_FIELDS = 1 + N_DENSE + N_SPARSE
MISSING = np.int64(1) << np.int64(32)          # raw value of an empty categorical field

# error codes (per malformed line)
ERR_FIELDS = 1      # wrong field count
ERR_LABEL = 2       # label not an integer
ERR_DENSE = 3       # dense field not an integer
ERR_HEX = 4         # categorical field not 1-8 hex digits


# The integer and hex field parsing stays inline here: as separate inlined helpers returning
# (ok, value) the parser measured 5-8% slower (docs/performance.md).
@njit(cache=True, inline="always")
def _parse_line(buf, pos, line_end, labels, dense, cats, row):
    """Parse the line buf[pos:line_end] into row slot `row`: label and dense fields decimal
    integers (optional '-'; an empty dense field is 0), categorical fields 1-8 hex digits
    (MISSING when empty).  Returns (error code, field), (0, N_FIELDS) when well formed."""
    p = pos
    f = 0
    while True:
        q = p
        while q < line_end and buf[q] != 9:
            q += 1
        # field f is buf[p:q]
        if f >= N_FIELDS:
            return ERR_FIELDS, f
        if f == 0 or f <= N_DENSE:
            neg = False
            k = p
            if k < q and buf[k] == 45:
                neg = True
                k += 1
            v = np.int64(0)
            ok = True
            if k == q and (f == 0 or neg):
                ok = False        # label must be present; "-" alone is not a number
            while k < q:
                c = buf[k]
                if c < 48 or c > 57:
                    ok = False
                    break
                v = v * 10 + (c - 48)
                k += 1
            if not ok:
                return (ERR_LABEL if f == 0 else ERR_DENSE), f
            if neg:
                v = -v
            if f == 0:
                labels[row] = v
            else:
                dense[row, f - 1] = v
        else:
            n = q - p
            if n == 0:
                cats[row, f - 1 - N_DENSE] = MISSING
            elif n > 8:
                return ERR_HEX, f
            else:
                v = np.int64(0)
                for k in range(p, q):
                    c = buf[k]
                    if 48 <= c <= 57:
                        d = c - 48
                    elif 97 <= c <= 102:
                        d = c - 87
                    elif 65 <= c <= 70:
                        d = c - 55
                    else:
                        return ERR_HEX, f
                    v = v * 16 + d
                cats[row, f - 1 - N_DENSE] = v
        f += 1
        if q >= line_end:
            break
        p = q + 1
    if f != N_FIELDS:
        return ERR_FIELDS, f
    return 0, f


@njit(cache=True)
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
        # find end of line
        eol = pos
        while eol < end and buf[eol] != 10:
            eol += 1
        if eol >= end:
            break                      # incomplete line: caller supplies more data
        line_end = eol
        if line_end > pos and buf[line_end - 1] == 13:
            line_end -= 1
        code, field = _parse_line(buf, pos, line_end, labels, dense, cats, rows)
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


@njit(cache=True)
def map_tables(cats, cols, modulo, keys, vals, counts, out):
    """Map raw categorical values of the chosen columns to dense per-table ids.

    keys/vals: one `hashmap` for all tables, key = table << 34 | value.
    Returns the number of rows done (stops early when the map is half full: grow, resume).
    """
    mask = keys.shape[0] - 1
    limit = keys.shape[0] // 2
    total = 0
    for t in range(counts.shape[0]):
        total += counts[t]
    n = cats.shape[0]
    for r in range(n):
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
                out[r, j] = counts[j]
                counts[j] += 1
                total += 1
            else:
                out[r, j] = cur
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
