"""Versions and the closing summary of benchmarks/gpu_check.sh (issue #6).

    python3 benchmarks/gpu_check_summary.py versions --out versions.json
    python3 benchmarks/gpu_check_summary.py summary --work WORK --out OUT [--mode gpu|cpu-dry-run]

`versions` prints (and saves) python, torch (CUDA build, device), numba, numba-cuda, numpy,
dlrmprof, and what numba's CUDA target sees; it never fails on a missing piece (it says so).
`summary` reads what the steps left (WORK/steps.tsv, OUT/*.json, WORK/reports/*.json) and
prints one short table per part, the step table last; the same text goes to OUT/summary.txt.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _version(dist: str) -> str | None:
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    v: dict = {"python": platform.python_version(), "executable": sys.executable,
               "machine": platform.machine()}
    for dist in ("torch", "numba", "numba-cuda", "numpy", "llvmlite", "dlrmprof", "setuptools",
                 "pytest", "cuda-bindings"):
        v[dist] = _version(dist)
    try:
        import torch
        v["torch_cuda_build"] = torch.version.cuda
        v["cuda_available"] = bool(torch.cuda.is_available())
        if v["cuda_available"]:
            p = torch.cuda.get_device_properties(0)
            v["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                        "sm_count": p.multi_processor_count, "capability": f"{p.major}.{p.minor}",
                        "l2_mib": round((getattr(p, "L2_cache_size", 0) or 0) / 2**20, 1),
                        "count": torch.cuda.device_count()}
            v["cudnn"] = torch.backends.cudnn.version()
    except Exception as exc:  # report, never fail here
        v["torch_error"] = f"{type(exc).__name__}: {exc}"
    try:
        from numba import cuda
        v["numba_cuda_available"] = bool(cuda.is_available())
        if v["numba_cuda_available"]:
            dev = cuda.get_current_device()
            v["numba_cuda_device"] = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
            v["numba_cuda_cc"] = list(dev.compute_capability)
            try:
                v["cuda_driver"] = ".".join(map(str, cuda.cudadrv.driver.driver.get_version()))
            except Exception:
                pass
    except Exception as exc:
        v["numba_cuda_error"] = f"{type(exc).__name__}: {exc}"
    return v


def cmd_versions(args) -> int:
    v = versions()
    gpu = v.get("gpu") or {}
    print(f"python {v['python']} ({v['executable']}, {v['machine']})")
    print(f"torch {v.get('torch')} (CUDA build {v.get('torch_cuda_build') or 'none'}; "
          f"CUDA available: {v.get('cuda_available')}"
          + (f"; {gpu.get('name')}, {gpu.get('memory_gib')} GiB, {gpu.get('sm_count')} SMs, "
             f"cc {gpu.get('capability')}, L2 {gpu.get('l2_mib')} MiB" if gpu else "") + ")")
    print(f"numba {v.get('numba')}, numba-cuda {v.get('numba-cuda') or 'NOT INSTALLED'} "
          f"(numba CUDA target available: {v.get('numba_cuda_available')}"
          + (f", driver API {v['cuda_driver']}" if v.get("cuda_driver") else "")
          + (f"; {v['numba_cuda_error']}" if v.get("numba_cuda_error") else "") + ")")
    print(f"numpy {v.get('numpy')}, llvmlite {v.get('llvmlite')}, dlrmprof {v.get('dlrmprof')}, "
          f"setuptools {v.get('setuptools')}, pytest {v.get('pytest')}")
    if args.out:
        Path(args.out).write_text(json.dumps(v, indent=1))
    if v.get("cuda_available"):
        # where numba's CUDA target finds the driver, NVVM, libdevice and the runtime
        print("numba CUDA libraries (numba.cuda.cudadrv.libs.test()):", flush=True)
        try:
            from numba.cuda.cudadrv import libs
            libs.test()
        except Exception as exc:
            print(f"  could not list them: {type(exc).__name__}: {exc}")
        sys.stdout.flush()
    return 0


# -------------------------------------------------------------------------------- summary

def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _steps(work: Path) -> list[dict]:
    rows = []
    try:
        lines = (work / "steps.tsv").read_text().splitlines()
    except OSError:
        return rows
    for ln in lines:
        parts = ln.split("\t")
        if len(parts) >= 3:
            rows.append({"name": parts[0], "status": parts[1], "seconds": parts[2],
                         "note": parts[3] if len(parts) > 3 else ""})
    return rows


def _fmt_t(s) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.2f} ms" if s >= 1e-3 else f"{s * 1e6:.0f} us"


def report_lines(reports: Path) -> list[str]:
    out = []
    files = sorted(p for p in reports.glob("*.json") if not p.name.startswith("compare"))
    if not files:
        return ["run reports: none"]
    out.append(f"{'report':<34} {'samples/s':>10} {'step':>9} {'emb fwd':>9} {'GB/s':>7}  "
               f"emb fwd verdict")
    for p in files:
        d = _load(p)
        if not isinstance(d, dict) or "end_to_end" not in d:
            out.append(f"{p.stem:<34} (unreadable)")
            continue
        ops = {(o["name"], o["phase"]): o for o in d.get("ops", [])}
        emb = ops.get(("emb.all", "forward"))
        step = ops.get(("step", "step"))
        v = {(r.get("name"), r.get("phase")): r for r in (d.get("roofline") or {}).get("rows", [])}
        ev = v.get(("emb.all", "forward")) or {}
        gbs = (emb["bytes"] / emb["time"]["median"] / 1e9
               if emb and emb.get("bytes") and emb["time"]["median"] else None)
        from dlrmprof.profile.roofline import label
        verdict = label(ev)
        out.append(f"{p.stem:<34} {d['end_to_end']['samples_per_s']:>10,.0f} "
                   f"{_fmt_t(step['time']['median'] if step else None):>9} "
                   f"{_fmt_t(emb['time']['median'] if emb else None):>9} "
                   f"{'-' if gbs is None else f'{gbs:.1f}':>7}  {verdict}")
    return out


def graph_lines(g) -> list[str]:
    """CUDA graphs and the numba-cuda launch (benchmarks/gpu_graph_check.py, issue 22)."""
    if not isinstance(g, dict):
        return []
    tag = "" if g.get("device") == "cuda" else " [CPU self-test of the harness]"
    eq = g.get("equality", [])
    out = [f"graph step == eager ({g.get('preset')}, batch {g.get('batch')}): "
           f"{sum(bool(r.get('ok')) for r in eq)}/{len(eq)} cases within tolerance" + tag]
    for r in g.get("throughput", []):
        m = r["median_samples_per_s"]
        goal = "" if r.get("goal_met") is None else \
            f", goal {r['goal_samples_per_s']:,} {'met' if r['goal_met'] else 'NOT met'}"
        out.append(f"  {r['backend']} {'fused' if r['fused'] else 'per-table'} {r['mode']}: "
                   f"eager {m['eager']:,.0f}, graph {m['graph']:,.0f} samples/s "
                   f"(x{r['graph_over_eager']:.2f}{goal})")
    lo = g.get("launch") or {}
    if lo.get("overhead_s"):
        ov = lo["overhead_s"]
        out.append(f"numba-cuda call overhead ({lo.get('launch_path')}): old "
                   f"{_fmt_t(ov['old call'])}, lean {_fmt_t(ov['lean call'])}, torch "
                   f"{_fmt_t(ov['torch call'])} (kernel {_fmt_t(lo['kernel_median_s'])}); "
                   f"goal <= 30 us {'met' if lo.get('goal_met') else 'NOT met'}")
    elif lo:
        out.append(f"numba-cuda launch: {'OK' if lo.get('ok') else 'FAIL'} ({lo.get('source', '')})")
    return out


def cmd_summary(args) -> int:
    work, out = Path(args.work), Path(args.out)
    lines: list[str] = []
    dry = args.mode != "gpu"
    v = _load(work / "versions.json") or {}
    gpu = (v.get("gpu") or {})
    lines.append("=" * 100)
    lines.append(f"dlrmprof GPU check (issue #6) - {'CPU DRY RUN: no GPU figures' if dry else 'GPU run'}")
    lines.append(f"card: {gpu.get('name', 'none')}"
                 + (f", {gpu.get('memory_gib')} GiB, {gpu.get('sm_count')} SMs, L2 "
                    f"{gpu.get('l2_mib')} MiB" if gpu else "")
                 + f"; torch {v.get('torch')} (CUDA {v.get('torch_cuda_build')}), numba "
                   f"{v.get('numba')}, numba-cuda {v.get('numba-cuda')}, driver "
                   f"{v.get('cuda_driver', '?')}")
    if args.smi:
        lines.append(f"nvidia-smi: {args.smi}")
    c = _load(out / "ceilings.json")
    if isinstance(c, dict) and c.get("ceilings"):
        ce = c["ceilings"]
        roofs = ce.get("roofs", {})
        top = str(max((int(k) for k in roofs), default=1))
        r = roofs.get(top, {})
        cu = ce.get("cuda") or {}
        lines.append(f"ceilings (dlrmprof host --probe): CPU {top} threads: stream "
                     f"{r.get('stream_gbs', 0):.0f} GB/s, fp32 {r.get('fp32_gflops', 0):.0f} / "
                     f"bf16 {r.get('bf16_gflops', 0):.0f} GFLOP/s")
        if cu.get("available"):
            lines.append(f"  CUDA {cu['device']}: copy {cu['copy']['best']:.0f} GB/s (read+write), "
                         f"GEMM fp32 {cu['fp32']['best'] / 1e3:.1f} TFLOP/s, bf16 "
                         f"{cu['bf16']['best'] / 1e3:.1f} TFLOP/s (n={cu['fp32'].get('n')})")
        else:
            lines.append(f"  CUDA ceilings: none ({cu.get('reason')})")
    b = _load(out / "embedding_bench.json")
    if isinstance(b, dict) and b.get("ceilings_cuda", {}).get("available"):
        cu = b["ceilings_cuda"]
        lines.append(f"  full-size CUDA probe (bench): copy {cu['copy']['best']:.0f} GB/s best, "
                     f"{cu['copy']['median']:.0f} median (1 GiB); GEMM n={cu['fp32'].get('n')}: "
                     f"fp32 {cu['fp32']['best'] / 1e3:.1f}, bf16 {cu['bf16']['best'] / 1e3:.1f} "
                     f"TFLOP/s")
    k = _load(out / "kernels_check.json")
    if isinstance(k, dict):
        per = k.get("per_backend", {})
        lines.append(f"kernel check ({k.get('device')}, seed {k.get('seed')}): " + "; ".join(
            f"{name} {p['passed']}/{p['cases']}" for name, p in per.items())
            + (f"; out-of-range refused: {k['out_of_range'].get('ok')}"
               if k.get("out_of_range") else "")
            + (f"; MISSING {', '.join(k['missing_backends'])}" if k.get("missing_backends") else "")
            + (" [CPU self-test of the harness]" if k.get("device") == "cpu" else ""))
    lines += graph_lines(_load(out / "launch_graph.json"))
    lines += report_lines(work / "reports")
    for cmp in sorted((work / "reports").glob("compare-*.md")):
        lines.append(f"compare: {cmp.name} (in reports.tar.gz)")
    if isinstance(b, dict):
        lines.append(f"embedding-bag bench ({b.get('gpu')}, grid {b.get('grid')}): "
                     f"{len(b.get('cells', []))} cells, {b.get('failed_cells', '?')} failed checks, "
                     f"{len(b.get('skipped', []))} not run"
                     + ("" if b.get("complete") else " (stopped early)")
                     + (" [CPU self-test of the harness]" if b.get("device") == "cpu" else ""))
        for x in b.get("summary_lines", []):
            lines.append("  " + x)
    steps = _steps(work)
    lines.append(f"{'step':<28} {'status':<8} {'s':>5}  note")
    for s in steps:
        lines.append(f"{s['name']:<28} {s['status']:<8} {s['seconds']:>5}  {s['note']}")
    bad = [s["name"] for s in steps if s["status"] in ("FAIL", "TIMEOUT")]
    lines.append(f"RESULT: {'FAIL' if bad else 'OK'}"
                 + (f" ({', '.join(bad)})" if bad else "")
                 + f"; files in {args.out_label or out}: "
                 + ", ".join(sorted({p.name for p in out.iterdir() if p.is_file()}
                                    | {"summary.txt"})))
    text = "\n".join(lines) + "\n"
    (out / "summary.txt").write_text(text)
    sys.stdout.write(text)
    return 0     # the verdict is RESULT above; gpu_check.sh's exit code carries it


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("versions")
    v.add_argument("--out", default=None)
    s = sub.add_parser("summary")
    s.add_argument("--work", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--out-label", default=None)
    s.add_argument("--mode", choices=["gpu", "cpu-dry-run", "no-gpu"], default="gpu")
    s.add_argument("--smi", default=None, help="nvidia-smi -L line(s)")
    args = ap.parse_args(argv)
    return cmd_versions(args) if args.cmd == "versions" else cmd_summary(args)


if __name__ == "__main__":
    sys.exit(main())
