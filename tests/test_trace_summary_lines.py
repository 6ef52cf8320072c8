"""gen-trace's fidelity summary: the flag for tables where the model loses to the naive
baseline names them and says by how much."""

from dlrmprof.commands.trace import _summary_lines
from dlrmprof.tracegen.fidelity import with_naive


def _record(mae: float) -> dict:
    return {"mrc_mae": mae, "distinct_ratio": 1.0, "top10_share_source": 0.5,
            "top10_share_synthetic": 0.5}


def test_flag_names_the_losing_tables_and_the_largest_excess():
    fids = [("A", with_naive(_record(0.0030), [_record(0.0010)])),
            ("B", with_naive(_record(0.0010), [_record(0.0020)])),
            ("C", with_naive(_record(0.0012), [_record(0.0011)]))]
    lines = _summary_lines(fids)
    flag = [ln for ln in lines if ln.startswith("!")]
    assert flag == ["! the model's LRU MRC error exceeds the naive baseline's on 2 table(s), "
                    "by at most 0.0020: A, C"]


def test_no_flag_when_the_model_never_loses():
    fids = [("A", with_naive(_record(0.0010), [_record(0.0010)]))]
    assert not [ln for ln in _summary_lines(fids) if ln.startswith("!")]
