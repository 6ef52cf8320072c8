"""The JIT cost of gen-trace: each tracegen kernel compiles one specialization (a second one,
from an argument of another type, layout or literal-ness, is seconds of cold JIT and another
cache load warm), and `synth.synth_core` turns every argument form into the one it has."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from dlrmprof.tracegen import reuse, synth

ROOT = Path(__file__).resolve().parent.parent


def test_gen_trace_compiles_one_specialization_per_kernel():
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_tracegen_fidelity.py"),
                          "--jit-child"], cwd=ROOT, check=True, capture_output=True, text=True)
    rep = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(rep["digest"]) == 16           # the trace was written
    names = {f["name"].rsplit(".", 1)[1] for f in rep["functions"]}
    assert {"_synth_core", "parse_block", "_rd_run", "_lfu_hits"} <= names
    many = {f["name"]: f["signatures"] for f in rep["functions"] if len(f["signatures"]) != 1}
    assert not many, many


def _core_args(rng, n, with_hot):
    W = 3
    bounds = np.linspace(0, n, W + 1).astype(np.int64)
    K = 4 if with_hot else 0
    hot = rng.integers(1, 20, (K, W))
    gap = rng.integers(0, 5, (K, 8)).cumsum(axis=1) if with_hot else np.zeros((0, 0), np.int64)
    cold = rng.integers(10, 40, W)
    cdf = rng.integers(0, 9, (W, 40)).cumsum(axis=1)
    return [n, bounds, hot, gap, reuse.bin_edges(gap.shape[1]), cold, cdf, reuse.bin_edges(40),
            cdf.sum(axis=0), 12345, 500, 8, False]


def _forms() -> set:
    """The specializations of `_synth_core` so far, as (keep_capped, compacts) types (other
    tests of the session may have compiled some already)."""
    return {(str(sig[-3]), str(sig[-1])) for sig in synth._synth_core.signatures}


SHORT, LONG = ("none", "none"), ("bool", "bool")


def test_synth_core_one_specialization_for_every_argument_form():
    rng = np.random.default_rng(7)
    canon = _core_args(rng, 300, True)
    want = synth.synth_core(*canon, 3, False, None)
    sigs = len(synth._synth_core.signatures)
    assert SHORT in _forms() <= {SHORT, LONG}
    odd = list(canon)               # int32, Fortran order, strided, numpy scalars, Python bools
    odd[0] = np.int32(300)
    odd[1] = canon[1].astype(np.int32)
    odd[2] = np.asfortranarray(canon[2])
    odd[6] = np.repeat(canon[6], 2, axis=1)[:, ::2]
    odd[9] = np.uint64(12345)
    odd[12] = np.bool_(False)
    got = synth.synth_core(*odd, np.int64(3), 0)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    naive = _core_args(rng, 300, False)
    naive[12] = True
    dists = np.empty(300, dtype=np.int64)
    ids, *_ = synth.synth_core(*naive, 0, False, dists)
    ids2, *_ = synth.synth_core(*naive)
    np.testing.assert_array_equal(ids, ids2)
    # the depths recorded are the stream's reuse distances (ids are the stack's items)
    np.testing.assert_array_equal(dists, reuse.reuse_distances(ids))
    assert len(synth._synth_core.signatures) == sigs
    # the other specialization (keep_capped, or a stream at least as long as the stack's
    # first time axis): the same ids on a short stream as the short one's
    synth.synth_core(*canon, 3, True)
    ids, *_ = synth.synth_core(*_core_args(rng, synth.FIRST_CAP, True), 3, False)
    assert _forms() == {SHORT, LONG} and len(synth._synth_core.signatures) == 2
    with_compaction = synth._synth_core(*[np.ascontiguousarray(a, dtype=np.int64)
                                          if isinstance(a, np.ndarray) else a for a in canon],
                                        3, False, synth._NO_DISTS, True)
    for a, b in zip(with_compaction, want):
        np.testing.assert_array_equal(a, b)
    assert len(synth._synth_core.signatures) == 2
