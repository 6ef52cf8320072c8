"""Data sources for `dlrmprof run`: batches of dense features, sparse bags and labels.

A `Batch` holds, per table t, its bags in the FBGEMM/TorchRec jagged layout::

    indices[t] = [ 7  2  9 | 4 | 1  1 ]        (int64, nnz_t entries)
    offsets[t] = [ 0        3   4      6 ]     (int64, B+1 entries, starting at 0)
    dense      = float32 [B, F]   (already transformed: log(1 + max(x, 0)) for Criteo)
    labels     = float32 [B]      (0/1 clicks)

Sources (each `next_batch()` returns one `Batch`; all randomness from an explicit seed):

``TraceSource``   sparse indices cut from a trace's jagged layout: batch k takes samples
                  [kB, kB+B) of every table, wrapping around at the end of the trace.  Dense
                  features and labels are synthetic (the trace holds only indices), drawn from
                  `SYNTHETIC_DENSE` below.  A profile-only trace is first materialized by
                  the trace toolkit (`Trace.materialize`).
``KaggleSource``  real Criteo rows through `dlrmprof.tracegen.readers.read_criteo` (the reader
                  `gen-trace` uses): dense log(1 + max(x, 0)), one ID per categorical column,
                  labels from the file; the first `1 - test_fraction` of the rows (file order,
                  as the reference's day split) train, the rest is held out for evaluation.
``RandomSource``  uniform indices over each table's rows, with the bag lengths of a trace when
                  one is given (else one index per bag): the trace's traffic without its
                  locality.

Synthetic dense features and labels (documented, seeded)::

    x[b, j] ~ floor(Exponential(mean 10))   (count-like, as Criteo's integer features)
    dense   = log(1 + x)
    label   ~ Bernoulli(0.256)               (the Criteo Kaggle click rate)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dlrmprof.errors import UserError

SYNTHETIC_DENSE = "dense = log(1 + floor(Exponential(mean 10))), label ~ Bernoulli(0.256)"
DENSE_MEAN = 10.0
CLICK_RATE = 0.256


@dataclass
class Batch:
    dense: np.ndarray             # float32 [B, F]
    labels: np.ndarray            # float32 [B]
    indices: list[np.ndarray]     # per table, int64 [nnz_t]
    offsets: list[np.ndarray]     # per table, int64 [B+1], offsets[t][0] == 0

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])

    @property
    def nnz(self) -> list[int]:
        return [int(i.shape[0]) for i in self.indices]


def _synthetic_dense(rng: np.random.Generator, batch: int, features: int,
                     dense_out: np.ndarray, labels_out: np.ndarray) -> None:
    x = rng.exponential(DENSE_MEAN, size=(batch, features))
    np.log1p(np.floor(x), out=x)
    dense_out[...] = x
    labels_out[...] = rng.random(batch) < CLICK_RATE


def check_index_ranges(tables_indices: Sequence[np.ndarray], rows: Sequence[int],
                       names: Sequence[str], where: str) -> None:
    """UserError naming the first table whose indices fall outside [0, rows)."""
    for idx, r, name in zip(tables_indices, rows, names):
        if idx.shape[0] == 0:
            continue
        hi, lo = int(idx.max()), int(idx.min())
        if hi >= r or lo < 0:
            bad = hi if hi >= r else lo
            raise UserError(f"{where}: table {name}: index {bad} is outside the table's "
                            f"{r} rows (expected 0 <= index < {r})")


class TraceSource:
    """Batches cut from a trace file, wrapping at its end; synthetic dense and labels."""

    kind = "trace"

    def __init__(self, trace, batch_size: int, dense_features: int, rows: Sequence[int],
                 names: Sequence[str], seed: int = 0, where: str = "trace"):
        if batch_size <= 0:
            raise UserError(f"--batch-size must be positive, got {batch_size}")
        self.trace = trace
        self.B = int(batch_size)
        self.N = int(trace.num_samples)
        if self.B > self.N:
            raise UserError(f"{where}: --batch-size {self.B} is larger than the trace's "
                            f"{self.N} samples")
        self.T = len(trace.tables)
        bags = [trace.table_bags(t) for t in range(self.T)]
        self._idx = [np.ascontiguousarray(i, dtype=np.int64) for i, _ in bags]
        self._off = [np.ascontiguousarray(o, dtype=np.int64) for _, o in bags]
        check_index_ranges(self._idx, rows, names, where)
        self.F = dense_features
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)
        self.cursor = 0
        self.wraps = 0
        self._dense = [np.empty((self.B, self.F), np.float32) for _ in range(2)]
        self._labels = [np.empty(self.B, np.float32) for _ in range(2)]
        self._flip = 0

    def describe(self) -> dict:
        return {"kind": self.kind, "batch_size": self.B, "samples": self.N,
                "dense_and_labels": "synthetic: " + SYNTHETIC_DENSE, "wrapping": True}

    def _cut(self, t: int, b0: int, b1: int) -> tuple[np.ndarray, np.ndarray]:
        off = self._off[t]
        s, e = off[b0], off[b1]
        return self._idx[t][s:e], off[b0:b1 + 1] - s

    def _sparse(self, b0: int, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Every table's bags for samples [b0, b0 + n), wrapping at the end of the trace."""
        b1 = b0 + n
        indices, offsets = [], []
        if b1 <= self.N:
            for t in range(self.T):
                i, o = self._cut(t, b0, b1)
                indices.append(i)
                offsets.append(o)
        else:  # wrap: tail of the trace, then its head
            rest = b1 - self.N
            for t in range(self.T):
                i1, o1 = self._cut(t, b0, self.N)
                i2, o2 = self._cut(t, 0, rest)
                indices.append(np.concatenate([i1, i2]))
                offsets.append(np.concatenate([o1, o2[1:] + o1[-1]]))
        return indices, offsets

    def next_batch(self) -> Batch:
        b0 = self.cursor
        b1 = b0 + self.B
        indices, offsets = self._sparse(b0, self.B)
        if b1 <= self.N:
            self.cursor = b1 % self.N
            if self.cursor == 0:
                self.wraps += 1
        else:
            self.cursor = b1 - self.N
            self.wraps += 1
        k = self._flip = 1 - self._flip  # two buffers: the previous batch stays valid
        _synthetic_dense(self.rng, self.B, self.F, self._dense[k], self._labels[k])
        return Batch(self._dense[k], self._labels[k], indices, offsets)

    def batch_at(self, start: int, n: int) -> Batch:
        """Samples [start, start + n) of the trace (wrapping at its end), with
        dense features and labels drawn from a generator seeded by (seed, start): every
        process that asks for the same samples gets the same batch."""
        if not 0 < n <= self.N:
            raise ValueError(f"batch_at: n must be in 1..{self.N} (the trace's samples), got {n}")
        start %= self.N
        indices, offsets = self._sparse(start, n)
        dense = np.empty((n, self.F), np.float32)
        labels = np.empty(n, np.float32)
        _synthetic_dense(np.random.default_rng((self.seed, start)), n, self.F, dense, labels)
        return Batch(dense, labels, indices, offsets)


class RandomSource:
    """Uniform indices over each table; bag lengths from a trace when given, else 1."""

    kind = "random"

    def __init__(self, batch_size: int, dense_features: int, rows: Sequence[int], seed: int = 0,
                 trace=None, where: str = "trace"):
        if batch_size <= 0:
            raise UserError(f"--batch-size must be positive, got {batch_size}")
        self.B = int(batch_size)
        self.F = dense_features
        self.rows = [int(r) for r in rows]
        self.rng = np.random.default_rng(seed)
        self._lengths: list[np.ndarray] | None = None
        self.cursor = 0
        if trace is not None:
            self.N = int(trace.num_samples)
            if self.B > self.N:
                raise UserError(f"{where}: --batch-size {self.B} is larger than the trace's "
                                f"{self.N} samples")
            self._lengths = [np.diff(trace.table_bags(t)[1]).astype(np.int64)
                             for t in range(len(self.rows))]
        self._ones = np.arange(self.B + 1, dtype=np.int64)
        self.seed = int(seed)

    def describe(self) -> dict:
        return {"kind": self.kind, "batch_size": self.B,
                "indices": "uniform over each table's rows",
                "bag_lengths": "from the trace" if self._lengths is not None else "1 per bag",
                "dense_and_labels": "synthetic: " + SYNTHETIC_DENSE}

    def next_batch(self) -> Batch:
        indices, offsets = [], []
        for t, r in enumerate(self.rows):
            if self._lengths is None:
                off = self._ones
            else:
                pos = (self.cursor + np.arange(self.B)) % self.N
                off = np.zeros(self.B + 1, np.int64)
                np.cumsum(self._lengths[t][pos], out=off[1:])
            indices.append(self.rng.integers(0, r, size=int(off[-1]), dtype=np.int64))
            offsets.append(off)
        if self._lengths is not None:
            self.cursor = (self.cursor + self.B) % self.N
        dense = np.empty((self.B, self.F), np.float32)
        labels = np.empty(self.B, np.float32)
        _synthetic_dense(self.rng, self.B, self.F, dense, labels)
        return Batch(dense, labels, indices, offsets)

    def batch_at(self, start: int, n: int) -> Batch:
        """Samples [start, start + n): uniform indices, dense features and labels drawn from a
        generator seeded by (seed, start), bag lengths from the trace's samples at those
        positions (else 1): every process that asks for the same samples gets the same batch."""
        rng = np.random.default_rng((self.seed, start))
        indices, offsets = [], []
        for t, r in enumerate(self.rows):
            if self._lengths is None:
                off = np.arange(n + 1, dtype=np.int64)
            else:
                pos = (start + np.arange(n)) % self.N
                off = np.zeros(n + 1, np.int64)
                np.cumsum(self._lengths[t][pos], out=off[1:])
            indices.append(rng.integers(0, r, size=int(off[-1]), dtype=np.int64))
            offsets.append(off)
        dense = np.empty((n, self.F), np.float32)
        labels = np.empty(n, np.float32)
        _synthetic_dense(rng, n, self.F, dense, labels)
        return Batch(dense, labels, indices, offsets)


@dataclass
class CriteoData:
    """Real Criteo rows in memory: dense log1p'd, one ID per table per row, labels."""

    dense: np.ndarray    # float32 [n, 13]
    sparse: np.ndarray   # int64 [n, T]
    labels: np.ndarray   # float32 [n]
    table_rows: list[int]
    source: str
    malformed: int = 0

    def split(self, test_fraction: float) -> tuple["CriteoData", "CriteoData"]:
        n = self.labels.shape[0]
        n_test = int(round(n * test_fraction))
        if n_test < 1 or n - n_test < 1:
            raise UserError(f"{self.source}: {n} rows cannot be split into train and test "
                            f"(test fraction {test_fraction})")
        cut = n - n_test
        a = dataclasses.replace(self, dense=self.dense[:cut], sparse=self.sparse[:cut],
                                labels=self.labels[:cut])
        b = dataclasses.replace(self, dense=self.dense[cut:], sparse=self.sparse[cut:],
                                labels=self.labels[cut:])
        return a, b

    def batch(self, rows: np.ndarray | slice) -> Batch:
        sp = self.sparse[rows]
        B = sp.shape[0]
        off = np.arange(B + 1, dtype=np.int64)
        return Batch(np.ascontiguousarray(self.dense[rows]), np.ascontiguousarray(self.labels[rows]),
                     [np.ascontiguousarray(sp[:, t]) for t in range(sp.shape[1])],
                     [off] * sp.shape[1])


def bundled_criteo_sample() -> Path:
    from importlib import resources

    return Path(str(resources.files("dlrmprof").joinpath("data",
                                                          "criteo_kaggle_train_head2k.txt")))


def load_criteo(paths: Sequence[str | Path], max_rows: int | None = None,
                table_rows: int | None = None) -> CriteoData:
    """Read Criteo TSV rows with the trace toolkit's reader (dense -> log(1 + max(x, 0))).

    `table_rows` caps every table (the reader reduces raw values modulo it, like DLRM's
    --max-ind-range); each table then needs as many rows as it saw distinct IDs.
    """
    from dlrmprof.tracegen.readers import read_criteo

    reader = read_criteo([str(p) for p in paths], max_rows=max_rows, table_rows=table_rows)
    dense, sparse, labels = [], [], []
    for chunk in reader:
        dense.append(np.log1p(np.maximum(chunk.dense, 0)).astype(np.float32))
        sparse.append(np.asarray(chunk.sparse, dtype=np.int64))
        labels.append(np.asarray(chunk.labels, dtype=np.float32))
    where = ", ".join(map(str, paths))
    if not labels:
        raise UserError(f"{where}: no Criteo rows read")
    return CriteoData(np.concatenate(dense), np.concatenate(sparse), np.concatenate(labels),
                      [max(1, int(r)) for r in reader.table_distinct], where,
                      int(reader.malformed))


class KaggleSource:
    """Training batches from the train split of real Criteo rows, cycling in file order."""

    kind = "kaggle"

    def __init__(self, train: CriteoData, batch_size: int):
        if batch_size <= 0:
            raise UserError(f"--batch-size must be positive, got {batch_size}")
        self.data = train
        self.B = int(batch_size)
        self.N = int(train.labels.shape[0])
        if self.B > self.N:
            raise UserError(f"{train.source}: --batch-size {self.B} is larger than the "
                            f"{self.N} training rows")
        self.cursor = 0
        self.epochs = 0

    def describe(self) -> dict:
        return {"kind": self.kind, "batch_size": self.B, "train_rows": self.N,
                "source": self.data.source,
                "dense": "log(1 + max(x, 0)), missing = 0", "order": "file order, cycling"}

    def next_batch(self) -> Batch:
        b0, b1 = self.cursor, self.cursor + self.B
        if b1 <= self.N:
            rows: np.ndarray | slice = slice(b0, b1)
            self.cursor = b1 % self.N
        else:
            rows = np.arange(b0, b1) % self.N
            self.cursor = b1 - self.N
        if self.cursor < b0 or self.cursor == 0:
            self.epochs += 1
        return self.data.batch(rows)

    def batch_at(self, start: int, n: int) -> Batch:
        """Training rows [start, start + n), cycling in file order."""
        return self.data.batch((start + np.arange(n)) % self.N)
