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


def _stream(seed: int, n: int = 6_000) -> np.ndarray:
    return _reuse.dense_ids(np.asarray(workloads.drifting_zipf(n, 900, 0.9, 0.5, seed=seed),
                                       dtype=np.int64))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_selection_figures_are_the_fidelity_records_own(seed):
    from dlrmprof.tracegen import fidelity as fid
    from dlrmprof.tracegen.profile import build_profile
    from dlrmprof.tracegen.synth import synthesize_bags

    ids = _stream(seed, 3_000)
    for hot in (0, 16):
        prof = build_profile("t", ids, None, rows=int(ids.max()) + 1, windows=8, hot=hot)
        prof.extra["source_extras"] = fid.source_extras(ids, None, prof.distinct)
        syn, offs, _ = synthesize_bags(prof, seed=seed)
        full = fid.fidelity(prof, syn, offsets=offs, policies=())
        lean = fid.selection_figures(prof, syn, offs)
        assert lean["batches"]
        assert lean == {k: full[k] for k in lean}          # the same values, bit for bit


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_naive_candidates_figures_from_its_draws_are_its_streams(seed):
    """The naive candidate's figures kept from its draws (`naive.naive_bags_figures`) equal
    those measured on `synthesize_bags`' stream, bit for bit: LRU, shares, per-batch and LFU
    figures; with more ids than the move-to-front array holds; None for bags of varying
    length."""
    from dlrmprof.tracegen import fidelity as fid
    from dlrmprof.tracegen.naive import MTF_ITEMS, naive_bags_figures
    from dlrmprof.tracegen.profile import build_profile
    from dlrmprof.tracegen.synth import NAIVE, synthesize_bags

    for n, nid in ((3_000, 900), (20_000, 2 * MTF_ITEMS)):
        ids = _reuse.dense_ids(np.asarray(workloads.drifting_zipf(n, nid, 0.9, 0.5, seed=seed),
                                          dtype=np.int64))
        prof = build_profile("t", ids, None, rows=int(ids.max()) + 1, windows=8, hot=0)
        prof.extra.update(model=NAIVE, source_extras=fid.source_extras(ids, None, prof.distinct))
        syn, offs, _ = synthesize_bags(prof, seed=seed)
        figs = naive_bags_figures(prof, seed)
        got = fid.selection_figures(prof, None, figures=figs)
        assert got["batches"]
        assert got == fid.selection_figures(prof, syn, offs)
        assert np.array_equal(figs.head, syn)
        assert fid.policy_figures(prof, figs.head, ("lfu",)) == fid.policy_figures(
            prof, syn, ("lfu",))
    lengths = np.random.default_rng(seed).integers(1, 4, size=1_000)
    bags = build_profile("t", _stream(seed, int(lengths.sum())), lengths, windows=8, hot=0)
    assert naive_bags_figures(bags, seed) is None


def test_the_selections_records_are_the_same_with_the_naive_stream(monkeypatch):
    """The selection (screen, best first, finalists) records the same with the naive
    candidate measured from its draws as with its stream synthesized."""
    monkeypatch.setattr(selection, "SCREEN_MIN", 1 << 13)
    monkeypatch.setattr(selection, "SCREEN", 1 << 12)
    monkeypatch.setattr(selection, "BEST_FIRST_MIN", 1 << 13)
    monkeypatch.setattr(selection, "BUDGET_MIN", 1 << 13)
    ids = _stream(5, 12_000)
    runs = []
    for draws in (True, False):
        if not draws:
            monkeypatch.setattr(selection, "naive_bags_figures", lambda prof, seed: None)
        runs.append(selection.select_hot("t", ids, None, int(ids.max()) + 1, 8, None)[1])
    assert any(c["placement"] == "naive" for c in runs[0]["candidates"])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("seed", [1, 2])
def test_best_first_keeps_the_same_best_candidates_as_the_order(monkeypatch, seed):
    ids = _stream(seed)
    monkeypatch.setattr(selection, "SCREEN_MIN", 1 << 40)
    runs = []
    for first_min in (1 << 40, 0):                         # in order, then best first
        monkeypatch.setattr(selection, "BEST_FIRST_MIN", first_min)
        runs.append(selection.select_hot("t", ids, None, int(ids.max()) + 1, 8, None)[1])
    a, b = runs
    assert (a["chosen"], a["placement"]) == (b["chosen"], b["placement"])
    win = min(c["objective"] for c in b["candidates"])
    for ca, cb in zip(a["candidates"], b["candidates"], strict=True):
        assert (ca["hot"], ca["placement"]) == (cb["hot"], cb["placement"])
        assert cb["syntheses"] <= ca["syntheses"]
        if cb["syntheses"] < ca["syntheses"]:             # a finalist stopped early: it
            assert cb["objective"] > win                  # could not win
            continue
        assert ca["mrc_mae"] == cb["mrc_mae"]               # the same syntheses
        if not ca.get("pruned") and not cb.get("pruned"):
            assert ca["objective"] == cb["objective"]
        elif not ca.get("pruned"):                        # a pruned one's is a lower bound
            assert cb["objective"] <= ca["objective"]
    pruned = [sum(bool(c.get("pruned")) for c in s["candidates"]) for s in runs]
    assert pruned[1] >= pruned[0]
    syntheses = [sum(c["syntheses"] for c in s["candidates"]) for s in runs]
    assert syntheses[1] <= syntheses[0]


def test_a_long_prefix_is_screened_on_its_head(monkeypatch):
    ids = _stream(4, 8_000)
    rows = int(ids.max()) + 1
    monkeypatch.setattr(selection, "BEST_FIRST_MIN", 0)
    monkeypatch.setattr(selection, "SCREEN_MIN", 1 << 40)
    whole = selection.select_hot("t", ids, None, rows, 8, None)[1]
    assert "screened_out" not in whole
    monkeypatch.setattr(selection, "SCREEN_MIN", 4_000)
    monkeypatch.setattr(selection, "SCREEN", 2_000)
    monkeypatch.setattr(selection, "SCREENED", 2)
    sel = selection.select_hot("t", ids, None, rows, 8, None)[1]
    dropped = {tuple(c) for c in sel["screened_out"]["candidates"]}
    assert sel["screened_out"]["accesses"] == 2_000
    kept = [(c["hot"], c["placement"]) for c in sel["candidates"]]
    assert "naive" in {p for _, p in kept} and "naive" not in {p for _, p in dropped}
    assert len(kept) == len(whole["candidates"]) - len(dropped)
    # on the head the stream has fewer ids: its hot-set sizes stop earlier (at most two
    # sizes unseen, each with two placements)
    assert len(dropped) >= len(whole["candidates"]) - 2 - 1 - 4
    assert (sel["chosen"], sel["placement"]) in kept
    # a kept candidate is measured as without the screen (same profile, seeds, syntheses)
    by = {(c["hot"], c["placement"]): c for c in whole["candidates"]}
    same = [c for c in sel["candidates"]
            if c["syntheses"] == by[(c["hot"], c["placement"])]["syntheses"]]
    assert same
    for c in same:
        assert c["mrc_mae"] == by[(c["hot"], c["placement"])]["mrc_mae"]
