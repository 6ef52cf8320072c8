"""The synthesizer's virtual LRU stack (tracegen/_lru_stack.py) against plain references."""

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from dlrmprof.tracegen import _lru_stack as ls
from dlrmprof.tracegen.reuse import fenwick_add


def ref_select(word, k):
    """Offset of the k-th (1-based) set bit of word, by looking at every bit."""
    bits = [i for i in range(64) if (int(word) >> i) & 1]
    return bits[k - 1]


@pytest.mark.parametrize("fn", sorted({ls._select_portable, ls.select}, key=id))
def test_select_matches_a_bit_by_bit_reference(fn):
    rng = np.random.default_rng(0)
    words = [np.uint64(1), np.uint64(1) << np.uint64(63), np.uint64(2 ** 64 - 1)]
    words += [np.uint64(w) for w in rng.integers(1, 2 ** 63, 200, dtype=np.int64)]
    words += [np.uint64(w) & np.uint64(w >> 7) | np.uint64(1) << np.uint64(40)
              for w in rng.integers(1, 2 ** 63, 100, dtype=np.int64)]   # sparse words
    for w in words:
        n = bin(int(w)).count("1")
        for k in {1, n, int(rng.integers(1, n + 1))}:
            assert fn(w, k) == ref_select(w, k), (hex(int(w)), k)


def test_stack_matches_a_list_lru_across_compactions_and_growth():
    """Random touches (new items and re-accesses at random depths) through new_stack,
    pop_depth and compact_stack, exactly as the synthesizer drives them, give the item at
    each depth that a plain list LRU gives; a small axis forces compactions and doubling."""
    rng = np.random.default_rng(1)
    cap = 128
    owner, nw, bits, tree = ls.new_stack(cap)
    t, D, grown = 1, 0, 0
    ref = []                                  # most recent last
    for step in range(3000):
        if t >= cap:
            old = cap
            owner, cap, nw, D, bits, tree = ls.compact_stack(owner, t - 1, cap)
            grown += cap > old
            t = D + 1
            assert D == len(ref)
        if D == 0 or rng.random() < 0.3 * (1 + (step < 600)):
            g = step + 1000                    # a new item
            D += 1
            fenwick_add(tree, (t >> 6) + 1, nw + 1, 1)
            ref.append(g)
        else:
            # shallow depths hit the word scan, deep ones the Fenwick descent
            d = int(rng.integers(0, min(D, 8))) if rng.random() < 0.5 else int(
                rng.integers(0, D))
            g = ls.pop_depth(owner, bits, tree, nw, t, d, D)
            want = ref.pop(len(ref) - 1 - d)
            assert g == want, (step, d)
            ref.append(g)
        bits[t >> 6] |= np.uint64(1) << np.uint64(t & 63)
        owner[t] = g
        t += 1
    assert grown >= 1 and D == len(ref) > 200
    occupied = owner[1:t][owner[1:t] >= 0]
    assert list(occupied) == ref              # slots in time order are the LRU order


def test_capped_pop_keeping_spent_items_takes_the_nearest_under_the_cap():
    """synth._pop_capped with keep_capped: an item used max_uses times stays on the stack (it
    still counts in the depths below it) and the nearest item within NEAREST depths under
    its cap is taken, shallower first at equal distance; against a plain list LRU."""
    from dlrmprof.tracegen.synth import NEAREST, _pop_capped

    rng = np.random.default_rng(2)
    cap, max_uses = 256, 3
    owner, nw, bits, tree = ls.new_stack(cap)
    uses = np.zeros(6000, dtype=np.int64)
    t, D, skipped = 1, 0, 0
    ref = []                                  # most recent last
    for step in range(4000):
        if t >= cap:
            owner, cap, nw, D, bits, tree = ls.compact_stack(owner, t - 1, cap)
            t = D + 1
        if D == 0 or rng.random() < 0.25:
            g = step + 1000
            D += 1
            fenwick_add(tree, (t >> 6) + 1, nw + 1, 1)
            ref.append(g)
        else:
            d = int(rng.integers(0, min(D, 12))) if rng.random() < 0.5 else int(
                rng.integers(0, D))
            top = len(ref) - 1                # depth e is ref[top - e]
            pick = d
            if uses[ref[top - d]] >= max_uses:
                for r in range(1, NEAREST + 1):
                    if d - r >= 0 and uses[ref[top - d + r]] < max_uses:
                        pick = d - r
                        break
                    if d + r < D and uses[ref[top - d - r]] < max_uses:
                        pick = d + r
                        break
                skipped += pick != d
            want = ref.pop(top - pick)
            g, D2 = _pop_capped(owner, bits, tree, nw, t, d, D, uses, max_uses, True)
            assert (g, D2) == (want, D), (step, d)
            ref.append(g)
        uses[g] += 1
        bits[t >> 6] |= np.uint64(1) << np.uint64(t & 63)
        owner[t] = g
        t += 1
    assert skipped > 100
    occupied = owner[1:t][owner[1:t] >= 0]
    assert list(occupied) == ref


@njit(cache=False)
def _shift_then_front(arr, j, g):
    ls.shift_down(arr, j)
    arr[0] = g


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64])
def test_shift_down_moves_the_first_j_items_down_one(dtype):
    """shift_down (one memmove) against the plain move: arr[1..j] = arr[0..j-1] for every j
    from 0 (nothing moves) to len - 1 (the whole array but its last item), the rest
    untouched; a strided array has no signature."""
    rng = np.random.default_rng()
    n = int(rng.integers(1, 3000))
    for j in sorted({0, n - 1, *rng.integers(0, n, 20).tolist()}):
        a = rng.integers(-1000, 1000, n).astype(dtype)
        want = a.copy()
        want[1:j + 1] = a[:j].copy()
        want[0] = 7
        _shift_then_front(a, j, 7)
        np.testing.assert_array_equal(a, want)
    with pytest.raises(TypingError):
        _shift_then_front(np.zeros(10, dtype=dtype)[::2], 2, 7)
