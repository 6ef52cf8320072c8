"""`dlrmprof gen-trace`, `trace-stats`, `export-trace` (see dlrmprof/cli.py).

Thin: parse options, call `dlrmprof.tracegen`, print.  numba/torch load inside the commands.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time

import click

from dlrmprof.commands.flags import renamed
from dlrmprof.errors import UserError

SOURCES = ("kaggle", "terabyte", "index", "tbe", "csv", "parquet")


def _progress_bar(total: int | None, desc: str, unit: str = "B"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False,
                disable=None if sys.stderr.isatty() else True, file=sys.stderr)


def _table_lines(rows: list[dict]) -> list[str]:
    """The fidelity table: the model's figures, the naive baseline's LRU error beside them,
    FIFO / LFU / set-associative errors, the worst per-batch errors; '!' marks a table where
    the model loses to the naive baseline on the LRU MRC."""
    from dlrmprof import fmt
    from dlrmprof.tracegen.fidelity import errors

    nw = max([8] + [len(r["name"]) for r in rows])
    lines = [f"{'table':<{nw}} {'rows':>9} {'accesses':>10} {'distinct':>9} {'src dist':>9} "
             f"{'MRC MAE':>8} {'naive':>7} {'dist ratio':>10} {'top10 src':>9} "
             f"{'top10 syn':>9} {'FIFO':>6} {'LFU':>6} {'SA32':>6} {'batch':>6}"]
    for r in rows:
        f = r.get("fidelity")
        if f:
            e, n = errors(f), f.get("naive", {})
            batch = max((x for x in (e["batch_unique"], e["batch_overlap"]) if x is not None),
                        default=None)
            flag = " !" if "mrc_mae" in f.get("loses_to_naive", ()) else ""
            tail = (f"{f['mrc_mae']:8.4f} {fmt.num(n.get('mrc_mae'), '.4f'):>7} "
                    f"{f['distinct_ratio']:10.3f} "
                    f"{fmt.percent(f['top10_share_source'], '5.1f'):>9} "
                    f"{fmt.percent(f['top10_share_synthetic'], '5.1f'):>9} "
                    f"{fmt.num(e['fifo_mae'], '.4f'):>6} {fmt.num(e['lfu_mae'], '.4f'):>6} "
                    f"{fmt.num(e['setassoc32_mae'], '.4f'):>6} {fmt.percent(batch):>6}{flag}")
        else:
            tail = " ".join(f"{'-':>{w}}" for w in (8, 7, 10, 9, 9, 6, 6, 6, 6))
        lines.append(f"{r['name']:<{nw}} {r['rows']:>9} {r['accesses']:>10} {r['distinct']:>9} "
                     f"{r['source_distinct']:>9} {tail}")
    fids = [(r["name"], r["fidelity"]) for r in rows if r.get("fidelity")]
    if fids:
        lines += _summary_lines(fids)
    return lines


_POLICY_NAMES = {"fifo": "FIFO", "lfu": "LFU", "setassoc32": "32-way set-associative LRU"}


def _summary_lines(fids: list[tuple[str, dict]]) -> list[str]:
    import numpy as np

    from dlrmprof.tracegen.fidelity import POLICIES, errors

    def stat(vals):
        vals = [v for v in vals if v is not None]
        return f"mean {np.mean(vals):.4f}, worst {np.max(vals):.4f}" if vals else "not measured"

    errs = [errors(f) for _, f in fids]
    naive = [f.get("naive", {}) for _, f in fids]
    ratios = [f["distinct_ratio"] for _, f in fids]
    out = [f"fidelity over {len(fids)} tables: LRU MRC MAE {stat([e['mrc_mae'] for e in errs])} "
           f"(naive baseline {stat([n.get('mrc_mae') for n in naive])}); distinct ratio "
           f"{min(ratios):.3f}..{max(ratios):.3f}",
           "  " + "; ".join(f"{_POLICY_NAMES.get(p, p)} MAE {stat([e[p + '_mae'] for e in errs])}"
                            for p in POLICIES)]
    for what, label in (("unique", "unique ids"), ("overlap", "overlap with the batch before")):
        worst = {}
        for _, f in fids:
            for b in f.get("batches") or []:
                worst[b["batch_size"]] = max(worst.get(b["batch_size"], 0.0),
                                             b[f"{what}_rel_error"])
        if worst:
            out.append(f"  per-batch {label}, worst relative error: " + ", ".join(
                f"{100 * v:.1f}% at batch {k}" for k, v in sorted(worst.items())))
    losers = [(name, f["mrc_mae"] - f["naive"]["mrc_mae"]) for name, f in fids
              if "mrc_mae" in f.get("loses_to_naive", ())]
    if losers:
        # by how much matters: on an independent-reference source both errors sit at the
        # sampling noise and the model ties the baseline
        out.append(f"! the model's LRU MRC error exceeds the naive baseline's on "
                   f"{len(losers)} table(s), by at most {max(d for _, d in losers):.4f}: "
                   f"{', '.join(n for n, _ in losers)}")
    return out


def _json_doc(trace, out: str | None, digest: str | None = None) -> dict:
    tables = []
    for t, row in enumerate(trace.summary_rows()):
        prof = trace.profiles[t]
        sizes, hr = prof.mrc()
        entry = {"name": row["name"], "rows": row["rows"], "accesses": row["accesses"],
                 "distinct": row["distinct"], "source_accesses": row["source_accesses"],
                 "source_distinct": row["source_distinct"],
                 "source_mrc": {"sizes": sizes.tolist(), "hit_rate": hr.tolist()}}
        f = row.get("fidelity")
        if f:
            entry["synthetic_mrc"] = {"sizes": f["sizes"], "hit_rate": f["synthetic_hit_rate"]}
            entry["fidelity"] = {k: f[k] for k in (
                "mrc_mae", "mrc_max_error", "distinct_ratio", "top10_share_source",
                "top10_share_synthetic", "top1pct_share_source", "top1pct_share_synthetic",
                "hist_tv_distance", "fifo_mae", "lfu_mae", "setassoc32_mae", "batches",
                "naive", "loses_to_naive", "prefix_accesses", "measured_on") if k in f}
        if "shards" in prof.extra:
            entry["shards"] = prof.extra["shards"]
        tables.append(entry)
    return {"tables": tables, "out": out, "num_samples": trace.num_samples,
            "source": trace.header.get("source"), "seed": trace.header.get("seed"),
            "generator": trace.header.get("generator"),
            "digest": digest if digest is not None else trace.digest}


def _plot(trace, path: str) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dlrmprof.fsutil import atomic_path

    T = len(trace.tables)
    cols = min(6, T)
    rws = -(-T // cols)
    fig, axes = plt.subplots(rws, cols, figsize=(3 * cols, 2.4 * rws), squeeze=False)
    fid = trace.header.get("fidelity", {})
    for t, meta in enumerate(trace.tables):
        ax = axes[t // cols][t % cols]
        sizes, hr = trace.profiles[t].mrc()
        ax.plot(sizes, 1 - hr, "o-", ms=3, label="source")
        f = fid.get(meta.name)
        if f:
            ax.plot(f["sizes"], 1 - np.array(f["synthetic_hit_rate"]), "x--",
                    ms=3, label="synthetic")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1)
        ax.set_title(meta.name, fontsize=9)
        ax.tick_params(labelsize=7)
    for t in range(T, rws * cols):
        axes[t // cols][t % cols].axis("off")
    axes[0][0].legend(fontsize=7)
    fig.supxlabel("LRU cache size (entries)")
    fig.supylabel("miss ratio")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


class _Length(click.ParamType):
    """A sample count (a positive integer) or a multiple of the source's ('10x')."""

    name = "N|Mx"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return value
        text = str(value).strip().lower()
        try:
            if text.endswith("x"):
                mult = float(text[:-1])
                if mult > 0 and mult != float("inf"):
                    return mult
            else:
                n = int(text)
                if n >= 1:
                    return n
        except ValueError:
            pass
        self.fail(f"expected a positive sample count or a multiple like 10x, got {value!r}",
                  param, ctx)


def _capture(spec, nproc, synth, then):
    """`then(capture)` of the profiles of every table: in this process, in `nproc` ranks on
    this host (this process is rank 0; the others are forked where that is safe, see
    `rank_start_method`, and talk through socket pairs), or as one rank of a torchrun job
    (None on ranks other than 0, which have nothing more to do).  Ranks also synthesize
    their tables as `synth` (a capture.SynthPlan) says and send them to rank 0, whose `then`
    reads them as they come (`Captured.synthesized`, a capture.SynthesisStream)."""
    from dlrmprof.session.ranks import under_torchrun
    from dlrmprof.tracegen.capture import capture, capture_rank

    if under_torchrun():
        if nproc is not None:
            raise UserError("--nproc starts the ranks; under torchrun they are already "
                            "started (drop --nproc)")
        return capture_on_torch(spec, synth, then)
    if nproc is None or nproc == 1:
        return then(capture(spec, progress_bar=lambda total: _progress_bar(total, "reading")))
    from dlrmprof.session.exchange import run_local

    click.echo(f"profiling the tables in {nproc} processes (tables split round-robin)",
               err=True)
    return run_local(nproc, capture_rank, (spec, synth, True), start_method=rank_start_method(),
                     then=then)


def capture_on_torch(spec, synth, then=None):
    """One rank of the torchrun form: `capture_rank` over torch.distributed (gloo; the ranks
    may be on several hosts); rank 0 returns `then(capture)` where given (it reads the
    ranks' tables as they come), else the capture.  Module level: `session.launch` can
    start it too."""
    from dlrmprof.session.exchange import TorchExchange
    from dlrmprof.tracegen.capture import capture_rank

    with TorchExchange() as exchange:
        got = capture_rank(exchange, spec, synth, stream=then is not None)
        return then(got) if then is not None and got is not None else got


def _threads() -> set[str] | None:
    """This process's OS threads (ids), None where /proc does not list them."""
    try:
        return set(os.listdir("/proc/self/task"))
    except OSError:
        return None


# numpy's BLAS pool starts with numpy and stays fork-safe (it re-creates itself in the child):
# numpy is loaded before the count; any thread started later (OpenMP or numba pools, a
# caller's threads) is held against fork
importlib.import_module("numpy")
_THREADS_AT_IMPORT = _threads()


def rank_start_method() -> str:
    """"fork" where this process runs no thread that it did not run at import (the ranks then
    start without importing torch again: spawn costs each rank its own import), else
    "spawn": a fork copies the memory of other threads' locks (OpenMP's or numba's pools,
    started by a library caller or a test run) but not the threads, and a rank can block on
    one for ever."""
    import multiprocessing

    now = _threads()
    if "fork" not in multiprocessing.get_all_start_methods() or now is None:
        return "spawn"
    return "fork" if now <= (_THREADS_AT_IMPORT or set()) else "spawn"


PHASE_LABELS = {"capture": "read and profile",
                "synthesis": "synthesize, measure fidelity (and write the indices)",
                "write": "write"}
PHASES_SOURCE = ("measured: time.perf_counter around each phase in the process that writes "
                 "the trace (profile.timers.OpTimer); with --nproc, 'capture' includes "
                 "starting the ranks, 'synthesis' rank 0's share of the tables and its wait "
                 "for the others' as they come; 'synthesis' includes writing each table's "
                 "indices into the file as it comes, 'write' the profiles and header")


def _prefix_notes(trace) -> list[str]:
    """A note when tables' fidelity was measured on a prefix (generate.FIDELITY_PREFIX)."""
    from dlrmprof.tracegen import generate

    prefixed = [n for n, f in trace.header.get("fidelity", {}).items()
                if f and f.get("prefix_accesses")]
    if not prefixed:
        return []
    return [f"fidelity of {len(prefixed)} table(s) longer than {generate.FIDELITY_PREFIX} "
            f"accesses measured on their first {generate.FIDELITY_PREFIX} (the source's prefix "
            "against a synthesis of that length; the indices are synthesized at full length)"]


# ---------------------------------------------------------------------------- gen-trace
@click.command("gen-trace")
@renamed("--max-rows", "--input-rows", "in run, --max-rows caps the tables' rows")
@renamed("--plot", "--png")
@click.option("--from", "source", type=click.Choice(SOURCES), required=True,
              help="Kind of input stream.")
@click.option("--input", "inputs", multiple=True, type=click.Path(dir_okay=False),
              help="Input file (repeat for several Terabyte day files; gzip is detected). "
                   "Default for kaggle: the bundled 1,999-row Criteo sample.")
@click.option("--out", default="traces/locality.npz", show_default=True,
              type=click.Path(dir_okay=False), help="Trace file to write.")
@click.option("--length", type=_Length(), default=None,
              help="Samples (bags per table) to synthesize, or a multiple of the source's "
                   "('10x', '0.5x'); default: the source's. Shorter follows the source's "
                   "prefix; longer repeats its last window's locality and grows the distinct "
                   "ids along the source's fitted growth curve (the summary says what was "
                   "extrapolated).")
@click.option("--table-rows", type=click.IntRange(min=1), default=None,
              help="Rows per table. Criteo: raw values are reduced modulo N while reading "
                   "(like DLRM's --max-ind-range; this merges values and changes locality). "
                   "Other sources: synthetic ids drawn from N rows.")
@click.option("--tables", default=None, help="Criteo tables to keep, e.g. C3,C12 (default all).")
@click.option("--columns", default=None,
              help="--from csv / parquet: columns to read as tables, by header name or 0-based index, "
                   "ranges a-b allowed, e.g. 'hour,C1,site_id' or '2-23' (default all).")
@click.option("--sep", default=None,
              help="--from csv: field separator (default: sniffed among , TAB ; |; '\\t' for tab).")
@click.option("--header", "header", type=click.Choice(["auto", "yes", "no"]), default="auto",
              show_default=True, help="--from csv: whether the first line names the columns.")
@click.option("--input-rows", "max_rows", type=click.IntRange(min=1), default=None,
              help="Read at most this many input rows (lines / accesses).")
@click.option("--sample-rate", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              help="Also estimate each MRC by SHARDS spatial sampling at this rate and store "
                   "its measured error against the exact pass.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the synthesizer: same seed, same bytes.")
@click.option("--windows", type=click.IntRange(min=1, max=4096), default=None,
              help="Profile windows per table (default 32).")
@click.option("--hot", "hot", type=click.IntRange(min=0, max=4096), default=None,
              help="Hottest ids per table kept as per-window counts (default: chosen per table "
                   "by measuring 0, 4, 8, 16, 64, 256, 1024, 4096 and the naive model; a "
                   "given K still measures its two placements).")
@click.option("--profile-only", is_flag=True, help="Store profiles only (run synthesizes).")
@click.option("--strict", is_flag=True, help="Fail on the first malformed input line.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tables processed in parallel processes.")
@click.option("--nproc", type=click.IntRange(min=1), default=None,
              help="Profile the tables in N processes of this host (tables split round-robin; "
                   "one uncompressed file is parsed in N spans, one per rank); the same trace "
                   "as one process. Under torchrun (torch.distributed, gloo) this is implied.")
@click.option("--read-threads", type=click.IntRange(min=1, max=64), default=1, show_default=True,
              help="Criteo input: threads parsing each block (helps on an idle multi-core host).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--png", "plot", type=click.Path(dir_okay=False), default=None,
              help="Write source vs synthetic miss-ratio curves to this PNG.")
def gen_trace(source, inputs, out, length, table_rows, tables, columns, sep, header, max_rows,
              sample_rate, seed, windows, hot, profile_only, strict, jobs, nproc, read_threads,
              as_json, plot):
    """Capture per-table locality from a real index stream and write a synthetic trace.

    \b
    Examples:
      dlrmprof gen-trace --from kaggle                       # bundled real sample
      dlrmprof gen-trace --from kaggle --input train.txt --input-rows 1000000 --jobs 2
      dlrmprof gen-trace --from terabyte --input day_0.gz --input day_1.gz --tables C3,C12
      dlrmprof gen-trace --from index --input ids.npy --length 100000 --table-rows 1000000
      dlrmprof gen-trace --from kaggle --length 10x          # 10 times the source, extrapolated
      dlrmprof gen-trace --from index --input dlrm_trace.bin     # DLRM reference trace log
      dlrmprof gen-trace --from tbe --input requests.pt --json
      dlrmprof gen-trace --from csv --input avazu_train.csv --columns 2-23
      dlrmprof gen-trace --from parquet --input log.parquet --columns user_id,item_id
      dlrmprof gen-trace --from terabyte --input day_0.gz --nproc 4          # tables in 4 ranks
      torchrun --nnodes 2 --nproc_per_node 8 ... -m dlrmprof gen-trace --from terabyte ...
    """
    from dlrmprof.fsutil import prepare_output
    from dlrmprof.profile.timers import OpTimer
    from dlrmprof.session.ranks import under_torchrun
    from dlrmprof.tracegen import profile as _prof, warmup
    from dlrmprof.tracegen.capture import CaptureSpec

    prepare_output(out)
    if plot:
        prepare_output(plot)
    spec = CaptureSpec(source=source, inputs=tuple(inputs), tables=tables, columns=columns,
                       sep=sep, header=header, max_rows=max_rows, table_rows=table_rows,
                       strict=strict, read_threads=read_threads,
                       windows=windows or _prof.DEFAULT_WINDOWS, hot=hot, jobs=jobs,
                       sample_rate=sample_rate)
    timer = OpTimer("cpu", noise=False)      # one sample per phase
    # a cold numba cache: the compiles split between this process and a helper on a second
    # CPU (tracegen/warmup.py; one process only: ranks and --jobs workers have the others)
    with warmup.compiling_ahead(enabled=jobs == 1 and nproc in (None, 1)
                                and not under_torchrun(),
                                long=bool(inputs) or length is not None,
                                fork=rank_start_method() == "fork"):
        made = _make_trace(spec, nproc, length, seed, profile_only, sample_rate, out, jobs,
                           timer)
    if made is None:
        return                               # a rank other than 0 under torchrun
    trace, info, notes, digest = made
    phases = {k: float(timer.samples(k)[0]) for k in timer.names}
    if plot:
        _plot(trace, plot)
    if as_json:
        doc = _json_doc(trace, out, digest)
        doc["notes"] = notes
        doc["phases_s"] = phases
        doc["phases_source"] = PHASES_SOURCE
        click.echo(json.dumps(doc, indent=1))
        return
    _print_summary(trace, info, notes, phases, out, digest, profile_only, plot)


def _make_trace(spec, nproc, length, seed, profile_only, sample_rate, out, jobs, timer):
    """gen-trace's work: capture, synthesis, the file written.  (trace, source info, notes,
    digest), or None on a torchrun rank other than 0."""
    from dlrmprof.tracegen.capture import SynthPlan

    start = time.perf_counter()

    def write(got):
        timer.add("capture", time.perf_counter() - start)
        return _write_trace(got, length, seed, profile_only, sample_rate, out, jobs, timer)

    return _capture(spec, nproc, SynthPlan(length=length, seed=seed,
                                           keep_indices=not profile_only), write)


def _write_trace(got, length, seed, profile_only, sample_rate, out, jobs, timer):
    """The synthesis (the ranks' tables taken as they come) and the file, from a capture."""
    from dlrmprof.tracegen import generate
    from dlrmprof.tracegen.tracefile import PackedWriter

    profiles, info, notes = got.profiles, got.info, got.notes
    table_rows_synth = got.table_rows_synth
    if sample_rate is not None:
        notes.append(f"SHARDS sampling at rate {sample_rate}: estimated MRC and its error "
                     "against the exact pass stored per table")
    info.notes = notes
    B = generate.samples_for(length, profiles)
    kw = dict(source=info.to_json(), num_samples=B, table_rows=table_rows_synth, seed=seed,
              jobs=jobs, done=got.synthesized)
    if profile_only:
        with timer.op("synthesis"):
            trace = generate.synthesize_trace(profiles, keep_indices=False, **kw)
        with timer.op("write"):
            digest = trace.save(out)
    else:       # each table into the file as it comes: memory O(one table), no int64 layout
        with PackedWriter(out) as writer:        # an error or a signal removes the file
            with timer.op("synthesis"):
                trace = generate.synthesize_packed(profiles, writer=writer, **kw)
            with timer.op("write"):
                digest = writer.finish(trace)
    notes += _prefix_notes(trace)
    return trace, info, notes, digest


def _print_summary(trace, info, notes, phases, out, digest, profile_only, plot) -> None:
    """gen-trace's human output: notes, what was read, the fidelity table, phase times."""
    from dlrmprof.tracegen import generate

    for n in notes:
        click.echo(f"note: {n}")
    if info.malformed:
        click.echo(f"malformed lines skipped: {info.malformed} (first: "
                   + "; ".join(info.malformed_examples[:3]) + ")")
    click.echo(f"read {info.rows_read} rows from {', '.join(info.files)}; "
               f"{len(trace.tables)} tables, {trace.num_samples} samples")
    summary = trace.summary_rows()
    if profile_only:
        for r, f in zip(summary, trace.tables):
            r["fidelity"] = trace.header["fidelity"].get(f.name)
    for line in _table_lines(summary):
        click.echo(line)
    ext = trace.header.get("generator", {}).get("extrapolated")
    if ext:
        click.echo(f"extrapolated beyond the source on {len(ext)} table(s): distinct ids grown "
                   "along D(n) = distinct * (n / accesses)^b, the last window's locality "
                   "repeated; " + ", ".join(
                       f"{k} b={v['distinct_growth']['b']:.2f} -> {v['planned_distinct']}"
                       for k, v in list(ext.items())[:6]) + (", ..." if len(ext) > 6 else ""))
    click.echo(f"kept: {generate.KEPT}")
    click.echo("time (measured, perf_counter): " + ", ".join(
        f"{PHASE_LABELS[k]} {v:.1f} s" for k, v in phases.items()))
    click.echo(f"wrote {out} ({'profile only' if profile_only else 'indices + profiles'}, "
               f"sha256 {digest[:16]}...)" + (f"; plot {plot}" if plot else ""))


# ---------------------------------------------------------------------------- trace-stats
@click.command("trace-stats")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def trace_stats(file, as_json):
    """Summarize an existing trace file: per-table counts, MRC and stored fidelity.

    \b
    Examples:
      dlrmprof trace-stats traces/locality.npz
      dlrmprof trace-stats traces/locality.npz --json
    """
    from dlrmprof.tracegen import Trace

    trace = Trace.load(file)
    if as_json:
        click.echo(json.dumps(_json_doc(trace, None) | {"file": file}, indent=1))
        return
    h = trace.header
    src = h.get("source", {})
    click.echo(f"{file}: {h['format']} v{h['version']}, {len(trace.tables)} tables, "
               f"{trace.num_samples} samples, "
               f"{'indices + profiles' if trace.has_indices else 'profile only'}, "
               f"seed {h.get('seed')}, tool {h.get('tool_version')}")
    click.echo(f"source: {src.get('kind')} {', '.join(src.get('files', []))} "
               f"({src.get('rows_read')} rows, {src.get('malformed_lines', 0)} malformed)")
    for line in _table_lines(trace.summary_rows()):
        click.echo(line)
    click.echo(f"sha256 {trace.digest}")


# ---------------------------------------------------------------------------- export-trace
@click.command("export-trace")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--to", "fmt", type=click.Choice(["oracle-general", "tbe", "mrc-hist"]),
              required=True, help="Target format.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="File to write ('-': standard output, mrc-hist JSON only).")
@click.option("--obj-size", type=click.IntRange(min=1, max=2**32 - 1), default=1,
              show_default=True, help="oracle-general: bytes per object (1 = sizes in rows).")
@click.option("--bins", type=click.IntRange(min=1), default=100, show_default=True,
              help="mrc-hist: bins over load factors 0..1.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="mrc-hist: samples per batch for expected_lookups.")
@click.option("--length", type=click.IntRange(min=1), default=None,
              help="Samples to synthesize first when FILE is profile-only (default: source's).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for synthesizing a profile-only FILE.")
def export_trace(file, fmt, out, obj_size, bins, batch_size, length, seed):
    """Export a trace: libCacheSim oracleGeneral, FBGEMM TBE requests (.pt), TorchRec-style
    mrc_hist_counts (.pt, or .json by suffix).

    \b
    Examples:
      dlrmprof export-trace traces/locality.npz --to oracle-general --out traces/locality.oracleGeneral.bin
      dlrmprof export-trace traces/locality.npz --to tbe --out traces/requests.pt
      dlrmprof export-trace traces/locality.npz --to mrc-hist --out traces/mrc_hist.pt
    """
    from dlrmprof.fsutil import prepare_output
    from dlrmprof.tracegen import Trace, export

    to_stdout = out == "-" and fmt == "mrc-hist"      # JSON text: '-' is standard output
    if not to_stdout:
        prepare_output(out)
    trace = Trace.load(file)
    if not trace.has_indices or length is not None:
        from dlrmprof.tracegen import materialize

        trace = materialize(trace, num_samples=length, seed=seed)
    if trace.indices.size == 0:
        raise UserError(f"{file}: expected at least one index to export, got a trace whose "
                        "bags are all empty")
    if fmt == "oracle-general":
        n = export.oracle_general(trace, out, obj_size=obj_size)
        click.echo(f"wrote {out}: {n} oracleGeneral records (24 bytes each; obj_id = "
                   f"table << 40 | row, obj_size {obj_size})")
    elif fmt == "tbe":
        export.tbe_requests(trace, out)
        click.echo(f"wrote {out}: TBE requests, T={len(trace.tables)} B={trace.num_samples}, "
                   f"{trace.indices.size} indices")
    else:
        stats = export.mrc_hist(trace, bins=bins, batch_size=batch_size)
        if to_stdout:
            click.echo(export.mrc_hist_json(stats))
            return
        export.save_mrc_hist(stats, out)
        click.echo(f"wrote {out}: mrc_hist_counts ({bins} bins) for {len(stats)} tables")


COMMANDS = [gen_trace, trace_stats, export_trace]
