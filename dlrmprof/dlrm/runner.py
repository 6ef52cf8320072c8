"""What `dlrmprof run` does, as a library: options in, a `Report` (and figures) out.

`RunOptions` holds the parsed options (the report stores them); `prepare(opts)` checks them
and loads what they name (config, trace or Criteo rows) without running anything;
`execute(prepared, progress=..., say=...)` builds the model, warms up, times the iterations
and assembles the report.  Nothing here prints: `say(str)` and `progress(n)` are callbacks
the command provides.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dlrmprof.dlrm.config import DLRMConfig, load_config
from dlrmprof.errors import UserError

DEFAULT_TRACE = "traces/locality.npz"
DATA_KINDS = ("trace", "kaggle", "random")
MODES = ("train", "infer")


@dataclass(frozen=True)
class RunOptions:
    device: str = "cpu"
    trace: str | None = None
    data: str = "trace"
    mode: str = "train"
    backend: str | None = None
    config: str = "kaggle"
    max_rows: int | None = None
    batch_size: int | None = None
    iters: int = 100
    warmup: int = 10
    threads: int = 1
    seed: int = 0
    out: str | None = None
    input: tuple[str, ...] = ()          # Criteo files for --data kaggle (default: bundled)
    input_rows: int | None = None        # read at most this many Criteo rows
    test_fraction: float = 0.2
    eval_every: int | None = None
    roofline: bool = True                # measured ceilings (cached per host) + verdicts
    cache_study: bool = True             # simulate the trace's rows through this host's caches
    simd: bool = False                   # the SIMD-width study (child process per ISA level)
    render: bool = True                  # Markdown + PNGs beside the report
    fused_tables: bool = False           # one kernel call for all tables (no per-table rows)
    mlp_dtype: str = "fp32"              # "bf16": MLP GEMMs in bfloat16 (opt-in; other numbers)
    emb_dtype: str = "fp32"              # tables looked up as fp16 / bf16 / int8 / int4
    cuda_graph: bool | None = None       # step as a CUDA graph (None: where it applies)


@dataclass
class Prepared:
    opts: RunOptions
    config: DLRMConfig
    backend: str
    device: str
    trace: Any = None                    # dlrmprof.tracegen.Trace (materialized)
    trace_info: dict = field(default_factory=dict)
    train_data: Any = None               # CriteoData for --data kaggle
    test_data: Any = None
    out: Path | None = None


def _check_writable(path: Path) -> None:
    """Fail before the run (not after it) when the report cannot be written there.  Creates
    nothing: the nearest existing ancestor must be a writable directory."""
    if path.is_dir():
        raise UserError(f"{path}: --out is a directory, expected a report file name (.json)")
    anc = path.parent if str(path.parent) else Path(".")
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise UserError(f"{path}: cannot write the report here ({anc} is not a directory)")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise UserError(f"{path}: cannot write the report here ({anc} is not writable)")
    from dlrmprof.fsutil import prepare_output

    prepare_output(path)      # a FIFO, device or read-only file there is refused, not replaced


def check_table_memory(config: DLRMConfig, device: str) -> None:
    """Refuse (one line naming the table, the bytes and --max-rows) embedding tables that do
    not fit in the memory available now, before the model allocates them."""
    from dlrmprof import memcheck

    avail = memcheck.available_bytes(device)
    if avail is None:
        return
    row_bytes = config.embedding_dim * 4
    fit = memcheck.max_rows_that_fit([t.rows for t in config.tables], row_bytes, avail)
    memcheck.check_fits([(f"table {t.name} ({t.rows} rows x {t.dim} x 4 B)", t.nbytes)
                         for t in config.tables],
                        what="the embedding table", available=avail, device=device,
                        hint=f"cap every table with --max-rows {fit} (or fewer rows in the "
                             "trace / config)")


def check_device(device: str) -> str:
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA GPU is visible to torch on this host "
                            f"(torch {torch.__version__}, CUDA build: "
                            f"{torch.version.cuda or 'no'})")
        return device
    raise UserError(f"--device: expected cpu or cuda, got {device!r}")


def prepare(opts: RunOptions) -> Prepared:
    """Check every option and load the inputs; UserError (one line) on anything wrong."""
    device = check_device(opts.device)
    from dlrmprof.dlrm.model import BACKENDS, check_backend

    kind = "cuda" if device.startswith("cuda") else "cpu"
    backend = opts.backend or BACKENDS[kind][0]
    check_backend(device, backend)
    if opts.data not in DATA_KINDS:
        raise UserError(f"--data: expected one of {', '.join(DATA_KINDS)}, got {opts.data!r}")
    if opts.mode not in MODES:
        raise UserError(f"--mode: expected one of {', '.join(MODES)}, got {opts.mode!r}")
    if opts.iters <= 0:
        raise UserError(f"--iters must be positive, got {opts.iters}")
    if opts.warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {opts.warmup}")
    if opts.threads <= 0:
        raise UserError(f"--threads must be positive, got {opts.threads}")
    if opts.batch_size is not None and opts.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {opts.batch_size}")
    if not 0 < opts.test_fraction < 1:
        raise UserError(f"--test-fraction must be between 0 and 1, got {opts.test_fraction}")
    out = Path(opts.out) if opts.out else None
    # fail now, not after the run, when the report cannot be written
    _check_writable(out if out is not None else Path("reports") / "report.json")
    config = load_config(opts.config, max_rows=opts.max_rows, batch_size=opts.batch_size)
    _check_emb_dtype(opts, config, device)
    from dlrmprof.dlrm.graphs import plan as graph_plan
    graph_plan(opts.cuda_graph, device, backend, opts.fused_tables, opts.emb_dtype)
    prep = Prepared(opts, config, backend, device, out=out)

    trace_path = opts.trace
    if opts.data == "trace" and trace_path is None:
        trace_path = DEFAULT_TRACE
        if not Path(trace_path).exists():
            raise UserError(f"{trace_path}: no trace file (make one with `dlrmprof gen-trace "
                            f"--from kaggle`, or pass --trace FILE)")
    if opts.data in ("trace", "random") and trace_path is not None:
        from dlrmprof.tracegen import Trace

        trace = Trace.load(trace_path)
        rows = [t.rows for t in trace.tables]
        config = config.with_trace_rows(rows, [t.name for t in trace.tables], str(trace_path))
        check_table_memory(config, device)
        materialized = False
        if not trace.has_indices:
            # profile-only file: synthesize enough samples for warm-up + timed iterations
            need = max(config.batch_size, (opts.iters + opts.warmup) * config.batch_size)
            trace = trace.materialize(num_samples=need, seed=opts.seed,
                                      memory_hint="lower --iters, --warmup or --batch-size")
            materialized = True
        if config.batch_size > trace.num_samples:
            raise UserError(f"{trace_path}: --batch-size {config.batch_size} is larger than the "
                            f"trace's {trace.num_samples} samples")
        prep.trace = trace
        prep.trace_info = {
            "path": str(trace_path), "digest": trace.digest, "num_samples": trace.num_samples,
            "materialized": materialized, "source": trace.header.get("source"),
            "seed": trace.header.get("seed"), "tables": trace.summary_rows(),
        }
    if opts.data == "kaggle":
        from dlrmprof.dlrm.data import bundled_criteo_sample, load_criteo

        paths = list(opts.input) or [bundled_criteo_sample()]
        data = load_criteo(paths, max_rows=opts.input_rows, table_rows=config.max_rows)
        config = config.with_trace_rows(data.table_rows, None, data.source)
        config = dataclasses.replace(config, rows_from="data")
        prep.train_data, prep.test_data = data.split(opts.test_fraction)
        prep.trace_info = {"path": data.source, "kind": "criteo-tsv",
                           "bundled": not opts.input, "rows": int(data.labels.shape[0]),
                           "malformed": data.malformed,
                           "train_rows": int(prep.train_data.labels.shape[0]),
                           "test_rows": int(prep.test_data.labels.shape[0]),
                           "tables": [{"name": t.name, "rows": t.rows} for t in config.tables]}
        if opts.trace:
            prep.trace_info["note"] = f"--trace {opts.trace} not used: --data kaggle reads rows"
    check_table_memory(config, device)
    prep.config = config
    return prep


def _check_emb_dtype(opts: RunOptions, config: DLRMConfig, device: str) -> None:
    """UserError unless --emb-dtype can run with the other options."""
    from dlrmprof.kernels.quant import check_emb_dtype

    dt = check_emb_dtype(opts.emb_dtype, config.embedding_dim)
    if dt == "fp32":
        return
    if device != "cpu" or opts.fused_tables:
        raise UserError(f"--emb-dtype {dt}: packed tables run on the CPU, one call per table "
                        "(not --device cuda, not --fused-tables)")
    if opts.mode == "train" and dt in ("int8", "int4"):
        raise UserError(f"--emb-dtype {dt} is for --mode infer (post-training row-wise "
                        "quantization); fp16 and bf16 also train, with fp32 master rows")


def set_threads(threads: int, backend: str) -> None:
    """Give torch (and numba, for the numba backend) `threads` threads; UserError when numba
    was started with fewer (NUMBA_NUM_THREADS is fixed per process)."""
    import torch

    torch.set_num_threads(threads)
    if backend == "numba":
        import numba

        if threads > numba.config.NUMBA_NUM_THREADS:
            raise UserError(f"--threads {threads}: numba was started with at most "
                            f"{numba.config.NUMBA_NUM_THREADS} threads (NUMBA_NUM_THREADS)")
        numba.set_num_threads(threads)


def make_source(prep: Prepared):
    from dlrmprof.dlrm import data as D

    cfg, opts = prep.config, prep.opts
    rows = [t.rows for t in cfg.tables]
    names = [t.name for t in cfg.tables]
    if opts.data == "trace":
        return D.TraceSource(prep.trace, cfg.batch_size, cfg.dense_features, rows, names,
                             seed=opts.seed, where=prep.trace_info["path"])
    if opts.data == "random":
        if prep.trace is not None:  # uniform indices, but the same tables as the trace
            D.check_index_ranges([prep.trace.table_bags(t)[0] for t in range(len(rows))],
                                 rows, names, prep.trace_info["path"])
        return D.RandomSource(cfg.batch_size, cfg.dense_features, rows, seed=opts.seed,
                              trace=prep.trace, where=prep.trace_info.get("path", "trace"))
    return D.KaggleSource(prep.train_data, cfg.batch_size)


# -- report rows ---------------------------------------------------------------------------
def _split(samples: list[float], bad: np.ndarray) -> tuple[list[float], int, bool]:
    """Drop contaminated samples when enough clean ones remain (>= half, >= 3)."""
    n_bad = int(bad.sum())
    if n_bad == 0:
        return samples, 0, False
    clean = [s for s, b in zip(samples, bad) if not b]
    if len(clean) >= max(3, len(samples) // 2):
        return clean, n_bad, True
    return samples, n_bad, False


def op_rows(timer, prep: Prepared, nnz_mean: list[float],
            sgd_in_backward: bool = False) -> tuple[list[dict], dict]:
    """Report rows for every timed op, with counted bytes/FLOPs from `kernels.cost`.

    `sgd_in_backward`: the MLPs' dense SGD ran inside their backward (`DLRMTrain`'s default),
    so its work is counted under ``backward`` and ``optimizer`` has no counted work of its own.
    """
    from dlrmprof import kernels
    from dlrmprof.profile.report import op_row

    cfg = prep.config
    B, D, T = cfg.batch_size, cfg.embedding_dim, cfg.num_tables
    dev = "cuda" if prep.device.startswith("cuda") else "cpu"
    flags = timer.noise.flags(timer.iteration) if timer.noise is not None else \
        np.zeros(timer.iteration, bool)
    n_params = sum(a * b + b for a, b in zip(cfg.bottom_mlp[:-1], cfg.bottom_mlp[1:])) + \
        sum(a * b + b for a, b in zip(cfg.top_layers[:-1], cfg.top_layers[1:]))
    from dlrmprof.kernels.quant import row_bytes as packed_row_bytes

    emb_dtype = prep.opts.emb_dtype
    row_b = packed_row_bytes(emb_dtype, D)   # the forward reads rows at their packed size
    emb_cost = {"forward": [], "optimizer": []}
    for t, table in enumerate(cfg.tables):
        nnz = int(round(nnz_mean[t]))
        emb_cost["forward"].append(kernels.cost("embedding_bag", batch=B, dim=D, nnz=nnz,
                                                mode=table.pooling, row_bytes=row_b))
        emb_cost["optimizer"].append(kernels.cost("embedding_bag_sgd", batch=B, dim=D, nnz=nnz,
                                                  mode=table.pooling))

    # dense SGD: read p and grad, write p
    sgd = kernels.Cost(2 * 4 * n_params, 4 * n_params, 2 * n_params)

    def backward_cost():
        c = kernels.cost("interaction_backward", batch=B, tables=T, dim=D)
        for layers in (cfg.bottom_mlp, cfg.top_layers):
            for a, b in zip(layers[:-1], layers[1:]):
                c = c + kernels.cost("linear_backward", batch=B, in_features=a, out_features=b)
        return c + sgd if sgd_in_backward else c

    spec: dict[str, tuple] = {  # timer name -> (row name, phase, kind, cost or None, shape)
        "data": ("data", "data", "other", None, {"B": B}),
        "to_device": ("to_device", "data", "other", None, {"B": B}),
        "bottom_mlp": ("bottom_mlp", "forward", "mlp",
                       kernels.cost("mlp", batch=B, sizes=list(cfg.bottom_mlp)),
                       {"B": B, "sizes": list(cfg.bottom_mlp), "dtype": prep.opts.mlp_dtype}),
        "interaction": ("interaction", "forward", "interaction",
                        kernels.cost("interaction", batch=B, tables=T, dim=D),
                        {"B": B, "T": T, "D": D}),
        "top_mlp": ("top_mlp", "forward", "mlp",
                    kernels.cost("mlp", batch=B, sizes=list(cfg.top_layers)),
                    {"B": B, "sizes": list(cfg.top_layers), "dtype": prep.opts.mlp_dtype}),
        "loss": ("loss", "forward", "loss", None, {"B": B}),
        "sigmoid": ("sigmoid", "forward", "other", None, {"B": B}),
        "backward": ("backward", "backward", "other", backward_cost(),
                     {"B": B, "note": "MLP layers (grad_x and grad_weight, as the cost model "
                                      "counts them) + interaction backward" +
                                      (" + the MLPs' dense SGD, fused into their backward"
                                       if sgd_in_backward else "")}),
        "optimizer": ("optimizer", "optimizer", "other", None if sgd_in_backward else sgd,
                      {"params": 0 if sgd_in_backward else n_params,
                       "note": "no dense parameters left to update: the MLPs' SGD ran in "
                               "their backward" if sgd_in_backward else
                               "dense SGD: read p and grad, write p"}),
        "step": ("step", "step", "other", None, {"B": B}),
    }
    all_fwd = sum(emb_cost["forward"][1:], emb_cost["forward"][0])
    all_upd = sum(emb_cost["optimizer"][1:], emb_cost["optimizer"][0])
    spec["emb"] = ("emb.all", "forward", "embedding_bag", all_fwd,
                   {"B": B, "D": D, "tables": T, "nnz": int(round(sum(nnz_mean))),
                    "rows": sum(t.rows for t in cfg.tables), "row_bytes": row_b,
                    "emb_dtype": emb_dtype, "lines_per_lookup": kernels.lines_per_row(row_b),
                    "fused": prep.opts.fused_tables,
                    "calls": 1 if prep.opts.fused_tables else T})
    spec["emb_update"] = ("emb.all", "optimizer", "embedding_bag_sgd", all_upd,
                          dict(spec["emb"][4], row_bytes=D * 4, emb_dtype="fp32",
                               lines_per_lookup=kernels.lines_per_row(D * 4)))
    if emb_dtype != "fp32":   # the fp32 master rows are updated, then the touched rows packed
        spec["emb_update"][4]["note"] = (f"sparse SGD on the fp32 master rows, then the touched "
                                         f"rows re-packed into {emb_dtype} (timed inside this row)")
    for t, table in enumerate(cfg.tables):
        shape = {"B": B, "D": D, "nnz": int(round(nnz_mean[t])), "rows": table.rows,
                 "row_bytes": row_b, "emb_dtype": emb_dtype,
                 "lines_per_lookup": kernels.lines_per_row(row_b), "table": table.name}
        spec[f"emb.{table.name}"] = (f"emb.{table.name}", "forward", "embedding_bag",
                                     emb_cost["forward"][t], shape)
        spec[f"emb_update.{table.name}"] = (f"emb.{table.name}", "optimizer",
                                            "embedding_bag_sgd", emb_cost["optimizer"][t],
                                            dict(shape, row_bytes=D * 4, emb_dtype="fp32",
                                                 lines_per_lookup=kernels.lines_per_row(D * 4)))
    rows = []
    dropped = {}
    for name in timer.names:
        if name not in spec:
            continue
        row_name, phase, kind, cost, shape = spec[name]
        o = timer._ops[name]
        it = np.asarray(o.iters, np.int64)
        bad = flags[np.clip(it, 0, max(len(flags) - 1, 0))] if len(flags) else \
            np.zeros(len(it), bool)
        samples, n_bad, was_dropped = _split(list(o.samples), bad)
        if was_dropped:
            dropped[row_name + "/" + phase] = n_bad
        if kind in ("embedding_bag", "embedding_bag_sgd") or name == "step" or \
                (kind == "interaction" and prep.backend == "numba"):
            op_backend = prep.backend
        elif phase == "data":
            op_backend = "numpy"  # host-side: cutting batches, synthesis, tensor wrapping
        else:
            op_backend = "torch"
        rows.append(op_row(row_name, phase=phase, device=dev, backend=op_backend,
                           samples=samples, bytes=None if cost is None else cost.bytes,
                           flops=None if cost is None else cost.flops, kind=kind, shape=shape,
                           flagged=n_bad, dropped_contaminated=was_dropped,
                           timer=timer.method_of(name)))
    return rows, dropped


# -- the run -------------------------------------------------------------------------------
@dataclass
class RunResult:
    report: Any
    loop: Any
    summary: dict
    png: Path | None = None


def execute(prep: Prepared, progress: Callable[[int], None] | None = None,
            say: Callable[[str], None] = lambda s: None) -> RunResult:
    import torch

    from dlrmprof.dlrm.model import build_dlrm
    from dlrmprof.dlrm.train import DLRMTrain, base_rate_metrics, run_loop
    from dlrmprof.profile.timers import OpTimer

    opts, cfg = prep.opts, prep.config
    set_threads(opts.threads, prep.backend)
    source = make_source(prep)
    say(f"building the model ({sum(t.nbytes for t in cfg.tables) / 2**20:.1f} MiB of tables)")
    model = build_dlrm(cfg, backend=prep.backend, device=prep.device, seed=opts.seed,
                       fused_tables=opts.fused_tables, mlp_dtype=opts.mlp_dtype,
                       emb_dtype=opts.emb_dtype)
    trainer = DLRMTrain(model, cfg.lr)
    timer = OpTimer(device=prep.device, threads=opts.threads)

    kaggle_train = opts.data == "kaggle" and opts.mode == "train"
    evaluate = None
    eval_every = 0
    if kaggle_train:
        eval_every = opts.eval_every or max(1, (opts.iters + opts.warmup) // 20)

        def evaluate(step: int, recent: list[float]) -> dict:
            m = trainer.evaluate(prep.test_data)
            t = trainer.evaluate(prep.train_data)
            return {"step": step, "train_logloss": t["logloss"], "train_accuracy": t["accuracy"],
                    "recent_batch_loss": float(np.mean(recent)) if recent else None,
                    "test_logloss": m["logloss"], "test_accuracy": m["accuracy"],
                    "test_auc": m["auc"]}

    # the ceilings are loaded (or re-probed, when the cache is damaged or provisional) before
    # the timed loop: a probe never runs after the timing, and never competes with it
    from dlrmprof.profile import host as hostmod

    fp = ceilings = None
    if opts.roofline:
        say("collecting the host fingerprint")
        fp = hostmod.collect()
        ceilings = _ceilings(fp, say)
    say(f"warm-up {opts.warmup}, then {opts.iters} timed iterations of batch {cfg.batch_size} "
        f"({opts.mode}, {prep.backend} on {prep.device}, {opts.threads} thread(s))")
    from dlrmprof.dlrm import graphs

    graph = graphs.plan(opts.cuda_graph, prep.device, prep.backend, opts.fused_tables,
                        opts.emb_dtype)
    ptimer = OpTimer(device=prep.device, threads=opts.threads) if graph.enabled else None
    loop = run_loop(trainer, source, mode=opts.mode, iters=opts.iters, warmup=opts.warmup,
                    timer=timer, progress=progress, evaluate=evaluate, eval_every=eval_every,
                    graph=graph, profile_timer=ptimer, profile_iters=min(opts.iters, 50))

    rows, dropped = op_rows(timer, prep, loop.nnz_mean,
                            sgd_in_backward=trainer.sgd_in_backward)
    if ptimer is not None:
        prow, pdropped = op_rows(ptimer, prep, loop.nnz_mean,
                                 sgd_in_backward=trainer.sgd_in_backward)
        rows = graphs.merge_rows(rows, prow, loop.graph)
        dropped.update({k: v for k, v in pdropped.items() if k not in dropped})
    if opts.emb_dtype != "fp32":
        say(f"timing each table's lookup in fp32 and {opts.emb_dtype} on the same batches")
        _attach_emb_dtype(rows, model.sparse_arch, make_source(prep))
    B, n = cfg.batch_size, opts.iters
    step_s = float(np.sum(timer.samples("step")))
    data_s = float(np.sum(timer.samples("data")))
    from dlrmprof.profile.report import time_stats

    end_to_end = {
        "samples_per_s": n * B / loop.wall_s,
        "model_samples_per_s": n * B / step_s,
        "data_samples_per_s": n * B / data_s if data_s > 0 else None,
        "data_fraction": data_s / loop.wall_s,
        "iterations": n, "batch_size": B, "warmup": opts.warmup, "wall_s": loop.wall_s,
        "time": time_stats(timer.iter_wall),
        "definition": "samples_per_s: timed iterations (data loading + model step) / their "
                      "wall time; model_samples_per_s: the same over the model step only",
        "source": "measured",
        "cuda_graph": loop.graph.to_json(),
    }
    noise = dict(timer.noise.summary()) if timer.noise is not None else {}
    noise["flagged"] = int(sum(r["time"]["flagged"] for r in rows))
    noise["dropped"] = dropped
    noise["policy"] = ("a row drops its contaminated samples when at least half (and 3) stay "
                       "clean; otherwise it keeps all and reports how many were flagged")

    training: dict[str, Any] = {}
    png = None
    if opts.mode == "train":
        training = {"losses": loop.losses, "first_loss": loop.losses[0],
                    "last_loss": loop.losses[-1], "lr": cfg.lr, "loss": cfg.loss}
        if kaggle_train:
            final = trainer.evaluate(prep.test_data)
            base = base_rate_metrics(prep.train_data.labels, prep.test_data.labels)
            training.update({"test": final, "base_rate": base, "curve": loop.curve,
                             "beats_base_rate_logloss": final["logloss"] < base["logloss"],
                             "split": f"first {1 - opts.test_fraction:.0%} of rows train, "
                                      f"last {opts.test_fraction:.0%} test (file order)"})
        else:
            training["note"] = ("labels are synthetic (independent of the features): the loss "
                                "shows the model runs, not that it learns")

    config = {"run": dataclasses.asdict(opts), "model": cfg.to_dict(), "device": prep.device,
              "backend": prep.backend, "mode": opts.mode, "data": opts.data,
              "threads": opts.threads, "batch_size": B, "preset": cfg.name,
              "mlp_dtype": opts.mlp_dtype, "emb_dtype": opts.emb_dtype,
              "torch_threads": torch.get_num_threads(), "source": source.describe()}
    config["run"]["input"] = list(opts.input)

    from dlrmprof.profile.report import Report

    if fp is None:
        say("collecting the host fingerprint")
        fp = hostmod.collect()
    sections: dict[str, Any] = dict(config=config, trace=prep.trace_info, end_to_end=end_to_end,
                                    noise=noise, training=training)
    if opts.roofline:
        sections.update(_roofline(rows, fp, prep, say, ceilings))
    if opts.simd:
        from dlrmprof.profile.simd import run_simd

        say("SIMD-width study (one child process per ISA level)")
        sections["simd"] = run_simd(fp, ceilings=sections.get("ceilings"),
                                    threads=opts.threads, quick=True,
                                    progress=lambda m: say(f"  simd: {m}"))
    report = Report.new(fp, rows, **sections)
    out = prep.out or report.default_path("reports")
    prep.out = Path(out)
    if kaggle_train and loop.curve:
        png = Path(out).with_suffix(".training.png")
        plot_training(loop.curve, training["base_rate"], png)
        report = report.replace(training=dict(training, plot=str(png)))
    report.save(out)
    rendered: list[Path] = []
    if opts.render:
        from dlrmprof.profile.render import render_report

        rendered = list(render_report(report, out))
    summary = {"out": str(out), "end_to_end": end_to_end, "noise": noise, "training": training,
               "rendered": [str(p) for p in rendered]}
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
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(steps, [c["train_logloss"] for c in curve], label="train")
    a1.plot(steps, [c["test_logloss"] for c in curve], label="test")
    a1.axhline(base["logloss"], ls="--", color="gray", label="base rate (test)")
    a1.set_xlabel("iteration")
    a1.set_ylabel("logloss")
    a1.legend()
    a2.plot(steps, [c["train_accuracy"] for c in curve], label="train")
    a2.plot(steps, [c["test_accuracy"] for c in curve], label="test")
    a2.axhline(base["accuracy"], ls="--", color="gray", label="base rate (test)")
    a2.set_xlabel("iteration")
    a2.set_ylabel("accuracy")
    a2.legend()
    fig.suptitle("DLRM on Criteo rows: training and held-out test")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
