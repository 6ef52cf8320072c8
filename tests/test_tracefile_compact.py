"""Trace format v2: indices per table at the narrowest width, bag lengths instead of offsets
(nothing at a constant pooling factor); the in-memory TBE layout and digests unchanged;
version-1 files (tests/data/traces, written by dlrmprof 0.1 before the change) still load."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dlrmprof.errors import UserError
from dlrmprof.tracegen import Trace, build_profile, synthesize_trace
from dlrmprof.tracegen.tracefile import _write_npz

V1 = Path(__file__).parent / "data" / "traces" / "v1_kaggle_c1_c3_c9_400.npz"


def _members(path: Path) -> dict:
    with zipfile.ZipFile(path) as z:
        return {i.filename[:-4]: i.file_size for i in z.infolist()}


def _arrays(path: Path) -> tuple[dict, dict]:
    import json

    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "header"}
        header = json.loads(str(z["header"]))
    return header, arrays


def test_version_1_file_loads_and_resaves_compact(tmp_path):
    old = Trace.load(V1)
    assert old.header["version"] == 1 and old.indices.dtype == np.int64
    assert [m.name for m in old.tables] == ["C1", "C3", "C9"]
    new_path = tmp_path / "v2.npz"
    old.save(new_path)
    new = Trace.load(new_path)
    assert new.header["version"] == 4
    np.testing.assert_array_equal(new.indices, old.indices)
    np.testing.assert_array_equal(new.offsets, old.offsets)
    members = _members(new_path)
    assert "indices" not in members and "offsets" not in members
    assert {"i0", "i1", "i2"} <= set(members) and not any(m.startswith("l") for m in members)
    assert new_path.stat().st_size < V1.stat().st_size


def test_constant_pooling_stores_no_offsets_and_narrow_indices(tmp_path):
    rng = np.random.default_rng(1)
    small = build_profile("small", rng.integers(0, 200, 3000))            # < 256 rows
    big = build_profile("big", rng.integers(0, 70_000, 3000), rows=70_000)  # > 65,536 rows
    trace = synthesize_trace([small, big], source={}, compute_fidelity=False)
    path = tmp_path / "t.npz"
    digest = trace.save(path)
    header, arrays = _arrays(path)
    assert arrays["i0"].dtype == np.uint8 and arrays["i1"].dtype == np.uint32
    assert [e["pooling"] for e in header["storage"]["tables"]] == [1, 1]
    back = Trace.load(path)
    assert back.digest == digest == trace.digest
    np.testing.assert_array_equal(back.offsets, trace.offsets)


def test_variable_pooling_stores_lengths(tmp_path):
    rng = np.random.default_rng(2)
    lengths = rng.integers(0, 5, 800)
    prof = build_profile("bags", rng.integers(0, 500, int(lengths.sum())), lengths)
    trace = synthesize_trace([prof], source={}, compute_fidelity=False)
    path = tmp_path / "t.npz"
    trace.save(path)
    header, arrays = _arrays(path)
    assert header["storage"]["tables"][0]["pooling"] is None
    assert arrays["l0"].dtype == np.uint8 and arrays["l0"].size == trace.num_samples
    back = Trace.load(path)
    np.testing.assert_array_equal(back.indices, trace.indices)
    np.testing.assert_array_equal(back.offsets, trace.offsets)


def _rewrite(src: Path, dst: Path, change) -> Path:
    header, arrays = _arrays(src)
    change(header, arrays)
    _write_npz(dst, header, arrays)
    return dst


@pytest.mark.parametrize("change, expect", [
    (lambda h, a: a.update(i0=a["i0"].astype(np.int64)), "field i0: expected dtype uint8"),
    (lambda h, a: a.pop("i1"), "field i1: expected a 1-D index array, got missing"),
    (lambda h, a: a.update(i0=a["i0"][:-1]), "field i0: expected 400 indices"),
    (lambda h, a: h["storage"]["tables"][0].update(pooling=2), "pooling x 400"),
    (lambda h, a: h.pop("storage"), "field header.storage: expected a storage entry per table"),
])
def test_damaged_compact_files_are_one_line_errors(tmp_path, change, expect):
    good = tmp_path / "good.npz"
    Trace.load(V1).save(good)
    bad = _rewrite(good, tmp_path / "bad.npz", change)
    with pytest.raises(UserError) as exc:
        Trace.load(bad)
    msg = str(exc.value)
    assert expect in msg and "\n" not in msg


def test_lengths_not_matching_the_indices_are_refused(tmp_path):
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 4, 300)
    prof = build_profile("bags", rng.integers(0, 50, int(lengths.sum())), lengths)
    path = tmp_path / "t.npz"
    synthesize_trace([prof], source={}, compute_fidelity=False).save(path)

    def change(h, a):
        a["l0"] = a["l0"].copy()
        a["l0"][0] += 1
    with pytest.raises(UserError, match="field l0: expected bag lengths summing to"):
        Trace.load(_rewrite(path, tmp_path / "bad.npz", change))


def test_golden_v1_file_is_untouched_by_loading(tmp_path):
    copy = tmp_path / "v1.npz"
    shutil.copy(V1, copy)
    Trace.load(copy)
    assert copy.read_bytes() == V1.read_bytes()


@pytest.mark.parametrize("at", [1, 7, 8, 9, 16])
def test_decreasing_offsets_found_across_check_pieces(monkeypatch, at):
    """The offsets are checked a piece at a time: a decrease at, before or after a piece's
    edge is found and named by its index."""
    from dataclasses import replace

    from dlrmprof.tracegen import tracefile

    monkeypatch.setattr(tracefile, "_CHECK_STEP", 8)
    prof = build_profile("t", np.arange(20) % 5, lengths=np.ones(20, dtype=np.int64))
    trace = synthesize_trace([prof], source={}, compute_fidelity=False)
    trace.validate()
    off = trace.offsets.copy()
    off[at] = off[at - 1] - 1 if at > 1 else -1
    with pytest.raises(UserError, match=rf"offsets\[{at}\].*non-decreasing"):
        replace(trace, offsets=off).validate()


@pytest.mark.parametrize("step", [7, 1 << 22])
def test_packed_writer_writes_the_bytes_of_the_in_memory_trace(monkeypatch, tmp_path, step):
    """gen-trace's path (`synthesize_packed`: tables packed and hashed as they come, no int64
    layout) writes the same bytes and digest as `synthesize_trace(...).save()`: a constant
    pooling factor, variable bags (some empty) and three index widths, offsets hashed in
    pieces that cross the tables' edges; also from ranks' narrowed results (`done`)."""
    from dlrmprof.tracegen import generate, tracefile

    monkeypatch.setattr(tracefile, "_CHECK_STEP", step)
    rng = np.random.default_rng(4)
    lengths = rng.integers(0, 4, 600)
    profs = [build_profile("bags", rng.integers(0, 300, int(lengths.sum())), lengths),
             build_profile("small", rng.integers(0, 200, 600)),
             build_profile("big", rng.integers(0, 70_000, 600), rows=70_000)]
    ref = synthesize_trace(profs, source={"k": 1}, seed=5)
    digest = ref.save(tmp_path / "ref.npz")
    with tracefile.PackedWriter(tmp_path / "packed.npz") as writer:
        view = generate.synthesize_packed(profs, source={"k": 1}, writer=writer, seed=5)
        assert view.indices is None and view.header["fidelity"] == ref.header["fidelity"]
        assert writer.finish(view) == digest
        with pytest.raises(ValueError, match="written its file already"):
            writer.finish(view)
    assert (tmp_path / "packed.npz").read_bytes() == (tmp_path / "ref.npz").read_bytes()
    B, tasks = generate.plan_synthesis(profs, seed=5)
    done = {}
    for t in (0, 2):                                  # as capture._synthesize_share sends them
        ids, offs, fid, distinct = generate.synthesize_table(tasks[t])
        assert distinct == np.unique(ids).size          # from the fidelity's reuse pass
        done[t] = (ids.astype(tracefile.index_dtype(tasks[t][2])), offs, fid, distinct)
    with tracefile.PackedWriter(tmp_path / "ranks.npz") as writer:
        view = generate.synthesize_packed(profs, source={"k": 1}, writer=writer, seed=5,
                                          done=done)
        assert writer.finish(view) == digest
    assert (tmp_path / "ranks.npz").read_bytes() == (tmp_path / "ref.npz").read_bytes()
    back = Trace.load(tmp_path / "ranks.npz")
    np.testing.assert_array_equal(back.indices, ref.indices)
    np.testing.assert_array_equal(back.offsets, ref.offsets)


def test_packed_writer_refuses_what_the_layout_check_refuses(tmp_path):
    from dlrmprof.tracegen.tracefile import PackedWriter

    with PackedWriter(tmp_path / "t.npz", 3) as w:
        with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
            w.add(np.array([0, 5, 1]), None, 5)
        with pytest.raises(ValueError, match="non-decreasing"):
            w.add(np.array([0, 1, 1]), np.array([0, 2, 1, 3]), 5)
        with pytest.raises(ValueError, match="equal bags"):
            w.add(np.array([0, 1]), None, 5)
    assert list(tmp_path.iterdir()) == []            # left without finish: nothing written


def test_memory_check_counts_the_packed_width(monkeypatch):
    """gen-trace's packed path writes each table to the file as it is made: its memory check
    counts one table's ids at the file's width (and no offsets at a constant pooling factor)
    inside that table's working set, not every table's 8 + 8 bytes per sample."""
    from dlrmprof import memcheck
    from dlrmprof.tracegen import generate

    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 3, 500)
    profs = [build_profile("small", rng.integers(0, 200, 500)),
             build_profile("big", rng.integers(0, 70_000, 500), rows=70_000),
             build_profile("bags", rng.integers(0, 300, int(lengths.sum())), lengths)]
    seen = {}
    monkeypatch.setattr(memcheck, "check_fits",
                        lambda items, **kw: seen.setdefault(len(seen), dict(items)))
    for packed in (False, True):
        generate.check_memory(profs, 500, None, True, "hint", packed=packed)
    n = [int(round(p.accesses * 500 / p.num_bags)) for p in profs]
    idx = [f"table {p.name} ({k} synthetic indices)" for p, k in zip(profs, n)]
    # the working sets: rows bound by max(source rows, accesses); packed, one table's ids at
    # the file's width (uint16, uint32, uint16 with its 500 bag lengths) join its own
    work = {f"table {p.name} (synthesizing {k} accesses over {max(p.rows, k)} rows)":
            32 * k + 4 * max(p.rows, k) for p, k in zip(profs, n)}
    held = dict(zip(work, [2 * n[0], 4 * n[1], 2 * n[2] + 4 * 500]))
    big = max(work, key=work.get)
    assert seen[0] == {**{k: 8 * m + 8 * 500 for k, m in zip(idx, n)}, big: work[big]}
    packed = {k: work[k] + held[k] for k in work}
    big = max(packed, key=packed.get)
    assert seen[1] == {big: packed[big]}


def test_packed_writer_streams_tables_into_the_file(tmp_path):
    """Each table goes into the (temporary) file as it is added: the writer holds no table
    after `add` (traced memory back near zero, its peak a few copies of one table), the
    entries lie in table order with the profiles after them and the header last, and the
    file reads back to the trace."""
    import tracemalloc

    from dlrmprof.tracegen.tracefile import PackedWriter

    rng = np.random.default_rng(6)
    B, n_tab = 200_000, 4
    profs = [build_profile(f"t{t}", rng.integers(0, 60_000, 2000)) for t in range(n_tab)]
    ref = synthesize_trace(profs, source={}, num_samples=B, compute_fidelity=False)
    tables = [ref.table_bags(t) for t in range(n_tab)]
    out = tmp_path / "t.npz"
    tracemalloc.start()
    try:
        with PackedWriter(out, B) as w:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            for t, (ids, off) in enumerate(tables):
                w.add(ids, off, ref.tables[t].rows)
            held, peak = (x - base for x in tracemalloc.get_traced_memory())
            temp = [p for p in tmp_path.iterdir() if p.name.startswith(".t.npz.dlrmprof-")]
            assert len(temp) == 1 and temp[0].stat().st_size > n_tab * B * 2
            digest = w.finish(ref)
    finally:
        tracemalloc.stop()
    # all tables held at their width would be n_tab * B * 2 bytes; one table's working
    # copies (its bag lengths as int64, the narrowed ids, a write buffer) about 3 * B * 8
    assert held < 64 * 1024 and peak < 3 * B * 8
    with zipfile.ZipFile(out) as z:
        names = [i.filename[:-4] for i in z.infolist()]
    assert names[:n_tab] == [f"i{t}" for t in range(n_tab)] and names[-1] == "header"
    assert all(n.startswith("p") for n in names[n_tab:-1])
    assert digest == ref.digest and out.read_bytes() == _saved(ref, tmp_path / "r.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.npz", "t.npz"]


def _saved(trace, path) -> bytes:
    trace.save(path)
    return path.read_bytes()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_packed_writer_interrupted_leaves_the_old_file(tmp_path, exc):
    """An exception (Ctrl-C included) between two tables removes the temporary file; a file
    already at the path is left as it was."""
    from dlrmprof.tracegen.tracefile import PackedWriter

    out = tmp_path / "t.npz"
    out.write_bytes(b"old")
    with pytest.raises(exc):
        with PackedWriter(out, 4) as w:
            w.add(np.arange(4), None, 10)
            raise exc()
    assert out.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize("step", [3, 7, 1 << 22])
def test_arithmetic_offsets_hash_as_the_plain_offsets(monkeypatch, tmp_path, step):
    """PackedWriter._hash_offsets on tables of a constant pooling factor (0 included: empty
    bags) hashes the bytes of the plain TBE offsets, in pieces of _CHECK_STEP bags."""
    import hashlib

    from dlrmprof.tracegen import tracefile

    monkeypatch.setattr(tracefile, "_CHECK_STEP", step)
    B, pools = 11, [2, 0, 3, 1, 0, 5]
    w = tracefile.PackedWriter(tmp_path / "t.npz", B)
    w.tables = [{"pooling": p} for p in pools]
    w._nnz = B * sum(pools)
    w._hash_offsets()
    plain, base = [], 0
    for p in pools:
        plain.append(base + p * np.arange(B, dtype=np.int64))
        base += p * B
    want = np.concatenate(plain + [np.array([base])]).astype("<i8").tobytes()
    assert w._hash.hexdigest() == hashlib.sha256(want).hexdigest()
