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
                                           progress=None if as_json else _progress,
                                           warn=lambda m: click.echo(f"warning: {m}", err=True))
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


@click.command("sweep")
@click.option("--min-size", default="16K", show_default=True, help="Smallest table size.")
@click.option("--max-size", default=None, help="Largest table size (default: 4x the last-level "
              "cache).  Must fit in available memory.")
@click.option("--per-octave", type=click.IntRange(1, 8), default=1, show_default=True,
              help="Points per doubling of the size.")
@click.option("--threads", type=click.IntRange(1, None), default=1, show_default=True)
@click.option("--dim", type=click.IntRange(1, None), default=16, show_default=True,
              help="Row width (float32 elements) of the gathered table.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Also write the result as JSON to this file.")
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="Also plot the GB/s curves with the cache sizes marked.")
def sweep_cmd(min_size, max_size, per_octave, threads, dim, as_json, out, png) -> None:
    """Working-set sweep: gather and streaming-read GB/s from L1-sized tables to beyond the
    last-level cache, with the knees matched to the reported cache sizes.

    \b
      dlrmprof sweep
      dlrmprof sweep --max-size 512M --per-octave 2 --png sweep.png
    """
    from dlrmprof.fsutil import atomic_write_text
    from dlrmprof.profile import host, sweep

    lo = sweep.parse_bytes(min_size, what="--min-size")
    hi = sweep.parse_bytes(max_size, what="--max-size") if max_size else None
    fp = host.collect(gpu=False, counters=False)
    if hi is not None:
        sweep.check_memory(hi, (fp.get("memory") or {}).get("available_bytes"))
        if hi < lo:
            raise UserError(f"--max-size {max_size} is smaller than --min-size {min_size}")
    res = sweep.run_sweep(fp, min_size=lo, max_size=hi, per_octave=per_octave,
                          threads=threads, dim=dim,
                          progress=None if as_json else _progress)
    res["host_id"] = fp["host_id"]
    if out:
        atomic_write_text(out, json.dumps(res, indent=1))
    if png:
        from dlrmprof.profile import render
        render.plot_sweep(res, png)
    click.echo(json.dumps(res, indent=1) if as_json else sweep.summary(res))


COMMANDS.append(sweep_cmd)


@click.command("simd")
@click.option("--level", "levels", multiple=True, metavar="LEVEL",
              help="numba ISA level (repeatable): scalar, sse4.2, avx2, avx512-256, avx512. "
                   "Default: every level this host can run.")
@click.option("--torch-level", "torch_levels", multiple=True, metavar="LEVEL",
              help="torch knob set (repeatable): baseline, avx2, avx512.  Default: all this "
                   "host can run.")
@click.option("--no-torch", is_flag=True, help="Skip the torch knob study.")
@click.option("--threads", type=click.IntRange(1, None), default=1, show_default=True)
@click.option("--quick", is_flag=True, help="Smaller problem sizes (a faster, noisier study).")
@click.option("--no-probe", is_flag=True, help="Do not probe ceilings if none are cached "
              "(verdicts are then left out).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Also write the result as JSON to this file.")
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="Also plot speed-up bars.")
@click.option("--host-root", default="/", hidden=True,
              help="Read CPU flags from a canned /proc tree (tests).")
def simd_cmd(levels, torch_levels, no_torch, threads, quick, no_probe, as_json, out, png,
             host_root) -> None:
    """SIMD-width sensitivity: the same kernels at each ISA level, one child process per
    level, the level verified from the generated assembly; torch's ISA knobs per op.

    \b
      dlrmprof simd
      dlrmprof simd --level scalar --level avx512 --no-torch --quick
    """
    from dlrmprof.fsutil import atomic_write_text
    from dlrmprof.profile import ceilings, host, render, simd

    fp = host.collect(host_root, gpu=False, counters=False)
    flags, arch = fp["cpu"].get("flags", []), fp["cpu"].get("arch")
    # refuse impossible levels before measuring anything
    simd.check_levels(levels, flags, arch=arch)
    simd.check_levels(torch_levels, flags, torch=True, arch=arch)
    if host_root != "/":
        raise UserError("--host-root only checks levels against a canned host; "
                        "measurements need the live host")
    c = ceilings.load_cached(fp["host_id"])
    if c is None and not no_probe:
        c, _ = ceilings.load_or_probe(fp, progress=None if as_json else _progress)
    res = simd.run_simd(fp, levels=list(levels) or None,
                        torch_levels=() if no_torch else (list(torch_levels) or None),
                        ceilings=c, threads=threads, quick=quick,
                        progress=None if as_json else _progress)
    res["host_id"] = fp["host_id"]
    if out:
        atomic_write_text(out, json.dumps(res, indent=1))
    if png:
        render.plot_simd(res, png)
    if as_json:
        click.echo(json.dumps(res, indent=1))
        return
    click.echo(render.simd_markdown(res))
    if res.get("torch"):
        click.echo("\ntorch knobs (speed-up over the narrowest knob set):\n")
        click.echo(render.simd_markdown(res["torch"]))


COMMANDS.append(simd_cmd)
