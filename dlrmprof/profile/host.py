"""Host fingerprint: small collectors, each skipping what it cannot read, typed values.

`collect(root="/")` returns a plain dict (JSON-ready) with

``host_id``     16 hex digits, sha256 over the stable hardware fields (`stable_fields`): the
                same machine gives the same id across reboots, kernel and library updates.
``cpu``         arch, vendor, model_name, family/model/stepping (x86) or implementer/part (ARM),
                ``flags`` (sorted list), ``simd`` (the SIMD levels this CPU can run, from
                `SIMD_FLAGS`), logical_cpus, physical_cores, sockets, threads_per_core,
                ``freq_mhz`` {max, base, current} where known.
``caches``      per-core caches from sysfs (cpu0): ``[{level, type, size_bytes, ways,
                line_bytes, sets, shared_cpus}]``; ``caches_source`` is ``"sysfs"`` or
                ``"py-cpuinfo"`` (fallback, whose L1/L2 are summed over cores: divided back).
``memory``      ``{total_bytes, available_bytes}`` (psutil on the live host, else meminfo).
``numa``        ``{nodes: [{id, cpus: [..], mem_total_bytes}]}``.
``os``          ``{system, kernel, distro, hostname}``.
``software``    python, torch, numba, llvmlite, numpy versions (package metadata, no import).
``threads``     relevant environment (OMP/MKL/NUMBA_NUM_THREADS, ...) and torch's thread count
                when torch is already imported.
``gpu``         ``[{name, memory_bytes, sm_count, l2_bytes, capability}]`` when CUDA is usable.
``counters``    hardware-counter availability: ``{available: bool, reason, events}``.

All readers take ``root`` so tests feed canned /proc and /sys trees; the caches and the CPU
flags come from `dlrmprof.platform`, which the kernels read too (one reader per host fact).
py-cpuinfo is slow (about 1.3 s a call) and is called at most once per process, and only for
the live host (root "/").
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import socket
import sys
from typing import Any

from dlrmprof.platform import (cpuinfo_blocks, data_caches, parse_cpulist, parse_size, path,
                               processor_flags, read_caches, read_int, read_text)

__all__ = ["SIMD_FLAGS", "collect", "cpuinfo_info", "data_caches", "host_id", "parse_cpulist",
           "parse_size", "read_caches", "read_cpuinfo", "stable_fields", "summary"]

# SIMD levels we report, from /proc/cpuinfo flags (x86) or Features (ARM).
SIMD_FLAGS = ("sse2", "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
              "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
              "asimd", "asimdhp", "sve", "sve2", "bf16", "i8mm", "sme")

_ARM_IMPLEMENTERS = {0x41: "ARM", 0x42: "Broadcom", 0x43: "Cavium", 0x46: "Fujitsu",
                     0x48: "HiSilicon", 0x4E: "NVIDIA", 0x50: "Ampere/APM", 0x51: "Qualcomm",
                     0x53: "Samsung", 0x61: "Apple", 0x69: "Intel", 0xC0: "Ampere"}
_ARM_PARTS = {(0x41, 0xD0C): "Neoverse-N1", (0x41, 0xD40): "Neoverse-V1",
              (0x41, 0xD49): "Neoverse-N2", (0x41, 0xD4F): "Neoverse-V2",
              (0x41, 0xD08): "Cortex-A72", (0x41, 0xD0B): "Cortex-A76"}
_VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "HygonGenuine": "Hygon"}


# -- collectors ---------------------------------------------------------------------------------

def read_cpuinfo(root="/") -> dict:
    """CPU identity and flags from /proc/cpuinfo (x86 and ARM layouts)."""
    blocks = cpuinfo_blocks(root)
    if blocks is None:
        return {}
    procs, top = blocks
    first = procs[0] if procs else top
    out: dict[str, Any] = {"logical_cpus": len(procs) or None}
    out["flags"] = sorted(processor_flags(first))
    if "vendor_id" in first:  # x86
        out["arch"] = "x86_64"
        out["vendor"] = _VENDORS.get(first["vendor_id"], first["vendor_id"])
        out["model_name"] = first.get("model name")
        out["family"] = read_int(first.get("cpu family"))
        out["model"] = read_int(first.get("model"))
        out["stepping"] = read_int(first.get("stepping"))
        mhz = first.get("cpu MHz")
        out["freq_mhz"] = {"current": float(mhz)} if mhz and _is_float(mhz) else {}
        phys = {(p.get("physical id"), p.get("core id")) for p in procs}
        sockets = {p.get("physical id") for p in procs}
        if procs and None not in {c for _, c in phys}:
            out["physical_cores"] = len(phys)
        out["sockets"] = len(sockets) if procs and None not in sockets else None
    elif "CPU implementer" in first:  # ARM
        out["arch"] = "aarch64"
        impl = read_int(first.get("CPU implementer"), 16)
        out["vendor"] = _ARM_IMPLEMENTERS.get(impl, f"0x{impl:02x}" if impl is not None else None)
        out["implementer"] = impl
        out["part"] = read_int(first.get("CPU part"), 16)
        out["variant"] = read_int(first.get("CPU variant"), 16)
        out["revision"] = read_int(first.get("CPU revision"))
        out["model_name"] = (top.get("Hardware") or first.get("model name")
                             or _ARM_PARTS.get((impl, out["part"])))
        out["freq_mhz"] = {}
    return out


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_meminfo(root="/") -> dict:
    text = read_text(root, "proc/meminfo") or ""
    vals = {}
    for line in text.splitlines():
        m = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if m:
            vals[m.group(1)] = int(m.group(2)) * 1024
    return {"total_bytes": vals.get("MemTotal"), "available_bytes": vals.get("MemAvailable")}


def read_numa(root="/") -> dict:
    base = path(root, "sys/devices/system/node")
    nodes = []
    try:
        names = sorted((d.name for d in base.iterdir() if re.fullmatch(r"node\d+", d.name)),
                       key=lambda n: int(n[4:]))
    except OSError:
        return {}
    for n in names:
        mem = read_text(root, f"sys/devices/system/node/{n}/meminfo") or ""
        m = re.search(r"MemTotal:\s+(\d+)\s*kB", mem)
        nodes.append({"id": int(n[4:]),
                      "cpus": parse_cpulist(
                          read_text(root, f"sys/devices/system/node/{n}/cpulist")),
                      "mem_total_bytes": int(m.group(1)) * 1024 if m else None})
    return {"nodes": nodes}


def read_freq(root="/", cpu: int = 0) -> dict:
    base = f"sys/devices/system/cpu/cpu{cpu}/cpufreq/"
    out = {}
    mx = read_int(read_text(root, base + "cpuinfo_max_freq"))
    bs = read_int(read_text(root, base + "base_frequency"))
    if mx:
        out["max"] = mx / 1000.0
    if bs:
        out["base"] = bs / 1000.0
    return out


def read_topology(root="/") -> dict:
    """Threads per core from sysfs (cpu0's thread_siblings_list)."""
    sib = parse_cpulist(
        read_text(root, "sys/devices/system/cpu/cpu0/topology/thread_siblings_list"))
    return {"threads_per_core": len(sib)} if sib else {}


def read_os(root="/") -> dict:
    out: dict[str, Any] = {"kernel": read_text(root, "proc/sys/kernel/osrelease")}
    rel = read_text(root, "etc/os-release") or ""
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', rel, re.M)
    out["distro"] = m.group(1) if m else None
    out["hostname"] = read_text(root, "proc/sys/kernel/hostname")
    if str(root) == "/":
        out["system"] = platform.system()
        out["hostname"] = out["hostname"] or socket.gethostname()
    return out


def software_versions() -> dict:
    out = {"python": platform.python_version(), "implementation": sys.implementation.name}
    for pkg in ("torch", "numba", "llvmlite", "numpy", "dlrmprof"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def thread_settings() -> dict:
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                                       "OMP_PROC_BIND", "OMP_PLACES", "KMP_AFFINITY",
                                       "NUMBA_THREADING_LAYER") if k in os.environ}
    out: dict[str, Any] = {"env": env}
    try:
        out["affinity"] = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch_threads"] = torch.get_num_threads()
        out["torch_interop_threads"] = torch.get_num_interop_threads()
    return out


def gpu_properties() -> list[dict]:
    """CUDA devices (only when torch is importable and CUDA usable)."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append({"index": i, "name": p.name, "memory_bytes": int(p.total_memory),
                    "sm_count": int(p.multi_processor_count),
                    "l2_bytes": int(getattr(p, "L2_cache_size", 0)) or None,
                    "capability": [int(p.major), int(p.minor)]})
    return out


@functools.lru_cache(maxsize=1)
def cpuinfo_info() -> dict:
    """py-cpuinfo's get_cpu_info(), called at most once per process (it takes ~1.3 s)."""
    try:
        import cpuinfo
        return dict(cpuinfo.get_cpu_info())
    except Exception:  # py-cpuinfo shells out and may fail on odd hosts: it is only a fallback
        return {}


def _caches_from_cpuinfo(info: dict, ncores: int) -> list[dict]:
    """Fallback when sysfs has no cache tree.  py-cpuinfo sums L1/L2 over cores; its L2 line
    size and associativity are unreliable, so they are left unknown."""
    out = []
    n = max(ncores or 1, 1)
    for key, level, typ, per_core in (("l1_data_cache_size", 1, "data", True),
                                      ("l2_cache_size", 2, "unified", True),
                                      ("l3_cache_size", 3, "unified", False)):
        v = info.get(key)
        if isinstance(v, str):
            v = parse_size(v)
        if v:
            out.append({"level": level, "type": typ,
                        "size_bytes": int(v // n) if per_core else int(v),
                        "ways": None, "line_bytes": 64, "sets": None, "shared_cpus": []})
    return out


# -- whole fingerprint --------------------------------------------------------------------------

def collect(root: str | os.PathLike = "/", *, gpu: bool = True, counters: bool = True,
            use_cpuinfo: bool | None = None) -> dict:
    """The host fingerprint (see module docstring).  `root` != "/" reads a canned tree only."""
    live = str(root) == "/"
    if use_cpuinfo is None:
        use_cpuinfo = live
    cpu = read_cpuinfo(root)
    cpu.setdefault("arch", platform.machine() if live else None)
    cpu.setdefault("flags", [])
    freq = dict(cpu.get("freq_mhz") or {})
    freq.update(read_freq(root))
    cpu["freq_mhz"] = freq
    cpu.update(read_topology(root))
    caches = read_caches(root)
    caches_source = "sysfs" if caches else None
    # py-cpuinfo only as a fallback for what /proc and /sys did not give (it costs ~1.3 s)
    missing = not caches or not cpu["flags"] or not cpu.get("model_name")
    info = cpuinfo_info() if (use_cpuinfo and missing) else {}
    if info:
        if not cpu["flags"]:
            cpu["flags"] = sorted(info.get("flags", []))
        if not cpu.get("model_name"):
            cpu["model_name"] = info.get("brand_raw")
        if not cpu.get("logical_cpus"):
            cpu["logical_cpus"] = info.get("count")
        if not caches:
            caches = _caches_from_cpuinfo(info, cpu.get("physical_cores") or info.get("count"))
            caches_source = "py-cpuinfo" if caches else None
    if live and not cpu.get("logical_cpus"):
        cpu["logical_cpus"] = os.cpu_count()
    flags = set(cpu["flags"])
    cpu["simd"] = [f for f in SIMD_FLAGS if f in flags]

    memory = read_meminfo(root)
    if live:
        try:
            import psutil
            vm = psutil.virtual_memory()
            memory = {"total_bytes": int(vm.total), "available_bytes": int(vm.available)}
        except Exception:
            pass
    fp: dict[str, Any] = {
        "cpu": cpu, "caches": caches, "caches_source": caches_source, "memory": memory,
        "numa": read_numa(root), "os": read_os(root),
    }
    if live:
        fp["software"] = software_versions()
        fp["threads"] = thread_settings()
        fp["gpu"] = gpu_properties() if gpu else []
    else:
        fp["software"], fp["threads"], fp["gpu"] = {}, {}, []
    if counters:
        from dlrmprof.profile import counters as _counters
        fp["counters"] = _counters.availability(root=root)
    fp["host_id"] = host_id(fp)
    return fp


def stable_fields(fp: dict) -> dict:
    """The fields host_id hashes: hardware identity that survives reboots and upgrades."""
    cpu = fp.get("cpu", {})
    mem = (fp.get("memory") or {}).get("total_bytes")
    return {
        "arch": cpu.get("arch"), "vendor": cpu.get("vendor"), "model_name": cpu.get("model_name"),
        "family": cpu.get("family"), "model": cpu.get("model"), "stepping": cpu.get("stepping"),
        "implementer": cpu.get("implementer"), "part": cpu.get("part"),
        "logical_cpus": cpu.get("logical_cpus"), "simd": cpu.get("simd"),
        "caches": [[c["level"], c["type"], c["size_bytes"], c.get("ways")]
                   for c in fp.get("caches", [])],
        # GiB, rounded: the kernel's MemTotal moves by a few MB between boots
        "mem_gib": round(mem / 2 ** 30) if mem else None,
        "numa_nodes": len((fp.get("numa") or {}).get("nodes", [])),
        "gpus": [[g.get("name"), g.get("memory_bytes")] for g in fp.get("gpu", [])],
    }


def host_id(fp: dict) -> str:
    blob = json.dumps(stable_fields(fp), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def summary(fp: dict) -> str:
    """A few human lines (the CLI prints them; the library never does)."""
    from dlrmprof import fmt
    cpu = fp.get("cpu", {})
    lines = [f"host {fp.get('host_id')}: {cpu.get('vendor')} {cpu.get('model_name')} "
             f"({cpu.get('arch')}), {cpu.get('logical_cpus')} logical CPUs"]
    caches = ", ".join(f"L{c['level']}{c['type'][0] if c['level'] == 1 else ''} "
                       f"{fmt.size(c['size_bytes'])}/{c.get('ways') or '?'}-way"
                       for c in data_caches(fp.get("caches", [])))
    lines.append(f"caches ({fp.get('caches_source')}): {caches or 'unknown'}")
    mem = (fp.get("memory") or {}).get("total_bytes")
    lines.append(f"memory {fmt.size(mem) if mem else 'unknown'}, "
                 f"NUMA nodes {len((fp.get('numa') or {}).get('nodes', [])) or '?'}")
    lines.append("SIMD: " + (" ".join(cpu.get("simd", [])) or "none known"))
    for g in fp.get("gpu", []):
        lines.append(f"GPU {g['index']}: {g['name']}, {fmt.size(g['memory_bytes'])}, "
                     f"{g['sm_count']} SMs")
    c = fp.get("counters") or {}
    if c.get("available"):
        lines.append("hardware counters: available")
    elif c.get("available") is None:
        lines.append(f"hardware counters: not probed ({c.get('reason')})")
    else:
        lines.append(f"hardware counters: not available on this host: {c.get('reason')}")
    return "\n".join(lines)
