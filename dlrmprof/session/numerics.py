"""What reduced precision costs in accuracy, and what it buys in bytes and time.

`run_numerics` trains the DLRM in fp32 on real Criteo rows (file order: the first rows train,
the last `test_fraction` are held out), then evaluates the same trained model with its
tables looked up in each embedding dtype (`kernels.quant`: post-training, row-wise for
int8 / int4, packed from the fp32 rows) and its MLP GEMMs in each MLP dtype (fp32, bf16),
on the held-out rows.  Per pair: logloss, ROC AUC and accuracy with bootstrap 95%
intervals, their difference from fp32 / fp32 with paired bootstrap intervals (the same
resampled rows for every pair), max and mean |delta p| against fp32 / fp32, table bytes,
bytes a lookup, lookup time and samples/s (measured on this host, one thread).

A difference whose paired interval contains 0 cannot be told apart from fp32 on these rows;
`NumericsResult.statement` says so, pair by pair.  Nothing here prints.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from dlrmprof.errors import UserError

SCHEMA = "dlrmprof-numerics"
SCHEMA_VERSION = 1   # 1: first format
MLP_DTYPES = ("fp32", "bf16")


@dataclass(frozen=True)
class NumericsRow:
    emb_dtype: str
    mlp_dtype: str
    logloss: float
    logloss_ci: tuple
    auc: float | None
    auc_ci: tuple
    accuracy: float
    accuracy_ci: tuple
    auc_delta: float | None            # this pair's AUC - fp32/fp32's (paired bootstrap CI)
    auc_delta_ci: tuple
    logloss_delta: float
    logloss_delta_ci: tuple
    max_abs_dp: float                  # max |p - p_fp32| over the held-out rows
    mean_abs_dp: float
    table_bytes: int                   # all tables in this dtype (counted)
    row_bytes: int                     # bytes a lookup reads, scale and bias included
    lookup_s: float                    # embedding stage, whole held-out set (median pass)
    samples_per_s: float               # held-out rows / wall time of a pass (median)
    separable: bool | None             # paired AUC-delta interval excludes 0 (None: fp32/fp32)

    def to_json(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "NumericsRow":
        kw = {f: d[f] for f in cls.__dataclass_fields__}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()})


@dataclass(frozen=True)
class NumericsResult:
    rows: list
    source: str
    bundled: bool
    train_rows: int
    test_rows: int
    positive_rate: float
    steps: int
    batch_size: int
    epochs: int
    backend: str
    seed: int
    bootstrap: int
    config: dict
    statement: str
    sources: dict = field(default_factory=lambda: {
        "metrics": "measured on the held-out rows; intervals: bootstrap percentiles",
        "bytes": "counted (kernels.quant.row_bytes)",
        "time": "measured, this host, 1 thread, median of the timed passes"})

    def to_json(self) -> dict:
        d = asdict(self)
        d["rows"] = [r.to_json() for r in self.rows]
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **d}

    @classmethod
    def from_json(cls, d: dict) -> "NumericsResult":
        if d.get("schema") != SCHEMA or d.get("schema_version", 0) > SCHEMA_VERSION:
            raise UserError(f"not a {SCHEMA} v{SCHEMA_VERSION} (or older) document")
        kw = {f: d[f] for f in cls.__dataclass_fields__ if f in d}
        kw["rows"] = [NumericsRow.from_json(r) for r in d["rows"]]
        return cls(**kw)

    def row(self, emb: str, mlp: str) -> NumericsRow:
        return next(r for r in self.rows if r.emb_dtype == emb and r.mlp_dtype == mlp)


@dataclass(frozen=True)
class NumericsOptions:
    input: tuple = ()
    input_rows: int | None = None
    test_fraction: float = 0.2
    config: str = "kaggle"
    max_rows: int | None = None
    batch_size: int | None = None
    epochs: int = 3
    backend: str = "numba"
    seed: int = 0
    bootstrap: int = 1000
    repeats: int = 3
    emb_dtypes: tuple = ("fp32", "fp16", "bf16", "int8", "int4")
    mlp_dtypes: tuple = MLP_DTYPES


def check_options(o: NumericsOptions) -> None:
    from dlrmprof.kernels.quant import check_emb_dtype

    for name, v, lo in (("--epochs", o.epochs, 1), ("--bootstrap", o.bootstrap, 100),
                        ("--repeats", o.repeats, 1)):
        if v < lo:
            raise UserError(f"{name} must be >= {lo}, got {v}")
    if not o.emb_dtypes or not o.mlp_dtypes:
        raise UserError("--emb-dtype and --mlp-dtype need at least one value each")
    for d in o.emb_dtypes:
        check_emb_dtype(d)
    for d in o.mlp_dtypes:
        if d not in MLP_DTYPES:
            raise UserError(f"--mlp-dtype: unknown MLP dtype {d!r}; choose fp32 or bf16")
    if o.backend not in ("numba", "torch"):
        raise UserError(f"--backend: numerics runs on the CPU, numba or torch; got {o.backend!r}")


# -- metrics with bootstrap intervals ------------------------------------------------------
def _metrics(y: np.ndarray, p: np.ndarray) -> tuple:
    from dlrmprof.dlrm.train import accuracy, logloss, roc_auc
    a = roc_auc(y, p)
    return logloss(y, p), np.nan if a is None else a, accuracy(y, p)


def bootstrap(y: np.ndarray, probs: list, n_boot: int, seed: int) -> np.ndarray:
    """[pairs, n_boot, 3] (logloss, AUC, accuracy) on the same resampled rows for every
    pair (paired: differences between pairs come from identical resamples)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    out = np.empty((len(probs), n_boot, 3))
    for b in range(n_boot):
        ids = rng.integers(0, n, n)
        yb = y[ids]
        for k, p in enumerate(probs):
            out[k, b] = _metrics(yb, p[ids])
    return out


def _ci(x: np.ndarray) -> tuple:
    x = x[~np.isnan(x)]
    if not len(x):
        return (None, None)
    lo, hi = np.percentile(x, [2.5, 97.5])
    return (float(lo), float(hi))


# -- the study ------------------------------------------------------------------------------
def train_fp32(opts: NumericsOptions, say: Callable[[str], None]):
    """(trainer, prepared run, steps): the DLRM trained in fp32 on the train split."""
    from dlrmprof.dlrm.data import KaggleSource
    from dlrmprof.dlrm.model import build_dlrm
    from dlrmprof.dlrm.runner import set_threads
    from dlrmprof.dlrm.train import DLRMTrain
    from dlrmprof.session.prepare import RunOptions, prepare

    prep = prepare(RunOptions(data="kaggle", mode="train", backend=opts.backend,
                              config=opts.config, max_rows=opts.max_rows,
                              batch_size=opts.batch_size, seed=opts.seed, input=opts.input,
                              input_rows=opts.input_rows, test_fraction=opts.test_fraction,
                              roofline=False, cache_study=False, render=False))
    set_threads(1, prep.backend)
    cfg = prep.config
    dim = cfg.embedding_dim
    for d in opts.emb_dtypes:   # before training, not after
        from dlrmprof.kernels.quant import check_emb_dtype
        check_emb_dtype(d, dim)
    model = build_dlrm(cfg, backend=prep.backend, seed=opts.seed)
    trainer = DLRMTrain(model, cfg.lr)
    source = KaggleSource(prep.train_data, cfg.batch_size)
    steps = opts.epochs * -(-source.N // source.B)
    say(f"training fp32: {steps} steps of batch {source.B} ({opts.epochs} epoch(s) over "
        f"{source.N} rows)")
    for _ in range(steps):
        trainer.train_step(source.next_batch())
    return trainer, prep, steps


def evaluate_pair(trainer, test, emb: str, mlp: str, repeats: int, batch: int = 1024):
    """(probs, lookup s per pass, samples/s) of the trained model in (emb, mlp) on `test`."""
    from dlrmprof.dlrm.model import MLP_DTYPES as TORCH_MLP
    from dlrmprof.profile.timers import OpTimer

    model = trainer.model
    model.sparse_arch.set_emb_dtype(emb)
    for arch in (model.dense_arch, model.over_arch):
        arch.compute_dtype = TORCH_MLP[mlp]
    n = test.labels.shape[0]
    batches = [test.batch(slice(s, min(n, s + batch))) for s in range(0, n, batch)]
    walls, lookups = [], []
    probs = np.empty(n)
    for rep in range(repeats + 1):      # pass 0 warms up (compiles, packs caches)
        timer = OpTimer(device="cpu", threads=1)
        t0 = time.perf_counter()
        s = 0
        for b in batches:
            timer.begin_iteration()
            p = trainer.infer_step(b, timer)
            timer.end_iteration()
            probs[s:s + b.size] = p.double().numpy()
            s += b.size
        if rep:
            walls.append(time.perf_counter() - t0)
            lookups.append(float(np.sum(timer.samples("emb"))))
    return probs.copy(), float(np.median(lookups)), n / float(np.median(walls))


def _statement(rows: list, n: int) -> str:
    alike = [f"{r.emb_dtype}/{r.mlp_dtype}" for r in rows if r.separable is False]
    apart = [f"{r.emb_dtype}/{r.mlp_dtype}" for r in rows if r.separable]
    lo, hi = rows[0].auc_ci
    parts = [] if lo is None else [f"fp32/fp32's own AUC is known only to [{lo:.4f}, {hi:.4f}] "
                                   f"on these {n} rows"]
    if alike:
        parts.append(f"on {n} held-out rows the 95% interval of the AUC difference from "
                     f"fp32/fp32 contains 0 for {', '.join(alike)}: this held-out set is too "
                     f"small to separate them from fp32")
    if apart:
        parts.append(f"{', '.join(apart)}: the paired interval of the AUC difference excludes 0")
    return "; ".join(parts) or "only fp32/fp32 was evaluated"


def run_numerics(opts: NumericsOptions, say: Callable[[str], None] = lambda s: None,
                 progress: Callable[[str], None] = lambda s: None) -> NumericsResult:
    from dlrmprof.kernels.quant import row_bytes

    check_options(opts)
    trainer, prep, steps = train_fp32(opts, say)
    test = prep.test_data
    y = test.labels.astype(np.float64)
    cfg = prep.config
    pairs = [("fp32", "fp32")] + [(e, m) for e in opts.emb_dtypes for m in opts.mlp_dtypes
                                  if (e, m) != ("fp32", "fp32")]
    evals = []
    for e, m in pairs:
        progress(f"evaluating emb {e} x mlp {m}")
        evals.append(evaluate_pair(trainer, test, e, m, opts.repeats))
    trainer.model.sparse_arch.set_emb_dtype("fp32")
    say(f"bootstrap: {opts.bootstrap} resamples of {len(y)} held-out rows")
    boot = bootstrap(y, [p for p, _, _ in evals], opts.bootstrap, opts.seed)
    p0 = evals[0][0]
    m0 = _metrics(y, p0)
    rows = []
    total_rows = sum(t.rows for t in cfg.tables)
    for k, ((e, m), (p, lookup, sps)) in enumerate(zip(pairs, evals)):
        ll, auc, acc = _metrics(y, p)
        d_auc = boot[k, :, 1] - boot[0, :, 1]
        ci = _ci(d_auc)
        separable = None if k == 0 else (ci[0] is not None and (ci[0] > 0 or ci[1] < 0))
        rows.append(NumericsRow(
            emb_dtype=e, mlp_dtype=m, logloss=ll, logloss_ci=_ci(boot[k, :, 0]),
            auc=None if np.isnan(auc) else auc, auc_ci=_ci(boot[k, :, 1]), accuracy=acc,
            accuracy_ci=_ci(boot[k, :, 2]),
            auc_delta=None if np.isnan(auc) else float(auc - m0[1]), auc_delta_ci=ci,
            logloss_delta=float(ll - m0[0]),
            logloss_delta_ci=_ci(boot[k, :, 0] - boot[0, :, 0]),
            max_abs_dp=float(np.max(np.abs(p - p0))), mean_abs_dp=float(np.mean(np.abs(p - p0))),
            table_bytes=total_rows * row_bytes(e, cfg.embedding_dim),
            row_bytes=row_bytes(e, cfg.embedding_dim), lookup_s=lookup, samples_per_s=sps,
            separable=separable))
    info = prep.trace_info
    return NumericsResult(
        rows=rows, source=info["path"], bundled=info["bundled"],
        train_rows=info["train_rows"], test_rows=info["test_rows"],
        positive_rate=float(np.mean(y)), steps=steps, batch_size=cfg.batch_size,
        epochs=opts.epochs, backend=prep.backend, seed=opts.seed, bootstrap=opts.bootstrap,
        config={"preset": cfg.name, "embedding_dim": cfg.embedding_dim,
                "tables": len(cfg.tables), "table_rows": total_rows, "lr": cfg.lr},
        statement=_statement(rows, len(y)))


# -- rendering ------------------------------------------------------------------------------
def _f(x, fmt="{:.4f}"):
    return "-" if x is None else fmt.format(x)


def _iv(ci, fmt="{:.4f}"):
    return "-" if ci[0] is None else f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def markdown(res: NumericsResult) -> str:
    head = (f"DLRM ({res.config['preset']}, D {res.config['embedding_dim']}) trained in fp32 "
            f"for {res.steps} steps of batch {res.batch_size} on {res.train_rows} Criteo rows "
            f"({res.source}{', the bundled sample' if res.bundled else ''}); evaluated on the "
            f"last {res.test_rows} rows (click rate {res.positive_rate:.3f}); 95% intervals from "
            f"{res.bootstrap} bootstrap resamples (paired for the deltas); {res.backend}, "
            f"1 thread.\n\n")
    cols = ("emb", "mlp", "logloss [95%]", "AUC [95%]", "dAUC vs fp32 [95%]", "accuracy [95%]",
            "max|dp|", "mean|dp|", "table MiB", "B/lookup", "lookup ms", "samples/s")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in res.rows:
        lines.append("| " + " | ".join([
            r.emb_dtype, r.mlp_dtype, f"{r.logloss:.4f} {_iv(r.logloss_ci)}",
            f"{_f(r.auc)} {_iv(r.auc_ci)}", f"{_f(r.auc_delta, '{:+.4f}')} "
            f"{_iv(r.auc_delta_ci, '{:+.4f}')}", f"{r.accuracy:.4f} {_iv(r.accuracy_ci)}",
            f"{r.max_abs_dp:.2e}", f"{r.mean_abs_dp:.2e}", f"{r.table_bytes / 2**20:.2f}",
            str(r.row_bytes), f"{r.lookup_s * 1e3:.2f}", f"{r.samples_per_s:,.0f}"]) + " |")
    return head + "\n".join(lines) + f"\n\nNote: {res.statement}.\n"


def plot(res: NumericsResult, path) -> None:
    """AUC delta vs bytes a lookup, marker area by lookup time, one marker shape per MLP
    dtype, the paired 95% interval as error bars; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dlrmprof.fsutil import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4.5))
    tmax = max(r.lookup_s for r in res.rows) or 1.0
    for mlp, marker in (("fp32", "o"), ("bf16", "s")):
        rs = [r for r in res.rows if r.mlp_dtype == mlp and r.auc_delta is not None]
        if not rs:
            continue
        x = [r.row_bytes * (1.03 if mlp == "bf16" else 1.0) for r in rs]
        y = [r.auc_delta for r in rs]
        err = [[max(0.0, r.auc_delta - r.auc_delta_ci[0]) if r.auc_delta_ci[0] is not None
                else 0.0 for r in rs],
               [max(0.0, r.auc_delta_ci[1] - r.auc_delta) if r.auc_delta_ci[1] is not None
                else 0.0 for r in rs]]
        ax.errorbar(x, y, yerr=err, fmt="none", ecolor="gray", alpha=0.6)
        ax.scatter(x, y, s=[30 + 400 * r.lookup_s / tmax for r in rs], marker=marker,
                   alpha=0.7, label=f"MLP {mlp}")
        for r, xi, yi in zip(rs, x, y):
            ax.annotate(r.emb_dtype, (xi, yi), textcoords="offset points", xytext=(6, 4),
                        fontsize=8)
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes a lookup reads (one row, scale and bias included)")
    ax.set_ylabel("ROC AUC - fp32/fp32 AUC (held-out rows)")
    ax.set_title(f"Embedding x MLP dtype on {res.test_rows} held-out Criteo rows "
                 "(marker area: lookup time)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
