"""benchmarks/bench_embedding_bag.py: the span probe's cells and the 1 GiB-page table's error."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_embedding_bag.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_embedding_bag", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_span_cells_keep_the_footprint_and_grow_the_span():
    cells = _load().span_cells(10**7)
    assert cells == [(4096, 10240, 1), (4096, 24576, 3), (4096, 10**5, 1), (4096, 10**6, 1),
                     (4096, 10**7, 1), (4096, 10**7, 3),
                     (65536, 163840, 1), (65536, 393216, 3), (65536, 10**6, 1),
                     (65536, 10**7, 1), (65536, 10**7, 3)]
    for hot, span, step in cells:   # room for the hot rows among every step-th row
        assert span // step >= hot
    # a small table: only the hot sets that fit six times, and the table's R as last span
    assert _load().span_cells(10**5) == [(4096, 10240, 1), (4096, 24576, 3),
                                         (4096, 10**5, 1), (4096, 10**5, 3)]


def _free_1g_pages():
    try:
        with open(f"{_load().HUGE_1G_SYSFS}/free_hugepages") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


@pytest.mark.skipif(_free_1g_pages() > 0, reason="1 GiB pages are reserved here: it would run")
def test_hugetlb_table_without_pages_is_a_one_line_error_exit_2():
    done = subprocess.run([sys.executable, str(SCRIPT), "--span", "--table", "hugetlb",
                           "--rows", "1e6"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2  # a usage error, as argparse's
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("bench_embedding_bag: --table hugetlb: cannot map 1 1 GiB page")
    assert "nr_hugepages" in lines[0]
    assert done.stdout == "" and "Traceback" not in done.stderr


def test_span_probe_on_a_table_too_small_is_a_one_line_error_exit_2():
    done = subprocess.run([sys.executable, str(SCRIPT), "--span", "--rows", "1000"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2  # a usage error, as argparse's
    assert done.stderr.strip() == ("bench_embedding_bag: --span needs R >= 24576 rows (--rows), "
                                   "got 1000")
    assert done.stdout == "" and "Traceback" not in done.stderr


@pytest.mark.parametrize("extra, msg", [
    (["--tune"], "--span draws its own rows on 1 thread: it does not take --tune"),
    (["--dists", "zipf"], "--span draws its own rows on 1 thread: it does not take --dists"),
    (["--threads", "2"], "--span draws its own rows on 1 thread: it does not take --threads"),
    (["--dims", "0"], "--span needs D >= 1 (--dims) and L >= 1 (--pooling), got D 0, L 20"),
    (["--pooling", "0"], "--span needs D >= 1 (--dims) and L >= 1 (--pooling), got D 64, L 0"),
])
def test_span_probe_options_it_cannot_honour_are_a_one_line_error_exit_2(extra, msg):
    done = subprocess.run([sys.executable, str(SCRIPT), "--span", "--rows", "1e5", *extra],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2  # a usage error, as argparse's
    assert done.stderr.strip() == f"bench_embedding_bag: {msg}"
    assert done.stdout == "" and "Traceback" not in done.stderr
