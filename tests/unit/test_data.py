import json
from collections import Counter

import pytest

from edgeft.config import build_config
from edgeft.data.builtin import SMARTHOME_DIR
from edgeft.data.builtin.make_smarthome import generate
from edgeft.data.loading import load_splits, stratified_split, to_examples
from edgeft.data.sources import read_table
from edgeft.errors import DataError
from tests.conftest import write_csv


def _rows(n_per_class: int, classes=("a", "b", "c")):
    return [{"text": f"example {c} {i}", "label": c} for c in classes for i in range(n_per_class)]


def test_builtin_dataset_matches_its_generator_and_size():
    splits = generate()
    for name, rows in splits.items():
        shipped = read_table(SMARTHOME_DIR / f"{name}.csv")
        assert [(r["text"], r["intent"]) for r in shipped] == list(rows), f"{name}.csv is stale: rerun make_smarthome"
    total = sum(len(r) for r in splits.values())
    intents = {label for rows in splits.values() for _, label in rows}
    assert total >= 400 and len(intents) >= 8
    from edgeft.data.cleaning import normalize

    texts = [normalize(t) for rows in splits.values() for t, _ in rows]
    assert len(texts) == len(set(texts)), "no utterance may repeat across splits"


def test_load_splits_builtin_uses_fixed_split():
    data = load_splits(build_config({}))
    assert data.report["counts"] == {"train": 400, "validation": 100, "test": 300}
    assert len(data.labels) == 10


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_load_splits_reads_each_format(tmp_path, fmt):
    rows = _rows(20)
    p = tmp_path / f"d.{fmt}"
    if fmt == "jsonl":
        p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        sep = "," if fmt == "csv" else "\t"
        p.write_text("text" + sep + "label\n" + "".join(f"{r['text']}{sep}{r['label']}\n" for r in rows))
    data = load_splits(build_config({"data": str(p)}))
    assert data.labels == ["a", "b", "c"]
    assert sum(data.report["counts"].values()) == 60
    assert Counter(e.label for e in data.test) == {"a": 4, "b": 4, "c": 4}


def test_load_splits_integer_labels_sort_numerically(tmp_path):
    rows = [{"text": f"t{i}", "y": str(i % 12)} for i in range(120)]
    p = write_csv(tmp_path / "d.csv", rows)
    data = load_splits(build_config({"data": str(p), "label_column": "y"}))
    assert data.labels == [str(i) for i in range(12)]


def test_load_splits_missing_column_lists_present_columns(tmp_path):
    p = write_csv(tmp_path / "d.csv", _rows(5))
    with pytest.raises(DataError) as e:
        load_splits(build_config({"data": str(p), "label_column": "category"}))
    assert "'category'" in str(e.value) and "['text', 'label']" in str(e.value)
    assert "--label-column" in e.value.fix


def test_load_splits_single_class_refused(tmp_path):
    p = write_csv(tmp_path / "d.csv", _rows(10, classes=("only",)))
    with pytest.raises(DataError, match="only one class"):
        load_splits(build_config({"data": str(p)}))


def test_load_splits_empty_file_refused(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label\n")
    with pytest.raises(DataError, match="no rows"):
        load_splits(build_config({"data": str(p)}))


def test_load_splits_fewer_examples_than_classes_refused(tmp_path):
    p = write_csv(tmp_path / "d.csv", [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}, {"text": "z", "label": "c"}])
    with pytest.raises(DataError, match="too few"):
        load_splits(build_config({"data": str(p)}))


def test_load_splits_eval_label_unseen_in_training_refused(tmp_path):
    train = write_csv(tmp_path / "train.csv", _rows(10))
    test = write_csv(tmp_path / "test.csv", [{"text": "new", "label": "zzz"}])
    with pytest.raises(DataError, match="never in training"):
        load_splits(build_config({"data": str(train), "eval_data": str(test)}))


def test_to_examples_drops_empty_text_and_missing_labels(tmp_path):
    rows = _rows(3) + [{"text": "  ", "label": "a"}, {"text": "ok", "label": ""}]
    ex, dropped = to_examples(rows, tmp_path / "x.csv", "text", "label")
    assert len(ex) == 9 and dropped == {"empty_text": 1, "missing_label": 1}


def test_stratified_split_is_seeded_and_keeps_class_shares():
    ex, _ = to_examples(_rows(50), "x", "text", "label")
    a = stratified_split(ex, 0.2, seed=3)
    b = stratified_split(ex, 0.2, seed=3)
    c = stratified_split(ex, 0.2, seed=4)
    assert a == b and a != c
    assert Counter(e.label for e in a[1]) == {"a": 10, "b": 10, "c": 10}
    assert not set(a[0]) & set(a[1])


def test_cleaning_removes_duplicates_conflicts_and_leakage(tmp_path):
    rows = ([{"text": "turn on the lights", "label": "on"}] * 3                         # 2 exact duplicates
            + [{"text": "Turn on the lights!", "label": "on"}]                          # normalized duplicate
            + [{"text": "lights", "label": "on"}, {"text": "LIGHTS", "label": "off"}]   # conflicting labels
            + [{"text": f"on {i}", "label": "on"} for i in range(10)]
            + [{"text": f"off {i}", "label": "off"} for i in range(10)])
    train = write_csv(tmp_path / "train.csv", rows)
    test = write_csv(tmp_path / "test.csv", [{"text": "ON 3.", "label": "on"}, {"text": "off 4", "label": "off"},
                                             {"text": "off 4", "label": "off"}])
    data = load_splits(build_config({"data": str(train), "eval_data": str(test)}))
    d = data.report["dropped"]
    assert d["exact_duplicates"] == 2 and d["normalized_duplicates"] == 1 and d["conflicting_labels"] == 2
    assert d["leaked_into_eval"] == 2 and d["eval_exact_duplicates"] == 1
    train_texts = {e.text for e in data.train + data.validation}
    assert "on 3" not in train_texts and "off 4" not in train_texts
    assert sum(t.lower() == "turn on the lights" or t == "Turn on the lights!" for t in train_texts) == 1
    assert data.report["class_distribution_before"] == {"off": 11, "on": 15}
    assert len(data.test) == 2


def test_load_splits_reads_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _rows(20)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    data = load_splits(build_config({"data": str(tmp_path / "d.parquet")}))
    assert data.labels == ["a", "b", "c"] and sum(data.report["counts"].values()) == 60


def test_load_splits_reads_save_to_disk_dataset_dict_with_its_test_split(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    feats = Features({"sentence": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    train = Dataset.from_dict({"sentence": [f"s{i}" for i in range(40)], "label": [i % 2 for i in range(40)]}, features=feats)
    test = Dataset.from_dict({"sentence": [f"t{i}" for i in range(10)], "label": [i % 2 for i in range(10)]}, features=feats)
    DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "ds"))
    data = load_splits(build_config({"data": str(tmp_path / "ds"), "text_column": "sentence"}))
    assert data.labels == ["neg", "pos"], "ClassLabel ids become their names"
    assert len(data.test) == 10 and {e.text for e in data.test} == {f"t{i}" for i in range(10)}
    assert len(data.train) + len(data.validation) == 40


def test_hub_dataset_unreachable_says_how_to_get_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError) as e:
        load_splits(build_config({"data": "hf:some-org/some-dataset"}))
    assert "some-org/some-dataset" in str(e.value) and "save_to_disk" in e.value.fix


def test_unsupported_file_format_lists_supported(tmp_path):
    p = tmp_path / "d.xlsx"
    p.write_bytes(b"x")
    with pytest.raises(DataError, match="unsupported data format '.xlsx'") as e:
        load_splits(build_config({"data": str(p)}))
    assert ".parquet" in e.value.fix
