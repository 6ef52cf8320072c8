import json

import pytest
from click.testing import CliRunner

from dlrmprof.cli import cli
from dlrmprof.errors import UserError
from dlrmprof.profile import sweep

CACHES = [{"level": 1, "type": "data", "size_bytes": 32 << 10},
          {"level": 2, "type": "unified", "size_bytes": 1 << 20},
          {"level": 3, "type": "unified", "size_bytes": 32 << 20}]


def test_parse_bytes():
    assert sweep.parse_bytes("16K") == 16384
    assert sweep.parse_bytes("1.5M") == 1572864
    assert sweep.parse_bytes("2GiB") == 2 << 30
    with pytest.raises(UserError, match="byte size"):
        sweep.parse_bytes("lots")


def test_sizes_between():
    assert sweep.sizes_between(16 << 10, 128 << 10) == [16 << 10, 32 << 10, 64 << 10, 128 << 10]
    s = sweep.sizes_between(16 << 10, 64 << 10, per_octave=2)
    assert s[0] == 16 << 10 and s[-1] == 64 << 10 and len(s) == 5
    with pytest.raises(UserError):
        sweep.sizes_between(100, 10)


def test_find_knees_matches_caches():
    sizes = [2 ** k for k in range(14, 28)]
    # plateau in L1, drop after L2 (1 MiB), drop at ~8 MiB (a usable L3 far below 32 MiB)
    gbs = [50 if s <= 32 << 10 else 20 if s <= 1 << 20 else 12 if s <= 8 << 20 else 3
           for s in sizes]
    knees = sweep.find_knees(sizes, gbs, CACHES)
    assert [k["between"] for k in knees] == [[32 << 10, 64 << 10], [1 << 20, 2 << 20],
                                             [8 << 20, 16 << 20]]
    assert [k["nearest_cache"]["level"] for k in knees] == [1, 2, 3]
    assert knees[0]["nearest_cache"]["matches"] and knees[1]["nearest_cache"]["matches"]
    assert not knees[2]["nearest_cache"]["matches"]          # 11 MiB vs 32 MiB: > 2x apart
    assert sweep.find_knees(sizes, [10.0] * len(sizes), CACHES) == []


def test_sweep_cli_small(tmp_path):
    out, png = tmp_path / "s.json", tmp_path / "s.png"
    r = CliRunner().invoke(cli, ["sweep", "--min-size", "16K", "--max-size", "32K",
                                 "--out", str(out), "--png", str(png)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert [p["size_bytes"] for p in data["points"]] == [16 << 10, 32 << 10]
    assert all(p["gather_gbs"] > 0 and p["read_gbs"] > 0 for p in data["points"])
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, needle", [
    (["--max-size", "64T"], "larger than this host can hold"),
    (["--max-size", "seven"], "expected a byte size"),
    (["--min-size", "1M", "--max-size", "64K"], "smaller than --min-size"),
])
def test_sweep_bad_input(tmp_path, args, needle):
    out = tmp_path / "s.json"
    r = CliRunner().invoke(cli, ["sweep", *args, "--out", str(out)])
    assert r.exit_code == 2
    assert needle in r.output and r.output.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
