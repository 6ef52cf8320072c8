from dlrmprof.profile import host
from dlrmprof.profile.counters import parse_perf_csv

HOSTS = "tests/data/hosts"


def test_intel_tree():
    fp = host.collect(f"{HOSTS}/intel_spr")
    cpu = fp["cpu"]
    assert cpu["vendor"] == "Intel" and cpu["arch"] == "x86_64"
    assert (cpu["family"], cpu["model"], cpu["stepping"]) == (6, 143, 8)
    assert cpu["logical_cpus"] == 4 and cpu["physical_cores"] == 2
    assert cpu["threads_per_core"] == 2
    assert {"amx_bf16", "avx512_bf16", "avx512f", "avx2", "sse4_2"} <= set(cpu["simd"])
    assert cpu["freq_mhz"] == {"current": 2000.0, "max": 3800.0, "base": 2000.0}
    l1d, l2, l3 = host.data_caches(fp["caches"])
    assert (l1d["size_bytes"], l1d["ways"], l1d["type"]) == (48 * 1024, 12, "data")
    assert (l2["size_bytes"], l2["ways"]) == (2 * 1024 ** 2, 16)
    assert (l3["size_bytes"], l3["ways"], l3["shared_cpus"]) == (107520 * 1024, 15, [0, 1, 2, 3])
    assert fp["caches_source"] == "sysfs"
    assert fp["memory"]["total_bytes"] == 32768000 * 1024
    assert fp["os"]["distro"].startswith("Debian") and fp["os"]["kernel"].startswith("6.1")
    assert fp["counters"]["paranoid"] == 2


def test_amd_tree_numa_and_no_smt():
    fp = host.collect(f"{HOSTS}/amd_genoa")
    cpu = fp["cpu"]
    assert cpu["vendor"] == "AMD" and cpu["family"] == 25 and cpu["sockets"] == 2
    assert cpu["physical_cores"] == 4 and cpu["threads_per_core"] == 1
    assert "amx_bf16" not in cpu["simd"] and "avx512_bf16" in cpu["simd"]
    assert [n["cpus"] for n in fp["numa"]["nodes"]] == [[0, 1], [2, 3]]
    assert [c["size_bytes"] for c in host.data_caches(fp["caches"])] == [32768, 1 << 20, 32 << 20]


def test_arm_tree():
    fp = host.collect(f"{HOSTS}/arm_graviton3")
    cpu = fp["cpu"]
    assert cpu["arch"] == "aarch64" and cpu["vendor"] == "ARM"
    assert cpu["implementer"] == 0x41 and cpu["part"] == 0xD40
    assert cpu["model_name"] == "Neoverse-V1"
    assert {"asimd", "sve", "bf16"} <= set(cpu["simd"]) and "avx2" not in cpu["simd"]
    assert cpu["logical_cpus"] == 2
    assert host.data_caches(fp["caches"])[0]["ways"] == 4


def test_host_id_stable_and_distinct(tmp_path):
    ids = {r: host.collect(f"{HOSTS}/{r}")["host_id"] for r in
           ("intel_spr", "amd_genoa", "arm_graviton3")}
    assert len(set(ids.values())) == 3
    assert all(len(i) == 16 for i in ids.values())
    # the current clock frequency and free memory move; the id must not
    fp = host.collect(f"{HOSTS}/intel_spr")
    fp["cpu"]["freq_mhz"]["current"] = 3456.0
    fp["memory"]["available_bytes"] = 1
    fp["os"]["kernel"] = "6.9.0"
    assert host.host_id(fp) == ids["intel_spr"]
    fp["caches"][0]["size_bytes"] *= 2
    assert host.host_id(fp) != ids["intel_spr"]


def test_missing_pieces_are_skipped(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n")
    fp = host.collect(tmp_path, use_cpuinfo=False)
    assert fp["caches"] == [] and fp["caches_source"] is None
    assert fp["memory"]["total_bytes"] is None and fp["numa"] == {}
    assert fp["cpu"]["vendor"] == "Intel" and isinstance(fp["host_id"], str)


def test_parsers():
    assert host.parse_size("32K") == 32768 and host.parse_size("1024 KB") == 1 << 20
    assert host.parse_size("2M") == 2 << 20 and host.parse_size("junk") is None
    assert host.parse_cpulist("0-2,5,7-8") == [0, 1, 2, 5, 7, 8]
    out = parse_perf_csv("123456,,cycles,1000,100.00,,\n<not supported>,,instructions,0,100.00,,")
    assert out == {"cycles": 123456.0, "instructions": None}


def test_live_host_is_typed():
    fp = host.collect(gpu=False)
    assert isinstance(fp["cpu"]["logical_cpus"], int) and fp["cpu"]["logical_cpus"] >= 1
    assert isinstance(fp["memory"]["total_bytes"], int)
    assert fp["counters"]["available"] in (True, False)
    if not fp["counters"]["available"]:
        assert fp["counters"]["reason"]
    assert host.collect(gpu=False)["host_id"] == fp["host_id"]
    assert "host " in host.summary(fp)


def test_counters_degrade_with_reason(monkeypatch):
    from dlrmprof.profile import counters
    monkeypatch.setattr(counters, "_probe_live",
                        lambda: {"available": False, "reason": "no PMU here", "events": {}})
    ran = []
    out = counters.measure(lambda: ran.append(1))
    assert out == {"available": False, "reason": "not available on this host: no PMU here"}
    assert ran == []


def test_counters_availability_on_this_host_is_explained():
    from dlrmprof.profile import counters
    av = counters.availability()
    assert av["available"] in (True, False)
    assert av["available"] or av["reason"]


def test_counters_measure_with_a_perf_that_counts(tmp_path, monkeypatch):
    """measure() attaches `perf stat -p`, stops it with SIGINT and parses its CSV."""
    import os
    import stat

    from dlrmprof.profile import counters
    fake = tmp_path / "perf"
    fake.write_text("""#!/bin/sh
emit() {
  echo "1000,,cycles,100,100.00,," >&2
  echo "2500,,instructions,100,100.00,," >&2
  echo "40,,LLC-loads,100,100.00,," >&2
  echo "10,,LLC-load-misses,100,100.00,," >&2
  echo "<not supported>,,cache-references,0,100.00,," >&2
}
trap 'emit; exit 0' INT
case "$*" in *" true") emit; exit 0;; esac
while true; do sleep 0.02; done
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    counters._probe_live.cache_clear()
    try:
        av = counters.availability()
        assert av["available"] is True and av["events"]["cycles"]
        assert av["events"]["cache-references"] is False
        out = counters.measure(lambda: sum(range(10000)))
    finally:
        counters._probe_live.cache_clear()
    assert out["available"] and out["counts"]["instructions"] == 2500.0
    assert out["derived"] == {"ipc": 2.5, "llc_miss_ratio": 0.25}
