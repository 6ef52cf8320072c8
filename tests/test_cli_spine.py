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


# -- usage errors: one line, exit 2, for click's own checks too ----------------------------

import re  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402
import pytest  # noqa: E402

from dlrmprof.commands.flags import renamed  # noqa: E402


def _one_line_usage_error(args, *needles):
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    assert lines[0].startswith("dlrmprof: error: ") and "Traceback" not in res.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("args, needles", [
    (["compare"], ["Missing argument 'REPORTS...'", "(see dlrmprof compare --help)"]),
    (["gen-trace"], ["Missing option '--from'", "kaggle, terabyte, index, tbe, csv, parquet",
                     "(see dlrmprof gen-trace --help)"]),
    (["gen-trace", "--from", "nope"], ["'--from'", "'nope'"]),
    (["gen-trace", "--from", "kaggle", "--input-rows", "0"], ["'--input-rows'", "x>=1"]),
    (["run", "--mode", "fly"], ["'--mode'", "'fly' is not one of 'train', 'infer'"]),
    (["run", "--iters", "many"], ["'--iters'", "'many' is not a valid integer"]),
    (["run", "--dev", "cpu"], ["No such option '--dev'", "--device"]),
    (["sweep", "--per-octave", "9"], ["'--per-octave'", "(see dlrmprof sweep --help)"]),
    (["trace-stats"], ["Missing argument 'FILE'"]),
    (["export-trace", "x.npz", "--to", "csv"], ["'--to'", "'csv'"]),
    (["serve-bench", "--instances", "two"], ["'--instances'"]),
    (["bogus"], ["No such command 'bogus'", "(see dlrmprof --help)"]),
])
def test_click_usage_errors_are_one_line_exit_2(args, needles):
    _one_line_usage_error(args, *needles)


def test_bare_command_prints_its_help():
    res = CliRunner().invoke(cli, [])
    assert res.exit_code == 0 and res.output.startswith("Usage: dlrmprof")
    assert "gen-trace" in res.output and "error" not in res.output


# -- renamed flags: old spelling hidden, one warning line, both at once refused -------------

def _toy():
    @click.command("toy")
    @renamed("--old-n", "--new-n", "old note")
    @click.option("--new-n", "n", type=click.IntRange(min=1), default=None, help="N.")
    def toy(n):
        click.echo(f"n={n}")
    return toy


def test_renamed_flag_old_spelling_works_with_one_warning():
    toy = _toy()
    res = CliRunner().invoke(toy, ["--old-n", "3"])
    assert res.exit_code == 0, res.output
    assert res.stdout == "n=3\n"
    assert res.stderr == ("dlrmprof: warning: --old-n is deprecated, use --new-n; old note\n")
    res = CliRunner().invoke(toy, ["--new-n", "4"])
    assert res.output == "n=4\n"
    res = CliRunner().invoke(toy, [])
    assert res.output == "n=None\n"
    assert "--old-n" not in CliRunner().invoke(toy, ["--help"]).output


@pytest.mark.parametrize("args", [["--old-n", "3", "--new-n", "4"],
                                  ["--new-n", "4", "--old-n", "3"]])
def test_renamed_flag_both_spellings_is_a_usage_error(args):
    res = CliRunner().invoke(_toy(), args)
    assert res.exit_code == 2
    assert "give --new-n or its old spelling --old-n, not both" in res.output
    assert "warning" not in res.output


def test_renamed_flag_old_spelling_is_type_checked():
    res = CliRunner().invoke(_toy(), ["--old-n", "0"])
    assert res.exit_code == 2 and "'--old-n'" in res.output


def test_renamed_needs_the_new_option_declared_below_it():
    with pytest.raises(TypeError, match="declare --new-n below"):
        @click.command()
        @renamed("--old-n", "--new-n")
        def f():
            pass


def test_gen_trace_old_max_rows_still_reads_n_rows(tmp_path):
    import json
    args = ["gen-trace", "--from", "kaggle", "--tables", "C1", "--profile-only", "--json"]
    new = CliRunner().invoke(cli, args + ["--input-rows", "40", "--out", str(tmp_path / "a.npz")])
    old = CliRunner().invoke(cli, args + ["--max-rows", "40", "--out", str(tmp_path / "b.npz")])
    assert new.exit_code == 0 and old.exit_code == 0, (new.output, old.output)
    assert json.loads(new.stdout)["source"] == json.loads(old.stdout)["source"]
    assert json.loads(new.stdout)["source"]["rows_read"] == 40
    assert old.stderr.startswith("dlrmprof: warning: --max-rows is deprecated, use --input-rows")
    assert old.stderr.count("\n") == 1 and new.stderr == ""


# -- docs/cli.md lists every option of every command, with the commands that have it --------

def _vocabulary():
    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    table = text.split("## Options", 1)[1]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        flag = cells[0].strip("`").split()[0]
        rows[flag] = set(c.strip() for c in cells[2].split(","))
    return rows


def _declared():
    out = {}
    for name, cmd in cli.commands.items():
        for p in cmd.params:
            if getattr(p, "hidden", False) or p.name in ("help",):
                continue
            if isinstance(p, click.Option):
                flag = "/".join(o for o in p.opts + p.secondary_opts if o.startswith("--"))
            else:
                flag = p.human_readable_name.rstrip(".")
            out.setdefault(flag, set()).add(name)
    return out


def test_docs_cli_vocabulary_matches_the_commands():
    doc, declared = _vocabulary(), _declared()

    def missing(a, b):
        return {k: v - b.get(k, set()) for k, v in a.items() if v - b.get(k, set())}

    assert doc == declared, (f"in the commands, not in docs/cli.md: {missing(declared, doc)}; "
                             f"in docs/cli.md, not in the commands: {missing(doc, declared)}")
    assert re.search(r"\| `--max-rows N` \| gen-trace \| `--input-rows N` \|",
                     (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text())
