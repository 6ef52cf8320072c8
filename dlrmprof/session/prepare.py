"""The run's inputs: options in, checked and loaded (`Prepared`) out, nothing run yet.

`RunOptions` holds the parsed `dlrmprof run` options (the report stores them); `prepare(opts)`
checks them and loads what they name (config, trace or Criteo rows); `make_source(prep)` turns
the loaded inputs into the batch source the training loop reads.  One process and every rank
of a hybrid-parallel run start here.  Every bad option is one `UserError` line.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlrmprof.dlrm.config import DLRMConfig, load_config
from dlrmprof.dlrm.runner import check_device, check_table_memory
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


def _check_options(opts: RunOptions) -> None:
    """The checks that need nothing loaded: kinds, modes and counts."""
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


def prepare(opts: RunOptions) -> Prepared:
    """Check every option and load the inputs; UserError (one line) on anything wrong."""
    device = check_device(opts.device)
    from dlrmprof.dlrm.model import BACKENDS, check_backend

    kind = "cuda" if device.startswith("cuda") else "cpu"
    backend = opts.backend or BACKENDS[kind][0]
    check_backend(device, backend)
    _check_options(opts)
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
        config = _load_trace(prep, config, trace_path)
    if opts.data == "kaggle":
        config = _load_criteo(prep, config)
    check_table_memory(config, device)
    prep.config = config
    return prep


def _load_trace(prep: Prepared, config: DLRMConfig, trace_path: str) -> DLRMConfig:
    """Load the trace into `prep` (synthesizing indices for a profile-only file); the config
    with the trace's tables."""
    from dlrmprof.tracegen import Trace

    opts = prep.opts
    trace = Trace.load(trace_path)
    rows = [t.rows for t in trace.tables]
    config = config.with_trace_rows(rows, [t.name for t in trace.tables], str(trace_path))
    check_table_memory(config, prep.device)
    materialized = False
    if not trace.has_indices:
        # profile-only file: synthesize enough samples for warm-up + timed iterations
        need = max(config.batch_size, (opts.iters + opts.warmup) * config.batch_size)
        from dlrmprof.tracegen import materialize

        trace = materialize(trace, num_samples=need, seed=opts.seed,
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
    return config


def _load_criteo(prep: Prepared, config: DLRMConfig) -> DLRMConfig:
    """Read the Criteo rows (the bundled sample unless --input) and split them into `prep`;
    the config with the tables the rows fill."""
    from dlrmprof.dlrm.data import bundled_criteo_sample, load_criteo

    opts = prep.opts
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
    return config


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


def make_source(prep: Prepared):
    """The batch source the prepared options name (trace, uniform random, or Criteo rows)."""
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
