"""The synthesizer's virtual LRU stack of tail ids over a compacted time axis.

Slot s (1-based) of the time axis holds owner[s], the item last touched at that time, or -1;
an occupancy bitmap over the slots with a Fenwick tree over its words gives the item at any
depth in O(log N) (scan a few words back from the top, else a descent by rank from the
oldest).  When the axis is full the occupied slots are compacted to 1..D (and the axis
doubled when less than half of it would be free), so it stays O(distinct) and in cache.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from dlrmprof.tracegen.reuse import _pc, fenwick_add, fenwick_build

# numba's cache keys kernels on this file only: the files they compile in (dlrmprof.jitdeps)
_DEPS = ('hashmap.py', 'reuse.py')
_DEPS_SHA256 = 'd80456446d1b32a7'


def _host_features() -> str:
    try:
        from llvmlite import binding

        return binding.get_host_cpu_features().flatten()
    except Exception:   # pragma: no cover - feature query unavailable: portable path
        return ""


@intrinsic
def shift_down(typingctx, arr, j):
    """arr[1..j] = arr[0..j-1] (arr 1-D, C-contiguous; 0 <= j < len(arr)): one memmove, which
    moves a few items by overlapping vector loads and stores where a loop runs its scalar
    remainder."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"):
        return None                     # a strided array: no such signature

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        dst = builder.gep(ary.data, [ir.Constant(ir.IntType(64), 1)])
        size = context.get_abi_sizeof(context.get_data_type(aryty.dtype))
        cgutils.raw_memmove(builder, dst, ary.data, args[1], size)
        return context.get_dummy_value()

    return types.void(arr, types.int64), codegen


@intrinsic
def _pdep(typingctx, src, mask):
    sig = types.uint64(types.uint64, types.uint64)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(i64, [i64, i64])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.bmi.pdep.64")
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def _cttz(typingctx, x):
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return sig, codegen


@njit(cache=True, no_cfunc_wrapper=True)
def _select_bmi2(word, k):
    """Slot offset (0..63) of the k-th (1-based) set bit of word (BMI2 pdep + tzcnt)."""
    return np.int64(_cttz(_pdep(np.uint64(1) << np.uint64(k - 1), word)))


@njit(cache=True, no_cfunc_wrapper=True)
def _select_portable(word, k):
    """Slot offset (0..63) of the k-th (1-based) set bit of word."""
    off = 0
    while True:
        c = _pc(word & np.uint64(0xFF))
        if k <= c:
            break
        k -= c
        word >>= np.uint64(8)
        off += 8
    while True:
        if word & np.uint64(1):
            k -= 1
            if k == 0:
                return off
        word >>= np.uint64(1)
        off += 1


_HAS_BMI2 = "+bmi2" in _host_features()
select = _select_bmi2 if _HAS_BMI2 else _select_portable
SCAN_WORDS = 16     # depth lookups first scan this many bitmap words back from the top


@njit(cache=True, no_cfunc_wrapper=True)
def rebuild_stack(owner, used, cap):
    """Compact occupied slots (owner >= 0) of 1..used to 1..D; new bitmap + tree."""
    d = 0
    for s in range(1, used + 1):
        o = owner[s]
        if o >= 0:
            d += 1
            owner[d] = o
    for s in range(d + 1, used + 1):
        owner[s] = -1
    nw = cap // 64
    bits = np.zeros(nw, dtype=np.uint64)
    tree = np.zeros(nw + 1, dtype=np.int32)
    for s in range(1, d + 1):
        bits[s >> 6] |= np.uint64(1) << np.uint64(s & 63)
    fenwick_build(bits, tree)
    return d, bits, tree


@njit(cache=True, no_cfunc_wrapper=True)
def new_stack(cap):
    """An empty LRU stack over a time axis of cap slots: (owner, bitmap words, bitmap,
    Fenwick tree over the words)."""
    nw = cap // 64
    owner = np.full(cap + 1, -1, dtype=np.int32)
    bits = np.zeros(nw, dtype=np.uint64)
    tree = np.zeros(nw + 1, dtype=np.int32)
    return owner, nw, bits, tree


@njit(cache=True, no_cfunc_wrapper=True)
def compact_stack(owner, used, cap):
    """The time axis is full: grow owner when less than half its slots would be free, then
    compact the occupied slots of 1..used.  Returns (owner, cap, bitmap words, depth, bitmap,
    tree)."""
    live = 0
    for s in range(1, used + 1):
        if owner[s] >= 0:
            live += 1
    if 2 * live + 64 > cap:
        ncap = cap
        while 2 * live + 64 > ncap:
            ncap *= 2
        nowner = np.full(ncap + 1, -1, dtype=np.int32)
        for s in range(used + 1):   # a loop, not a slice copy: that compiles numba's
            nowner[s] = owner[s]    # shape-mismatch message (string code) on a cold start
        owner = nowner
        cap = ncap
    D, bits, tree = rebuild_stack(owner, used, cap)
    return owner, cap, cap // 64, D, bits, tree


@njit(cache=True, inline="always")
def pop_depth(owner, bits, tree, nw, t, d, D):
    """Remove the item at depth d of the stack (time axis below slot t) and return it."""
    return remove_slot(owner, bits, tree, nw, t, slot_at(bits, tree, nw, t, d, D))


@njit(cache=True, inline="always")
def slot_at(bits, tree, nw, t, d, D):
    """The time slot of the item at depth d of the stack (time axis below slot t): scan back a
    few bitmap words from the top, else a Fenwick descent by rank from the oldest."""
    one = np.uint64(1)
    wt = t >> 6
    s = -1
    rem = d
    cw = wt
    mask = bits[cw] & ((one << np.uint64(t & 63)) - one)
    for _scan in range(SCAN_WORDS):
        c = _pc(mask)
        if rem < c:
            s = cw * 64 + select(mask, c - rem)
            break
        rem -= c
        cw -= 1
        if cw < 0:
            break
        mask = bits[cw]
    if s < 0:
        # cap is a power of two times 64, so nw is a power of two: no bound check needed
        k = D - d          # 1-based rank from the oldest
        p = 0
        step = nw
        while step > 0:
            v = tree[p + step]
            c = v < k
            p += step * c
            k -= v * c
            step >>= 1
        s = p * 64 + select(bits[p], k)
    return s


@njit(cache=True, inline="always")
def remove_slot(owner, bits, tree, nw, t, s):
    """Take the item of slot s off the stack (its slot freed, the tree updated); returns it."""
    one = np.uint64(1)
    wt = t >> 6
    g = np.int64(owner[s])
    owner[s] = -1
    ws = s >> 6
    bits[ws] &= ~(one << np.uint64(s & 63))
    if ws != wt:
        stop = fenwick_add(tree, ws + 1, wt + 1, -1)
        fenwick_add(tree, wt + 1, min(stop, nw + 1), 1)
    return g


# ---------------------------------------------------------------- Fenwick trees by row
# (the budget model's weight trees: inlined, so that its kernel counts no array references
# per access)
@njit(cache=True, inline="always")
def fenwick_prefix(tw, b, s):
    """Sum of the weights of slots 1..s in row b of the Fenwick trees `tw` [rows, size]
    (indexed by row: no row view, none per draw)."""
    tot = 0
    while s > 0:
        tot += tw[b, s]
        s -= s & (-s)
    return tot


@njit(cache=True, inline="always")
def fenwick_find(tw, b, target):
    """The smallest slot s with fenwick_prefix(tw, b, s) > target (0 <= target < the row's
    total); tw's row size less one is a power of two."""
    p = 0
    size = tw.shape[1]
    step = size - 1
    while step > 0:
        q = p + step
        if q < size and tw[b, q] <= target:
            p = q
            target -= tw[b, q]
        step >>= 1
    return p + 1


@njit(cache=True, inline="always")
def fenwick_add_row(tw, b, j, stop, delta):
    """`reuse.fenwick_add` on row b of the trees `tw`."""
    while j < stop:
        tw[b, j] += delta
        j += j & (-j)
