"""`dlrmprof.platform`: the host facts the kernels and the fingerprint share, read from
canned /proc and /sys trees (tests/data/hosts) and from trees built here."""

import pytest

from dlrmprof import platform as plat
from dlrmprof.profile import host

HOSTS = "tests/data/hosts"


def test_cache_sizes_from_canned_trees():
    spr = plat.cache_sizes(f"{HOSTS}/intel_spr")
    assert (spr.l1, spr.l2, spr.l3, spr.source) == (48 << 10, 2 << 20, 107520 << 10, "sysfs")
    genoa = plat.cache_sizes(f"{HOSTS}/amd_genoa")
    assert (genoa.l1, genoa.l2, genoa.l3) == (32 << 10, 1 << 20, 32 << 20)


def test_cache_sizes_fall_back_to_defaults_and_say_so(tmp_path):
    none = plat.cache_sizes(tmp_path)
    assert (none.l1, none.l2, none.l3) == plat.CacheSizes.DEFAULTS and none.source == "default"
    d = tmp_path / "sys/devices/system/cpu/cpu0/cache/index2"
    d.mkdir(parents=True)
    (d / "level").write_text("2\n")
    (d / "type").write_text("Unified\n")
    (d / "size").write_text("1280K\n")
    part = plat.cache_sizes(tmp_path)
    assert part.l2 == 1280 << 10 and part.l1 == 32 << 10 and part.source == "sysfs+default"
    (d / "size").write_text("junk\n")     # an unreadable size is skipped, not guessed
    assert plat.cache_sizes(tmp_path).source == "default"


def test_the_fingerprint_reads_the_same_caches():
    for name in ("intel_spr", "amd_genoa", "arm_graviton3"):
        fp = host.collect(f"{HOSTS}/{name}", counters=False)
        assert fp["caches"] == plat.read_caches(f"{HOSTS}/{name}")
        sizes = plat.cache_sizes(f"{HOSTS}/{name}")
        by_level = {c["level"]: c["size_bytes"] for c in host.data_caches(fp["caches"])}
        assert sizes.l1 == by_level[1] and sizes.l2 == by_level[2]
        assert sorted(plat.cpu_flags(f"{HOSTS}/{name}")) == fp["cpu"]["flags"]


def test_invariant_tsc_from_flags(tmp_path):
    assert plat.invariant_tsc(f"{HOSTS}/intel_spr")
    assert not plat.invariant_tsc(f"{HOSTS}/arm_graviton3")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu tsc constant_tsc\n")
    assert not plat.invariant_tsc(tmp_path)            # constant but not nonstop
    assert plat.tsc_period_s(str(tmp_path)) is None
    assert not plat.invariant_tsc(tmp_path / "missing")


class _FakeTime:
    """A clock that moves 1 ms a reading and a counter of `hz` ticks per second of it."""

    def __init__(self, hz):
        self.t, self.hz = 0.0, hz

    def clock(self):
        self.t += 0.001
        return self.t

    def ticks(self):
        return int(self.t * self.hz)


def test_calibrate_tsc_on_a_fake_counter():
    two_ghz = _FakeTime(2e9)
    assert plat.calibrate_tsc(two_ghz.ticks, two_ghz.clock) == pytest.approx(5e-10, rel=1e-6)
    frozen = _FakeTime(0)                                # a counter that does not move
    assert plat.calibrate_tsc(frozen.ticks, frozen.clock) is None
    slow = _FakeTime(1e4)                                # 10 kHz: not a time-stamp counter
    assert plat.calibrate_tsc(slow.ticks, slow.clock) is None


def test_live_tsc_period_is_plausible_or_absent():
    p = plat.tsc_period_s()
    assert p is None or 1e-10 < p < 5e-9
    assert (p is not None) <= plat.invariant_tsc()
