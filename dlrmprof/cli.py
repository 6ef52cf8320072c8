"""The `dlrmprof` command line: a click group, thin by design.

Each command lives in its own module under `dlrmprof/commands/` (parse, call, print); the
work itself is in `tracegen`, `kernels`, `profile` and `dlrm`.  Heavy imports (torch, numba)
happen inside the commands, so `dlrmprof --help` stays fast.

A `dlrmprof.errors.UserError` anywhere below becomes one line on stderr and exit code 2;
any other exception is a bug and keeps its traceback (exit code 1).
"""

from __future__ import annotations

import importlib
import sys

import click

from dlrmprof import __version__
from dlrmprof.errors import UserError

# Modules under dlrmprof.commands; each exports COMMANDS, a list of click commands.
COMMAND_MODULES = ("trace", "run", "host", "compare", "numerics")


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"dlrmprof: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dlrmprof")
def cli() -> None:
    """Profile DLRM on this host's memory system and vector units, from synthetic traces
    that keep the locality of real embedding index streams.

    \b
      dlrmprof gen-trace --from kaggle
      dlrmprof run --device cpu --trace traces/locality.npz
      dlrmprof compare reports/a.json reports/b.json
    """


def _register() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"dlrmprof.commands.{name}")
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="dlrmprof")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
