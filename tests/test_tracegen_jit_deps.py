"""numba's cache keys a kernel on its own file only: every tracegen module whose kernels
compile in code or constants of another tracegen file names those files (`_DEPS`) and their
digest (`_DEPS_SHA256`, `dlrmprof.jitdeps`), so that a change there recompiles it."""
import ast
import importlib
import pkgutil
import types
from pathlib import Path

import pytest
from numba.core.registry import CPUDispatcher

import dlrmprof.tracegen as tracegen
from dlrmprof import jitdeps

HERE = Path(tracegen.__file__).parent
MODULES = sorted(m.name for m in pkgutil.iter_modules(tracegen.__path__))


def _bound_names(path: Path) -> dict[str, str]:
    """Names a module binds by importing from another tracegen module -> that module."""
    out = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("dlrmprof.tracegen."):
                src = node.module.split(".")[2]
                for a in node.names:
                    out[a.asname or a.name] = src
            elif node.module == "dlrmprof.tracegen":
                for a in node.names:
                    if a.name in MODULES:
                        out[a.asname or a.name] = a.name
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[:2] == ["dlrmprof", "tracegen"] and len(parts) > 2 and a.asname:
                    out[a.asname] = parts[2]
    return out


def _names_in_kernels(mod) -> set[str]:
    names: set[str] = set()
    for obj in vars(mod).values():
        if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == mod.__name__:
            todo = [obj.py_func.__code__]
            while todo:
                code = todo.pop()
                names |= set(code.co_names)
                todo += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return names


def _direct(name: str) -> set[str]:
    mod = importlib.import_module(f"dlrmprof.tracegen.{name}")
    bound = _bound_names(HERE / f"{name}.py")
    return {bound[n] for n in _names_in_kernels(mod) if n in bound} - {name}


def _closure(name: str) -> list[str]:
    seen, todo = set(), [name]
    while todo:
        for d in _direct(todo.pop()):
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return sorted(f"{d}.py" for d in seen - {name})


@pytest.mark.parametrize("name", MODULES)
def test_tracegen_modules_name_the_sources_their_kernels_compile_in(name):
    mod = importlib.import_module(f"dlrmprof.tracegen.{name}")
    deps = _closure(name)
    if not deps:
        assert not hasattr(mod, "_DEPS"), f"{name}: its kernels compile in no other file"
        return
    assert tuple(getattr(mod, "_DEPS", ())) == tuple(deps), (
        f"set {name}._DEPS = {tuple(deps)!r}")
    sha = jitdeps.deps_digest(HERE, *deps)
    assert getattr(mod, "_DEPS_SHA256", None) == sha, (
        f"update {name}._DEPS_SHA256 to {sha!r} ({', '.join(deps)} changed)")


def test_the_scan_sees_a_kernel_calling_another_files_kernel():
    """The check cannot pass vacuously: synth's kernels call _lru_stack's and reuse's."""
    assert {"_lru_stack.py", "reuse.py"} <= set(_closure("synth"))
