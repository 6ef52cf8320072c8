"""The run layer's shape: one-way imports between subpackages, module and function sizes,
and the pieces one process and N ranks share (op rows, sections)."""

import ast
from pathlib import Path

import numpy as np
import pytest

import dlrmprof
from dlrmprof.profile.timers import OpTimer
from dlrmprof.session import sections
from dlrmprof.session.prepare import RunOptions, prepare
from dlrmprof.session.rows import op_rows, per_iter, timer_name

PKG = Path(dlrmprof.__file__).parent
# a subpackage may import only those before it in this order
ORDER = ["tracegen", "kernels", "profile", "dlrm", "session", "serving", "commands"]
RUN_LAYER = [*sorted((PKG / "session").glob("*.py")), PKG / "dlrm" / "runner.py",
             PKG / "dlrm" / "distributed.py", PKG / "commands" / "run.py",
             PKG / "commands" / "distributed.py"]


def _imported_subpackages(path: Path) -> set[str]:
    """dlrmprof subpackages a module imports, at its top or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for n in names:
            parts = n.split(".")
            if len(parts) > 1 and parts[0] == "dlrmprof" and (PKG / parts[1]).is_dir():
                out.add(parts[1])
    return out


def test_imports_go_one_way_between_subpackages():
    wrong = []
    for sub in ORDER:
        for path in sorted((PKG / sub).rglob("*.py")):
            for dep in _imported_subpackages(path) - {sub}:
                if dep in ORDER and ORDER.index(dep) > ORDER.index(sub):
                    wrong.append(f"{path.relative_to(PKG)} imports {dep}")
    assert not wrong, wrong


def test_run_layer_modules_and_functions_stay_small():
    big = []
    for path in RUN_LAYER:
        src = path.read_text()
        if src.count("\n") > 600:
            big.append(f"{path.name}: {src.count(chr(10))} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    big.append(f"{path.name}:{node.name} {n} lines")
    assert not big, big


@pytest.fixture(scope="module")
def tiny_prep(tmp_path_factory):
    out = tmp_path_factory.mktemp("r") / "r.json"
    return prepare(RunOptions(config="tiny", data="random", iters=3, warmup=0,
                              out=str(out), roofline=False))


def _timer(names, iters=3):
    t = OpTimer(noise=False)
    for i in range(iters):
        t.begin_iteration()
        for k, name in enumerate(names):
            t.add(name, 1e-3 * (k + 1) * (i + 1))
        t.end_iteration()
    return t


def test_every_row_names_the_timer_op_it_came_from(tiny_prep):
    tables = [t.name for t in tiny_prep.config.tables]
    names = ["data", "step", "emb", "emb_update", "bottom_mlp", "backward", "optimizer",
             *(f"emb.{n}" for n in tables), *(f"emb_update.{n}" for n in tables),
             "not_a_model_op"]
    timer = _timer(names)
    rows, dropped = op_rows(timer, tiny_prep, [2.0] * len(tables))
    assert dropped == {}
    assert [timer_name(r) for r in rows] == names[:-1]      # unknown ops get no row
    by = {(r["name"], r["phase"]): r for r in rows}
    assert by[("emb.all", "optimizer")]["kind"] == "embedding_bag_sgd"
    assert by[("data", "data")]["backend"] == "numpy"
    assert by[(f"emb.{tables[0]}", "forward")]["shape"]["nnz"] == 2
    # the counted work of all tables is the sum of each table's
    assert by[("emb.all", "forward")]["bytes"] == sum(
        by[(f"emb.{n}", "forward")]["bytes"] for n in tables)
    assert per_iter(timer, "emb", 3).tolist() == pytest.approx([3e-3, 6e-3, 9e-3])
    assert per_iter(timer, "never_timed", 3).tolist() == [0.0, 0.0, 0.0]


def test_end_to_end_section_rates():
    e = sections.end_to_end(iterations=4, batch=32, warmup=1, wall_s=0.5, step_s=0.4,
                            iter_wall=[0.125] * 4, data_s=0.1, definition="d")
    assert e["samples_per_s"] == pytest.approx(256.0)
    assert e["model_samples_per_s"] == pytest.approx(320.0)
    assert e["data_samples_per_s"] == pytest.approx(1280.0)
    assert e["data_fraction"] == pytest.approx(0.2)
    assert e["time"]["median"] == pytest.approx(0.125) and e["source"] == "measured"
    merged = sections.end_to_end(iterations=4, batch=32, warmup=1, wall_s=0.5, step_s=0.4,
                                 iter_wall=np.full(4, 0.125), definition="d",
                                 distributed={"world_size": 2})
    assert "data_fraction" not in merged and merged["distributed"] == {"world_size": 2}
