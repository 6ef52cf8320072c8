"""`dlrmprof compare`: reports from several hosts (or SIMD levels, thread counts, backends) side
by side.  Computes first (`dlrmprof.profile.compare.compare`), renders second."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("compare")
@click.argument("reports", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--md", "md_path", type=click.Path(dir_okay=False), default=None,
              help="Write the Markdown table to this file instead of stdout.")
@click.option("--json", "as_json", is_flag=True, help="Print the computed comparison as JSON.")
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="Also plot per-op times side by side.")
@click.option("--force", is_flag=True, help="Compare reports whose configs differ.")
@click.option("--label", "labels", multiple=True,
              help="Name for each report, in order (default: file names).")
def compare_cmd(reports, md_path, as_json, png, force, labels) -> None:
    """Put reports side by side: per-op time, GB/s, GFLOP/s, ratio and verdict per host;
    ops whose verdict changes are called out, host facts split into shared and differing.

    \b
      dlrmprof compare reports/a.json reports/b.json
      dlrmprof compare scalar.json avx512.json --md cmp.md --png cmp.png
    """
    from dlrmprof.errors import UserError
    from dlrmprof.fsutil import atomic_write_text
    from dlrmprof.profile import compare

    loaded = compare.load_all(reports)
    if labels and len(labels) != len(reports):
        raise UserError(f"--label given {len(labels)} times for {len(reports)} reports")
    names = list(labels) or _names(reports)
    res = compare.compare(loaded, names, force=force)
    text = compare.markdown(res)
    latency_png = None
    if png:
        compare.plot(res, png)
        if res.serving:
            latency_png = compare.plot_serving(loaded, names,
                                               Path(png).with_suffix(".latency.png"))
    if md_path:
        atomic_write_text(md_path, text)
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=1))
    elif md_path:
        click.echo(f"wrote {md_path}" + (f" and {png}" if png else "")
                   + (f" and {latency_png}" if latency_png else ""))
    else:
        click.echo(text, nl=False)


def _names(paths) -> list[str]:
    stems = [Path(p).stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [str(p) for p in paths]


COMMANDS: list = [compare_cmd]
