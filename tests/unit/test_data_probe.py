"""Defects a hostile new-user probe found in data loading: each test fails if its fix breaks."""
import csv
import json

import pytest

from edgeft.config import build_config
from edgeft.data.loading import label_spelling_clashes, load_splits
from edgeft.data.sources import read_table
from edgeft.errors import DataError


def _reviews(n=200):
    """The probe's dataset: review,sentiment with labels negative/positive."""
    return [{"review": f"review number {i} was {'bad' if i % 2 else 'good'}",
             "sentiment": "negative" if i % 2 else "positive"} for i in range(n)]


def _write(path, rows, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        w.writeheader()
        w.writerows(rows)
    return path


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _load(path, **extra):
    return load_splits(build_config({"data": str(path), "text_column": "review",
                                     "label_column": "sentiment", **extra}))


# 1. no training rows left after cleaning: a DataError with the cause and its fix, not StopIteration

def test_same_file_as_train_and_eval_names_leakage(tmp_path):
    p = _jsonl(tmp_path / "train.jsonl", [{"txt": r["review"], "lab": r["sentiment"]} for r in _reviews(40)])
    with pytest.raises(DataError) as err:
        load_splits(build_config({"data": str(p), "eval_data": str(p), "text_column": "txt", "label_column": "lab"}))
    assert "0 training examples" in err.value.message
    assert "leaked_into_eval" in err.value.message and "leakage" in err.value.message
    assert "--eval-data" in err.value.fix and "stratified" in err.value.fix


def test_all_texts_with_conflicting_labels_names_them(tmp_path):
    rows = [{"review": f"text {i}", "sentiment": s} for i in range(30) for s in ("negative", "positive")]
    with pytest.raises(DataError) as err:
        _load(_write(tmp_path / "d.csv", rows))
    assert "0 training examples" in err.value.message
    assert "conflicting_labels=60" in err.value.message
    assert "one label" in err.value.fix


def test_leakage_that_removes_a_class_names_leakage(tmp_path):
    train = _reviews(40)
    evaluation = [r for r in train if r["sentiment"] == "negative"] + [{"review": "fine", "sentiment": "positive"}]
    with pytest.raises(DataError) as err:
        _load(_write(tmp_path / "d.csv", train), eval_data=str(_write(tmp_path / "e.csv", evaluation)))
    assert "only one class" in err.value.message and "leaked_into_eval=" in err.value.message
    assert "--eval-data" in err.value.fix


def test_regression_emptied_by_leakage_names_it(tmp_path):
    rows = [{"review": f"text {i}", "sentiment": str(i)} for i in range(30)]
    p = _write(tmp_path / "d.csv", rows)
    with pytest.raises(DataError) as err:
        _load(p, eval_data=str(p), task="regression")
    assert "0 examples" in err.value.message and "leaked_into_eval" in err.value.message
    assert "--eval-data" in err.value.fix


def test_eval_data_all_conflicting_is_refused(tmp_path):
    evaluation = [{"review": f"other {i}", "sentiment": s} for i in range(5) for s in ("negative", "positive")]
    with pytest.raises(DataError) as err:
        _load(_write(tmp_path / "d.csv", _reviews(40)), eval_data=str(_write(tmp_path / "e.csv", evaluation)))
    assert "0 evaluation examples" in err.value.message and "one label" in err.value.fix


def test_small_data_keeps_its_plain_fix(tmp_path):
    """A cleaning cause smaller than what is left is named, but the fix stays about the data's size."""
    rows = [{"review": "a", "sentiment": "x"}, {"review": "b", "sentiment": "y"}, {"review": "c", "sentiment": "z"},
            {"review": "d", "sentiment": ""}]
    with pytest.raises(DataError) as err:
        _load(_write(tmp_path / "d.csv", rows))
    assert "missing_label=1" in err.value.message and err.value.fix == "provide at least a few examples per class"


# 2. missing-value spellings in a CSV/TSV label column are missing labels, not a class

@pytest.mark.parametrize("spelling", ["NaN", "nan", "NA", "N/A", "null", "NULL", "#N/A", " NaN "])
@pytest.mark.parametrize("suffix, delimiter", [(".csv", ","), (".tsv", "\t")])
def test_csv_missing_label_spellings_are_dropped(tmp_path, spelling, suffix, delimiter):
    rows = _reviews()
    for r in rows[:29]:
        r["sentiment"] = spelling
    data = _load(_write(tmp_path / f"d{suffix}", rows, delimiter))
    assert data.labels == ["negative", "positive"]
    assert data.report["dropped"]["missing_label"] == 29


@pytest.mark.parametrize("name", ["none", "None"])        # "None": the catch-all intent of LUIS/Rasa exports
def test_csv_none_stays_a_class(tmp_path, name):
    rows = _reviews(300)
    for r in rows[:100]:
        r["sentiment"] = name
    assert _load(_write(tmp_path / "d.csv", rows)).labels == sorted(["negative", name, "positive"])


def test_jsonl_string_nan_stays_a_class(tmp_path):
    """JSONL has a real null, so there a string is always a label."""
    rows = _reviews(300)
    for r in rows[:100]:
        r["sentiment"] = "NaN"
    assert _load(_jsonl(tmp_path / "d.jsonl", rows)).labels == ["NaN", "negative", "positive"]


# 3. the delimiter of a CSV whose header is one column under ","

@pytest.mark.parametrize("delimiter", [";", "|", "\t"])
def test_csv_with_other_delimiter_is_read(tmp_path, delimiter):
    rows = _reviews()
    rows[0]["review"] = "great, really; truly | great"          # delimiters inside a quoted field stay text
    data = _load(_write(tmp_path / "d.csv", rows, delimiter))
    assert data.labels == ["negative", "positive"] and sum(data.report["counts"].values()) == 200
    assert "great, really; truly | great" in {e.text for e in data.train + data.validation + data.test}


def test_semicolon_csv_with_bom_is_read(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("review;sentiment\nfine;positive\n", encoding="utf-8-sig")
    assert read_table(p) == [{"review": "fine", "sentiment": "positive"}]


def test_comma_csv_with_semicolons_in_text_stays_comma(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("review,sentiment\n\"a;b|c\",positive\n")
    assert read_table(p) == [{"review": "a;b|c", "sentiment": "positive"}]


def test_one_column_csv_still_lists_its_column(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("review\ngood\n")
    with pytest.raises(DataError, match=r"columns present: \['review'\]"):
        _load(p)


# 4. the same column as input and label

def test_same_text_and_label_column_is_refused(tmp_path):
    p = _write(tmp_path / "d.csv", _reviews())
    with pytest.raises(DataError) as err:
        load_splits(build_config({"data": str(p), "text_column": "review", "label_column": "review"}))
    assert "--text-column and --label-column both name the column 'review'" in err.value.message
    assert "--label-column" in err.value.fix and "sentiment" in err.value.fix


def test_same_image_and_label_column_is_refused(tmp_path):
    p = _write(tmp_path / "d.csv", [{"image": "a.png", "label": "cat"}])
    with pytest.raises(DataError, match="--image-column and --label-column both name"):
        load_splits(build_config({"data": str(p), "image_column": "image", "label_column": "image",
                                  "modality": "image"}))


# 5. labels that differ only by spelling: kept apart, one warning line

def test_label_spelling_clashes():
    assert sorted(label_spelling_clashes(["0", "0.0", "1", "Positive", "positive", "very  good", "Very good", "nan",
                                          "NaN", "inf", "x"])) == [["0", "0.0"], ["NaN", "nan"],
                                                                  ["Positive", "positive"], ["Very good", "very  good"]]
    assert label_spelling_clashes(["negative", "positive", "0", "1", "10"]) == []


def test_label_spelling_warning_is_one_line(tmp_path, capsys):
    rows = [{"review": f"text {i}", "sentiment": ("0", "0.0", "Positive", "positive")[i % 4]} for i in range(200)]
    data = _load(_write(tmp_path / "d.csv", rows))
    assert data.labels == ["0", "0.0", "Positive", "positive"]          # not merged
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(lines) == 1
    assert "'0' vs '0.0'" in lines[0] and "'Positive' vs 'positive'" in lines[0]
    assert data.report["warnings"] and "'0' vs '0.0'" in data.report["warnings"][0]


def test_no_warning_for_distinct_labels(tmp_path, capsys):
    data = _load(_write(tmp_path / "d.csv", _reviews()))
    assert "warning" not in capsys.readouterr().err and "warnings" not in data.report
