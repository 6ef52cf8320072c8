from dlrmprof.profile import render, roofline
from dlrmprof.profile.report import Report, op_row

ROOFS = {"stream_gbs": 20.0, "random_gbs": 5.0, "random_ns_per_line": 12.8, "latency_ns": 120.0,
         "fp32_gflops": 100.0, "bf16_gflops": 300.0, "stream_read_gbs": 15.0}
CEIL = {"roofs": {"1": ROOFS}, "llc_bytes": 32 << 20}


def _report():
    ops = [op_row("emb.all", kind="embedding_bag", phase="forward", device="cpu",
                  backend="numba", samples=[2e-3, 3e-3], bytes=10_000_000, flops=1_000_000,
                  shape={"rows": 10_000_000, "row_bytes": 64}),
           op_row("top_mlp", kind="mlp", phase="forward", device="cpu", backend="torch",
                  samples=[1e-3], bytes=7_000_000, flops=60_000_000),
           op_row("loss", kind="loss", phase="forward", device="cpu", backend="torch",
                  samples=[1e-5])]
    sim = {"emb.all": {"levels": [
        {"level": 1, "size_bytes": 32768, "cumulative_hit_rate": 0.3,
         "fa_cumulative_hit_rate": 0.31},
        {"level": 2, "size_bytes": 1 << 20, "cumulative_hit_rate": 0.5,
         "fa_cumulative_hit_rate": 0.52}], "dram_bytes": 4_000_000,
        "row_bytes_total": 8_000_000}}
    cache = {"simulation": sim, "counters": {"available": False, "reason": "not here"}}
    simd = {"levels": [{"name": "scalar", "asm": {"xmm": 3, "ymm": 0, "zmm": 0},
                        "verified": True},
                       {"name": "avx2", "asm": {"xmm": 1, "ymm": 9, "zmm": 0}, "verified": True}],
            "ops": [{"op": "gather", "verdict": "latency-bound",
                     "by_level": {"scalar": {"time_s": 1e-3, "speedup": 1.0},
                                  "avx2": {"time_s": 9e-4, "speedup": 1.11}}}],
            "held": True, "statement": "ok"}
    rl = roofline.section(ops, CEIL, cache=sim, threads=1)
    return Report.new({"host_id": "h", "cpu": {"vendor": "AMD"}}, ops, roofline=rl,
                      cache=cache, simd=simd, config={"preset": "tiny"},
                      end_to_end={"samples_per_s": 12345.0})


def test_render_report_writes_md_and_pngs(tmp_path):
    rep = _report()
    jp = rep.save(tmp_path / "r.json")
    paths = render.render_report(rep, jp)
    names = sorted(p.name for p in paths)
    assert names == ["r.md", "r.mrc.png", "r.roofline.png", "r.simd.png"]
    for p in paths:
        assert p.exists() and p.stat().st_size > 100
    md = (tmp_path / "r.md").read_text()
    assert "| emb.all | forward | numba |" in md and "latency-bound" in md
    assert "compute-bound" in md          # top_mlp: 8.6 FLOP/B above the ridge (5)
    assert "| loss | forward | torch |" in md and "not here" in md
    assert "held" in md
    # nothing but the report and its renderings in the folder (no temporary files left)
    assert len(list(tmp_path.iterdir())) == 5


def test_the_serving_examples_render_to_their_committed_markdown():
    """Golden files: reports/examples/serving/*.md were written by `render.markdown`."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "reports" / "examples" / "serving"
    paths = sorted(root.glob("kaggle-*.json"))
    assert len(paths) == 4
    for p in paths:
        assert render.markdown(Report.load(p)) == p.with_suffix(".md").read_text(), p.name
