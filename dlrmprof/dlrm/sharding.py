"""Table-wise sharding for hybrid-parallel DLRM: which rank owns which embedding table.

Every table lives whole on one rank (DLRM's model parallelism for tables).  The plan
balances two loads across ranks:

* **bytes**: the table's weights, ``rows x dim x 4`` (memory each rank must hold);
* **expected lookup cost** per sample, from the trace's locality::

      cost_t = L_t * (1 + (penalty - 1) * m_t(C))

  with ``L_t`` the mean lookups (bag length) per sample of table t, ``m_t(C)`` the LRU miss
  ratio of the table's row stream at the cache capacity ``C`` (rows that fit in this host's
  last-level cache share of one rank: ``LLC bytes / ranks sharing it / row bytes``), read off
  the table's miss-ratio curve (its locality profile's reuse-distance histogram), and
  ``penalty`` the cost of a miss relative to a hit (default 10: a DRAM access ~80-100 ns vs
  a last-level-cache hit ~10 ns).  A table whose rows mostly hit in cache costs ~L_t; one
  that misses everywhere costs ~10 L_t.  Each table is scored as if it had the rank's cache
  share to itself (a lower bound on its misses when tables share a rank).

Assignment: longest-processing-time greedy on the combined score
``w * cost_t / sum(cost) + (1 - w) * bytes_t / sum(bytes)`` (w = 0.5 for ``by="both"``,
1 for ``"lookups"``, 0 for ``"bytes"``): tables in decreasing score go to the rank with the
smallest score so far (ties: the lower rank).  Deterministic; each rank gets at least one
table when there are at least as many tables as ranks, and more ranks than tables is an
error (table-wise sharding cannot give a rank nothing to own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from dlrmprof.errors import UserError

SHARD_BY = ("both", "lookups", "bytes")
DEFAULT_MISS_PENALTY = 10.0


@dataclass(frozen=True)
class TableLoad:
    """One table's load figures for the plan."""

    name: str
    rows: int
    bytes: int
    lookups_per_sample: float
    miss_ratio: float            # LRU miss ratio at `capacity_rows`
    capacity_rows: int
    cost: float                  # expected lookup cost per sample (hit = 1)
    locality_source: str         # "trace profile", "criteo rows", "uniform (no trace)"

    def to_dict(self) -> dict:
        return {"name": self.name, "rows": self.rows, "bytes": self.bytes,
                "lookups_per_sample": self.lookups_per_sample, "miss_ratio": self.miss_ratio,
                "capacity_rows": self.capacity_rows, "cost": self.cost,
                "locality_source": self.locality_source}


@dataclass(frozen=True)
class ShardingPlan:
    """Owner rank of every table (in global table order) and the resulting loads."""

    world_size: int
    owner: tuple[int, ...]
    loads: tuple[TableLoad, ...]
    by: str
    cache_bytes: int | None
    miss_penalty: float

    def __post_init__(self) -> None:
        if len(self.owner) != len(self.loads):
            raise ValueError("one owner per table")
        if any(not 0 <= r < self.world_size for r in self.owner):
            raise ValueError(f"owners must be ranks 0..{self.world_size - 1}")

    @property
    def num_tables(self) -> int:
        return len(self.owner)

    def tables_of(self, rank: int) -> tuple[int, ...]:
        """Global indices of the tables `rank` owns, in global order."""
        return tuple(t for t, r in enumerate(self.owner) if r == rank)

    def rank_order(self) -> tuple[int, ...]:
        """Global table indices ordered rank by rank (the all-to-all's receive order)."""
        return tuple(t for r in range(self.world_size) for t in self.tables_of(r))

    def rank_bytes(self) -> list[int]:
        return [sum(self.loads[t].bytes for t in self.tables_of(r))
                for r in range(self.world_size)]

    def rank_cost(self) -> list[float]:
        return [float(sum(self.loads[t].cost for t in self.tables_of(r)))
                for r in range(self.world_size)]

    def rank_lookups(self) -> list[float]:
        return [float(sum(self.loads[t].lookups_per_sample for t in self.tables_of(r)))
                for r in range(self.world_size)]

    @staticmethod
    def _imbalance(xs: Sequence[float]) -> float:
        """max / mean (1.0 = perfectly balanced)."""
        m = float(np.mean(xs)) if len(xs) else 0.0
        return float(max(xs) / m) if m > 0 else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": "table-wise",
            "by": self.by,
            "world_size": self.world_size,
            "owner": list(self.owner),
            "tables_of_rank": [list(self.tables_of(r)) for r in range(self.world_size)],
            "rank_bytes": self.rank_bytes(),
            "rank_cost": self.rank_cost(),
            "rank_lookups_per_sample": self.rank_lookups(),
            "imbalance_bytes": self._imbalance(self.rank_bytes()),
            "imbalance_cost": self._imbalance(self.rank_cost()),
            "cache_bytes_per_rank": self.cache_bytes,
            "miss_penalty": self.miss_penalty,
            "cost_model": "cost = lookups/sample * (1 + (penalty - 1) * LRU miss ratio at the "
                          "rank's share of the last-level cache)",
            "tables": [ld.to_dict() for ld in self.loads],
        }

    def describe(self) -> str:
        """Human lines: one per rank (what `dlrmprof run --nproc` prints)."""
        cache = (f"{self.cache_bytes / 2**20:.1f} MiB of last-level cache per rank"
                 if self.cache_bytes else "no cache size known")
        lines = [f"sharding plan: table-wise over {self.world_size} ranks, balanced by "
                 f"{self.by} ({cache}, miss penalty {self.miss_penalty:g}x)"]
        rb, rc = self.rank_bytes(), self.rank_cost()
        for r in range(self.world_size):
            names = ", ".join(self.loads[t].name for t in self.tables_of(r))
            lines.append(f"  rank {r}: {len(self.tables_of(r))} tables, "
                         f"{rb[r] / 2**20:.2f} MiB, lookup cost {rc[r]:.1f}/sample: {names}")
        lines.append(f"  imbalance (max/mean): bytes {self._imbalance(rb):.2f}, "
                     f"lookup cost {self._imbalance(rc):.2f}")
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, d: dict) -> "ShardingPlan":
        loads = tuple(TableLoad(**ld) for ld in d["tables"])
        return cls(int(d["world_size"]), tuple(int(o) for o in d["owner"]), loads, d["by"],
                   d.get("cache_bytes_per_rank"), float(d["miss_penalty"]))


def last_level_cache_bytes(caches: Sequence[dict] | None = None) -> tuple[int | None, int]:
    """(size in bytes, cpus sharing it) of this host's largest data/unified cache (sysfs)."""
    if caches is None:
        from dlrmprof.profile.host import read_caches

        caches = read_caches()
    data = [c for c in caches if c.get("type") in ("data", "unified") and c.get("size_bytes")]
    if not data:
        return None, 1
    llc = max(data, key=lambda c: (c.get("level", 0), c["size_bytes"]))
    return int(llc["size_bytes"]), max(1, len(llc.get("shared_cpus") or [0]))


def _uniform_miss(rows: int, capacity: int) -> float:
    return float(max(0.0, 1.0 - capacity / rows)) if rows > 0 else 0.0


def table_loads(tables, *, profiles=None, lookups: Sequence[float] | None = None,
                cache_bytes: int | None = None, miss_penalty: float = DEFAULT_MISS_PENALTY,
                source: str = "trace profile") -> list[TableLoad]:
    """Load figures per table.

    `tables`: `TableConfig`s (name, rows, dim).  `profiles`: one `LocalityProfile` per table
    (its miss-ratio curve gives the miss ratio; its mean bag length the lookups) or None,
    then indices are assumed uniform over the rows and `lookups` (default 1) per sample.
    """
    if miss_penalty < 1:
        raise UserError(f"miss penalty must be >= 1, got {miss_penalty}")
    out = []
    for t, tab in enumerate(tables):
        row_bytes = tab.dim * 4
        cap = int(cache_bytes // row_bytes) if cache_bytes else 0
        if profiles is not None:
            p = profiles[t]
            L = p.accesses / p.num_bags if p.num_bags else 0.0
            if cap > 0:
                _, hits = p.mrc(np.array([cap], dtype=np.int64))
                miss = float(1.0 - hits[0])
            else:
                miss = 1.0
            src = source
        else:
            L = float(lookups[t]) if lookups is not None else 1.0
            miss = _uniform_miss(tab.rows, cap) if cap > 0 else 1.0
            src = "uniform (no trace)"
        cost = L * (1.0 + (miss_penalty - 1.0) * miss)
        out.append(TableLoad(tab.name, int(tab.rows), int(tab.nbytes), float(L), miss, cap,
                             float(cost), src))
    return out


def plan_tables(loads: Sequence[TableLoad], world_size: int, *, by: str = "both",
                cache_bytes: int | None = None,
                miss_penalty: float = DEFAULT_MISS_PENALTY) -> ShardingPlan:
    """Greedy (LPT) table-wise placement of `loads` over `world_size` ranks."""
    if by not in SHARD_BY:
        raise UserError(f"--shard-by: expected one of {', '.join(SHARD_BY)}, got {by!r}")
    T = len(loads)
    if world_size < 1:
        raise UserError(f"--nproc must be at least 1, got {world_size}")
    if world_size > T:
        raise UserError(f"{world_size} ranks but only {T} embedding tables: table-wise sharding "
                        f"needs at least one table per rank (use --nproc <= {T})")
    w = {"both": 0.5, "lookups": 1.0, "bytes": 0.0}[by]
    tot_b = float(sum(ld.bytes for ld in loads)) or 1.0
    tot_c = float(sum(ld.cost for ld in loads)) or 1.0
    score = [w * ld.cost / tot_c + (1 - w) * ld.bytes / tot_b for ld in loads]
    order = sorted(range(T), key=lambda t: (-score[t], t))
    acc = [0.0] * world_size
    count = [0] * world_size
    owner = [0] * T
    for t in order:
        # emptiest rank first (a rank without tables always wins), then lowest load, lowest id
        r = min(range(world_size), key=lambda k: (count[k] > 0, acc[k], k))
        owner[t] = r
        acc[r] += score[t]
        count[r] += 1
    return ShardingPlan(world_size, tuple(owner), tuple(loads), by, cache_bytes, miss_penalty)
