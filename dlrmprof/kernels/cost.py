"""Cost model: the bytes an op must move and the FLOPs it must do, for a shape.

The byte count is the compulsory traffic of one call: every input read once, every output
written once (no cache reuse, no spills).  It is what the roofline verdict divides FLOPs by.

Embedding-bag ops gather rows: by default every lookup is counted (`nnz * D` elements, the
"effective" bandwidth convention of embedding benchmarks).  Pass `distinct_rows=` to count
each touched row once instead (the lower bound when repeats hit in cache).
"""

from __future__ import annotations

from dataclasses import dataclass

from dlrmprof.errors import UserError


@dataclass(frozen=True)
class Cost:
    bytes_read: int
    bytes_written: int
    flops: int

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOPs per byte moved."""
        return self.flops / self.bytes if self.bytes else float("inf")

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.bytes_read + other.bytes_read,
                    self.bytes_written + other.bytes_written, self.flops + other.flops)


def _pos_int(op: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"cost({op!r}): {name} must be a non-negative int, got {value!r}")
    return value


def _nnz(op: str, shape: dict, batch: int) -> int:
    if "nnz" in shape:
        return _pos_int(op, "nnz", shape.pop("nnz"))
    if "pooling" in shape:
        pooling = shape.pop("pooling")
        if not isinstance(pooling, (int, float)) or pooling < 0:
            raise UserError(f"cost({op!r}): pooling must be >= 0, got {pooling!r}")
        return int(round(batch * pooling))
    raise UserError(f"cost({op!r}): give nnz= (lookups) or pooling= (mean bag length)")


def _embedding_bag(op: str, shape: dict) -> Cost:
    batch = _pos_int(op, "batch", shape.pop("batch"))
    dim = _pos_int(op, "dim", shape.pop("dim"))
    nnz = _nnz(op, shape, batch)
    elem = _pos_int(op, "elem_bytes", shape.pop("elem_bytes", 4))
    # a packed row (kernels.quant): its bytes, scale and bias included; the output stays fp32
    row = shape.pop("row_bytes", None)
    row = dim * elem if row is None else _pos_int(op, "row_bytes", row)
    index_bytes = _pos_int(op, "index_bytes", shape.pop("index_bytes", 8))
    weighted = bool(shape.pop("weighted", False))
    mean = shape.pop("mode", "sum") == "mean"
    rows = shape.pop("distinct_rows", None)
    rows = nnz if rows is None else min(_pos_int(op, "distinct_rows", rows), nnz)
    meta = nnz * index_bytes + (batch + 1) * index_bytes + (nnz * elem if weighted else 0)
    mults = nnz * dim if weighted else 0
    if op == "embedding_bag":
        return Cost(rows * row + meta, batch * dim * elem,
                    nnz * dim + mults + (batch * dim if mean else 0))
    # embedding_bag_sgd: read grad_output and the touched rows, write the touched rows;
    # per lookup one multiply-add of the (scaled) gradient into the row.
    return Cost(rows * dim * elem + batch * dim * elem + meta, rows * dim * elem,
                2 * nnz * dim + mults + (batch * dim if mean else 0))


def _interaction(op: str, shape: dict) -> Cost:
    batch = _pos_int(op, "batch", shape.pop("batch"))
    tables = _pos_int(op, "tables", shape.pop("tables"))
    dim = _pos_int(op, "dim", shape.pop("dim"))
    elem = _pos_int(op, "elem_bytes", shape.pop("elem_bytes", 4))
    pairs = (tables + 1) * tables // 2
    inputs = batch * (tables + 1) * dim * elem
    out = batch * (dim + pairs) * elem
    if op == "interaction":
        return Cost(inputs, out, 2 * batch * pairs * dim)
    # backward: read inputs and grad_out, write grad_dense and grad_pooled
    return Cost(inputs + out, inputs, 4 * batch * pairs * dim + batch * dim)


def _linear(op: str, shape: dict) -> Cost:
    batch = _pos_int(op, "batch", shape.pop("batch"))
    fin = _pos_int(op, "in_features", shape.pop("in_features"))
    fout = _pos_int(op, "out_features", shape.pop("out_features"))
    elem = _pos_int(op, "elem_bytes", shape.pop("elem_bytes", 4))
    bias = bool(shape.pop("bias", True))
    x, w, b, y = batch * fin, fout * fin, (fout if bias else 0), batch * fout
    if op == "linear":
        return Cost((x + w + b) * elem, y * elem, 2 * batch * fin * fout + (y if bias else 0))
    # linear_backward: read x, weight, grad_out; write grad_x, grad_weight, grad_bias
    return Cost((x + w + y) * elem, (x + w + b) * elem,
                4 * batch * fin * fout + (y if bias else 0))


def _mlp(op: str, shape: dict) -> Cost:
    batch = _pos_int(op, "batch", shape.pop("batch"))
    sizes = shape.pop("sizes")
    if not isinstance(sizes, (list, tuple)) or len(sizes) < 2:
        raise UserError(f"cost('mlp'): sizes must list >= 2 layer widths, got {sizes!r}")
    elem = shape.pop("elem_bytes", 4)
    total = Cost(0, 0, 0)
    for fin, fout in zip(sizes[:-1], sizes[1:]):
        total = total + _linear("linear", {"batch": batch, "in_features": fin,
                                           "out_features": fout, "elem_bytes": elem})
    return total


_COSTS = {
    "embedding_bag": _embedding_bag,
    "embedding_bag_sgd": _embedding_bag,
    "interaction": _interaction,
    "interaction_backward": _interaction,
    "linear": _linear,
    "linear_backward": _linear,
    "mlp": _mlp,
}

COST_OPS = tuple(_COSTS)


def lines_per_row(row_bytes: int, line: int = 64) -> float:
    """Mean number of `line`-byte cache lines one row of `row_bytes` spans when the rows lie
    back to back from a line-aligned base (row r starts at r * row_bytes): 1.25 for 24-byte
    rows (2 in 8 straddle a boundary), 1.0 for 64, 2.0 for 72."""
    if row_bytes <= 0:
        raise UserError(f"lines_per_row: row_bytes must be positive, got {row_bytes!r}")
    import math
    period = line // math.gcd(row_bytes, line)   # rows until the pattern repeats
    spans = [(r * row_bytes + row_bytes - 1) // line - (r * row_bytes) // line + 1
             for r in range(period)]
    return sum(spans) / period


def cost(op: str, **shape) -> Cost:
    """Bytes moved and FLOPs of one call of `op` at this shape.

    embedding_bag / embedding_bag_sgd: batch, dim, nnz= or pooling=, [mode, weighted,
        elem_bytes=4, index_bytes=8, distinct_rows, row_bytes=dim * elem_bytes (a packed
        row's real size, e.g. kernels.quant.row_bytes("int8", dim) = dim + 8)]
    interaction / interaction_backward: batch, tables (T sparse features), dim, [elem_bytes]
    linear / linear_backward: batch, in_features, out_features, [bias=True, elem_bytes]
    mlp: batch, sizes=[in, h1, ..., out], [elem_bytes] (sum of its linear layers)

    >>> cost("linear", batch=2, in_features=3, out_features=4).flops
    56
    """
    if op not in _COSTS:
        raise UserError(f"cost: unknown op {op!r}; known: {', '.join(COST_OPS)}")
    shape = dict(shape)
    try:
        result = _COSTS[op](op, shape)
    except KeyError as exc:
        raise UserError(f"cost({op!r}): missing shape argument {exc.args[0]!r}") from None
    if shape:
        raise UserError(f"cost({op!r}): unknown shape argument(s) {', '.join(sorted(shape))}")
    return result
