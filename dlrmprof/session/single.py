"""One process's run: `execute(prepared)` runs the model and writes its report.

Order of work: the model is built, the host's ceilings are loaded (or probed) before the
timed loop (a probe never runs after the timing, and never competes with it), the loop runs
(`dlrm.runner.timed_loop`), then the report is assembled from what it measured: op rows
(`session.rows`), the shared sections (`session.sections`), training figures, roofline
verdicts and the cache study, the SIMD study when asked.  Nothing here prints: `say(str)` and
`progress(n)` are callbacks the command provides.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dlrmprof.dlrm import runner
from dlrmprof.session import sections
from dlrmprof.session.prepare import Prepared, make_source
from dlrmprof.session.rows import op_rows


@dataclass
class RunResult:
    report: Any
    loop: Any
    summary: dict
    png: Path | None = None


def execute(prep: Prepared, progress: Callable[[int], None] | None = None,
            say: Callable[[str], None] = lambda s: None) -> RunResult:
    """Run the prepared options on this process and write the report (and its renderings)."""
    opts, cfg = prep.opts, prep.config
    runner.set_threads(opts.threads, prep.backend)
    source = make_source(prep)
    say(f"building the model ({sum(t.nbytes for t in cfg.tables) / 2**20:.1f} MiB of tables)")
    trainer = runner.build_trainer(cfg, backend=prep.backend, device=prep.device,
                                   seed=opts.seed, fused_tables=opts.fused_tables,
                                   mlp_dtype=opts.mlp_dtype, emb_dtype=opts.emb_dtype)
    kaggle_train = opts.data == "kaggle" and opts.mode == "train"
    evaluate, eval_every = None, 0
    if kaggle_train:
        eval_every = opts.eval_every or max(1, (opts.iters + opts.warmup) // 20)
        evaluate = runner.held_out_evaluator(trainer, prep.train_data, prep.test_data)
    fp = ceilings = None
    if opts.roofline:
        fp = _fingerprint(say)
        ceilings = _ceilings(fp, say)
    say(f"warm-up {opts.warmup}, then {opts.iters} timed iterations of batch {cfg.batch_size} "
        f"({opts.mode}, {prep.backend} on {prep.device}, {opts.threads} thread(s))")
    from dlrmprof.dlrm import graphs

    graph = graphs.plan(opts.cuda_graph, prep.device, prep.backend, opts.fused_tables,
                        opts.emb_dtype)
    timer, loop, ptimer = runner.timed_loop(trainer, source, mode=opts.mode, iters=opts.iters,
                                            warmup=opts.warmup, device=prep.device,
                                            threads=opts.threads, progress=progress,
                                            evaluate=evaluate, eval_every=eval_every,
                                            graph=graph)
    rows, dropped = op_rows(timer, prep, loop.nnz_mean, sgd_in_backward=trainer.sgd_in_backward)
    if ptimer is not None:      # per-op rows from the eager profiling pass after the graph loop
        prow, pdropped = op_rows(ptimer, prep, loop.nnz_mean,
                                 sgd_in_backward=trainer.sgd_in_backward)
        rows = graphs.merge_rows(rows, prow, loop.graph)
        dropped.update({k: v for k, v in pdropped.items() if k not in dropped})
    if opts.emb_dtype != "fp32":
        say(f"timing each table's lookup in fp32 and {opts.emb_dtype} on the same batches")
        _attach_emb_dtype(rows, trainer.model.sparse_arch, make_source(prep))
    secs: dict[str, Any] = {
        "config": sections.config(opts, cfg, device=prep.device, backend=prep.backend,
                                  source=source),
        "trace": prep.trace_info,
        "end_to_end": sections.end_to_end(
            iterations=opts.iters, batch=cfg.batch_size, warmup=opts.warmup,
            wall_s=loop.wall_s, step_s=float(np.sum(timer.samples("step"))),
            iter_wall=timer.iter_wall, data_s=float(np.sum(timer.samples("data"))),
            definition="samples_per_s: timed iterations (data loading + model step) / their "
                       "wall time; model_samples_per_s: the same over the model step only"),
        "noise": sections.noise(timer, rows, dropped),
        "training": _training(prep, trainer, loop),
    }
    if loop.graph is not None:      # how the step ran: as a CUDA graph or why not
        secs["end_to_end"]["cuda_graph"] = loop.graph.to_json()
    if fp is None:
        fp = _fingerprint(say)
    if opts.roofline:
        secs.update(_roofline(rows, fp, prep, say, ceilings))
    if opts.simd:
        from dlrmprof.profile.simd import run_simd

        say("SIMD-width study (one child process per ISA level)")
        secs["simd"] = run_simd(fp, ceilings=secs.get("ceilings"), threads=opts.threads,
                                quick=True, progress=lambda m: say(f"  simd: {m}"))
    return _write(prep, fp, rows, secs, loop)


def _fingerprint(say) -> dict:
    from dlrmprof.profile import host as hostmod

    say("collecting the host fingerprint")
    return hostmod.collect()


def _training(prep: Prepared, trainer, loop) -> dict[str, Any]:
    """Loss per step; for Criteo rows the held-out test figures against the base rate."""
    opts, cfg = prep.opts, prep.config
    if opts.mode != "train":
        return {}
    training: dict[str, Any] = {"losses": loop.losses, "first_loss": loop.losses[0],
                                "last_loss": loop.losses[-1], "lr": cfg.lr, "loss": cfg.loss}
    if opts.data == "kaggle":
        from dlrmprof.dlrm.train import base_rate_metrics

        final = trainer.evaluate(prep.test_data)
        base = base_rate_metrics(prep.train_data.labels, prep.test_data.labels)
        training.update({"test": final, "base_rate": base, "curve": loop.curve,
                         "beats_base_rate_logloss": final["logloss"] < base["logloss"],
                         "split": f"first {1 - opts.test_fraction:.0%} of rows train, "
                                  f"last {opts.test_fraction:.0%} test (file order)"})
    else:
        training["note"] = ("labels are synthetic (independent of the features): the loss "
                            "shows the model runs, not that it learns")
    return training


def _write(prep: Prepared, fp: dict, rows: list[dict], secs: dict, loop) -> RunResult:
    """The report written atomically (training plot first), then its renderings."""
    from dlrmprof.profile.report import Report

    report = Report.new(fp, rows, **secs)
    out = prep.out or report.default_path("reports")
    prep.out = Path(out)
    training = secs["training"]
    png = None
    if training.get("curve") and loop.curve:
        png = Path(out).with_suffix(".training.png")
        plot_training(loop.curve, training["base_rate"], png)
        report = report.replace(training=dict(training, plot=str(png)))
    report.save(out)
    rendered: list[Path] = []
    if prep.opts.render:
        from dlrmprof.profile.render import render_report

        rendered = list(render_report(report, out))
    summary = {"out": str(out), "end_to_end": secs["end_to_end"], "noise": secs["noise"],
               "training": training, "rendered": [str(p) for p in rendered]}
    return RunResult(report, loop, summary, png)


def _ceilings(fp, say) -> dict:
    """This host's ceilings: the cache, or a probe when there is none, it is damaged (a
    warning says why) or provisional (probed under load)."""
    from dlrmprof.profile import ceilings as ceil

    if ceil.load_cached(fp["host_id"]) is None:
        say("measuring this host's ceilings (once; cached per host)")
    c, _ = ceil.load_or_probe(fp, progress=lambda m: say(f"  ceilings: {m}"),
                              warn=lambda m: say(f"warning: {m}"))
    if c.get("provisional"):
        again = ("the next run probes again" if c.get("probes", 1) < ceil.MAX_PROVISIONAL_PROBES
                 else f"kept after {c.get('probes')} probes; `dlrmprof host --probe --refresh` "
                      "on a quiet machine replaces them")
        say("warning: these ceilings are provisional ("
            + "; ".join(c.get("provisional_reasons") or []) + f"); {again}")
    return c


def _attach_emb_dtype(rows: list[dict], sparse, source, batches: int = 10) -> None:
    """Each table's forward row gets ``emb_dtype``: fp32 vs packed lookup time on the same
    batches (`profile.emb_dtype.compare_tables`) and why the smaller rows did or did not
    speed it up."""
    from dlrmprof.profile.emb_dtype import compare_tables

    bags = [(b.indices, b.offsets) for b in (source.next_batch() for _ in range(batches))]
    fp32 = [w.detach().numpy() for w in sparse.weights]
    verdicts = compare_tables(sparse.names, fp32, sparse.packed, bags, sparse.modes,
                              backend=sparse.backend)
    by_name = {f"emb.{v.table}": v for v in verdicts}
    for r in rows:
        v = by_name.get(r["name"])
        if v is not None and r["phase"] == "forward":
            r["emb_dtype"] = v.to_json()


def _roofline(rows, fp, prep: Prepared, say, c: dict) -> dict:
    from dlrmprof.profile import ceilings as ceil
    from dlrmprof.profile import roofline

    out: dict[str, Any] = {}
    out["ceilings"] = c
    cache = None
    # the cache study simulates the trace's own indices: only when the run used them
    if prep.opts.cache_study and prep.trace is not None and prep.opts.data == "trace":
        cache = _cache_study(prep, fp, say)
        if cache is not None:
            out["cache"] = cache["section"]
            cache = cache["per_op"]
    out["roofline"] = roofline.section(rows, c, cache=cache, threads=prep.opts.threads, host=fp,
                                       device=prep.device)
    for st in out["roofline"]["stale_ceilings"]:
        ceil.mark_provisional(c, f"{st['op']}/{st['phase']} ran at {st['reached']:.1f}, above "
                                 f"the measured {st['roof']} {st['measured']:.1f}")
    return out


def _cache_study(prep: Prepared, fp, say) -> dict | None:
    """Simulate the trace's embedding rows through this host's caches (the profiler's
    `cachesim.simulate_trace`: every table's whole index stream, per table and all tables)."""
    from dlrmprof.profile import cachesim

    caches = fp.get("caches") or []
    if not caches:
        return None
    say("simulating the trace's embedding rows through this host's caches")
    from dlrmprof.kernels.quant import row_bytes

    # the forward's rows at their stored size (a packed --emb-dtype row: scale and bias too)
    rb = row_bytes(prep.opts.emb_dtype, prep.config.embedding_dim)
    sim = cachesim.simulate_trace(prep.trace, caches, dim=rb, elem_bytes=1)
    from dlrmprof.profile import counters

    section = {"simulation": sim, "source": "simulated",
               "counters": fp.get("counters") or counters.availability(),
               "note": "whole trace, every table's rows laid out one after another",
               "row_bytes": rb}
    return {"section": section, "per_op": sim}


def plot_training(curve: list[dict], base: dict, path: Path) -> None:
    """Train/test logloss and accuracy over iterations, written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dlrmprof.fsutil import atomic_path

    steps = [c["step"] for c in curve]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("logloss", "accuracy")):
        ax.plot(steps, [c[f"train_{key}"] for c in curve], label="train")
        ax.plot(steps, [c[f"test_{key}"] for c in curve], label="test")
        ax.axhline(base[key], ls="--", color="gray", label="base rate (test)")
        ax.set_xlabel("iteration")
        ax.set_ylabel(key)
        ax.legend()
    fig.suptitle("DLRM on Criteo rows: training and held-out test")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
