import pytest

from dlrmprof.profile import roofline
from dlrmprof.profile.report import op_row

ROOFS = {"stream_gbs": 20.0, "stream_read_gbs": 15.0, "random_gbs": 5.0,
         "random_ns_per_line": 12.8, "latency_ns": 120.0, "fp32_gflops": 100.0,
         "bf16_gflops": 300.0}
CEIL = {"roofs": {"1": ROOFS, "2": {k: 2 * v for k, v in ROOFS.items()}},
        "llc_bytes": 32 << 20}


def emb(name, rows, t=1e-3, nbytes=10_000_000, flops=2_000_000):
    return op_row(name, kind="embedding_bag", phase="forward", device="cpu", backend="numba",
                  samples=[t], bytes=nbytes, flops=flops, shape={"rows": rows, "row_bytes": 64})


def test_big_table_gather_is_latency_bound():
    (v,) = roofline.verdicts([emb("emb.C3", 10_000_000, t=4e-3)], CEIL, threads=1)
    assert v["verdict"] == "latency-bound" and v["governing_roof"] == "random"
    assert v["achieved_gbs"] == pytest.approx(2.5)
    assert v["intensity"] == pytest.approx(0.2)
    # attainable = 0.2 FLOP/B * 5 GB/s = 1 GFLOP/s; achieved 0.5 GFLOP/s -> 50 %
    assert v["percent_of_roof"] == pytest.approx(50.0)


def test_gather_above_the_random_roof_is_judged_against_the_stream_roof():
    # effective 10 GB/s: twice the random-access roof (every lookup counted as DRAM traffic
    # while rows hit in cache); never "200% of roof": judged against the stream roof (20)
    (v,) = roofline.verdicts([emb("emb.C3", 10_000_000)], CEIL, threads=1)
    assert v["verdict"] == "memory-bound" and v["governing_roof"] == "stream"
    assert v["percent_of_roof"] == pytest.approx(50.0)
    assert v["percent_of_random_roof"] == pytest.approx(200.0)
    assert "judged against the streaming roof" in v["why"]


def test_small_table_gather_is_memory_bound_on_stream_roof():
    (v,) = roofline.verdicts([emb("emb.C9", 1000)], CEIL, threads=1)
    assert v["verdict"] == "memory-bound" and v["memory_roof_gbs"] == 20.0
    assert v["percent_of_roof"] == pytest.approx(50.0)


def test_large_mlp_is_compute_bound_and_threads_pick_roofs():
    # linear 2048 x 512 -> 256: intensity ~79 FLOP/B, far above the ridge (5 FLOP/B)
    fl = 2 * 2048 * 512 * 256
    by = (2048 * 512 + 512 * 256 + 2048 * 256) * 4
    row = op_row("top_mlp.0", kind="linear", phase="forward", device="cpu", backend="torch",
                 samples=[fl / 80e9], bytes=by, flops=fl)
    (v1,) = roofline.verdicts([row], CEIL, threads=1)
    (v2,) = roofline.verdicts([row], CEIL, threads=2)
    assert v1["verdict"] == "compute-bound" and v1["governing_roof"] == "compute"
    assert v1["percent_of_roof"] == pytest.approx(80.0)
    assert v2["percent_of_roof"] == pytest.approx(40.0) and v2["threads"] == 2


def test_bf16_uses_bf16_roof():
    row = op_row("top_mlp", kind="mlp", phase="forward", device="cpu", backend="torch",
                 samples=[1.0], bytes=1000, flops=150_000_000_000, shape={"dtype": "bf16"})
    (v,) = roofline.verdicts([row], CEIL, threads=1)
    assert v["compute_roof_gflops"] == 300.0 and v["percent_of_roof"] == pytest.approx(50.0)


def test_dram_estimate_from_cache_study():
    rows = [emb("emb.C3", 10_000_000)]
    cache = {"emb.C3": {"dram_bytes": 1_000_000, "row_bytes_total": 8_000_000}}
    (v,) = roofline.verdicts(rows, CEIL, cache=cache, threads=1)
    # only 12.5 % of row bytes from DRAM: the gather is served by caches -> stream roof
    assert v["verdict"] == "memory-bound"
    assert v["dram_gbs_est"] == pytest.approx(1.0) and not v["dram_exceeds_roof"]
    assert v["sources"]["dram_bytes_est"] == "simulated"
    cache = {"emb.C3": {"dram_bytes": 7_000_000, "row_bytes_total": 8_000_000}}
    (v,) = roofline.verdicts([emb("emb.C3", 10_000_000, t=4e-3)], CEIL, cache=cache, threads=1)
    assert v["verdict"] == "latency-bound"


def test_op_without_costs():
    row = op_row("loss", kind="loss", phase="forward", device="cpu", backend="torch",
                 samples=[1e-5])
    (v,) = roofline.verdicts([row], CEIL)
    assert v["verdict"] is None and "cost model" in v["reason"]


def test_cuda_row_without_cuda_ceilings():
    row = op_row("top_mlp", kind="mlp", phase="forward", device="cuda", backend="torch",
                 samples=[1e-3], bytes=10, flops=10)
    (v,) = roofline.verdicts([row], CEIL)
    assert v["verdict"] is None and "CUDA" in v["reason"]


def test_section():
    sec = roofline.section([emb("emb.C3", 10_000_000)], CEIL, threads=1)
    assert sec["roofs"]["threads"] == 1 and len(sec["rows"]) == 1


def test_llc_resident_table_ignores_single_pass_cold_misses():
    # 1000 rows x 64 B fit in the LLC: a short trace's compulsory misses do not make it
    # latency-bound (the table stays resident across iterations)
    cache = {"emb.C9": {"dram_bytes": 900_000, "row_bytes_total": 1_000_000}}
    (v,) = roofline.verdicts([emb("emb.C9", 1000)], CEIL, cache=cache, threads=1)
    assert v["verdict"] == "memory-bound" and "cache-resident" in v["why"]


def test_above_roof_raises_the_stale_ceiling():
    # 120 GFLOP/s against a measured 100: the ceiling (an upper bound) was under-measured;
    # it is raised to 120, the op is at 100% of it, other ops are judged against it too, and
    # the section says which roof was stale
    row = op_row("top_mlp", kind="mlp", phase="forward", device="cpu", backend="torch",
                 samples=[1.0], bytes=1000, flops=120_000_000_000)
    other = op_row("bottom_mlp", kind="mlp", phase="forward", device="cpu", backend="torch",
                   samples=[1.0], bytes=1000, flops=60_000_000_000)
    stale = []
    v, w = roofline.verdicts([row, other], CEIL, threads=1, stale=stale)
    assert v["percent_of_roof"] == pytest.approx(100.0) and v["compute_roof_gflops"] == 120.0
    assert v["ceiling_raised"] and "stale" in v["note"] and "re-probe" in v["note"]
    assert w["percent_of_roof"] == pytest.approx(50.0)
    assert stale == [{"roof": "fp32_gflops", "device": "cpu", "reached": pytest.approx(120.0),
                      "op": "top_mlp", "phase": "forward", "measured": 100.0}]
    sec = roofline.section([row, other], CEIL, threads=1)
    assert sec["roofs"]["fp32_gflops"] == pytest.approx(120.0)
    assert sec["measured_roofs"]["fp32_gflops"] == 100.0 and sec["stale_ceilings"]
    assert "(100% of roof)" in roofline.label(v)
    (v,) = roofline.verdicts([emb("emb.C9", 1000)], CEIL, threads=1)
    assert not v["exceeds_roof"] and "note" not in v


def test_no_verdict_above_100_percent():
    # a stream-roof op at 3x STREAM and a gather at 4x the random roof and 2x STREAM
    rows = [op_row("interaction", kind="interaction", phase="forward", device="cpu",
                   backend="torch", samples=[1e-3], bytes=60_000_000, flops=1000),
            emb("emb.C3", 10_000_000, t=1e-3, nbytes=40_000_000)]
    out = roofline.verdicts(rows, CEIL, threads=1)
    assert all(v["percent_of_roof"] <= 100.0 for v in out)
    assert out[0]["ceiling_raised"] and out[0]["memory_roof_gbs"] == pytest.approx(60.0)


def test_multi_line_rows_above_the_random_roof_say_why():
    # 256-byte rows (4 lines) past the single-line random-access roof: the note names the
    # adjacent lines; one-line rows keep the general explanation
    wide = op_row("emb.C3", kind="embedding_bag", phase="forward", device="cpu",
                  backend="numba", samples=[1e-3], bytes=10_000_000, flops=2_000_000,
                  shape={"rows": 10_000_000, "row_bytes": 256})
    (v,) = roofline.verdicts([wide], CEIL, threads=1)
    assert "rows of 4 adjacent cache lines" in v["note"] and v["percent_of_random_roof"] > 100
    (v,) = roofline.verdicts([emb("emb.C3", 10_000_000)], CEIL, threads=1)
    assert "adjacent" not in v["note"] and "hit in cache" in v["note"]


def test_section_uses_the_run_devices_roofs():
    from dlrmprof.profile import roofline
    ceilings = {"roofs": {"1": {"stream_gbs": 20.0, "random_gbs": 6.0, "random_ns_per_line": 10.0,
                                "latency_ns": 150.0, "fp32_gflops": 90.0, "bf16_gflops": 200.0}},
                "cuda": {"available": True, "copy": {"best": 3000.0}, "fp32": {"best": 50000.0},
                         "bf16": {"best": 700000.0}}}
    row = {"name": "top_mlp", "phase": "forward", "device": "cuda", "bytes": 10**6,
           "flops": 10**9, "time_s": {"median": 1e-5}}
    sec = roofline.section([row], ceilings, device="cuda")
    assert sec["roofs"]["stream_gbs"] == 3000.0
    assert roofline.section([row], ceilings)["roofs"]["stream_gbs"] == 20.0
    no_gpu = dict(ceilings, cuda={"available": False})
    assert roofline.section([row], no_gpu, device="cuda")["roofs"] == {}


def test_tiny_calls_far_below_the_roof_are_overhead_dominated():
    from dlrmprof.profile import roofline
    roofs = {"stream_gbs": 20.0, "random_gbs": 6.0, "random_ns_per_line": 10.0,
             "latency_ns": 150.0, "fp32_gflops": 90.0, "bf16_gflops": 200.0, "threads": 1}
    tiny = {"name": "emb.all", "phase": "forward", "kind": "embedding_bag", "device": "cpu",
            "bytes": 200_000, "flops": 20_000, "time": {"median": 170e-6},
            "shape": {"rows": 1000, "row_bytes": 64, "calls": 26}}
    v = roofline.verdict_for(tiny, roofs, llc_bytes=32 << 20)
    assert v["overhead_dominated"] and "per-call overhead" in v["note"]
    assert abs(v["per_call_s"] - 170e-6 / 26) < 1e-12
    big = dict(tiny, bytes=200_000_000, flops=20_000_000, time={"median": 20e-3})
    v = roofline.verdict_for(big, roofs, llc_bytes=32 << 20)
    assert not v["overhead_dominated"] and "note" not in v


def test_gpu_calls_whose_work_takes_nanoseconds_at_the_roof_are_overhead_dominated():
    # H200-like roofs; a batch-128 table lookup: 100 us a call (launch, marshalling,
    # Python) for 17 kB that HBM moves in ~4 ns.  Over OVERHEAD_CALL_S, still overhead.
    from dlrmprof.profile import roofline
    roofs = {"stream_gbs": 4000.0, "random_gbs": None, "fp32_gflops": 51000.0,
             "bf16_gflops": 750000.0, "threads": 1}
    lookup = {"name": "emb.C1", "phase": "forward", "kind": "embedding_bag", "device": "cuda",
              "bytes": 17_000, "flops": 2_000, "time": {"median": 100e-6},
              "shape": {"rows": 10**6, "row_bytes": 64, "calls": 1}}
    v = roofline.verdict_for(lookup, roofs, llc_bytes=60 << 20)
    assert v["overhead_dominated"] and v["roof_time_per_call_s"] < 1e-8
    assert roofline.label(v).startswith("overhead-dominated (0% of memory-bound roof")
    # the same call moving 400 MB in 250 us (40% of the roof): the hardware's verdict
    big = dict(lookup, bytes=400_000_000, flops=40_000_000, time={"median": 250e-6})
    v = roofline.verdict_for(big, roofs, llc_bytes=60 << 20)
    assert not v["overhead_dominated"] and roofline.label(v) == "memory-bound (40% of roof)"
    # far under the roof but with real work per call (5 ms at the roof): not overhead
    slow = dict(big, time={"median": 50e-3})
    v = roofline.verdict_for(slow, roofs, llc_bytes=60 << 20)
    assert not v["overhead_dominated"] and v["percent_of_roof"] < 1
    assert roofline.label({}) == "-"
