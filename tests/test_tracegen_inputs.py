"""Readers on small fixtures (terabyte gzip + several files, index, tbe), exports, and every
bad input of issue #2: one-line error naming file/line/field, exit 2, no partial output."""

import gzip
import json
from pathlib import Path
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dlrmprof.cli import cli
from dlrmprof.tracegen import Trace, materialize
from dlrmprof.tracegen.export import ORACLE_DTYPE
from dlrmprof.tracegen.readers import BUNDLED_SAMPLE, read_criteo, read_index, read_tbe
from dlrmprof.tracegen.criteo import line_spans
from dlrmprof.tracegen.reuse import reuse_distances

SAMPLE_LINES = BUNDLED_SAMPLE.read_text().splitlines(keepends=True)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_user_error(res, *needles):
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    err = res.output.strip()
    assert err.startswith("dlrmprof: error: ") and "\n" not in err, err
    for n in needles:
        assert n in err, (n, err)
    assert "Traceback" not in res.output


def write_lines(path, lines):
    path.write_text("".join(lines))
    return path


@pytest.fixture
def out(tmp_path):
    return tmp_path / "out" / "t.npz"


def no_output(out):
    d = out.parent
    return not out.exists() and (not d.exists() or list(d.iterdir()) == [])


# ----------------------------------------------------------------- readers on fixtures
def test_terabyte_gzip_and_several_files_keep_ids_consistent(tmp_path):
    a = tmp_path / "day_0.gz"
    with gzip.open(a, "wt") as fh:
        fh.write("".join(SAMPLE_LINES[:700]))
    b = write_lines(tmp_path / "day_1", SAMPLE_LINES[700:1500])
    whole = np.concatenate([c.sparse for c in read_criteo(BUNDLED_SAMPLE, max_rows=1500)])
    r = read_criteo([a, b], block_bytes=8192)
    chunks = list(r)
    got = np.concatenate([c.sparse for c in chunks])
    np.testing.assert_array_equal(got, whole)
    assert r.rows_read == 1500
    assert chunks[-1].file.endswith("day_1")
    res = run("gen-trace", "--from", "terabyte", "--input", a, "--input", b, "--tables",
              "C3,C12", "--out", tmp_path / "tb.npz", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert [t["name"] for t in doc["tables"]] == ["C3", "C12"]
    assert doc["tables"][0]["distinct"] == len(np.unique(whole[:, 2]))


def test_malformed_lines_counted_and_named(tmp_path):
    lines = list(SAMPLE_LINES[:50])
    lines[9] = lines[9].replace("\t", "\t\t", 1)                         # line 10: 41 fields
    f = lines[19].split("\t")
    f[20] = "zz12ab34"
    lines[19] = "\t".join(f)                                              # line 20: C7 not hex
    f = lines[29].split("\t")
    f[3] = "1.5"
    lines[29] = "\t".join(f)                                              # line 30: I3 not int
    p = write_lines(tmp_path / "bad.txt", lines)
    r = read_criteo(p)
    rows = sum(len(c.labels) for c in r)
    assert rows == 47 and r.malformed == 3
    assert [m.line for m in r.malformed_examples] == [10, 20, 30]
    assert [m.field for m in r.malformed_examples] == ["#41", "C7", "I3"]
    # a chunk starting on a malformed line reports the line of its first row
    lines2 = ["garbage\n"] + list(SAMPLE_LINES[:5])
    chunks = list(read_criteo(write_lines(tmp_path / "bad2.txt", lines2)))
    assert chunks[0].first_line == 2
    res = run("gen-trace", "--from", "kaggle", "--input", p, "--out", tmp_path / "o.npz")
    assert res.exit_code == 0
    assert "malformed lines skipped: 3" in res.output and "bad.txt:10" in res.output


def test_index_readers(tmp_path):
    rng = np.random.default_rng()
    a = rng.integers(0, 50, 400) * 7919
    np.save(tmp_path / "s.npy", a)
    (tmp_path / "s.txt").write_text("\n".join(map(str, a)) + "\n")
    np.savez(tmp_path / "m.npz", first=a, second=a[::-1].copy())
    s_npy = read_index(tmp_path / "s.npy")[0]
    s_txt = read_index(tmp_path / "s.txt")[0]
    np.testing.assert_array_equal(s_npy.ids, s_txt.ids)
    np.testing.assert_array_equal(reuse_distances(s_npy.ids), reuse_distances(a))
    assert s_npy.rows == len(np.unique(a))
    multi = read_index(tmp_path / "m.npz")
    assert [s.name for s in multi] == ["first", "second"]
    res = run("gen-trace", "--from", "index", "--input", tmp_path / "m.npz", "--out",
              tmp_path / "i.npz", "--length", 1000, "--table-rows", 5000, "--seed", 3)
    assert res.exit_code == 0, res.output
    t = Trace.load(tmp_path / "i.npz")
    assert t.num_samples == 1000 and [m.rows for m in t.tables] == [5000, 5000]
    assert t.indices.max() < 5000


def test_tbe_reader_pt_and_npz(tmp_path):
    rng = np.random.default_rng()
    T, B = 3, 40
    lengths = rng.integers(0, 5, T * B)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    indices = rng.integers(0, 100, offsets[-1])
    torch.save({"indices": torch.from_numpy(indices), "offsets": torch.from_numpy(offsets),
                "T": T}, tmp_path / "r.pt")
    np.savez(tmp_path / "r.npz", indices=indices, lengths=lengths, B=B)
    for name in ("r.pt", "r.npz"):
        streams = read_tbe(tmp_path / name)
        assert len(streams) == T
        assert [int(s.lengths.sum()) for s in streams] == [
            int(lengths[t * B:(t + 1) * B].sum()) for t in range(T)]
        np.testing.assert_array_equal(
            reuse_distances(streams[1].ids),
            reuse_distances(indices[offsets[B]:offsets[2 * B]]))
    res = run("gen-trace", "--from", "tbe", "--input", tmp_path / "r.pt", "--out",
              tmp_path / "t.npz")
    assert res.exit_code == 0, res.output
    t = Trace.load(tmp_path / "t.npz")
    assert t.num_samples == B and len(t.tables) == T
    # pooling factors kept: the same multiset of bag lengths per table
    for k in range(T):
        _, off = t.table_bags(k)
        assert sorted(np.diff(off)) == sorted(lengths[k * B:(k + 1) * B])


def test_exports(tmp_path):
    src = tmp_path / "t.npz"
    assert run("gen-trace", "--from", "kaggle", "--input-rows", 300, "--tables", "C1,C3",
               "--out", src).exit_code == 0
    t = Trace.load(src)
    assert run("export-trace", src, "--to", "oracle-general", "--out", tmp_path / "o.bin"
               ).exit_code == 0
    rec = np.fromfile(tmp_path / "o.bin", dtype=ORACLE_DTYPE)
    assert rec.shape[0] == t.indices.size and ORACLE_DTYPE.itemsize == 24
    # sample order: table C1 then C3 within each sample; next_access points forward correctly
    assert rec["timestamp"][0] == 0 and rec["timestamp"][1] == 0 and rec["timestamp"][2] == 1
    assert rec["obj_id"][1] >> 40 == 1
    i0 = t.table_bags(0)[0]
    assert rec["obj_id"][0] == i0[0]
    for i in range(0, rec.shape[0], 37):
        n = rec["next_access_vtime"][i]
        later = np.flatnonzero(rec["obj_id"][i + 1:] == rec["obj_id"][i])
        assert n == (i + 1 + later[0] if later.size else -1)
    assert run("export-trace", src, "--to", "tbe", "--out", tmp_path / "r.pt").exit_code == 0
    d = torch.load(tmp_path / "r.pt", weights_only=True)
    assert torch.equal(d["indices"], torch.from_numpy(t.indices)) and d["T"] == 2
    assert run("export-trace", src, "--to", "mrc-hist", "--out", tmp_path / "m.json"
               ).exit_code == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert set(m) == {"C1", "C3"}
    d0 = reuse_distances(i0)
    assert sum(m["C1"]["mrc_hist_counts"]) + m["C1"]["cold"] == len(d0)


def test_trace_stats_json_and_text(tmp_path):
    src = tmp_path / "t.npz"
    run("gen-trace", "--from", "kaggle", "--input-rows", 200, "--out", src, "--profile-only")
    res = run("trace-stats", src, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert len(doc["tables"]) == 26
    t0 = doc["tables"][0]
    assert t0["source_mrc"]["sizes"][0] == 1 and "fidelity" in t0
    res = run("trace-stats", src)
    assert "profile only" in res.output and "C26" in res.output
    t = Trace.load(src)
    assert not t.has_indices
    m = materialize(t, num_samples=50, seed=1)
    assert m.has_indices and m.num_samples == 50
    assert m.digest == materialize(t, num_samples=50, seed=1).digest


# ----------------------------------------------------------------- bad input, one each
def test_missing_and_empty_input(tmp_path, out):
    assert_user_error(run("gen-trace", "--from", "kaggle", "--input", tmp_path / "nope.txt",
                          "--out", out), "nope.txt", "expected an existing file")
    (tmp_path / "empty.txt").write_text("")
    assert_user_error(run("gen-trace", "--from", "kaggle", "--input", tmp_path / "empty.txt",
                          "--out", out), "empty.txt", "non-empty")
    assert no_output(out)


@pytest.mark.parametrize("line_index,mutate,needles", [
    (4, lambda f: f[:-1], ["bad.txt:5:", "40 tab-separated fields", "got 39 fields"]),
    (7, lambda f: f[:16] + ["xyz"] + f[17:], ["bad.txt:8:", "field C3", "hex", "'xyz'"]),
    (2, lambda f: f[:5] + ["12a"] + f[6:], ["bad.txt:3:", "field I5", "integer", "'12a'"]),
])
def test_strict_fails_on_first_malformed_line(tmp_path, out, line_index, mutate, needles):
    lines = list(SAMPLE_LINES[:20])
    fields = lines[line_index].rstrip("\n").split("\t")
    lines[line_index] = "\t".join(mutate(fields)) + "\n"
    p = write_lines(tmp_path / "bad.txt", lines)
    assert_user_error(run("gen-trace", "--from", "kaggle", "--input", p, "--strict",
                          "--out", out), *needles)
    assert no_output(out)


def test_truncated_gzip(tmp_path, out):
    data = gzip.compress("".join(SAMPLE_LINES[:400]).encode())
    p = tmp_path / "day_0.gz"
    p.write_bytes(data[: len(data) // 2])
    assert_user_error(run("gen-trace", "--from", "terabyte", "--input", p, "--out", out),
                      "day_0.gz", "complete gzip stream")
    assert no_output(out)


@pytest.mark.parametrize("arr,needle", [
    (np.array([0.5, 1.5, 2.0]), "dtype float64"),
    (np.arange(6).reshape(2, 3), "2-D array"),
])
def test_bad_npy(tmp_path, out, arr, needle):
    np.save(tmp_path / "ids.npy", arr)
    assert_user_error(run("gen-trace", "--from", "index", "--input", tmp_path / "ids.npy",
                          "--out", out), "ids.npy", "1-D array of integers", needle)
    assert no_output(out)


def test_dlrm_reference_trace_logs(tmp_path):
    """The DLRM reference's trace log: text, one line "a, b, c, ..." (read_trace_from_file),
    or raw int64 (trace_file_binary_type); both read as the same stream as a .npy."""
    a = np.random.default_rng().integers(0, 300, 2000) * 104729
    np.save(tmp_path / "s.npy", a)
    (tmp_path / "log.txt").write_text(", ".join(map(str, a[:1500])) + "\n"
                                      + " ".join(map(str, a[1500:])) + "\n")
    a.astype("<i8").tofile(tmp_path / "log.bin")
    want = read_index(tmp_path / "s.npy")[0].ids
    for name in ("log.txt", "log.bin"):
        np.testing.assert_array_equal(read_index(tmp_path / name)[0].ids, want)
        np.testing.assert_array_equal(read_index(tmp_path / name, max_rows=1600)[0].ids,
                                      want[:1600])


@pytest.mark.parametrize("data,needles", [
    (b"\x01\x00\x00", ["log.bin", "multiple of 8 bytes", "got 3 bytes"]),
    (np.array([4, -2], "<i8").tobytes(), ["log.bin", "non-negative int64", "-2 at value 1"]),
])
def test_bad_binary_trace_log(tmp_path, out, data, needles):
    (tmp_path / "log.bin").write_bytes(data)
    assert_user_error(run("gen-trace", "--from", "index", "--input", tmp_path / "log.bin",
                          "--out", out), *needles)
    assert no_output(out)


def test_bad_token_in_comma_separated_log_names_line(tmp_path, out):
    (tmp_path / "log.txt").write_text("1, 2, 3\n4, x5, 6\n")
    assert_user_error(run("gen-trace", "--from", "index", "--input", tmp_path / "log.txt",
                          "--out", out), "log.txt:2:", "'x5'", "separated by commas")
    assert no_output(out)


def test_bad_text_index_names_line(tmp_path, out):
    (tmp_path / "ids.txt").write_text("1\n2\nthree\n")
    assert_user_error(run("gen-trace", "--from", "index", "--input", tmp_path / "ids.txt",
                          "--out", out), "ids.txt:3:", "'three'")


@pytest.mark.parametrize("offsets,needles", [
    ([0, 3, 2, 5], ["offsets[2]", "non-decreasing", "2 after 3"]),
    ([0, 2, 4, 4], ["offsets[-1]", "len(indices) = 5", "got 4"]),
])
def test_bad_tbe_offsets(tmp_path, out, offsets, needles):
    torch.save({"indices": torch.arange(5), "offsets": torch.tensor(offsets)}, tmp_path / "r.pt")
    assert_user_error(run("gen-trace", "--from", "tbe", "--input", tmp_path / "r.pt",
                          "--out", out), "r.pt", *needles)
    assert no_output(out)


@pytest.fixture(scope="module")
def good_trace(tmp_path_factory):
    p = tmp_path_factory.mktemp("good") / "t.npz"
    assert run("gen-trace", "--from", "kaggle", "--input-rows", 300, "--tables", "C1,C2",
               "--out", p).exit_code == 0
    return p


def _rewrite(src, dst, change, v1=False):
    """Damage a copy of trace `src` at `dst`; with v1 the copy is in the version-1 layout
    (int64 `indices`/`offsets`) first, for changes to those two arrays."""
    if v1:
        from conftest import trace_as_v1
        src = trace_as_v1(src, Path(str(dst) + ".v1.npz"))
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez(dst, **arrays)


def test_truncated_trace_file(tmp_path, good_trace):
    p = tmp_path / "cut.npz"
    p.write_bytes(good_trace.read_bytes()[:5000])
    assert_user_error(run("trace-stats", p), "cut.npz", "complete dlrmprof trace file")


def test_newer_trace_version(tmp_path, good_trace):
    def newer(a):
        h = json.loads(str(a["header"]))
        h["version"] = 99
        a["header"] = np.array(json.dumps(h))
    p = tmp_path / "new.npz"
    _rewrite(good_trace, p, newer)
    assert_user_error(run("trace-stats", p), "new.npz", "header.version",
                      "version <= 4", "upgrade dlrmprof", "got 99")


def test_trace_indices_beyond_rows(tmp_path, good_trace):
    def bump(a):
        a["indices"] = a["indices"].copy()
        a["indices"][3] = 10**6
        h = json.loads(str(a["header"]))
        from dlrmprof.tracegen.tracefile import content_digest
        h["digest"] = content_digest(h, a["indices"], a["offsets"])
        a["header"] = np.array(json.dumps(h))
    p = tmp_path / "big.npz"
    _rewrite(good_trace, p, bump, v1=True)
    assert_user_error(run("export-trace", p, "--to", "tbe", "--out", tmp_path / "x.pt"),
                      "big.npz", "field indices", "indices in [0,", "got 1000000")
    assert not (tmp_path / "x.pt").exists()


def test_trace_modified_content_fails_digest(tmp_path, good_trace):
    def swap(a):
        idx = a["indices"].copy()
        k = int(a["offsets"][300])              # table C1's indices: valid, reordered
        idx[:k] = idx[:k][::-1]
        a["indices"] = idx
    p = tmp_path / "mod.npz"
    _rewrite(good_trace, p, swap, v1=True)
    assert_user_error(run("trace-stats", p), "mod.npz", "digest")


def test_not_a_trace(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, a=np.arange(3))
    assert_user_error(run("trace-stats", p), "x.npz", "'header'")
    with zipfile.ZipFile(tmp_path / "y.npz", "w") as zf:
        zf.writestr("junk.txt", "hello")
    assert_user_error(run("trace-stats", tmp_path / "y.npz"), "y.npz")


def test_jobs_two_processes_same_bytes(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    args = ["gen-trace", "--from", "kaggle", "--input-rows", 600, "--tables", "C1,C3,C4,C12",
            "--hot", 16]
    assert run(*args, "--out", a).exit_code == 0
    res = run(*args, "--out", b, "--jobs", 2)
    assert res.exit_code == 0, res.output
    assert a.read_bytes() == b.read_bytes()


def test_plot_writes_png(tmp_path):
    res = run("gen-trace", "--from", "kaggle", "--input-rows", 300, "--tables", "C1,C2,C3",
              "--out", tmp_path / "t.npz", "--png", tmp_path / "mrc.png")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "mrc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_parallel_parsing_matches_sequential(tmp_path):
    rng = np.random.default_rng()
    lines = [SAMPLE_LINES[i] for i in rng.integers(0, len(SAMPLE_LINES), 12_000)]
    lines[7000] = "bad line\n"
    p = write_lines(tmp_path / "big.txt", lines)
    r1 = read_criteo(p, threads=1, block_bytes=1 << 21)
    r2 = read_criteo(p, threads=2, block_bytes=1 << 21)
    c1, c2 = list(r1), list(r2)
    np.testing.assert_array_equal(np.concatenate([c.sparse for c in c1]),
                                  np.concatenate([c.sparse for c in c2]))
    np.testing.assert_array_equal(np.concatenate([c.dense for c in c1]),
                                  np.concatenate([c.dense for c in c2]))
    assert r1.malformed == r2.malformed == 1
    assert r2.malformed_examples[0].line == 7001
    # every chunk's first_line points at its first row
    for c in c2:
        assert lines[c.first_line - 1].split("\t")[0] == str(int(c.labels[0]))


def test_gen_trace_reports_its_phase_times(tmp_path):
    """Read/profile, synthesis/fidelity and write times: in the JSON (with their source) and
    the human summary; each non-negative and together no more than the command took."""
    import time

    t0 = time.perf_counter()
    res = run("gen-trace", "--from", "kaggle", "--tables", "C1,C2", "--out", tmp_path / "a.npz",
              "--json")
    wall = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    ph = doc["phases_s"]
    assert list(ph) == ["capture", "synthesis", "write"]
    assert all(v >= 0 for v in ph.values()) and sum(ph.values()) <= wall
    assert doc["phases_source"].startswith("measured")
    res = run("gen-trace", "--from", "kaggle", "--tables", "C1", "--out", tmp_path / "b.npz")
    assert "time (measured, perf_counter): read and profile " in res.output


@pytest.mark.parametrize("block", [97, 4096])
def test_criteo_reader_blocks_of_any_size_read_the_same_rows(tmp_path, block):
    """The reader keeps one buffer, a block's unparsed tail moved to its start: blocks
    shorter than a line, a line longer than the buffer's slack (150 kB), a byte-order mark and a last line without a newline read as with the
    default 8 MiB blocks; a span reader (the ranks' form) too."""
    lines = BUNDLED_SAMPLE.read_bytes().splitlines(keepends=True)[:300]
    lines.insert(120, b"1\t" + b"7" * 150_000 + b"\n")
    p = tmp_path / "t.txt"
    p.write_bytes(b"\xef\xbb\xbf" + b"".join(lines).rstrip(b"\n"))

    def rows(**kw):
        r = read_criteo(p, **kw)
        chunks = list((c.labels.copy(), c.sparse.copy(), c.first_line) for c in r)
        return (np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks]),
                r.rows_read, r.malformed, r.bytes_read)

    ref, got = rows(), rows(block_bytes=block)
    assert ref[2] + ref[3] == 301 and ref[4] == p.stat().st_size
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, b)
    lo, hi = line_spans(p, 2)[1]
    span_ref = rows(span=(lo, hi))
    span_got = rows(span=(lo, hi), block_bytes=block)
    assert 0 < span_ref[2] < ref[2]
    for a, b in zip(span_ref, span_got):
        np.testing.assert_array_equal(a, b)
