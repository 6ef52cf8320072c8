"""Dynamic batching: queries split or merged into batches of at most `max_batch` samples.

Queries enter in arrival order; their samples are consecutive in the data (`Schedule`), so a
batch is always one contiguous run of samples ``[start, start + n)`` made of *pieces* of one
or more queries.  A batch is cut

* as soon as `max_batch` samples are pending (a large query is split into several batches,
  which several instances can serve at once), or
* when the oldest pending sample has waited `max_wait` seconds since its query's *scheduled*
  arrival (a late dispatcher never buys extra waiting time): whatever is pending goes out.

``max_wait = 0`` never merges beyond what has already arrived: every arrival is cut at once.
The batcher is pure bookkeeping (no clocks, no threads): `add` and `due` take the time, so the
same policy runs live in the dispatcher and offline in tests.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from dlrmprof.errors import UserError


@dataclass(frozen=True)
class Policy:
    max_batch: int          # samples per batch, at most
    max_wait: float         # seconds the oldest pending sample may wait before a partial cut

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise UserError(f"--max-batch must be at least 1, got {self.max_batch}")
        if not self.max_wait >= 0:
            raise UserError(f"--max-wait must be >= 0 ms, got {self.max_wait * 1e3:g}")

    @property
    def label(self) -> str:
        return f"max-batch {self.max_batch}, max-wait {self.max_wait * 1e3:g} ms"

    def to_json(self) -> dict:
        return {"max_batch": self.max_batch, "max_wait_s": self.max_wait, "label": self.label}


@dataclass
class Batch:
    batch_id: int
    start: int                                   # first sample (position in the data)
    size: int                                    # samples
    pieces: list[tuple[int, int]] = field(default_factory=list)   # (query id, samples)
    formed: float = 0.0                          # when it was cut (dispatcher clock)


class Batcher:
    """FIFO of pending query samples; `due(now)` cuts the batches the policy allows."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self._pending: deque[list] = deque()   # [query id, next sample, samples left, arrival]
        self._samples = 0
        self._next_id = 0

    @property
    def pending_samples(self) -> int:
        return self._samples

    def add(self, qid: int, first_sample: int, size: int, arrival: float) -> None:
        self._pending.append([qid, first_sample, size, arrival])
        self._samples += size

    def deadline(self) -> float | None:
        """When the oldest pending sample's wait runs out (None: nothing pending)."""
        if not self._pending:
            return None
        return self._pending[0][3] + self.policy.max_wait

    def due(self, now: float) -> list[Batch]:
        """Every batch that must be cut at time `now` (full ones, then an expired partial)."""
        out = []
        while self._samples >= self.policy.max_batch:
            out.append(self._cut(self.policy.max_batch, now))
        if self._pending and self._pending[0][3] + self.policy.max_wait <= now:
            out.append(self._cut(self._samples, now))
        return out

    def flush(self, now: float) -> list[Batch]:
        out = []
        while self._samples:
            out.append(self._cut(min(self._samples, self.policy.max_batch), now))
        return out

    def _cut(self, n: int, now: float) -> Batch:
        b = Batch(self._next_id, self._pending[0][1], n, formed=now)
        self._next_id += 1
        left = n
        while left:
            q = self._pending[0]
            take = min(left, q[2])
            b.pieces.append((q[0], take))
            q[1] += take
            q[2] -= take
            left -= take
            if q[2] == 0:
                self._pending.popleft()
        self._samples -= n
        return b
