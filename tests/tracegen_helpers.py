"""Helpers shared by the tracegen model tests."""

import numpy as np
import pytest

from dlrmprof.tracegen.profile import LocalityProfile, build_profile
from dlrmprof.tracegen.synth import synthesize_bags
from dlrmprof.tracegen.tracefile import Trace


def round_trip(tmp_path, prof: LocalityProfile, num_samples: int, needs: int):
    """Save a trace of `prof` and a plain profile, load it back and check that `prof`'s
    arrays, model and synthesis come back; older format versions (below `needs`, the first
    that holds its model's arrays) are refused and write nothing.  Returns (trace, loaded,
    the plain profile)."""
    from dlrmprof.tracegen import synthesize_trace

    plain = build_profile("u", np.arange(300) % 50, hot=4)
    tr = synthesize_trace([prof, plain], source={"kind": "test"}, num_samples=num_samples,
                          seed=3, compute_fidelity=False)
    tr.save(tmp_path / "t.npz")
    back = Trace.load(tmp_path / "t.npz")
    for f in LocalityProfile.ARRAYS:
        assert np.array_equal(getattr(back.profiles[0], f), getattr(prof, f)), f
    assert back.profiles[0].extra["model"] == prof.extra["model"]
    assert np.array_equal(back.indices, tr.indices)
    assert np.array_equal(synthesize_bags(back.profiles[0], seed=9)[0],
                          synthesize_bags(prof, seed=9)[0])
    assert back.header["version"] == 4
    # an older format, which a reader of that version would take without the model
    for version in range(1, needs):
        with pytest.raises(ValueError, match=f"version {needs} can"):
            tr.save(tmp_path / f"v{version}.npz", version=version)
        assert not (tmp_path / f"v{version}.npz").exists()
    return tr, back, plain
