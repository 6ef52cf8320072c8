"""Seeded reference id streams of known structure, for fidelity tests and benchmarks.

Each generator takes a seed, draws every random number from its own
``numpy.random.Generator`` (never the global RNG) and returns int64 ids in ``[0, universe)``
(the universe is the table the ids index: `distinct`, `users`, `items` or ``ranges * span``;
not every id need occur).  Ids are labels: a fixed seeded permutation separates an id from
its popularity rank, so id order says nothing about popularity.

* ``irm_zipf``: independent draws from Zipf(a) over `distinct` ids (the independent reference
  model: popularity without temporal locality).
* ``drifting_zipf``: Zipf(a) whose rank-to-id map shifts as time passes: every 1/drift
  accesses the least popular id jumps to the top (a fresh item) and every other id moves one
  rank down.
* ``bursty_sessions``: users drawn Zipf(a); each visit is a session of geometric length; a
  fixed number of sessions run at once and their events interleave (each event comes from a
  session picked at random), so a user's events are close in time but not contiguous.
* ``user_item_log``: a time-ordered interaction log: users as in ``bursty_sessions``; each
  event's item is, with probability `repeat`, one the session already viewed, else a draw
  from a drifting Zipf over items.
* ``scans``: sequential scans of whole ranges (a range picked at random per scan), with
  random jumps inside the range and a share `noise` of uniformly random ids.
"""

from __future__ import annotations

import numpy as np
from numba import njit

HISTORY = 32          # items a session remembers for repeats (user_item_log)


# ---------------------------------------------------------------- checks and draws
def _need(cond: bool, name: str, expected: str, got) -> None:
    if not cond:
        raise ValueError(f"{name}: expected {expected}, got {got!r}")


def _count(name: str, v, lo: int = 1) -> int:
    _need(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and int(v) >= lo,
          name, f"an integer >= {lo}", v)
    return int(v)


def _real(name: str, v, lo: float, hi: float = np.inf) -> float:
    ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
    _need(ok and np.isfinite(float(v)) and lo <= float(v) <= hi, name,
          f"a number in [{lo}, {hi}]" if np.isfinite(hi) else f"a finite number >= {lo}", v)
    return float(v)


def _zipf_ranks(rng: np.random.Generator, n: int, distinct: int, a: float) -> np.ndarray:
    """n independent ranks in [0, distinct), P(rank r) proportional to (r + 1)^-a."""
    cdf = np.cumsum(np.arange(1, distinct + 1, dtype=np.float64) ** -a)
    cdf /= cdf[-1]
    ranks = np.searchsorted(cdf, rng.random(n), side="right")
    return np.minimum(ranks, distinct - 1).astype(np.int64)


def _drift_offsets(n: int, drift: float) -> np.ndarray:
    """Rank shift at each time step: floor(drift * t)."""
    return np.floor(np.arange(n, dtype=np.float64) * drift).astype(np.int64)


# ---------------------------------------------------------------- kernels
@njit(cache=True, no_cfunc_wrapper=True)
def _interleave(picks, session_users, session_lengths, concurrent, user_out, slot_out,
                fresh_out):
    """Run `concurrent` session slots; event t comes from slot picks[t].  Writes the user, the
    slot and whether the event opens a session; returns the number of sessions started."""
    user = np.empty(concurrent, dtype=np.int64)
    left = np.empty(concurrent, dtype=np.int64)
    fresh = np.ones(concurrent, dtype=np.bool_)
    k = 0
    for s in range(concurrent):
        user[s] = session_users[k]
        left[s] = session_lengths[k]
        k += 1
    for t in range(picks.shape[0]):
        s = picks[t]
        user_out[t] = user[s]
        slot_out[t] = s
        fresh_out[t] = fresh[s]
        fresh[s] = False
        left[s] -= 1
        if left[s] == 0:
            user[s] = session_users[k]
            left[s] = session_lengths[k]
            fresh[s] = True
            k += 1
    return k


@njit(cache=True, no_cfunc_wrapper=True)
def _session_items(slots, fresh, new_items, repeat_coin, pick, repeat, concurrent, hist_len):
    """Item per event: a repeat of the session's remembered items with probability `repeat`,
    else the pre-drawn new item.  Each slot remembers its last `hist_len` items."""
    n = slots.shape[0]
    out = np.empty(n, dtype=np.int64)
    hist = np.empty((concurrent, hist_len), dtype=np.int64)
    count = np.zeros(concurrent, dtype=np.int64)
    for t in range(n):
        s = slots[t]
        if fresh[t]:
            count[s] = 0
        c = count[s]
        if c > 0 and repeat_coin[t] < repeat:
            m = c if c < hist_len else hist_len
            item = hist[s, int(pick[t] * m)]
        else:
            item = new_items[t]
        out[t] = item
        hist[s, c % hist_len] = item
        count[s] = c + 1
    return out


@njit(cache=True, no_cfunc_wrapper=True)
def _scan_walk(n, span, ranges, range_pick, jump_coin, jump_to, jump):
    """Sequential walks through a range picked per scan; a scan ends after `span` accesses."""
    out = np.empty(n, dtype=np.int64)
    k = 0
    r = range_pick[0]
    pos = 0
    done = 0
    for t in range(n):
        if done == span:
            k += 1
            r = range_pick[k]
            pos = 0
            done = 0
        elif jump_coin[t] < jump:
            pos = jump_to[t]
        out[t] = r * span + pos
        pos += 1
        if pos == span:
            pos = 0
        done += 1
    return out


# ---------------------------------------------------------------- generators
def irm_zipf(n: int, distinct: int, a: float, seed: int) -> np.ndarray:
    """n independent Zipf(a) draws over `distinct` ids (a = 0: uniform)."""
    n, distinct = _count("n", n), _count("distinct", distinct)
    a = _real("a", a, 0.0)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(distinct).astype(np.int64)
    return perm[_zipf_ranks(rng, n, distinct, a)]


def drifting_zipf(n: int, distinct: int, a: float, drift: float, seed: int) -> np.ndarray:
    """Zipf(a) draws whose ranking moves: at step t the id of rank r is the one at position
    (r - o(t)) mod distinct of a fixed permutation, o(t) = floor(drift * t).  Each shift
    brings a fresh id (the one that was least popular) to the top and moves every other id
    one rank down, so drift is shifts per access (0.001: one per 1,000 accesses); drift = 0 is
    `irm_zipf`."""
    n, distinct = _count("n", n), _count("distinct", distinct)
    a = _real("a", a, 0.0)
    drift = _real("drift", drift, 0.0)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(distinct).astype(np.int64)
    ranks = _zipf_ranks(rng, n, distinct, a)
    return perm[(ranks - _drift_offsets(n, drift)) % distinct]


def _sessions(rng: np.random.Generator, n: int, users: int, zipf_a: float,
              mean_session: float, concurrent: int):
    perm = rng.permutation(users).astype(np.int64)
    nsessions = n + concurrent + 1          # every session has at least one event
    session_users = perm[_zipf_ranks(rng, nsessions, users, zipf_a)]
    session_lengths = rng.geometric(1.0 / mean_session, nsessions).astype(np.int64)
    picks = rng.integers(0, concurrent, n).astype(np.int64)
    user_out = np.empty(n, dtype=np.int64)
    slot_out = np.empty(n, dtype=np.int64)
    fresh_out = np.empty(n, dtype=np.bool_)
    _interleave(picks, session_users, session_lengths, concurrent, user_out, slot_out,
                fresh_out)
    return user_out, slot_out, fresh_out


def _session_args(n, users, zipf_a, mean_session, concurrent):
    return (_count("n", n), _count("users", users), _real("zipf_a", zipf_a, 0.0),
            _real("mean_session", mean_session, 1.0), _count("concurrent", concurrent))


def bursty_sessions(n: int, users: int, zipf_a: float, mean_session: float,
                    concurrent: int, seed: int) -> np.ndarray:
    """User ids of n events: sessions of Zipf(zipf_a)-popular users, geometric lengths of mean
    `mean_session` events, `concurrent` sessions interleaved at random (a session's events are
    about `concurrent` steps apart)."""
    n, users, zipf_a, mean_session, concurrent = _session_args(n, users, zipf_a, mean_session,
                                                               concurrent)
    rng = np.random.default_rng(seed)
    return _sessions(rng, n, users, zipf_a, mean_session, concurrent)[0]


def user_item_log(n: int, users: int, items: int, seed: int, *, user_a: float = 1.0,
                  item_a: float = 0.9, mean_session: float = 20.0, concurrent: int = 32,
                  repeat: float = 0.3, drift: float = 0.001) -> tuple[np.ndarray, np.ndarray]:
    """(user_ids, item_ids) of n time-ordered interactions.  Users as `bursty_sessions`; an
    event's item repeats one of the session's last 32 items (uniformly) with probability
    `repeat`, otherwise it is a draw from `drifting_zipf(items, item_a, drift)`'s ranking at
    that time.  A session's first event always draws a new item."""
    n, users, user_a, mean_session, concurrent = _session_args(n, users, user_a, mean_session,
                                                               concurrent)
    items = _count("items", items)
    item_a = _real("item_a", item_a, 0.0)
    repeat = _real("repeat", repeat, 0.0, 1.0)
    drift = _real("drift", drift, 0.0)
    rng = np.random.default_rng(seed)
    user_ids, slots, fresh = _sessions(rng, n, users, user_a, mean_session, concurrent)
    perm = rng.permutation(items).astype(np.int64)
    ranks = _zipf_ranks(rng, n, items, item_a)
    new_items = perm[(ranks - _drift_offsets(n, drift)) % items]
    coin = rng.random(n)
    pick = rng.random(n)
    item_ids = _session_items(slots, fresh, new_items, coin, pick, repeat, concurrent,
                              HISTORY)
    return user_ids, item_ids


def scans(n: int, span: int, noise: float, seed: int, *, ranges: int = 8,
          jump: float = 0.01) -> np.ndarray:
    """n accesses of sequential scans over `ranges` ranges of `span` ids (universe
    ranges * span).  Each scan picks a range uniformly and makes `span` accesses walking
    forward (wrapping inside the range) from its start; at each step it jumps to a random
    offset of the range with probability `jump`.  A share `noise` of the accesses is replaced
    by uniformly random ids of the universe."""
    n, span, ranges = _count("n", n), _count("span", span), _count("ranges", ranges)
    noise = _real("noise", noise, 0.0, 1.0)
    jump = _real("jump", jump, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    range_pick = rng.integers(0, ranges, n // span + 2).astype(np.int64)
    jump_coin = rng.random(n)
    jump_to = rng.integers(0, span, n).astype(np.int64)
    out = _scan_walk(n, span, ranges, range_pick, jump_coin, jump_to, jump)
    noisy = rng.random(n) < noise
    out[noisy] = rng.integers(0, ranges * span, int(noisy.sum()))
    return out
