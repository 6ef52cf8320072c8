import json

import pytest
from click.testing import CliRunner

from dlrmprof.cli import cli
from dlrmprof.profile import ceilings, host, noise

SMALL = {"array_bytes": 1 << 20, "table_bytes": 1 << 20, "lines": 4096, "chase_steps": 4096,
         "gemm_n": 64, "repeats": 2}


@pytest.fixture(scope="module")
def fp():
    return host.collect(gpu=False, counters=False)


@pytest.fixture(scope="module")
def small(fp):
    return ceilings.probe(fp, threads=[1, 2], sizes=SMALL)


def test_probe_shape_and_sanity(small):
    r = small["roofs"]
    assert set(r) == {"1", "2"}
    for t in ("1", "2"):
        assert r[t]["stream_gbs"] > 0.1 and r[t]["fp32_gflops"] > 0.01
        assert r[t]["random_ns_per_line"] > 0 and r[t]["latency_ns"] > 0
        # random GB/s and ns/line are two views of one measurement
        assert r[t]["random_gbs"] == pytest.approx(64 / r[t]["random_ns_per_line"], rel=1e-6)
    assert small["random"]["table_bytes"] == 1 << 20
    assert small["gemm"]["engine"]["fp32_impl"]
    assert small["cuda"]["available"] in (True, False)
    assert small["source"] == "measured"


def test_roofs_for_picks_thread_count(small):
    assert ceilings.roofs_for(small, 1)["threads"] == 1
    assert ceilings.roofs_for(small, 8)["threads"] == 2
    assert ceilings.roofs_for(small)["threads"] == 2
    if not small["cuda"]["available"]:
        with pytest.raises(KeyError):
            ceilings.roofs_for(small, device="cuda")


def test_thread_counts():
    assert ceilings.thread_counts(1) == [1]
    assert ceilings.thread_counts(2) == [1, 2]
    assert ceilings.thread_counts(6) == [1, 2, 4, 6]


def test_cache_roundtrip_and_cli(tmp_path, monkeypatch, small, fp):
    monkeypatch.setenv("DLRMPROF_CACHE_DIR", str(tmp_path))
    calls = []
    real = ceilings.probe

    def tiny(fp_, **kw):
        calls.append(kw)
        c = real(fp_, threads=[1], sizes=SMALL, progress=kw.get("progress"))
        c["provisional"] = False        # what this test checks is the caching, not the load
        return c
    monkeypatch.setattr(ceilings, "probe", tiny)
    r = CliRunner().invoke(cli, ["host", "--probe"])
    assert r.exit_code == 0, r.output
    assert "ceilings for host" in r.output and len(calls) == 1
    assert ceilings.cache_path(fp["host_id"]).exists()
    r = CliRunner().invoke(cli, ["host", "--probe", "--json"])
    assert r.exit_code == 0 and len(calls) == 1          # served from the cache
    data = json.loads(r.output)
    assert data["ceilings_cached"] is True and data["host"]["host_id"] == fp["host_id"]
    r = CliRunner().invoke(cli, ["host", "--refresh", "--json"])
    assert r.exit_code == 0 and len(calls) == 2
    # a corrupt cache file is ignored and re-probed, never an error
    ceilings.cache_path(fp["host_id"]).write_text("{trunc")
    assert ceilings.load_cached(fp["host_id"]) is None
    r = CliRunner().invoke(cli, ["host"])
    assert r.exit_code == 0 and "not measured yet" in r.output


def test_timed_samples_keeps_count():
    out = noise.timed_samples(lambda: sum(range(1000)), repeats=4, warmup=1, budget_s=1.0)
    assert len(out["samples"]) == 4 and all(s > 0 for s in out["samples"])
    assert len(out["other_cpu"]) == 4


@pytest.mark.cuda
def test_cuda_probe_with_events():
    res = ceilings.probe_cuda(repeats=2, full=False)
    assert res["available"] is True
    assert res["copy"]["best"] > 10 and res["fp32"]["best"] > 100
    c = {"cuda": res, "roofs": {"1": {}}}
    assert ceilings.roofs_for(c, device="cuda:0")["fp32_gflops"] == res["fp32"]["best"]


def test_cuda_probe_skips_cleanly_without_gpu():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    res = ceilings.probe_cuda(repeats=2, full=False)
    assert res == {"available": False,
                   "reason": "no CUDA device (torch.cuda.is_available() is False)"}
