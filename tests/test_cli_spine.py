from click.testing import CliRunner

from dlrmprof import __version__
from dlrmprof.cli import cli
from dlrmprof.errors import UserError, input_error
from dlrmprof.fsutil import atomic_path


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_input_error_is_one_line():
    err = input_error("train.txt", "8 hex digits", line=12, field="C3", got="'zz'")
    assert isinstance(err, UserError)
    assert str(err) == "train.txt:12: field C3: expected 8 hex digits, got 'zz'"
    assert "\n" not in str(err)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    try:
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_path_gives_umask_mode(tmp_path):
    import os
    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
