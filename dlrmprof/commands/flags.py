"""One flag vocabulary across commands: an old spelling kept working as a hidden alias.

    @click.command("gen-trace")
    @renamed("--max-rows", "--input-rows")
    @click.option("--input-rows", "max_rows", type=click.IntRange(min=1), default=None, ...)

Where a flag was renamed so that one name has one meaning in every command (docs/cli.md
lists them), the old spelling stays accepted: it is left out of `--help`, prints one warning
line on stderr naming the new flag, and gives its value to the new option.  Both spellings at
once is a usage error.  `renamed` goes between `@click.command` and the options (it looks the
new option up among those already declared).
"""

from __future__ import annotations

import click

_META = "dlrmprof.renamed"


def renamed(old: str, new: str, note: str = ""):
    """Keep `old` as a hidden, deprecated alias of the option spelled `new`; `note` is added
    to the warning (e.g. what `old` means elsewhere)."""

    def decorate(f):
        params = getattr(f, "__click_params__", [])
        target = next((p for p in params if new in getattr(p, "opts", ())), None)
        if target is None:
            raise TypeError(f"renamed({old!r}, {new!r}): declare {new} below this decorator")
        key = f"{_META}:{target.name}"

        def take_alias(ctx: click.Context, param: click.Parameter, value):
            given = ctx.meta.get(key)
            if given is None:
                return inner(ctx, param, value) if inner else value
            if ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE:
                raise click.UsageError(f"give {new} or its old spelling {old}, not both",
                                       ctx=ctx)
            # warned here, not in store_alias: a usage error must stay the only line
            click.echo(f"dlrmprof: warning: {old} is deprecated, use {new}"
                       f"{'; ' + note if note else ''}", err=True)
            return inner(ctx, param, given) if inner else given

        def store_alias(ctx: click.Context, param: click.Parameter, value):
            if value is None or value is False or value == ():
                return value
            if ctx.get_parameter_source(target.name) == click.core.ParameterSource.COMMANDLINE:
                raise click.UsageError(f"give {new} or its old spelling {old}, not both",
                                       ctx=ctx)
            ctx.meta[key] = value
            return value

        inner = target.callback
        target.callback = take_alias
        alias = click.Option([old, f"{target.name}__{old.strip('-').replace('-', '_')}"],
                             type=target.type, hidden=True, expose_value=False,
                             is_flag=target.is_flag, multiple=target.multiple,
                             default=None if not target.is_flag else False,
                             callback=store_alias)
        params.append(alias)
        f.__click_params__ = params
        return f

    return decorate
