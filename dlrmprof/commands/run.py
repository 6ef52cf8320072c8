"""`dlrmprof run`: profile a DLRM fed by a trace (or real Criteo rows) on this host."""

from __future__ import annotations

import click

from dlrmprof import fmt
from dlrmprof.commands.distributed import distributed_options


def _table(report, verdicts: dict) -> list[str]:
    from dlrmprof.profile.roofline import label
    lines = [f"  {'op':<22} {'phase':<9} {'median':>10} {'p10..p90':>21} {'flag':>4} "
             f"{'GB/s':>7} {'GFLOP/s':>8}  verdict"]
    per_table = [r for r in report.ops if r["name"].startswith("emb.") and r["name"] != "emb.all"]
    shown = [r for r in report.ops if r not in per_table]
    for r in shown:
        t = r["time"]
        med = t["median"]
        gbs = f"{r['bytes'] / med / 1e9:7.2f}" if r.get("bytes") and med > 0 else f"{'':>7}"
        gfl = f"{r['flops'] / med / 1e9:8.2f}" if r.get("flops") and med > 0 else f"{'':>8}"
        v = verdicts.get((r["name"], r["phase"]))
        vtxt = label(v) if v and v.get("verdict") else ""
        lines.append(f"  {r['name']:<22} {r['phase']:<9} {fmt.seconds(med):>10} "
                     f"{fmt.seconds(t['p10']) + '..' + fmt.seconds(t['p90']):>21} "
                     f"{t['flagged']:>4} {gbs} {gfl}  {vtxt}")
    if per_table:
        fwd = sorted((r for r in per_table if r["phase"] == "forward"),
                     key=lambda r: -r["time"]["median"])
        if fwd:
            top = ", ".join(f"{r['name'][4:]} {fmt.seconds(r['time']['median'])} "
                            f"({r['shape'].get('rows')} rows)" for r in fwd[:4])
            how = (" (inside the one all-tables kernel call, by the time-stamp counter)"
                   if fwd[0].get("timer") == "tsc" else "")
            lines.append(f"  per table (forward, slowest first){how}: {top}; all {len(fwd)} "
                         f"tables in the report")
    return lines


def _emb_dtype_lines(report) -> list[str]:
    """One line per table when --emb-dtype timed fp32 against the packed lookup."""
    rows = [r for r in report.ops if r.get("emb_dtype") and r["phase"] == "forward"]
    if not rows:
        return []
    v0 = rows[0]["emb_dtype"]
    lines = [f"  {v0['dtype']} vs fp32 lookups, per table (same batches, interleaved; "
             f"lines a lookup counted):"]
    for r in rows:
        v = r["emb_dtype"]
        lines.append(f"    {v['table']:<6} {v['rows']:>9} rows  "
                     f"{fmt.seconds(v['fp32_time_s']):>9} -> {fmt.seconds(v['time_s']):>9} "
                     f"({v['speedup']:.2f}x, {v['verdict']}): {v['why']}")
    return lines


@click.command("run")
@click.option("--device", default="cpu", show_default=True, metavar="cpu|cuda",
              help="Where the model runs; cuda needs a visible GPU.")
@click.option("--trace", "trace", type=click.Path(dir_okay=False), default=None,
              help="Trace file from gen-trace (default traces/locality.npz for --data trace).")
@click.option("--data", type=click.Choice(["trace", "kaggle", "random"]), default="trace",
              show_default=True,
              help="trace: indices from the trace (synthetic dense/labels); kaggle: real Criteo "
                   "rows (bundled sample unless --input); random: uniform indices.")
@click.option("--mode", type=click.Choice(["train", "infer"]), default="train",
              show_default=True)
@click.option("--backend", default=None,
              help="Kernel backend: numba or torch on cpu (default numba); torch or numba-cuda "
                   "on cuda (default torch).")
@click.option("--config", "config", default="kaggle", show_default=True,
              help="Preset (kaggle, terabyte, tiny) or a YAML file.")
@click.option("--max-rows", type=int, default=None, help="Cap every table at N rows.")
@click.option("--batch-size", type=int, default=None, help="Default: the config's (128).")
@click.option("--iters", type=int, default=100, show_default=True, help="Timed iterations.")
@click.option("--warmup", type=int, default=10, show_default=True, help="Untimed iterations.")
@click.option("--threads", type=int, default=1, show_default=True,
              help="torch and numba threads.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds model init, synthetic dense features/labels, random indices.")
@click.option("--out", type=click.Path(), default=None,
              help="Report path (default reports/<host_id>/<time>-<config>-<device>-<backend>"
                   ".json); a training plot goes beside it.")
@click.option("--input", "inputs", multiple=True, type=click.Path(dir_okay=False),
              help="Criteo TSV file(s) for --data kaggle (default: the bundled sample).")
@click.option("--input-rows", type=int, default=None, help="Read at most N Criteo rows.")
@click.option("--test-fraction", type=float, default=0.2, show_default=True,
              help="--data kaggle: last fraction of the rows held out for evaluation.")
@click.option("--eval-every", type=int, default=None,
              help="--data kaggle --mode train: evaluate every N steps (default: 20 points).")
@click.option("--roofline/--no-roofline", default=True, show_default=True,
              help="Verdicts against this host's measured ceilings (probed once, cached).")
@click.option("--cache-study/--no-cache-study", default=True, show_default=True,
              help="Simulate the trace's embedding rows through this host's caches.")
@click.option("--simd/--no-simd", default=False, show_default=True,
              help="Add the SIMD-width study (a child process per ISA level; slow).")
@click.option("--render/--no-render", default=True, show_default=True,
              help="Write a Markdown summary and PNG plots beside the report.")
@click.option("--fused-tables/--per-table", default=False, show_default=True,
              help="Look up all tables in one kernel call (TBE-style combined table): faster, "
                   "but no per-table figures.")
@click.option("--mlp-dtype", type=click.Choice(["fp32", "bf16"]), default="fp32",
              show_default=True,
              help="bf16: the MLP GEMMs in bfloat16 on copies of fp32 master weights (opt-in: "
                   "it changes the numbers; verdicts use the bf16 GEMM roof).")
@click.option("--emb-dtype", default="fp32", show_default=True,
              metavar="fp32|fp16|bf16|int8|int4",
              help="Look the tables up in this storage type (CPU, per table): int8/int4 "
                   "row-wise (FBGEMM's layout; --mode infer), fp16/bf16 (train too, fp32 "
                   "master rows).  The report times each table in fp32 and this dtype.")
@click.option("--cuda-graph/--no-cuda-graph", default=None,
              help="Run each step as a CUDA graph captured per batch shape (default: on for "
                   "--device cuda, off on cpu); per-op times then come from an eager "
                   "profiling pass after the timed loop.")
@distributed_options
def run(device, trace, data, mode, backend, config, max_rows, batch_size, iters, warmup,
        threads, seed, out, inputs, input_rows, test_fraction, eval_every, roofline,
        cache_study, simd, render, fused_tables, mlp_dtype, emb_dtype, cuda_graph,
        dist_kw=None):
    """Profile a DLRM on this host: per-op time, bytes, FLOPs, verdicts, samples/s.

    Warm-up, then timed iterations; per op (embedding bag per table and all tables, bottom
    MLP, interaction, top MLP, loss, backward, optimizer and the sparse embedding update) the
    median and spread, end-to-end samples/s with data loading shown separately, and the
    other processes' CPU use while timing.  Writes a JSON report atomically.

    \b
      dlrmprof gen-trace --from kaggle
      dlrmprof run --device cpu --trace traces/locality.npz
      dlrmprof run --data kaggle --mode train --iters 300 --out reports/kaggle.json
      dlrmprof run --config kaggle --max-rows 1000000 --data random --mode infer
      dlrmprof run --device cuda --backend numba-cuda --trace traces/locality.npz
      dlrmprof run --nproc 2 --config tiny --data random   (hybrid-parallel, 2 ranks)
      torchrun --standalone --nproc_per_node 2 -m dlrmprof run --config tiny --data random
    """
    from dlrmprof.session.prepare import RunOptions, prepare
    from dlrmprof.session.single import execute

    opts = RunOptions(device=device, trace=trace, data=data, mode=mode, backend=backend,
                      config=config, max_rows=max_rows, batch_size=batch_size, iters=iters,
                      warmup=warmup, threads=threads, seed=seed, out=out, input=tuple(inputs),
                      input_rows=input_rows, test_fraction=test_fraction, eval_every=eval_every,
                      roofline=roofline, cache_study=cache_study, simd=simd, render=render,
                      fused_tables=fused_tables, mlp_dtype=mlp_dtype, emb_dtype=emb_dtype,
                      cuda_graph=cuda_graph)
    from dlrmprof.commands.distributed import run_distributed, wants_distributed

    if wants_distributed(dist_kw or {}):
        if cuda_graph:
            from dlrmprof.errors import UserError

            raise UserError("--cuda-graph: the hybrid-parallel path (--nproc / torchrun) steps "
                            "eagerly")
        if mlp_dtype != "fp32" or emb_dtype != "fp32":
            from dlrmprof.errors import UserError

            flag = f"--mlp-dtype {mlp_dtype}" if mlp_dtype != "fp32" else f"--emb-dtype {emb_dtype}"
            raise UserError(f"{flag}: the hybrid-parallel path (--nproc / torchrun) runs fp32 "
                            "MLPs and tables only")
        return run_distributed(opts, dist_kw or {})
    prep = prepare(opts)
    click.echo("\n".join(_input_lines(prep)))

    from tqdm import tqdm

    bar = tqdm(total=iters, desc=f"{mode} {prep.backend}", unit="it", leave=False,
               disable=None)
    try:
        result = execute(prep, progress=bar.update, say=lambda s: click.echo(s, err=True))
    finally:
        bar.close()
    click.echo("\n".join(_result_lines(result, device, fused_tables)))


def _input_lines(prep) -> list[str]:
    """The model and where its batches come from (printed before the run)."""
    lines = [prep.config.describe()]
    info = prep.trace_info
    if prep.opts.data == "kaggle":
        lines.append(f"data: {info['rows']} Criteo rows from {info['path']}"
                     f"{' (the bundled sample)' if info['bundled'] else ''}: "
                     f"{info['train_rows']} train, {info['test_rows']} test; "
                     f"{info['malformed']} malformed lines skipped")
        if info.get("note"):
            lines.append(f"note: {info['note']}")
    elif prep.trace is not None:
        lines.append(f"trace: {info['path']} ({info['num_samples']} samples"
                     f"{', synthesized from its profiles' if info['materialized'] else ''}), "
                     f"sha256 {info['digest'][:16]}...")
    return lines


def _result_lines(result, device: str, fused_tables: bool) -> list[str]:
    """The op table, end-to-end figures, noise, training and the files written."""
    rep = result.report
    verdicts = {(v.get("name"), v.get("phase")): v
                for v in (rep.roofline.get("rows") or [])}
    lines = _table(rep, verdicts)
    for st in rep.roofline.get("stale_ceilings") or []:
        lines.append(f"note: the measured {st['roof']} ceiling ({st['measured']:.1f}) was "
                     f"stale: {st['op']}/{st['phase']} reached {st['reached']:.1f}; verdicts "
                     "use that, and the next run probes again")
    lines += _emb_dtype_lines(rep)
    e2e = rep.end_to_end
    lines.append(f"end to end: {e2e['samples_per_s']:,.0f} samples/s (data loading + model); "
                 f"model only {e2e['model_samples_per_s']:,.0f} samples/s; data loading "
                 f"{e2e['data_fraction']:.1%} of the time")
    g = e2e.get("cuda_graph") or {}
    if g.get("enabled"):
        lines.append(f"step as a CUDA graph: {g['replays']} replays, {g['captures']} shape(s) "
                     f"captured, {g['eager_steps']} eager steps; per-op times from "
                     f"{g['per_op_source'].split(',')[0]}")
    emb = verdicts.get(("emb.all", "forward")) or {}
    if device == "cuda" and not fused_tables and emb.get("overhead_dominated"):
        lines.append("note: the embedding lookups are overhead-dominated (one call per "
                     "table); --fused-tables looks all tables up in one call")
    nz = rep.noise
    if nz.get("windows"):
        lines.append(f"noise: other processes used {nz['other_cores_mean']:.2f} cores on "
                     f"average (max {nz['other_cores_max']:.2f}) of {nz['cpus']}; "
                     f"{nz['contaminated_windows']}/{nz['windows']} windows contaminated, "
                     f"{nz['flagged']} op samples flagged")
    lines += _training_lines(rep.training, result.png)
    lines.append(f"wrote {result.summary['out']}")
    lines += [f"wrote {p}" for p in result.summary.get("rendered", [])]
    return lines


def _training_lines(tr: dict, png) -> list[str]:
    if tr.get("test"):
        t, b = tr["test"], tr["base_rate"]
        auc = "n/a" if t["auc"] is None else f"{t['auc']:.3f}"
        lines = [f"held-out test ({t['n']} rows): logloss {t['logloss']:.4f} vs base rate "
                 f"{b['logloss']:.4f}; accuracy {t['accuracy']:.3f} vs {b['accuracy']:.3f}; "
                 f"ROC AUC {auc} vs 0.5"]
        if png is not None:
            lines.append(f"wrote {png}")
        return lines
    if tr.get("losses"):
        return [f"training loss {tr['first_loss']:.4f} -> {tr['last_loss']:.4f} "
                f"({tr.get('note', '')})"]
    return []


COMMANDS = [run]
