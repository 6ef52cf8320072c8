"""The `dlrmprof` command line: a click group, thin by design.

Each command lives in its own module under `dlrmprof/commands/` (parse, call, print); the
work itself is in `tracegen`, `kernels`, `profile` and `dlrm`.  Heavy imports (torch, numba)
happen inside the commands, so `dlrmprof --help` stays fast.

A `dlrmprof.errors.UserError` anywhere below, and a usage error click finds in the options,
becomes one line on stderr and exit code 2; any other exception is a bug and keeps its
traceback (exit code 1).  Ctrl-C (SIGINT) and SIGTERM end the command with one line and exit
code 128 + signal (130, 143): the exception unwinds every writer, so temporary files and spill
directories are removed and nothing appears at the output path.
"""

from __future__ import annotations

import importlib
import signal
import sys

import click

from dlrmprof import __version__
from dlrmprof.errors import UserError

# Modules under dlrmprof.commands; each exports COMMANDS, a list of click commands.
COMMAND_MODULES = ("trace", "run", "host", "compare", "serve", "numerics")


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, so it unwinds like Ctrl-C (cleanup included)."""


_received: list[int] = []


def _in_native_callback(frame) -> bool:
    """Whether `frame` runs inside llvmlite's object-cache callbacks (a ctypes callback numba's
    compiles go through): an exception raised there is printed and dropped by ctypes, so the
    signal would be lost and the command would run on to exit 0."""
    while frame is not None:
        code = frame.f_code
        if (code.co_name.startswith("_raw_object_cache")
                and code.co_filename.replace("\\", "/").endswith(
                    "llvmlite/binding/executionengine.py")):
            return True
        frame = frame.f_back
    return False


def _deliver_later(signum: int) -> None:
    """Deliver `signum` to `_on_signal` again in 20 ms (a one-shot SIGALRM timer), once the code
    that swallowed its exception has returned."""
    signal.signal(signal.SIGALRM, lambda _s, f: _on_signal(signum, f))
    signal.setitimer(signal.ITIMER_REAL, 0.02)


def _on_signal(signum, frame) -> None:
    if _in_native_callback(frame):
        _deliver_later(signum)
        return
    _received.append(signum)
    # a second signal while the first unwinds must not cut the cleanup short
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda signum, frame: _received.append(signum))
    raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def _unraisable(hook):
    """A sys.unraisablehook that re-delivers an interrupt Python had to drop: the handler's
    exception raised inside a __del__, a weakref or gc callback, or a ctypes callback is only
    printed there, and the command would run on to exit 0.  Anything else goes to `hook`."""
    def unraisable(u) -> None:
        if isinstance(u.exc_value, KeyboardInterrupt) and _received:
            _deliver_later(_received.pop())
            return
        hook(u)
    unraisable.redelivers = True
    return unraisable


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM raise in the main thread (unless the parent ignores SIGINT); an
    interrupt raised where Python cannot propagate it is delivered again afterwards."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    if not getattr(sys.unraisablehook, "redelivers", False):
        sys.unraisablehook = _unraisable(sys.unraisablehook)


def _forget_python_interrupt_exit() -> None:
    """Clear CPython's "uncaught KeyboardInterrupt" flag before exiting with 128 + signal.

    An interrupt raised inside `exec` or `eval` of a string (dataclasses and namedtuple build
    methods so; numba compiles glue code so) sets that flag even when the exception is caught
    further up, and under `python -m` the interpreter then ends by killing itself with SIGINT
    instead of returning our exit code.  Running a string through `exec` resets the flag."""
    exec("")


def interrupt_signal(exc: BaseException) -> int | None:
    """The signal an exception stands for: SIGINT/SIGTERM for KeyboardInterrupt/Terminated, or
    for a SystemError that wraps one (numba's dispatcher turns an interrupt that arrives inside
    a jitted call into "returned a result with an exception set"); None for anything else."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, Terminated):
            return signal.SIGTERM
        if isinstance(e, KeyboardInterrupt):
            return signal.SIGINT
        e = e.__cause__ or e.__context__
    if isinstance(exc, SystemError) and _received:
        return _received[0]
    return None


def _one_line(text: str) -> str:
    """Lines joined into one: after a ',' or ':' with a space (click's list of choices),
    else with '; '."""
    out = ""
    for line in (ln.strip() for ln in str(text).splitlines()):
        if line:
            out += (line if not out else
                    (" " if out.endswith((",", ":")) else "; ") + line)
    return out


# click >= 8.2 raises this for a bare group (8.1 printed the help and exited 0 itself)
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"dlrmprof: error: {_one_line(exc)}", err=True)
            ctx.exit(exc.exit_code)
        except (KeyboardInterrupt, SystemError) as exc:
            signum = interrupt_signal(exc)
            if signum is None:
                raise
            name = signal.Signals(signum).name
            click.echo(f"dlrmprof: interrupted ({name}); partial output and temporary files "
                       "removed", err=True)
            _forget_python_interrupt_exit()
            ctx.exit(128 + signum)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        """click's main, but a usage error (an option click checks) is one line, exit 2."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as exc:   # a bare `dlrmprof` (or group): its help, exit 0
            click.echo(exc.ctx.get_help() if exc.ctx else "")
            sys.exit(0)
        except click.ClickException as exc:
            cmd = exc.ctx.command_path if getattr(exc, "ctx", None) else (prog_name or "dlrmprof")
            hint = f" (see {cmd} --help)" if isinstance(exc, click.UsageError) else ""
            click.echo(f"dlrmprof: error: {_one_line(exc.format_message())}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:          # click turns a Ctrl-C at a prompt into Abort
            click.echo("dlrmprof: interrupted (SIGINT)", err=True)
            _forget_python_interrupt_exit()
            sys.exit(128 + signal.SIGINT)
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


@click.group("dlrmprof", cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
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
    install_signal_handlers()
    cli.main(args=argv, prog_name="dlrmprof")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
