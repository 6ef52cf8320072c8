"""CLI helpers shared by the test files: invoke a `dlrmprof` command in-process, and check that
a bad input ended as the one-line error the CLI promises (exit 2, no traceback)."""

from click.testing import CliRunner

from dlrmprof.cli import cli


def run_command(*args):
    """`dlrmprof run ARGS...` through click's CliRunner."""
    return CliRunner().invoke(cli, ["run", *args])


def one_line_error(result) -> str:
    """The single ``dlrmprof: error:`` line of a result that exited 2 without a traceback."""
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("dlrmprof: error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]
