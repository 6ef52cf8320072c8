import shutil

import pytest
from click.testing import CliRunner

from dlrmprof.cli import cli
from dlrmprof.errors import UserError
from dlrmprof.profile import simd

HOSTS = "tests/data/hosts"


def test_level_checks():
    simd.check_levels(["scalar", "avx2"], ["sse4_2", "avx2", "fma"], arch="x86_64")
    with pytest.raises(UserError, match="needs CPU flag avx512f"):
        simd.check_levels(["avx512"], ["sse4_2", "avx2", "fma"], arch="x86_64")
    with pytest.raises(UserError, match="x86-64 level; this host is aarch64"):
        simd.check_levels(["sse4.2"], ["asimd"], arch="aarch64")
    simd.check_levels(["scalar"], ["asimd"], arch="aarch64")   # scalar runs anywhere
    with pytest.raises(UserError, match="unknown SIMD level"):
        simd.check_levels(["avx1024"], [], arch="x86_64")
    with pytest.raises(UserError, match="needs CPU flag avx2"):
        simd.check_levels(["avx2"], ["sse4_2"], torch=True, arch="x86_64")


def test_narrow_features():
    feats = "+64bit,+avx,+avx2,+fma,+avx512f,+avx512bw,+sse4.2,+amx-tile,-xop,+vaes,+bmi2"
    sse = simd._narrow(feats, keep_avx2=False).split(",")
    assert "+sse4.2" in sse and "+bmi2" in sse and "-avx" in sse and "-avx2" in sse
    assert "-fma" in sse and "-avx512f" in sse and "-amx-tile" in sse and "-vaes" in sse
    avx2 = simd._narrow(feats, keep_avx2=True).split(",")
    assert "+avx2" in avx2 and "+fma" in avx2 and "-avx512f" in avx2 and "-amx-tile" in avx2
    env = simd.level_env("avx512", "znver4", feats)
    assert env["NUMBA_CPU_FEATURES"].endswith(",-prefer-256-bit")
    assert simd.level_env("scalar", "znver4", feats)["NUMBA_LOOP_VECTORIZE"] == "0"


def test_count_and_verify():
    asm = """
        vmovups (%rdi), %zmm0
        vfmadd231ps %zmm1, %zmm2, %zmm0
        vaddps %ymm3, %ymm4, %ymm5
        addss %xmm0, %xmm1
    """
    c = simd.count_registers(asm)
    assert c == {"xmm": 2, "ymm": 3, "zmm": 4, "packed_fp": 2}
    assert simd.verify_level("avx512", c)[0]
    assert not simd.verify_level("avx2", c)[0]
    assert not simd.verify_level("scalar", c)[0]
    assert simd.verify_level("scalar", simd.count_registers("  addss %xmm0, %xmm1\n"))[0]
    assert simd.verify_level("sse4.2", simd.count_registers("  addps %xmm0, %xmm1\n"))[0]


def test_judge():
    ops = [{"op": "gather", "verdict": "latency-bound", "best_speedup": 1.1,
            "by_level": {"a": {}, "b": {}}},
           {"op": "mlp", "verdict": "compute-bound", "best_speedup": 6.0,
            "by_level": {"a": {}, "b": {}}}]
    held, text = simd.judge(ops)
    assert held is True and "gather (latency-bound) best 1.10x" in text
    ops[1]["best_speedup"] = 1.2
    assert simd.judge(ops)[0] is False
    assert simd.judge([{"op": "x", "verdict": None, "best_speedup": 2.0}])[0] is None


def _canned_without_avx512(tmp_path):
    root = tmp_path / "host"
    shutil.copytree(f"{HOSTS}/amd_genoa", root)
    info = (root / "proc/cpuinfo").read_text()
    info = " ".join(w for w in info.split(" ") if not w.startswith("avx512"))
    (root / "proc/cpuinfo").write_text(info)
    return root


def test_cli_refuses_levels_host_cannot_run(tmp_path):
    root = _canned_without_avx512(tmp_path)
    out = tmp_path / "simd.json"
    r = CliRunner().invoke(cli, ["simd", "--host-root", str(root), "--level", "avx512",
                                 "--out", str(out)])
    assert r.exit_code == 2 and "needs CPU flag avx512f" in r.output
    assert r.output.count("\n") == 1 and not out.exists()
    r = CliRunner().invoke(cli, ["simd", "--host-root", f"{HOSTS}/arm_graviton3",
                                 "--torch-level", "avx2"])
    assert r.exit_code == 2 and "aarch64" in r.output


@pytest.mark.slow
def test_run_simd_two_levels_verified():
    from dlrmprof.profile import host
    fp = host.collect(gpu=False, counters=False)
    flags = fp["cpu"]["flags"]
    wide = "avx2" if "avx2" in flags else "sse4.2"
    tiny = {"table_bytes": 1 << 20, "lookups": 1 << 12, "triad_bytes": 1 << 20, "mm": 64,
            "repeats": 2}
    ceil = {"roofs": {"1": {"stream_gbs": 20.0, "random_gbs": 5.0, "random_ns_per_line": 13.0,
                            "latency_ns": 100.0, "fp32_gflops": 100.0, "bf16_gflops": 200.0}}}
    res = simd.run_simd(fp, levels=[wide, "scalar"], torch_levels=(), ceilings=ceil,
                        sizes=tiny, timeout=120)
    assert [lv["name"] for lv in res["levels"]] == ["scalar", wide]
    assert all(lv["verified"] for lv in res["levels"]), res["levels"]
    assert res["levels"][0]["asm"]["packed_fp"] == 0 and res["levels"][1]["asm"]["packed_fp"] > 0
    ops = {o["op"]: o for o in res["ops"]}
    assert set(ops) == {"gather", "gather_kernels", "triad", "mlp", "mlp_kernels"}
    assert res["levels"][0]["asm_per_kernel"]["gather_kernels"]["verified"]
    assert ops["mlp"]["verdict"] == "compute-bound"
    assert ops["mlp"]["by_level"]["scalar"]["speedup"] == 1.0
    assert ops["mlp"]["by_level"][wide]["time_s"] > 0
    assert res["held"] in (True, False)
