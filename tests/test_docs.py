"""docs/performance.md is rendered from benchmarks/results: the page must match its files."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_performance_page_is_rendered_from_the_results_files():
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "render_performance.py"),
                          "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
