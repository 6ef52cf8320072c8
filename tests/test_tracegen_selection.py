"""The selection of a long stream's model, measured on its prefix (issue 16)."""

import numpy as np
import pytest

from dlrmprof.tracegen import selection, workloads
from dlrmprof.tracegen import reuse as _reuse
from dlrmprof.tracegen.profile import stream_histogram


@pytest.mark.parametrize("windows", [1, 7, 32])
def test_prefix_windows_keep_the_whole_streams_window_length(windows):
    prefix = 1 << 12
    for n in np.unique(np.geomspace(1, 1 << 24, 200).astype(int)):
        w = selection.prefix_windows(windows, int(n), prefix)
        if n <= prefix:
            assert w == windows                  # the whole stream is measured
            continue
        assert 1 <= w <= windows
        # a prefix window is as long as the model's, to rounding (or the one window)
        assert w == 1 or abs((prefix / w) / (n / windows) - 1) <= 0.5 / w + 1e-9


def test_a_long_streams_selection_is_measured_on_windows_of_its_length(monkeypatch):
    seen = []
    real = selection.select_hot

    def spy(name, sub, sub_lengths, rows, windows, *args, **kw):
        seen.append((sub.shape[0], windows))
        return real(name, sub, sub_lengths, rows, windows, *args, **kw)

    monkeypatch.setattr(selection, "HOT_PREFIX", 2_000)
    monkeypatch.setattr(selection, "select_hot", spy)
    ids = _reuse.dense_ids(np.asarray(workloads.scans(16_000, span=3_000, noise=0.05, seed=4),
                                      dtype=np.int64))
    prof, sel = selection.choose_hot("s", ids, None, int(ids.max()) + 1, 32,
                                     stream_histogram(ids), candidates=(0, 16))
    assert seen == [(2_000, 4)]                  # 32 x 2,000 / 16,000
    assert sel["measured_on_accesses"] == 2_000
    assert prof.tail_cold.shape == (32,)         # the chosen model has the stream's windows
