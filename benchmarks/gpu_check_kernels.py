"""Embedding-bag kernels on the GPU for benchmarks/gpu_check.sh (issue #6): correctness on
fresh random inputs, then forward and backward GB/s against the device's measured copy
bandwidth.

    python3 benchmarks/gpu_check_kernels.py check --out kernels_check.json [--trials 24]
    python3 benchmarks/gpu_check_kernels.py bench --out embedding_bench.json \
        [--md embedding_bench.md] [--deadline-s 150] [--grid full|reduced|tiny]

`check` compares every backend that runs on the device (`torch` on CUDA tensors and
`numba-cuda`) with `dlrmprof.kernels.reference` (numpy, float64) on freshly drawn random
bags: random R, D, bag lengths (empty bags included), repeated rows inside and across bags,
int32 and int64 indices, sum and mean, with and without per-sample weights; the seed is
printed so a failure can be replayed (--seed).  Forward: relative error
||out - ref|| / ||ref|| < 1e-5, and every element written (see `poison`).  Fused sparse SGD:
the update of every touched row against the reference update, and untouched rows unchanged.
numba-cuda must also refuse an out-of-range index (IndexError) and leave the table untouched
(torch on CUDA would trip a device assert that poisons the context, so it is not tried).

`bench` times, per cell (R rows, D dim, L lookups per bag, B bags, uniform or Zipf(1.1)
indices), the forward (`embedding_bag`) and the fused backward (`embedding_bag_sgd`):

* ``torch``: the backend function `dlrmprof run` calls (F.embedding_bag; index_select +
  index_add_ for the update);
* ``numba-cuda``: the same, including the backend's index checks (a device-to-host read that
  synchronises: part of the real per-call cost);
* ``numba-cuda kernel``: the numba kernel launch alone (its inputs prepared once, through
  the backend's lean launcher, no error read), i.e. what the kernel itself reaches.

Each cell is checked before it is timed: forward on 256 random bags against a float64
gather-sum, backend against backend on the whole output, and the SGD update of up to 2048
fresh bags against a float64 reference (touched rows; untouched rows must stay).  A cell that
fails its check is reported and not timed.  Timing: CUDA events around one call; before each
timed call a write of 2x the L2 evicts the table rows (cold L2: repeated calls over the same
indices must not measure the cache) and a short GPU sleep covers the host's launch time.
Median of 5-20 calls after 2 warm-ups.  Bytes are `dlrmprof.kernels.cost` (every lookup
counted: the "effective bandwidth" convention of embedding benchmarks; Zipf indices re-read
hot rows from L2 inside one call, so they can exceed the copy bandwidth).  The copy
bandwidth (read + write) and the GEMM rates come from `dlrmprof.profile.ceilings.probe_cuda`
(full size) in the same process.

Without a GPU, both subcommands exit 3 with one line saying so, unless ``--device cpu`` asks
for a self-test of the harness on the CPU (torch CPU tensors and the numba backend: not GPU
figures; `tests/test_gpu_check.py` uses it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NO_GPU = 3          # exit code: nothing to do here (no GPU), not a failure of the kernels
FWD_TOL = 1e-5      # ||out - ref|| / ||ref||, float32 sums of <= a few hundred terms
SGD_TOL = 1.0       # max |update error| / its float32 rounding bound (see sgd_bound)
GOAL = 0.80         # of the measured copy bandwidth, for D >= 64


def say(msg: str) -> None:
    print(msg, flush=True)


def write_json(path: str | None, doc: dict) -> None:
    if not path:
        return
    from dlrmprof.fsutil import atomic_write_text
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1, default=float))


def rel_err(got, want) -> float:
    """||got - want|| / ||want|| in float64; inf for NaN/inf anywhere (NaN never passes)."""
    import torch
    g = got.double() if isinstance(got, torch.Tensor) else torch.from_numpy(np.asarray(got, np.float64))
    w = want.double() if isinstance(want, torch.Tensor) else torch.from_numpy(np.asarray(want, np.float64))
    g, w = g.to(w.device), w
    if not bool(torch.isfinite(g).all()):
        return math.inf
    den = float(torch.linalg.vector_norm(w))
    num = float(torch.linalg.vector_norm(g - w))
    return num / den if den > 0 else num


EPS32 = float(np.finfo(np.float32).eps)


def sgd_bound(got_delta, want_delta, before, abs_sum, count) -> dict:
    """Compare an SGD update with the float64 reference, element by element, against the
    rounding a float32 table can make: k adds (in any order, atomics included) into a row
    whose partial sums stay within |w| + sum|c_i| err by about eps32 * sqrt(k) * that;
    4x margin.  A missing, doubled or misscaled contribution c is caught unless
    |c| < 4 eps32 sqrt(k) (|w| + sum|c_i|), i.e. unless it hides inside a very hot row.
    All arguments float64 torch tensors [rows, D] (count: [rows])."""
    import torch
    if not bool(torch.isfinite(got_delta).all()):
        return {"ok": False, "max_err_over_bound": math.inf, "rel_err": math.inf}
    tol = 4 * EPS32 * torch.sqrt(count.double() + 1)[:, None] * (before.abs() + abs_sum)
    tol = tol.clamp_min(1e-300)
    ratio = float(((got_delta - want_delta).abs() / tol).max()) if got_delta.numel() else 0.0
    return {"ok": ratio <= 1.0, "max_err_over_bound": ratio,
            "rel_err": rel_err(got_delta, want_delta)}


def want_device(name: str):
    """'cuda' if usable, else None (the caller says 'no GPU'); 'cpu' for the self-test."""
    import torch
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        return None
    return torch.device("cuda")


def no_gpu(what: str) -> int:
    import torch
    say(f"{what}: SKIP: no GPU (torch {torch.__version__} sees no CUDA device; "
        f"CUDA build: {torch.version.cuda or 'no'})")
    return NO_GPU


def poison(shape, device) -> None:
    """Fill a block of the output's size with NaN and free it: torch's caching allocator
    usually hands that block to the next allocation of the same size (the backend's output),
    so an element the kernel never wrote stays NaN and fails the check.  Best effort."""
    import torch
    p = torch.full(shape, float("nan"), dtype=torch.float32, device=device)
    del p


def backends_here(device) -> tuple[list[str], dict]:
    """Backends to exercise on this device, and why any expected one is missing."""
    from dlrmprof import kernels
    from dlrmprof.kernels import _unavailable
    if device.type == "cpu":
        return ["torch", "numba"], {}
    have = kernels.backends("embedding_bag")
    missing = {}
    out = ["torch"]
    if "numba-cuda" in have:
        out.append("numba-cuda")
    else:
        missing["numba-cuda"] = _unavailable("numba-cuda")
    return out, missing


def as_backend(x, backend: str, device):
    """numpy array -> what the backend takes on this device."""
    import torch
    if backend == "numba":
        return np.array(x, copy=True)
    return torch.from_numpy(np.array(x, copy=True)).to(device)


def to_numpy(x) -> np.ndarray:
    import torch
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


# ------------------------------------------------------------------------------------ check

def random_case(rng: np.random.Generator) -> dict:
    R = int(rng.choice([1, 7, 1000, 50_000, 200_000]))
    D = int(rng.choice([1, 3, 16, 17, 32, 64, 100, 128, 256]))
    R = max(1, min(R, 12_000_000 // D))            # the reference's float64 delta stays small
    B = int(rng.integers(1, 3000))
    max_len = int(rng.choice([1, 5, 20, 100]))
    max_len = max(1, min(max_len, 4_000_000 // (B * D) or 1))
    lengths = rng.integers(0, max_len + 1, size=B)
    lengths[rng.random(B) < 0.1] = 0                # empty bags
    nnz = int(lengths.sum())
    if rng.random() < 0.5:
        ids = rng.integers(0, R, size=nnz)
    else:                                           # skewed: many repeats across bags
        ids = (rng.zipf(1.3, size=nnz) - 1) % R
    if nnz >= 3:                                    # a row repeated inside one bag
        ids[1] = ids[0]
    idt = np.int32 if rng.random() < 0.5 else np.int64
    return {"R": R, "D": D, "B": B, "max_len": max_len, "nnz": nnz,
            "indices": ids.astype(idt), "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(idt),
            "weight": rng.standard_normal((R, D)).astype(np.float32),
            "psw": rng.standard_normal(nnz).astype(np.float32) if rng.random() < 0.5 else None,
            "mode": "mean" if rng.random() < 0.5 else "sum",
            "grad": rng.standard_normal((B, D)).astype(np.float32),
            "lr": float(rng.choice([0.01, 0.3, 1.0])), "index_dtype": np.dtype(idt).name}


def check_case(case: dict, backend: str, device) -> dict:
    from dlrmprof import kernels
    from dlrmprof.kernels import reference
    w64 = case["weight"].astype(np.float64)
    p64 = None if case["psw"] is None else case["psw"].astype(np.float64)
    res = {"backend": backend}
    t = {k: (None if case[k] is None else as_backend(case[k], backend, device))
         for k in ("weight", "indices", "offsets", "psw", "grad")}
    if backend != "numba":
        poison((case["B"], case["D"]), device)
    got = kernels.embedding_bag(t["weight"], t["indices"], t["offsets"], mode=case["mode"],
                                per_sample_weights=t["psw"], backend=backend)
    want = reference.embedding_bag(w64, case["indices"], case["offsets"], case["mode"], p64)
    res["fwd_rel_err"] = rel_err(to_numpy(got), want)
    res["fwd_ok"] = res["fwd_rel_err"] < FWD_TOL
    kernels.embedding_bag_sgd(t["weight"], t["indices"], t["offsets"], t["grad"], case["lr"],
                              mode=case["mode"], per_sample_weights=t["psw"], backend=backend)
    after = to_numpy(t["weight"]).astype(np.float64)
    want_w = w64.copy()
    reference.embedding_bag_sgd(want_w, case["indices"], case["offsets"],
                                case["grad"].astype(np.float64), case["lr"], case["mode"], p64)
    idx64 = case["indices"].astype(np.int64)
    touched = np.unique(idx64)
    mask = np.ones(case["R"], bool)
    mask[touched] = False
    abs_sum = np.zeros((case["R"], case["D"]))      # sum over lookups of |lr * g * w_p / len|
    reference.embedding_bag_sgd(abs_sum, case["indices"], case["offsets"],
                                np.abs(case["grad"].astype(np.float64)), -abs(case["lr"]),
                                case["mode"], None if p64 is None else np.abs(p64))
    count = np.bincount(idx64, minlength=case["R"])
    import torch
    T = lambda x: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))  # noqa: E731
    b = sgd_bound(T(after[touched] - w64[touched]), T(want_w[touched] - w64[touched]),
                  T(w64[touched]), T(abs_sum[touched]), torch.from_numpy(count[touched]))
    res["sgd_rel_err"] = b["rel_err"]
    res["sgd_err_over_bound"] = b["max_err_over_bound"]
    res["untouched_same"] = bool(np.array_equal(after[mask], w64[mask]))
    res["sgd_ok"] = bool(b["ok"] and np.all(np.isfinite(after)) and res["untouched_same"])
    return res


def check_out_of_range(device) -> dict:
    """numba-cuda: an out-of-range index raises IndexError; the SGD leaves the table as it was."""
    import torch

    from dlrmprof import kernels
    w = torch.ones((9, 4), device=device)
    idx = torch.tensor([0, 9], device=device)
    off = torch.tensor([0, 2], device=device)
    out = {}
    for name, fn in (("forward", lambda: kernels.embedding_bag(w, idx, off, backend="numba-cuda")),
                     ("sgd", lambda: kernels.embedding_bag_sgd(
                         w, idx, off, torch.ones((1, 4), device=device), 1.0,
                         backend="numba-cuda"))):
        try:
            fn()
            out[name] = "not refused"
        except IndexError:
            out[name] = "IndexError"
    out["table_untouched"] = bool((w == 1).all())
    out["ok"] = out["forward"] == out["sgd"] == "IndexError" and out["table_untouched"]
    return out


def cmd_check(args) -> int:
    t0 = time.perf_counter()
    device = want_device(args.device)
    if device is None:
        return no_gpu("kernel check")
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    rng = np.random.default_rng(seed)
    backends, missing = backends_here(device)
    say(f"kernel check on {device} ({gpu_name(device)}): backends {', '.join(backends)}; "
        f"{args.trials} fresh random cases, seed {seed} (replay: --seed {seed})")
    for b, why in missing.items():
        say(f"  {b}: NOT AVAILABLE: {why}")
    rows, fails = [], 0
    for i in range(args.trials):
        case = random_case(rng)
        desc = (f"R={case['R']} D={case['D']} B={case['B']} nnz={case['nnz']} "
                f"{case['mode']}{' weighted' if case['psw'] is not None else ''} "
                f"{case['index_dtype']} lr={case['lr']}")
        for b in backends:
            try:
                r = check_case(case, b, device)
            except Exception as exc:  # a crash is a failed check, reported with the case
                r = {"backend": b, "fwd_ok": False, "sgd_ok": False,
                     "error": f"{type(exc).__name__}: {exc}"}
            r["case"] = desc
            rows.append(r)
            ok = r["fwd_ok"] and r["sgd_ok"]
            fails += not ok
            if not ok or args.verbose:
                say(f"  {'ok  ' if ok else 'FAIL'} {b:<10} {desc}: fwd err "
                    f"{r.get('fwd_rel_err', float('nan')):.1e}, sgd err "
                    f"{r.get('sgd_rel_err', float('nan')):.1e} (err/bound "
                    f"{r.get('sgd_err_over_bound', float('nan')):.2f})"
                    + (f", untouched rows {'same' if r.get('untouched_same') else 'CHANGED'}"
                       if 'untouched_same' in r else "")
                    + (f" [{r['error']}]" if "error" in r else ""))
    oor = None
    if "numba-cuda" in backends:
        try:
            oor = check_out_of_range(device)
        except Exception as exc:
            oor = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        fails += not oor["ok"]
        say(f"  {'ok  ' if oor['ok'] else 'FAIL'} numba-cuda out-of-range index: {oor}")
    per = {}
    for b in backends:
        mine = [r for r in rows if r["backend"] == b]
        per[b] = {"cases": len(mine), "passed": sum(r["fwd_ok"] and r["sgd_ok"] for r in mine),
                  "max_fwd_rel_err": max((r.get("fwd_rel_err", math.inf) for r in mine),
                                         default=None),
                  "max_sgd_rel_err": max((r.get("sgd_rel_err", math.inf) for r in mine),
                                         default=None),
                  "max_sgd_err_over_bound": max((r.get("sgd_err_over_bound", math.inf)
                                                 for r in mine), default=None)}
        say(f"  {b:<10} {per[b]['passed']}/{per[b]['cases']} cases passed; worst fwd err "
            f"{per[b]['max_fwd_rel_err']:.1e} (tolerance {FWD_TOL:.0e}); worst sgd update "
            f"error {per[b]['max_sgd_rel_err']:.1e} relative, "
            f"{per[b]['max_sgd_err_over_bound']:.2f} of its float32 rounding bound (<= 1)")
    ok = fails == 0 and not (missing and device.type == "cuda")
    doc = {"device": str(device), "gpu": gpu_name(device), "seed": seed, "trials": args.trials,
           "backends": backends, "missing_backends": missing, "per_backend": per,
           "out_of_range": oor, "failures": fails, "ok": ok,
           "tolerances": {"forward_rel_err": FWD_TOL, "sgd_err_over_bound": SGD_TOL},
           "elapsed_s": time.perf_counter() - t0, "cases": rows,
           "note": None if device.type == "cuda" else
           "CPU self-test of the harness (torch CPU tensors, numba): not a GPU result"}
    write_json(args.out, doc)
    say(f"kernel check: {'PASS' if ok else 'FAIL'} ({fails} failed; "
        f"{time.perf_counter() - t0:.1f} s)" + (f"; missing: {', '.join(missing)}" if missing
                                                 else ""))
    return 0 if ok else 1


def gpu_name(device) -> str:
    import torch
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "CPU (harness self-test)"


# ------------------------------------------------------------------------------------ bench

GRIDS = {
    # tiers in priority order: a deadline cuts the later ones first
    "full": [
        {"R": [10_000_000], "D": [16, 64, 128, 256], "L": [1, 20, 100], "B": [65536],
         "dist": ["uniform", "zipf"]},
        {"R": [10_000_000], "D": [16, 64, 128, 256], "L": [1, 20, 100], "B": [2048],
         "dist": ["uniform", "zipf"]},
        {"R": [10_000_000], "D": [64, 256], "L": [20], "B": [8192, 16384, 32768],
         "dist": ["uniform", "zipf"]},
        {"R": [1_000_000], "D": [16, 64, 128, 256], "L": [1, 20, 100], "B": [65536, 2048],
         "dist": ["uniform", "zipf"]},
    ],
    "reduced": [
        {"R": [10_000_000], "D": [16, 64, 128, 256], "L": [1, 20, 100], "B": [65536],
         "dist": ["uniform", "zipf"]},
        {"R": [10_000_000], "D": [64, 256], "L": [20], "B": [2048, 16384],
         "dist": ["uniform", "zipf"]},
        {"R": [1_000_000], "D": [64], "L": [20], "B": [65536], "dist": ["uniform", "zipf"]},
    ],
    # harness self-test (CPU or a quick GPU smoke run): seconds
    "tiny": [
        {"R": [20_000], "D": [16, 64], "L": [1, 20], "B": [256], "dist": ["uniform", "zipf"]},
    ],
}


def grid_cells(name: str) -> list[dict]:
    cells, seen = [], set()
    for tier_no, tier in enumerate(GRIDS[name]):
        tier_cells = []
        for R in tier["R"]:
            for D in tier["D"]:
                for B in tier["B"]:
                    for L in tier["L"]:
                        for dist in tier["dist"]:
                            key = (R, D, L, B, dist)
                            if key not in seen:
                                seen.add(key)
                                tier_cells.append({"R": R, "D": D, "L": L, "B": B,
                                                   "dist": dist, "tier": tier_no})
        # one table per (R, D) at a time: keep cells of a table together inside a tier
        tier_cells.sort(key=lambda c: (c["R"], c["D"]))
        cells += tier_cells
    return cells


class Timer:
    """Cold-L2 timing of single calls (CUDA events), or perf_counter on the CPU."""

    SLEEP_CYCLES = 200_000   # ~0.1 ms at ~2 GHz: covers the host's launch of the timed call

    def __init__(self, device):
        import torch
        self.torch = torch
        self.cuda = device.type == "cuda"
        self.l2 = None
        self.flush = None
        if self.cuda:
            props = torch.cuda.get_device_properties(device)
            self.l2 = int(getattr(props, "L2_cache_size", 0) or 0) or (50 << 20)
            self.flush = torch.empty(2 * self.l2 // 4, dtype=torch.float32, device=device)
        self.sleep = getattr(torch.cuda, "_sleep", None) if self.cuda else None

    def measure(self, fn, warmup=2, min_reps=5, max_reps=20, budget_s=0.25) -> dict:
        torch = self.torch
        for _ in range(warmup):
            fn()
        if self.cuda:
            torch.cuda.synchronize()
        samples = []
        t_end = time.perf_counter() + budget_s
        while len(samples) < max_reps and (len(samples) < min_reps or time.perf_counter() < t_end):
            if self.cuda:
                self.flush.zero_()
                if self.sleep is not None:
                    self.sleep(self.SLEEP_CYCLES)
                s = torch.cuda.Event(enable_timing=True)
                e = torch.cuda.Event(enable_timing=True)
                s.record()
                fn()
                e.record()
                e.synchronize()
                samples.append(s.elapsed_time(e) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t0)
        q10, q50, q90 = np.percentile(samples, [10, 50, 90])
        return {"median_s": float(q50), "p10_s": float(q10), "p90_s": float(q90),
                "n": len(samples), "samples_s": [float(x) for x in samples]}


class Indices:
    """Uniform or bounded Zipf(s) row ids, drawn on the device.  Zipf ranks are mapped to rows
    through a random permutation, so the hot rows are scattered over the table."""

    def __init__(self, device, seed: int, s: float = 1.1):
        import torch
        self.torch = torch
        self.device = device
        self.s = s
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self._zipf = {}

    def draw(self, R: int, n: int, dist: str):
        torch = self.torch
        if dist == "uniform":
            return torch.randint(0, R, (n,), device=self.device, generator=self.gen)
        if R not in self._zipf:
            self._zipf.clear()
            k = torch.arange(1, R + 1, dtype=torch.float64, device=self.device)
            cdf = torch.cumsum(k.pow_(-self.s), 0)
            cdf /= cdf[-1].clone()
            perm = torch.randperm(R, device=self.device, generator=self.gen)
            self._zipf[R] = (cdf, perm)
        cdf, perm = self._zipf[R]
        u = torch.rand(n, dtype=torch.float64, device=self.device, generator=self.gen)
        ranks = torch.searchsorted(cdf, u).clamp_(max=R - 1)
        return perm[ranks]


def fwd_reference(w, idx, L: int, bags):
    """float64 gather-sum of the sampled bags (constant bag length L)."""
    import torch
    pos = (bags[:, None] * L + torch.arange(L, device=bags.device)).reshape(-1)
    return w.index_select(0, idx[pos]).double().view(len(bags), L, -1).sum(1)


def sgd_check(w, backend, ind, R, D, L, Bc, dist, device) -> dict:
    """Update of Bc fresh bags vs a float64 reference (touched rows, within the float32
    rounding bound of `sgd_bound`); untouched control rows must stay exactly as they were."""
    import torch

    from dlrmprof import kernels
    n = Bc * L
    idx = ind.draw(R, n, dist)
    off = torch.arange(0, n + 1, L, device=device)
    g = torch.randn(Bc, D, device=device, generator=ind.gen)
    lr = 0.5
    touched, inv = torch.unique(idx, return_inverse=True)
    before = w.index_select(0, touched).double()
    ctrl = torch.randint(0, R, (1024,), device=device, generator=ind.gen)
    ctrl = ctrl[~torch.isin(ctrl, touched)]
    ctrl_before = w.index_select(0, ctrl).clone()
    if backend == "numba":
        kernels.embedding_bag_sgd(w.numpy(), idx.numpy(), off.numpy(), g.numpy(), lr,
                                  backend=backend)
    else:
        kernels.embedding_bag_sgd(w, idx, off, g, lr, backend=backend)
    bag = torch.arange(n, device=device) // L
    gb = g.double().index_select(0, bag)
    want = torch.zeros_like(before).index_add_(0, inv, gb).mul_(-lr)
    abs_sum = torch.zeros_like(before).index_add_(0, inv, gb.abs_()).mul_(lr)
    count = torch.bincount(inv, minlength=len(touched))
    got = w.index_select(0, touched).double() - before
    r = sgd_bound(got, want, before, abs_sum, count)
    same = bool(torch.equal(w.index_select(0, ctrl), ctrl_before))
    return {"rel_err": r["rel_err"], "err_over_bound": r["max_err_over_bound"],
            "untouched_same": same, "bags": Bc, "ok": r["ok"] and same}


def numba_kernel_launchers(w, idx, off, g, lr):
    """The numba-cuda kernels launched directly through the backend's lean launcher (inputs
    prepared once, no error read), or (None, reason)."""
    try:
        from dlrmprof.kernels import numba_cuda as nc
        from dlrmprof.kernels.numba_cuda_launch import launcher_for
        B, D = off.shape[0] - 1, w.shape[1]
        L = launcher_for(w, idx, off, g)
        result, out = L.empty((B, D))
        dw, _, di, do, psw, has_w = L.args(w, None, idx, off, None)
        blocks, threads = nc.grid(B, D)
        fk, sk = nc.kernel("fwd", D), nc.kernel("sgd", D)
        fargs = (dw, dw, D, di, do, psw, has_w, False, out, L.err)
        sargs = (dw, di, do, L.view(g), psw, has_w, False, np.float32(lr), L.err)

        def fwd():
            L.launch(fk, blocks, threads, fargs)

        def sgd():
            L.launch(sk, blocks, threads, sargs)

        def errors():
            return L.bad()
        return {"fwd": fwd, "sgd": sgd, "result": result, "errors": errors}, None
    except Exception as exc:  # the launcher's names moved: say so, time the public call only
        return None, f"{type(exc).__name__}: {exc}"


def bench_cell(c: dict, w, ind: Indices, timer: Timer, backends: list[str], device,
               copy_bw: float | None) -> dict:
    import torch

    from dlrmprof import kernels
    R, D, L, B, dist = c["R"], c["D"], c["L"], c["B"], c["dist"]
    t0 = time.perf_counter()
    n = B * L
    idx = ind.draw(R, n, dist)
    off = torch.arange(0, n + 1, L, device=device)
    g = torch.randn(B, D, device=device, generator=ind.gen)
    fcost = kernels.cost("embedding_bag", batch=B, dim=D, nnz=n)
    scost = kernels.cost("embedding_bag_sgd", batch=B, dim=D, nnz=n)
    res = dict(c, nnz=n, fwd_bytes=fcost.bytes, sgd_bytes=scost.bytes,
               table_bytes=R * D * 4,
               unique_rows=int(torch.unique(idx).numel()), checks={}, times={})
    res["unique_frac"] = res["unique_rows"] / n
    # -- correctness first --------------------------------------------------------------
    nb = min(B, 256)
    bags = torch.randperm(B, device=device, generator=ind.gen)[:nb]
    ref = fwd_reference(w, idx, L, bags)
    outs = {}
    ok = True
    for b in backends:
        try:
            poison((B, D), device)
            out = kernels.embedding_bag(w, idx, off, backend=b)
            e = rel_err(out.index_select(0, bags), ref)
            written = bool(torch.isfinite(out).all())
            outs[b] = out
            res["checks"][f"{b} fwd"] = {"rel_err": e, "all_written": written,
                                        "ok": e < FWD_TOL and written}
        except Exception as exc:
            res["checks"][f"{b} fwd"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        ok &= res["checks"][f"{b} fwd"]["ok"]
    if len(outs) == 2:
        a, b = list(outs.values())
        e = rel_err(a, b)
        res["checks"]["backends agree"] = {"rel_err": e, "ok": e < FWD_TOL}
        ok &= e < FWD_TOL
    del outs
    for b in backends:
        try:
            r = sgd_check(w, b, ind, R, D, L, min(B, 2048), dist, device)
        except Exception as exc:
            r = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        res["checks"][f"{b} sgd"] = r
        ok &= r["ok"]
    res["checked_ok"] = bool(ok)
    if not ok:
        res["times"] = {}
        res["note"] = "not timed: a check failed"
        res["cell_s"] = time.perf_counter() - t0
        return res
    # -- timing ---------------------------------------------------------------------------
    lr = 1e-6   # timing keeps updating the table: keep it sane
    runs = {}
    for b in backends:
        eb, sgd = kernels.resolve("embedding_bag", b), kernels.resolve("embedding_bag_sgd", b)
        # the arrays each backend's own function takes (numba: numpy views)
        a = [x.numpy() if b == "numba" else x for x in (w, idx, off, g)]
        runs[f"{b} fwd"] = (lambda eb=eb, a=a: eb(a[0], a[1], a[2], "sum", None), fcost.bytes)
        runs[f"{b} sgd"] = (lambda sgd=sgd, a=a: sgd(a[0], a[1], a[2], a[3], lr, "sum", None),
                            scost.bytes)
    if "numba-cuda" in backends:
        kl, why = numba_kernel_launchers(w, idx, off, g, lr)
        if kl is None:
            res["numba_kernel_note"] = why
        else:
            kl["fwd"]()
            torch.cuda.synchronize()
            # the SGD checks above moved rows of the table: the reference again, from it now
            ref = fwd_reference(w, idx, L, bags)
            e = rel_err(kl["result"].index_select(0, bags), ref)
            if kl["errors"]() == 0 and e < FWD_TOL:
                runs["numba-cuda kernel fwd"] = (kl["fwd"], fcost.bytes)
                runs["numba-cuda kernel sgd"] = (kl["sgd"], scost.bytes)
            else:
                res["numba_kernel_note"] = f"direct launch gave rel err {e:.1e}: not timed"
    for name, (fn, nbytes) in runs.items():
        m = timer.measure(fn)
        m["gbs"] = nbytes / m["median_s"] / 1e9
        m["pct_copy"] = (100 * nbytes / m["median_s"] / copy_bw) if copy_bw else None
        res["times"][name] = m
    tt, tn = res["times"].get("torch fwd"), res["times"].get("numba-cuda fwd")
    if tt and tn:
        res["numba_over_torch_fwd"] = tt["median_s"] / tn["median_s"]
    tt, tn = res["times"].get("torch sgd"), res["times"].get("numba-cuda sgd")
    if tt and tn:
        res["numba_over_torch_sgd"] = tt["median_s"] / tn["median_s"]
    res["cell_s"] = time.perf_counter() - t0
    return res


COLS = ["torch fwd", "numba-cuda fwd", "numba-cuda kernel fwd",
        "torch sgd", "numba-cuda sgd", "numba-cuda kernel sgd", "numba fwd", "numba sgd"]
SHORT = {"torch fwd": "torch", "numba-cuda fwd": "nc", "numba-cuda kernel fwd": "nc-k",
         "torch sgd": "torch", "numba-cuda sgd": "nc", "numba-cuda kernel sgd": "nc-k",
         "numba fwd": "numba", "numba sgd": "numba"}


def cell_line(r: dict, cols: list[str]) -> str:
    head = (f"{r['R']:>8.0e} {r['D']:>3} {r['L']:>3} {r['B']:>5} {r['dist']:>7} "
            f"{100 * r['unique_frac']:>4.0f}%")
    if not r.get("checked_ok"):
        bad = [k for k, v in r["checks"].items() if not v.get("ok")]
        return head + "  CHECK FAILED: " + "; ".join(
            f"{k} ({r['checks'][k].get('error') or r['checks'][k].get('rel_err')})" for k in bad)
    parts = []
    for col in ordered(cols):
        m = r["times"].get(col)
        if m is None:
            parts.append(f"{'-':>11}")
        elif m.get("pct_copy") is None:
            parts.append(f"{m['gbs']:>7.1f}    ")
        else:
            parts.append(f"{m['gbs']:>6.0f} {m['pct_copy']:>3.0f}%")
    return head + " " + " ".join(parts)


def ordered(cols: list[str]) -> list[str]:
    """Forward columns first, then backward: the order of the header."""
    return [c for c in cols if c.endswith("fwd")] + [c for c in cols if c.endswith("sgd")]


def table_header(cols: list[str]) -> str:
    fw = [c for c in cols if c.endswith("fwd")]
    sg = [c for c in cols if c.endswith("sgd")]
    names = " ".join(f"{SHORT[c]:>11}" for c in fw) + " " + \
        " ".join(f"{SHORT[c]:>11}" for c in sg)
    return (f"{'R':>8} {'D':>3} {'L':>3} {'B':>5} {'dist':>7} {'uniq':>5} {names}\n"
            f"{'':>35}{'forward GB/s %copy':^{12 * len(fw)}}{'backward (fused SGD) GB/s %copy':^{12 * len(sg)}}")


def goal_summary(cells: list[dict]) -> list[dict]:
    """Per timed kind: D >= 64 cells at >= GOAL of the copy bandwidth (uniform / Zipf)."""
    out = []
    timed = [c for c in cells if c.get("times")]
    kinds = [k for k in COLS if any(k in c["times"] for c in timed)]
    for k in kinds:
        for dist in ("uniform", "zipf"):
            pcts = [c["times"][k]["pct_copy"] for c in timed
                    if c["D"] >= 64 and c["dist"] == dist and k in c["times"]
                    and c["times"][k].get("pct_copy") is not None]
            big = [c["times"][k]["pct_copy"] for c in timed
                   if c["D"] >= 64 and c["dist"] == dist and k in c["times"]
                   and c["B"] >= 65536 and c["L"] >= 20
                   and c["times"][k].get("pct_copy") is not None]
            if not pcts:
                continue
            out.append({"kind": k, "dist": dist, "cells": len(pcts),
                        "at_goal": sum(p >= 100 * GOAL for p in pcts),
                        "median_pct": float(np.median(pcts)), "best_pct": float(max(pcts)),
                        "big_cells": len(big),
                        "big_at_goal": sum(p >= 100 * GOAL for p in big),
                        "big_median_pct": float(np.median(big)) if big else None})
    return out


def goal_lines(goals: list[dict]) -> list[str]:
    lines = [f"goal: >= {100 * GOAL:.0f}% of the measured copy bandwidth for D >= 64 "
             f"(big = B 65536, L >= 20)",
             f"  {'kernel':<22} {'dist':<7} {'cells at goal':>13} {'median':>7} {'best':>6}"
             f" {'big at goal':>11} {'big median':>10}"]
    for g in goals:
        bm = "-" if g["big_median_pct"] is None else f"{g['big_median_pct']:.0f}%"
        lines.append(f"  {g['kind']:<22} {g['dist']:<7} {g['at_goal']:>6}/{g['cells']:<6} "
                     f"{g['median_pct']:>6.0f}% {g['best_pct']:>5.0f}% "
                     f"{g['big_at_goal']:>5}/{g['big_cells']:<5} {bm:>10}")
    return lines


def cmd_bench(args) -> int:
    import torch
    t_start = time.perf_counter()
    device = want_device(args.device)
    if device is None:
        return no_gpu("embedding-bag bench")
    from dlrmprof.profile import ceilings
    backends, missing = backends_here(device)
    grid = args.grid or ("full" if device.type == "cuda" else "tiny")
    cells = grid_cells(grid)
    doc = {"device": str(device), "gpu": gpu_name(device), "grid": grid,
           "grid_spec": GRIDS[grid], "backends": backends, "missing_backends": missing,
           "seed": args.seed, "goal_fraction_of_copy": GOAL, "tolerances":
           {"forward_rel_err": FWD_TOL, "sgd_err_over_bound": SGD_TOL},
           "method": "CUDA events around one call after a 2xL2 write (cold L2) and a GPU "
                     "sleep; median of 5-20 calls after 2 warm-ups; bytes from "
                     "dlrmprof.kernels.cost (every lookup counted, int64 indices)",
           "cells": [], "skipped": [], "complete": False}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        doc["device_props"] = {"name": p.name, "memory_bytes": int(p.total_memory),
                               "sm_count": int(p.multi_processor_count),
                               "l2_bytes": int(getattr(p, "L2_cache_size", 0) or 0),
                               "capability": [p.major, p.minor]}
        say("probing the device's ceilings (dlrmprof.profile.ceilings.probe_cuda, full size)")
        cu = ceilings.probe_cuda(repeats=10, full=True)
        doc["ceilings_cuda"] = cu
        copy_bw = cu["copy"]["best"] * 1e9 if cu.get("available") else None
        if copy_bw is None:
            say(f"CUDA ceilings unavailable ({cu.get('reason')}): no %copy figures")
            cu = {"copy": {"best": float("nan"), "median": float("nan")},
                  "fp32": {"best": float("nan"), "n": None}, "bf16": {"best": float("nan")}}
        say(f"device {p.name}: {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, "
            f"L2 {doc['device_props']['l2_bytes'] / 2**20:.0f} MiB; copy "
            f"{cu['copy']['best']:.0f} GB/s best ({cu['copy']['median']:.0f} median, read + "
            f"write, 1 GiB); GEMM fp32 {cu['fp32']['best'] / 1e3:.1f} TFLOP/s, bf16 "
            f"{cu['bf16']['best'] / 1e3:.1f} TFLOP/s (n={cu['fp32']['n']}, tf32 "
            f"{'on' if cu.get('tf32_allowed') else 'off'})")
    else:
        copy_bw = None
        doc["note"] = "CPU self-test of the harness: not GPU figures; no copy ceiling"
        say("embedding-bag bench: CPU self-test of the harness (torch CPU tensors and numba; "
            "not GPU figures)")
    for b, why in missing.items():
        say(f"  {b}: NOT AVAILABLE: {why}")
    doc["copy_bw_gbs"] = copy_bw / 1e9 if copy_bw else None
    say(f"grid '{grid}': {len(cells)} cells in {len(GRIDS[grid])} tiers (later tiers cut first "
        f"by the {args.deadline_s:.0f} s deadline); backends {', '.join(backends)}")
    timer = Timer(device)
    ind = Indices(device, args.seed)
    cols = [c for c in COLS if c.split()[0] in backends]
    say(table_header(cols))
    w, w_key = None, None
    slowest = 0.0
    failed = 0
    for i, c in enumerate(cells):
        elapsed = time.perf_counter() - t_start
        est = max(slowest, 1.0) * (1.5 if (c["R"], c["D"]) != w_key else 1.0)
        if elapsed + est > args.deadline_s:
            doc["skipped"] += cells[i:]
            say(f"deadline: {len(cells) - i} cells left untimed (tiers "
                f"{sorted({x['tier'] for x in cells[i:]})}) after {elapsed:.0f} s")
            break
        need = c["R"] * c["D"] * 4 + 3 * c["B"] * c["L"] * c["D"] * 4 + (256 << 20)
        if device.type == "cuda":
            if (c["R"], c["D"]) != w_key:
                w, w_key = None, None
                torch.cuda.empty_cache()
            free, _ = torch.cuda.mem_get_info(device)
            # blocks torch's allocator holds but does not use are free for this cell too
            free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
            if need - (c["R"] * c["D"] * 4 if (c["R"], c["D"]) == w_key else 0) > free:
                c = dict(c, note=f"skipped: needs about {need / 2**30:.1f} GiB, "
                                 f"{free / 2**30:.1f} GiB free")
                doc["skipped"].append(c)
                say(f"  {c['note']}: {c}")
                continue
        if (c["R"], c["D"]) != w_key:
            w = None
            w = torch.randn(c["R"], c["D"], device=device, generator=ind.gen)
            w_key = (c["R"], c["D"])
        try:
            r = bench_cell(c, w, ind, timer, backends, device, copy_bw)
        except Exception as exc:  # report the cell and go on with the next
            r = dict(c, checked_ok=False, checks={"cell": {
                "ok": False, "error": f"{type(exc).__name__}: {exc}"}}, times={},
                unique_frac=float("nan"))
            if device.type == "cuda":
                torch.cuda.synchronize()
        failed += not r.get("checked_ok")
        if i > 0:   # the first cell pays for JIT compilation: not a guide to the others
            slowest = max(slowest, r.get("cell_s", 0.0))
        doc["cells"].append(r)
        say(cell_line(r, cols))
        doc["elapsed_s"] = time.perf_counter() - t_start
        write_json(args.out, doc)          # after every cell: a kill keeps what was measured
    else:
        doc["complete"] = True
    doc["goals"] = goal_summary(doc["cells"])
    doc["failed_cells"] = failed
    doc["elapsed_s"] = time.perf_counter() - t_start
    lines = goal_lines(doc["goals"]) if copy_bw else []
    ratios = [c["numba_over_torch_fwd"] for c in doc["cells"] if "numba_over_torch_fwd" in c
              and c["D"] >= 64]
    if ratios:
        lines.append(f"numba-cuda vs torch forward (D >= 64, API calls): median "
                     f"{np.median(ratios):.2f}x torch's speed ({min(ratios):.2f}..{max(ratios):.2f})")
    ratios = [c["numba_over_torch_sgd"] for c in doc["cells"] if "numba_over_torch_sgd" in c
              and c["D"] >= 64]
    if ratios:
        lines.append(f"numba-cuda vs torch fused SGD (D >= 64, API calls): median "
                     f"{np.median(ratios):.2f}x torch's speed ({min(ratios):.2f}..{max(ratios):.2f})")
    doc["summary_lines"] = lines
    write_json(args.out, doc)
    if args.md:
        md = [f"# Embedding-bag bandwidth on {doc['gpu']}", "",
              f"Copy bandwidth (read + write, best of 10): "
              f"{doc['copy_bw_gbs']:.0f} GB/s." if copy_bw else "No copy ceiling (CPU self-test).",
              "", doc["method"] + ".", "",
              "```", table_header(cols)] + [cell_line(r, cols) for r in doc["cells"]] + \
             ["```", ""] + [f"    {x}" for x in lines] + \
             ([f"", f"{len(doc['skipped'])} cells not run (deadline or memory)."]
              if doc["skipped"] else [])
        from dlrmprof.fsutil import atomic_write_text
        atomic_write_text(args.md, "\n".join(md) + "\n")
    for x in lines:
        say(x)
    say(f"embedding-bag bench: {len(doc['cells'])} cells ({failed} failed their check), "
        f"{len(doc['skipped'])} not run; {doc['elapsed_s']:.0f} s")
    return 0 if failed == 0 and doc["cells"] else 1


# ------------------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="backends vs the float64 reference on fresh random inputs")
    c.add_argument("--out", default=None, help="JSON result file")
    c.add_argument("--trials", type=int, default=24)
    c.add_argument("--seed", type=int, default=None, help="default: a fresh random seed")
    c.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu: self-test of the harness (not a GPU check)")
    c.add_argument("--verbose", action="store_true")
    b = sub.add_parser("bench", help="forward/backward GB/s vs the measured copy bandwidth")
    b.add_argument("--out", default=None, help="JSON result file (rewritten after every cell)")
    b.add_argument("--md", default=None, help="Markdown table file")
    b.add_argument("--grid", choices=sorted(GRIDS), default=None,
                   help="default: full on a GPU, tiny on the CPU")
    b.add_argument("--deadline-s", type=float, default=150.0,
                   help="start no cell after this many seconds (later tiers are cut first)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu: self-test of the harness (not GPU figures)")
    args = ap.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return cmd_check(args) if args.cmd == "check" else cmd_bench(args)


if __name__ == "__main__":
    sys.exit(main())
