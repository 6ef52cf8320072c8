"""docs/performance.md is rendered from benchmarks/results: the page must match its files;
the results files are schema-versioned; the benchmarks time with the one harness."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"

# timed by dlrmprof.profile.harness (interleaved rounds, check before timing, noise, JSON)
ON_THE_HARNESS = ("bench_kernels", "bench_embedding_bag", "bench_embedding_bag_cuda",
                  "bench_dlrm", "bench_profile", "bench_instrumentation", "bench_row_prefetch",
                  "bench_quantized_embedding", "bench_policies")
# measure something the harness cannot time (a probe against itself, times recorded inside
# a served instance or a distributed run's report): its results writer only
RESULTS_WRITER_ONLY = ("bench_ceilings", "bench_serving", "bench_distributed",
                       "bench_kernel_load")


def test_performance_page_is_rendered_from_the_results_files():
    res = subprocess.run([sys.executable, str(BENCH / "render_performance.py"), "--check"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("path", sorted((BENCH / "results").glob("*.json")), ids=lambda p: p.name)
def test_results_files_carry_a_versioned_schema_and_their_command(path):
    doc = json.loads(path.read_text())
    schema = doc.get("schema")
    if isinstance(schema, int):     # the first quantized-embedding results, before names
        assert doc.get("benchmark") == "bench_quantized_embedding"
        return
    assert re.fullmatch(r"[a-z0-9_.\-]+/[1-9][0-9]*", schema), schema
    if doc.get("harness"):
        assert doc["command"].startswith("python benchmarks/")
        assert doc["host"]["cpus"] >= 1 and doc["source"]
        for c in doc["comparisons"]:
            assert c["rounds"] >= 1 and c["used"] in ("clean", "all")


@pytest.mark.parametrize("name", ON_THE_HARNESS + RESULTS_WRITER_ONLY)
def test_benchmarks_use_the_harness_not_their_own_round_loops(name):
    text = (BENCH / f"{name}.py").read_text()
    assert "harness.write_results(" in text, f"{name} writes no results file"
    if name in ON_THE_HARNESS:
        assert "harness.compare(" in text, f"{name} does not time with the harness"
        # the hand-rolled pieces the harness replaced
        for own in ("perf_counter_ns", "psutil.cpu_times", "OtherCpu", "torch.cuda.Event"):
            assert own not in text, f"{name} still times with its own {own}"
