"""Per-batch id statistics of a stream: each batch's unique-id count and its overlap with the
batch before, the figures TBE cache prefetch and TorchRec's unique-id deduplication depend on.
One pass finds each access's previous use (`_previous_use`); then, per batch size, a
branch-free count over each batch (`_batch_sums`): an access is new in its batch when its
previous use came before the batch, and was in the previous batch when that use lies in it.
`batch_stats` on a whole stream, `BatchStream` chunk by chunk (the capture's pass 1)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from dlrmprof.tracegen.policies import _check_ids
from dlrmprof.tracegen.reuse import dense_ids

BATCH_SIZES = (128, 2048, 16384)


@njit(cache=True, no_cfunc_wrapper=True)
def _previous_use(ids, last, base, prev):
    """prev[j]: access j's previous access to its id, as a stream position (-1: none); the
    chunk starts at stream position `base`, last[x]: id x's last position so far (updated).
    The caller's `prev` (as long as ids): the chunk's stream may go right after earlier ones."""
    for j in range(ids.shape[0]):
        x = ids[j]
        prev[j] = last[x]
        last[x] = base + j


@njit(cache=True, no_cfunc_wrapper=True)
def _batch_sums(prev, base, starts, plo, b0, uniq, ratio_sum, nratio):
    """Batches b0 .. b0 + len(starts) - 2 (batch b0 + i: stream positions starts[i] ..
    starts[i + 1] - 1, whose previous uses are prev[position - base]; plo: where batch b0 - 1
    starts, starts[0] for b0 = 0), carrying (sum of unique ids per batch, sum of overlap
    ratios over batches 1.., their count).  An access is new in its batch when its previous
    use came before the batch, and was in the previous batch when that use is at or after
    plo: no per-id state, a branch-free count over each batch."""
    for i in range(starts.shape[0] - 1):
        lo = starts[i]
        width = np.uint64(lo - plo)
        seg = prev[lo - base:starts[i + 1] - base]
        u = 0
        ov = 0
        for j in range(seg.shape[0]):       # compares and adds only: vectorized
            u += np.int64(seg[j] < lo)
            ov += np.int64(np.uint64(seg[j] - plo) < width)     # plo <= prev < lo
        uniq += u
        if b0 + i > 0 and u > 0:
            ratio_sum += ov / u
            nratio += 1
        plo = lo
    return uniq, ratio_sum, nratio


@dataclass(frozen=True)
class BatchStats:
    """Ids seen by batches of `batch_size` consecutive bags (full batches only).

    unique_mean: mean distinct ids per batch; overlap_mean: mean over batches i >= 1 (that hold
    an id) of |U_i & U_{i-1}| / |U_i|, the share of a batch's ids the previous batch also used."""
    batch_size: int
    batches: int
    unique_mean: float
    overlap_mean: float

    def to_json(self) -> dict:
        return {"batch_size": self.batch_size, "batches": self.batches,
                "unique_mean": self.unique_mean, "overlap_mean": self.overlap_mean}

    @classmethod
    def from_json(cls, d: dict) -> "BatchStats":
        return cls(int(d["batch_size"]), int(d["batches"]), float(d["unique_mean"]),
                   float(d["overlap_mean"]))


def _check_offsets(offsets, n: int) -> np.ndarray:
    if offsets is None:
        return np.arange(n + 1, dtype=np.int64)
    off = np.asarray(offsets)
    if off.ndim != 1 or off.size < 1 or (off.dtype.kind not in "iu"):
        raise ValueError(f"offsets: expected a 1-D integer array [bags + 1], got "
                         f"{off.dtype} {tuple(off.shape)}")
    off = np.ascontiguousarray(off, dtype=np.int64)
    if int(off[0]) != 0 or int(off[-1]) != n:
        raise ValueError(f"offsets: expected offsets[0] == 0 and offsets[-1] == len(ids) == {n}"
                         f", got {int(off[0])} and {int(off[-1])}")
    down = off[1:] < off[:-1]               # one byte per bag, not a difference array
    if down.any():
        i = int(np.argmax(down))
        raise ValueError(f"offsets: expected non-decreasing offsets, offsets[{i + 1}] = "
                         f"{int(off[i + 1])} < offsets[{i}] = {int(off[i])}")
    return off


def batch_stats(ids, offsets=None, batch_sizes=BATCH_SIZES) -> tuple[BatchStats, ...]:
    """Per-batch unique ids and batch-to-batch overlap, for each batch size with >= 2 full
    batches (sizes with fewer are left out).  `offsets` [bags + 1] is the jagged layout of
    FBGEMM/TorchRec (bag b = ids[offsets[b]:offsets[b+1]]); None means one id per bag.

    Returns typed results, not a dict: the fidelity record stores them through to_json."""
    arr = _check_ids(ids)
    off = _check_offsets(offsets, arr.size)
    nbags = off.size - 1
    prev = None
    out = []
    for bs in batch_sizes:
        bs = int(bs)
        if bs < 1:
            raise ValueError(f"batch_sizes: expected sizes >= 1, got {bs}")
        nb = nbags // bs
        if nb < 2:
            continue
        if prev is None:            # one pass over the ids for every batch size
            dense = dense_ids(arr)
            last = np.full(int(dense.max()) + 1 if dense.size else 1, -1, dtype=np.int64)
            prev = np.empty(dense.shape[0], dtype=np.int64)
            _previous_use(dense, last, 0, prev)
        starts = np.ascontiguousarray(off[: nb * bs + 1: bs])
        uniq, rsum, nr = _batch_sums(prev, 0, starts, starts[0], 0, 0, 0.0, 0)
        out.append(BatchStats(bs, nb, uniq / nb, rsum / nr if nr else 0.0))
    return tuple(out)


class BatchStream:
    """`batch_stats` of a stream of one id per bag (dense ids >= 0), fed chunk by chunk:
    memory O(distinct ids + the largest batch); the same figures as one call on the whole."""

    def __init__(self, batch_sizes=BATCH_SIZES):
        self.sizes = tuple(int(b) for b in batch_sizes)
        self.last = np.full(1024, -1, dtype=np.int64)         # each id's last position
        self.state = [(0, 0.0, 0) for _ in self.sizes]
        self.done = [0 for _ in self.sizes]                  # full batches so far
        self.pos = 0                                         # accesses fed
        self.base = 0                    # stream position of pending[0]
        self.pending = np.zeros(0, dtype=np.int64)    # previous uses of the open batches

    def feed(self, ids: np.ndarray, top: int | None = None) -> None:
        """The next accesses; `top`: 1 + their largest id when the caller knows it."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not ids.size:
            return
        top = int(ids.max()) + 1 if top is None else int(top)
        if top > self.last.shape[0]:
            grown = np.full(max(top, 2 * self.last.shape[0]), -1, dtype=np.int64)
            grown[: self.last.shape[0]] = self.last
            self.last = grown
        held = self.pending.shape[0]            # the open batches' previous uses, then these
        pending = np.empty(held + ids.shape[0], dtype=np.int64)
        pending[:held] = self.pending
        _previous_use(ids, self.last, self.pos, pending[held:])
        self.pending = pending
        self.pos += ids.shape[0]
        for i, bs in enumerate(self.sizes):
            b0 = self.done[i]
            nb = self.pos // bs - b0
            if nb:
                starts = np.arange(b0 * bs, (b0 + nb) * bs + 1, bs, dtype=np.int64)
                self.state[i] = _batch_sums(self.pending, self.base, starts,
                                            max(b0 - 1, 0) * bs, b0, *self.state[i])
                self.done[i] += nb
        base = min(d * bs for d, bs in zip(self.done, self.sizes)) if self.sizes else self.pos
        self.pending = self.pending[base - self.base:].copy()
        self.base = base

    def result(self) -> tuple[BatchStats, ...]:
        out = []
        for bs, nb, (uniq, rsum, nr) in zip(self.sizes, self.done, self.state):
            if nb >= 2:
                out.append(BatchStats(bs, nb, uniq / nb, rsum / nr if nr else 0.0))
        return tuple(out)
