import pytest

from dlrmprof.dlrm.config import DLRMConfig, TableConfig, load_config
from dlrmprof.errors import UserError


def test_presets_and_computed_top_input():
    k = load_config("kaggle")
    assert k.num_tables == 26 and k.embedding_dim == 16
    assert k.top_input == 16 + 27 * 26 // 2 == 367
    assert k.top_layers == (367, 512, 256, 1)
    assert k.bottom_mlp == (13, 512, 256, 64, 16)
    assert k.tables[2].rows == 10131227 and k.lr == 0.1 and k.batch_size == 128
    text = k.describe()
    assert "367" in text and "computed" in text
    t = load_config("terabyte")
    assert t.embedding_dim == 64 and t.top_layers == (64 + 351, 512, 512, 256, 1)
    tiny = load_config("tiny")
    assert tiny.num_tables == 4 and tiny.top_input == 8 + 10


def test_max_rows_caps_tables_and_batch_size_override():
    k = load_config("kaggle", max_rows=1_000_000, batch_size=64)
    assert max(t.rows for t in k.tables) == 1_000_000
    assert k.tables[0].rows == 1460 and k.batch_size == 64 and k.max_rows == 1_000_000
    with pytest.raises(UserError, match="--max-rows"):
        load_config("kaggle", max_rows=0)
    with pytest.raises(UserError, match="--batch-size"):
        load_config("tiny", batch_size=0)


def test_unknown_preset():
    with pytest.raises(UserError, match="unknown config 'huge'"):
        load_config("huge")


def _yaml(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


GOOD = """\
name: mine
dense_features: 13
embedding_dim: 4
bottom_mlp: [13, 8, 4]
top_mlp: [8, 1]
tables: [10, {name: user, rows: 20}]
"""


def test_user_yaml(tmp_path):
    c = load_config(_yaml(tmp_path, GOOD))
    assert c.name == "mine" and [t.name for t in c.tables] == ["C1", "user"]
    assert c.top_input == 4 + 3


@pytest.mark.parametrize("change, key", [
    (("embedding_dim: 4", "embedding_dim: four"), "field embedding_dim"),
    (("bottom_mlp: [13, 8, 4]", "bottom_mlp: [13, -8, 4]"), "field bottom_mlp[1]"),
    (("tables: [10, {name: user, rows: 20}]", "tables: [10, {name: user, rows: x}]"),
     "field tables[1].rows"),
    (("name: mine", "name: mine\nlearning_rate: 3"), "field learning_rate"),
    (("top_mlp: [8, 1]", ""), "field top_mlp"),
    (("dense_features: 13", "dense_features: 13\nlr: -1"), "field lr"),
    (("dense_features: 13", "dense_features: 13\nloss: mse"), "field loss"),
])
def test_malformed_yaml_names_the_key(tmp_path, change, key):
    p = _yaml(tmp_path, GOOD.replace(*change))
    with pytest.raises(UserError) as e:
        load_config(p)
    assert key in str(e.value) and str(p) in str(e.value) and "\n" not in str(e.value)


def test_yaml_syntax_error_names_the_line(tmp_path):
    p = _yaml(tmp_path, GOOD + "tables: [1, 2\n")
    with pytest.raises(UserError, match=r"c\.yaml:\d+: expected valid YAML"):
        load_config(p)


def test_dimensions_checked(tmp_path):
    with pytest.raises(UserError, match="bottom_mlp ends at 8 .* embedding_dim 4"):
        load_config(_yaml(tmp_path, GOOD.replace("bottom_mlp: [13, 8, 4]", "bottom_mlp: [13, 8]")))
    with pytest.raises(UserError, match="bottom_mlp starts at 12"):
        load_config(_yaml(tmp_path, GOOD.replace("[13, 8, 4]", "[12, 8, 4]")))
    with pytest.raises(UserError, match="top_mlp must end in 1"):
        load_config(_yaml(tmp_path, GOOD.replace("top_mlp: [8, 1]", "top_mlp: [8, 2]")))
    with pytest.raises(UserError, match="has dim 3"):
        DLRMConfig("x", 13, 4, (13, 4), (1,), (TableConfig("a", 5, 3),))


def test_trace_rows_mismatch_names_table_and_numbers():
    tiny = load_config("tiny")
    with pytest.raises(UserError, match="trace has 26 tables but config preset tiny has 4"):
        tiny.with_trace_rows([5] * 26, trace_path="t.npz")
    ok = tiny.with_trace_rows([10, 20, 30, 40])
    assert [t.rows for t in ok.tables] == [10, 20, 30, 40] and ok.rows_from == "trace"
    capped = load_config("kaggle", max_rows=1000)
    rows = [min(1000, t.rows) for t in capped.tables]
    rows[2] = 5000
    with pytest.raises(UserError, match=r"table C3: trace has 5000 rows but config preset "
                                        r"kaggle \(--max-rows 1000\) allows 1000"):
        capped.with_trace_rows(rows, trace_path="t.npz")


def test_preset_rows_are_reference_values_not_limits():
    k = load_config("kaggle")
    rows = [t.rows for t in k.tables]
    rows[8] = 4  # C9: Criteo lists 3 values; a reader giving "missing" its own ID needs 4
    assert k.with_trace_rows(rows).tables[8].rows == 4
    capped = load_config("kaggle", max_rows=1000)
    with pytest.raises(UserError, match="table C9: trace has 5000 rows .* allows 1000"):
        capped.with_trace_rows([3] * 8 + [5000] + [3] * 17)
