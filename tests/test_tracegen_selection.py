"""The selection's prefix windows and the budget model's runs (issue 16)."""

import numpy as np
import pytest

from dlrmprof.tracegen import budgets, selection, workloads
from dlrmprof.tracegen import reuse as _reuse
from dlrmprof.tracegen.fidelity import errors, fidelity, source_extras
from dlrmprof.tracegen.profile import BUDGET_MODEL, build_profile, stream_histogram
from dlrmprof.tracegen.synth import synthesize_bags


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


def _drifting(n=60_000):
    ids = workloads.drifting_zipf(n, distinct=15_000, a=1.0, drift=0.05, seed=2)
    ids = _reuse.dense_ids(np.asarray(ids, dtype=np.int64))
    prof = build_profile("d", ids, None, rows=int(ids.max()) + 1, windows=32, hot=0)
    prof.extra["source_extras"] = source_extras(ids, None, prof.distinct)
    return ids, prof


def test_budget_runs_keep_fifo_where_popularity_drifts():
    # ids popular for a while stay in use longer than a FIFO cycle; plain budgets reuse
    # them in short chains and FIFO hits too often (the LRU curve is the same)
    ids, prof = _drifting()
    plain = budgets.budget_profile(prof, ids, BUDGET_MODEL)
    runs = budgets.budget_profile(prof, ids, budgets.BUDGET_RUNS)
    assert runs.extra["budget_run_depth"] > 0 and "budget_run_depth" not in plain.extra
    runs.validate()
    ep = errors(fidelity(plain, synthesize_bags(plain, seed=3)[0]))
    er = errors(fidelity(runs, synthesize_bags(runs, seed=3)[0]))
    assert er["fifo_mae"] < 0.75 * ep["fifo_mae"]
    assert er["mrc_mae"] < ep["mrc_mae"] + 0.0005
    assert er["lfu_mae"] < ep["lfu_mae"] * 1.1 and er["top10_share"] < 0.2


def test_run_depth_zero_is_the_plain_budget_model():
    ids, prof = _drifting(20_000)
    plain = budgets.budget_profile(prof, ids, BUDGET_MODEL)
    zero = budgets.budget_profile(prof, ids, budgets.BUDGET_RUNS)
    zero.extra["budget_run_depth"] = 0
    assert np.array_equal(synthesize_bags(plain, seed=5)[0], synthesize_bags(zero, seed=5)[0])
