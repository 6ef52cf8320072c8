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
