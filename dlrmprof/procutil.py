"""Process helpers shared by the commands' helper processes (ranks, the compile warm-up)."""

from __future__ import annotations

import os
import signal
import sys


def die_with_parent() -> bool:
    """Linux: this process gets SIGKILL when its parent ends (a `kill -9` of the command must
    not leave helpers computing).  False when the parent ended before the call (the caller
    should exit); True otherwise, and on other systems (nothing is set there)."""
    if not sys.platform.startswith("linux"):
        return True
    import ctypes

    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return True
    return os.getppid() == parent
