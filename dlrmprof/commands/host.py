"""`dlrmprof host`, `dlrmprof sweep`, `dlrmprof simd`: this host's facts, ceilings and studies."""

from __future__ import annotations

import json

import click

from dlrmprof.errors import UserError


def _progress(msg: str) -> None:
    click.echo(f"  ... {msg}", err=True)


@click.command("host")
@click.option("--probe", is_flag=True, help="Measure (or load cached) ceilings: bandwidth, "
              "random-access, GEMM, CUDA.")
@click.option("--refresh", is_flag=True, help="Re-measure the ceilings even if cached "
              "(implies --probe).")
@click.option("--full", is_flag=True, help="Longer probe: bigger arrays, more repeats.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (fingerprint and ceilings).")
def host_cmd(probe: bool, refresh: bool, full: bool, as_json: bool) -> None:
    """Show this host's fingerprint and, with --probe, its measured ceilings.

    Ceilings are cached per host id under $DLRMPROF_CACHE_DIR (default ~/.cache/dlrmprof).

    \b
      dlrmprof host
      dlrmprof host --probe            # quick probe (about 20 s) or the cached result
      dlrmprof host --probe --refresh --full --json > ceilings.json
    """
    from dlrmprof.profile import ceilings, host

    fp = host.collect()
    c, cached = None, False
    if probe or refresh or full:
        c, cached = ceilings.load_or_probe(fp, refresh=refresh, full=full,
                                           progress=None if as_json else _progress)
    else:
        c = ceilings.load_cached(fp["host_id"])
        cached = c is not None
    if as_json:
        click.echo(json.dumps({"host": fp, "ceilings": c, "ceilings_cached": cached}, indent=1))
        return
    click.echo(host.summary(fp))
    if c is None:
        click.echo("ceilings: not measured yet (run `dlrmprof host --probe`)")
    else:
        click.echo(ceilings.summary(c) + (f"\n  (cached: {ceilings.cache_path(fp['host_id'])})"
                                          if cached else
                                          f"\n  (saved to {ceilings.cache_path(fp['host_id'])})"))


COMMANDS: list = [host_cmd]
