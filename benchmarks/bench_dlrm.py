"""DLRM step throughput: dlrmprof's model against a plain torch DLRM, in the same run.

    python benchmarks/bench_dlrm.py [--iters 40] [--repeats 5] [--max-rows 1000000]

Setting (issue #3): the `kaggle` preset (sparse dim 16, bottom 13-512-256-64-16, top
367-512-256-1), tables capped at 1M rows, batch 128, 1 thread (torch and numba).

Variants, interleaved round-robin so that the machine's noise hits them alike:

* ``baseline``: a DLRM written plainly, as the reference `dlrm_s_pytorch.py` does it:
  `nn.EmbeddingBag(mode="sum", sparse=True)` per table, `nn.Sequential` MLPs, interaction by
  `bmm` with the lower-triangle indices rebuilt each call, sigmoid + `BCELoss`,
  `torch.optim.SGD` over dense and sparse gradients;
* ``numba`` / ``torch``: `dlrmprof.dlrm` (DLRM + DLRMTrain) with that kernel backend, one
  kernel call per table (as `dlrmprof run` times them); ``numba+f`` / ``torch+f``: the same
  with ``fused_tables=True`` (all tables in one call over a combined table, TBE-style);
* ``mlp-only``: the bottom and top MLPs alone (same shapes, interaction output replaced by a
  constant input): the GEMM floor of a training step on this host, for scale;
* ``numba-bf16`` (only with ``--bf16``): ``numba`` with ``build_dlrm(mlp_dtype="bf16")``, the
  MLP GEMMs in bfloat16 on copies of fp32 master weights.  It changes the numbers (the
  default path is fp32 and matches plain autograd); listed apart from the targets.

Model-only figures time the step on pre-cut batches; the end-to-end figure includes cutting
each batch from a trace file (`TraceSource`: indices from the trace, synthetic dense/labels).
The trace is synthesized with the trace toolkit from the locality of the bundled Criteo
sample, with each table's rows set to the capped Kaggle cardinality.

Timed on the benchmark harness (dlrmprof.profile.harness): every variant runs `--iters`
steps per round, all variants in each round (order rotated round by round).  Before timing,
the first step of each of dlrmprof's variants must give the same loss (train) and
predictions (infer) as the others on the same batch (same seed, same model).

Reported: samples/s per variant (median over clean rounds: rounds in which other processes
left this run's cores alone; all rounds when too few are clean), the fastest round, the
ratio to the baseline (median of per-round ratios), other processes' CPU use while
measuring, and the issue's absolute targets (23k train model-only, 8k train end-to-end,
55k inference, all at 1 thread).  Results: benchmarks/results/dlrm.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from dlrmprof.dlrm.config import load_config  # noqa: E402
from dlrmprof.dlrm.data import TraceSource  # noqa: E402
from dlrmprof.dlrm.model import build_dlrm  # noqa: E402
from dlrmprof.dlrm.train import DLRMTrain  # noqa: E402
from dlrmprof.profile import harness  # noqa: E402

TARGETS = {"train_model": 23_000, "train_e2e": 8_000, "infer": 55_000}
SCHEMA = "dlrmprof.bench.dlrm/1"
OUT = harness.results_path(__file__, "dlrm.json")


# -- the plain baseline (reference-script style) ---------------------------------------------
class PlainDLRM(nn.Module):
    def __init__(self, cfg, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embs = nn.ModuleList()
        for t in cfg.tables:
            e = nn.EmbeddingBag(t.rows, t.dim, mode="sum", sparse=True)
            b = 1.0 / np.sqrt(t.rows)
            with torch.no_grad():
                e.weight.uniform_(-b, b, generator=g)
            self.embs.append(e)
        self.bot = self._mlp(cfg.bottom_mlp, sigmoid_last=False)
        self.top = self._mlp(cfg.top_layers, sigmoid_last=True)

    @staticmethod
    def _mlp(sizes, sigmoid_last):
        layers = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            last = i == len(sizes) - 2
            layers.append(nn.Sigmoid() if (last and sigmoid_last) else nn.ReLU())
        return nn.Sequential(*layers)

    def interact(self, x, ly):
        (batch_size, d) = x.shape
        T = torch.cat([x] + ly, dim=1).view((batch_size, -1, d))
        Z = torch.bmm(T, torch.transpose(T, 1, 2))
        _, ni, nj = Z.shape
        li = torch.tensor([i for i in range(ni) for j in range(i)])
        lj = torch.tensor([j for i in range(nj) for j in range(i)])
        return torch.cat([x, Z[:, li, lj]], dim=1)

    def forward(self, dense, idx, off):
        x = self.bot(dense)
        ly = [e(i, o) for e, i, o in zip(self.embs, idx, off)]
        return self.top(self.interact(x, ly)).squeeze(1)


def plain_inputs(batch):
    return (torch.from_numpy(batch.dense), [torch.from_numpy(i) for i in batch.indices],
            [torch.from_numpy(o[:-1]) for o in batch.offsets], torch.from_numpy(batch.labels))


# -- the trace -------------------------------------------------------------------------------
def kaggle_trace(cfg, num_samples, seed, path):
    from dlrmprof.dlrm.data import bundled_criteo_sample
    from dlrmprof.tracegen import Trace, synthesize_trace
    from dlrmprof.tracegen.generate import profiles_from_criteo
    from dlrmprof.tracegen.readers import read_criteo

    profiles = profiles_from_criteo(read_criteo([bundled_criteo_sample()]))
    profiles = [dataclasses.replace(p, rows=t.rows) for p, t in zip(profiles, cfg.tables)]
    tr = synthesize_trace(profiles, source={"kind": "kaggle-sample", "note": "bench_dlrm"},
                          num_samples=num_samples, seed=seed, compute_fidelity=False)
    tr.save(path)
    return Trace.load(path)


# -- timing ----------------------------------------------------------------------------------
def same_results(out: dict) -> None:
    """dlrmprof's variants on batch 0, first step from the same initial model: the same
    train loss and the same inference predictions, whichever kernel backend or table layout
    (the plain baseline has its own initialisation and is only required to be finite)."""
    for mode in ("train", "infer"):
        ours = {k: v for k, v in out.items() if k.startswith(mode + "/")
                and k.split("/")[1] not in ("baseline", "mlp-only")
                and not k.endswith("bf16")}
        vals = {k: (v[0] if isinstance(v, tuple) else v) for k, v in ours.items()}
        first = next(iter(vals.values()))
        for k, v in vals.items():
            assert torch.allclose(v.float(), first.float(), rtol=1e-4, atol=1e-5), \
                f"{k} differs from {next(iter(vals))} on the first batch"
    for k, v in out.items():
        if v is not None:
            t = v[0] if isinstance(v, tuple) else v
            assert torch.isfinite(torch.as_tensor(t)).all(), f"{k}: non-finite result"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=20, help="iterations per variant per round")
    ap.add_argument("--repeats", type=int, default=15, help="rounds (variants interleaved)")
    ap.add_argument("--max-rows", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=OUT, help=f"results JSON (default {OUT})")
    ap.add_argument("--bf16", action="store_true",
                    help="also time the opt-in bf16-MLP model (different numerics)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    import numba
    numba.set_num_threads(args.threads)
    cfg = load_config("kaggle", max_rows=args.max_rows, batch_size=args.batch_size)
    B, n = cfg.batch_size, args.iters
    print(f"kaggle preset, tables capped at {args.max_rows} rows "
          f"({sum(t.nbytes for t in cfg.tables) / 2**20:.0f} MiB), batch {B}, "
          f"{args.threads} thread(s); {n} iterations x {args.repeats} repeats, interleaved")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        trace = kaggle_trace(cfg, num_samples=B * n, seed=args.seed,
                             path=os.path.join(tmp, "bench.npz"))
        print(f"trace: {trace.num_samples} samples synthesized from the bundled sample's "
              f"locality ({time.perf_counter() - t0:.1f} s)")
    cfg = cfg.with_trace_rows([t.rows for t in trace.tables])
    rows = [t.rows for t in cfg.tables]
    names = [t.name for t in cfg.tables]
    src = TraceSource(trace, B, cfg.dense_features, rows, names, seed=args.seed)
    batches = [src.next_batch() for _ in range(n)]
    batches = [dataclasses.replace(b, dense=b.dense.copy(), labels=b.labels.copy())
               for b in batches]  # TraceSource reuses two buffers

    ours = {be: DLRMTrain(build_dlrm(cfg, backend=be, seed=args.seed), cfg.lr)
            for be in ("numba", "torch")}
    for be in ("numba", "torch"):  # all tables in one kernel call (no per-table figures)
        ours[be + "+f"] = DLRMTrain(build_dlrm(cfg, backend=be, seed=args.seed,
                                               fused_tables=True), cfg.lr)
    if args.bf16:
        ours["numba-bf16"] = DLRMTrain(build_dlrm(cfg, backend="numba", seed=args.seed,
                                                  mlp_dtype="bf16"), cfg.lr)
    plain = PlainDLRM(cfg, args.seed)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=cfg.lr)
    plain_loss = nn.BCELoss()
    plain_in = [plain_inputs(b) for b in batches]

    def plain_train(k):
        dense, idx, off, y = plain_in[k]
        p = plain(dense, idx, off)
        loss = plain_loss(p, y)
        plain_opt.zero_grad()
        loss.backward()
        plain_opt.step()

    def plain_infer(k):
        dense, idx, off, _ = plain_in[k]
        with torch.no_grad():
            plain(dense, idx, off)

    bot = nn.Sequential(*[m for m in PlainDLRM._mlp(cfg.bottom_mlp, False)])
    top = nn.Sequential(*[m for m in PlainDLRM._mlp(cfg.top_layers, False)][:-1])
    mlp_params = list(bot.parameters()) + list(top.parameters())
    zconst = torch.randn(B, cfg.top_input - cfg.embedding_dim)
    bce = nn.BCEWithLogitsLoss()

    def mlp_train(k):
        dense, _, _, y = plain_in[k]
        x = bot(dense)
        loss = bce(top(torch.cat([x, zconst], 1)).squeeze(1), y)
        loss.backward()
        with torch.no_grad():
            torch._foreach_add_(mlp_params, [p.grad for p in mlp_params], alpha=-cfg.lr)
        for p in mlp_params:
            p.grad = None

    def mlp_infer(k):
        dense = plain_in[k][0]
        with torch.no_grad():
            top(torch.cat([bot(dense), zconst], 1))

    e2e_src = {be: TraceSource(trace, B, cfg.dense_features, rows, names, seed=args.seed)
               for be in ours}

    variants = {
        "train/baseline": plain_train,
        "train/mlp-only": mlp_train,
        "infer/baseline": plain_infer,
        "infer/mlp-only": mlp_infer,
    }
    for be, tr in ours.items():
        variants[f"train/{be}"] = (lambda tr: lambda k: tr.train_step(batches[k]))(tr)
        variants[f"infer/{be}"] = (lambda tr: lambda k: tr.infer_step(batches[k]))(tr)
        variants[f"train-e2e/{be}"] = (lambda tr, s: lambda k: tr.train_step(s.next_batch()))(
            tr, e2e_src[be])
        variants[f"infer-e2e/{be}"] = (lambda tr, s: lambda k: tr.infer_step(s.next_batch()))(
            tr, e2e_src[be])
    base_of = {k: k.split("/")[0].split("-")[0] + "/baseline" for k in variants}
    try:
        cmp = harness.compare(variants, baseline="train/baseline", check=same_results,
                              rounds=args.repeats, warmup=min(5, n), nargs=n, calls=n,
                              threads=args.threads, window_s=0.0, label="kaggle preset",
                              params=dict(max_rows=args.max_rows, batch=B, iters=n,
                                          threads=args.threads),
                              baseline_of={k: v for k, v in base_of.items() if k != v})
    except harness.CheckFailed as exc:
        raise SystemExit(f"bench_dlrm: {exc}") from None
    report(cmp, args, ours, B)
    targets = {}
    for be in ours:
        for label, key, target in (("train_model", f"train/{be}", TARGETS["train_model"]),
                                   ("train_e2e", f"train-e2e/{be}", TARGETS["train_e2e"]),
                                   ("infer", f"infer/{be}", TARGETS["infer"])):
            targets[f"{be} {label}"] = {"samples_s": B / cmp.median_s(key), "target": target}
    doc = harness.results_doc(
        SCHEMA, comparisons=[cmp], targets=targets,
        source="measured (perf_counter over --iters steps per variant per round, "
               "interleaved rounds; speed-up = baseline time / variant time)",
        summary={k: round(v["samples_s"]) for k, v in targets.items()})
    print(f"wrote {harness.write_results(args.out, doc)}")
    return 0


def report(cmp: harness.Comparison, args, ours, B) -> None:
    """Print samples/s per variant, ratios to the baselines and the issue's targets."""
    def rate(key):   # samples/s, median over the rounds the statistics use
        return B / cmp.median_s(key)

    def best(key):
        return B / min(cmp.samples_s[key])

    print(f"\n{cmp.clean_rounds} of {cmp.rounds} rounds clean (other processes left this "
          f"run's cores alone); figures below: median over "
          f"{'clean rounds' if cmp.used == 'clean' else 'all rounds (too few clean ones)'}; "
          f"best = fastest round")
    print(f"{'mode':<10} {'variant':<10} {'samples/s':>10} {'best':>9} {'x baseline':>10} "
          f"{'quartiles':>12}")
    for key in sorted(cmp.names):
        mode, variant = key.split("/")
        if key in cmp.candidates:
            r = cmp.speedup(key)
            x, q = f"{r.median:10.2f}", f"{r.q25:.2f}-{r.q75:.2f}"
        else:
            x, q = f"{'1.00':>10}", ""
        print(f"{mode:<10} {variant:<10} {rate(key):10,.0f} {best(key):9,.0f} {x} {q:>12}")
    print(f"other processes' CPU use: {cmp.other_cores_mean() or 0:.2f} cores on average")
    print("\ntargets (issue #3, 1 thread; fp32 model, the numbers of plain autograd):")
    for be in ours:
        if be.endswith("bf16"):
            continue
        for label, key, target in (("train model-only", f"train/{be}", TARGETS["train_model"]),
                                   ("train end-to-end", f"train-e2e/{be}", TARGETS["train_e2e"]),
                                   ("inference", f"infer/{be}", TARGETS["infer"])):
            got, b = rate(key), best(key)
            print(f"  {be:<7} {label:<17} {got:9,.0f} samples/s vs {target:,}: "
                  f"{'met' if got >= target else 'NOT met'} ({got / target:.2f}x; fastest "
                  f"round {b:,.0f}, {b / target:.2f}x)")
    print(f"  for scale: the MLPs alone reach {rate('train/mlp-only'):,.0f} (train) and "
          f"{rate('infer/mlp-only'):,.0f} (infer) samples/s on this host in this run")
    if args.bf16:
        print(f"  opt-in bf16 MLPs (different numerics, not counted above): train "
              f"{rate('train/numba-bf16'):,.0f}, train end-to-end "
              f"{rate('train-e2e/numba-bf16'):,.0f}, inference "
              f"{rate('infer/numba-bf16'):,.0f} samples/s")

if __name__ == "__main__":
    sys.exit(main())
