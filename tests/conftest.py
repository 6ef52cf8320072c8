import os

import pytest

# Tests must not depend on how many threads the host offers.
os.environ.setdefault("NUMBA_NUM_THREADS", "2")


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this host")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def _small_trace(path, rows=(64, 100, 257, 1000), num_samples=64, seed=0):
    """A 4-table trace file (bags of 1-3 uniform ids) at `path`; returns the path as str."""
    import numpy as np

    from dlrmprof.tracegen import build_profile, synthesize_trace

    rng = np.random.default_rng(seed)
    profiles = []
    for t, r in enumerate(rows):
        lengths = rng.integers(1, 4, 300)
        ids = rng.integers(0, r, int(lengths.sum()))
        profiles.append(build_profile(f"C{t + 1}", ids, lengths, rows=r))
    synthesize_trace(profiles, source={"kind": "test"}, num_samples=num_samples, seed=seed,
                     compute_fidelity=False).save(path)
    return str(path)


@pytest.fixture(scope="session")
def small_trace():
    """Factory: small_trace(path, rows=..., num_samples=..., seed=...) -> path."""
    return _small_trace


@pytest.fixture(scope="session")
def tiny_trace(tmp_path_factory):
    return _small_trace(tmp_path_factory.mktemp("tr") / "tiny.npz")



def trace_as_v1(src, dst):
    """Write the trace at `src` in the version-1 layout (int64 `indices` and `offsets`, no
    `storage`) at `dst`: for tests that damage those two arrays and for the v1 reading
    path."""
    from dlrmprof.tracegen import Trace

    Trace.load(src).save(dst, version=1)
    return dst
