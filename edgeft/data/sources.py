"""Read a data source into rows (dicts): files, Hugging Face datasets, image folders.

Sources:
    table.csv / .tsv / .jsonl / .parquet    one example per row, header = column names (a .csv or .tsv whose
                                            header is one column holding ";", tab or "|" is read with that
                                            delimiter); in .csv/.tsv a label spelled as in MISSING_SPELLINGS
                                            is a missing label
    folder saved with datasets' save_to_disk a Dataset, or a DatasetDict (its "train" split is the data;
                                            its "test" split becomes the evaluation set when none is given)
    hf:NAME[:CONFIG]                        a dataset on the Hugging Face hub (needs the hub; offline it
                                            fails with the way around it)
    folder/class_name/image.png             an ImageFolder tree: the folder names are the labels
Image paths in a table are resolved relative to the table's folder.

Raises:
    DataError: the source is missing, unreadable, of an unknown format, or (hub) unreachable.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from edgeft.errors import DataError

TABLES = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".json": None, ".parquet": "parquet"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
IMAGEFOLDER = "imagefolder"
CSV_FIELD_LIMIT = 16 << 20        # long documents are fine; beyond this a field is a quoting error
DELIMITERS = (",", ";", "\t", "|")
# pandas.read_csv's default NaN strings, case-sensitive, but for "None": a CSV cell has no null, so these
# spellings are how writers (pandas, R, Excel) leave a label out; "None" is kept a class because intent datasets
# name their catch-all intent so (LUIS, Rasa exports). JSONL/parquet labels have a real null, so there every
# string is a label.
MISSING_SPELLINGS = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                               "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"})


@dataclass
class Source:
    rows: list[dict]
    where: str
    kind: str                              # "table", "hf", or IMAGEFOLDER
    eval_rows: list[dict] | None = None    # a DatasetDict's test split
    missing: frozenset[str] = frozenset()  # label strings that mean "no label" (CSV/TSV: MISSING_SPELLINGS)


def read_source(spec: str) -> Source:
    if spec.startswith("hf:"):
        return _from_hub(spec[3:])
    path = Path(spec)
    if path.is_dir():
        if any((path / f).is_file() for f in ("dataset_dict.json", "state.json", "dataset_info.json")):
            return _from_disk(path)
        return _image_folder(path)
    missing = MISSING_SPELLINGS if path.suffix.lower() in (".csv", ".tsv") else frozenset()
    return Source(read_table(path), str(path), "table", missing=missing)


def read_table(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}", fix="check the path given to --data / --eval-data")
    suffix = path.suffix.lower()
    if suffix not in TABLES:
        raise DataError(f"unsupported data format {suffix!r} for {path}",
                        fix=f"use one of {sorted(TABLES)}, a save_to_disk folder or an image folder")
    if TABLES[suffix] == "parquet":
        return _read_parquet(path)
    if TABLES[suffix] is None:
        return _read_jsonl(path)
    csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark that would glue onto the first column name
        with open(path, newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f, delimiter=_delimiter(f, TABLES[suffix])))
    except UnicodeDecodeError as err:
        raise DataError(f"cannot read {path}: it is not UTF-8 text ({err.reason} at byte {err.start})",
                        fix="save the file as UTF-8 (in Excel: Save As > CSV UTF-8)") from None
    except csv.Error as err:
        if "field larger than field limit" in str(err):
            raise DataError(f"cannot read {path}: a field is longer than {CSV_FIELD_LIMIT >> 20} MB, which in "
                            "practice means a quote that is never closed (the rest of the file became one field)",
                            fix="check the quoting of the text column (a stray \" opens a field), or use JSONL") from None
        raise DataError(f"cannot read {path}: {err}", fix="check the file's quoting and delimiter") from None


def _delimiter(f, expected: str) -> str:
    """``expected``, unless the header is one column under it and csv.Sniffer finds another of DELIMITERS in it
    (a European Excel "CSV" uses ";"): one column cannot hold both text and label, so no real file is misread."""
    header = f.readline()
    f.seek(0)
    if len(next(csv.reader([header], delimiter=expected), [])) > 1:
        return expected
    try:
        return csv.Sniffer().sniff(header, delimiters="".join(d for d in DELIMITERS if d != expected)).delimiter
    except csv.Error:                    # none of them in the header: a one-column file, named as such later
        return expected


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataError(f"cannot read {path} as parquet: {str(err).splitlines()[0][:200]}",
                        fix="check that the file is a complete parquet file (or give it the suffix of its real "
                            "format: .csv, .tsv, .jsonl)") from None


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{n}: not valid JSON ({err.msg})",
                                fix="write one JSON object per line") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def _hf_rows(ds) -> list[dict]:
    """Rows of a datasets.Dataset with ClassLabel columns turned into their names."""
    from datasets import ClassLabel

    rows = ds.to_list()
    for col, feat in ds.features.items():
        if isinstance(feat, ClassLabel):
            for r in rows:
                if r[col] is not None and r[col] >= 0:
                    r[col] = feat.int2str(r[col])
    return rows


def _from_disk(path: Path) -> Source:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        if "train" not in ds:
            raise DataError(f"{path}: DatasetDict without a 'train' split (splits: {list(ds)})",
                            fix="save the training split under the name 'train'")
        test = ds.get("test")
        return Source(_hf_rows(ds["train"]), f"{path}[train]", "hf", _hf_rows(test) if test is not None else None)
    return Source(_hf_rows(ds), str(path), "hf")


def _from_hub(name: str) -> Source:

    repo, _, config = name.partition(":")
    try:
        from datasets import load_dataset

        ds = load_dataset(repo, config or None)
    except Exception as err:  # noqa: BLE001 - any failure here means "not reachable / not found"
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise DataError(f"cannot load the Hugging Face dataset {repo!r} from the hub ({reason})",
                        fix=f"where the hub is reachable run `datasets.load_dataset({repo!r}).save_to_disk(DIR)`, "
                            "copy DIR here and pass --data DIR") from None
    test = ds.get("test")
    return Source(_hf_rows(ds["train"]), f"hf:{name}[train]", "hf", _hf_rows(test) if test is not None else None)


def _image_folder(path: Path) -> Source:
    rows = []
    for class_dir in sorted(p for p in path.iterdir() if p.is_dir()):
        for f in sorted(class_dir.rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                rows.append({"image": str(f.resolve()), "label": class_dir.name})
    if not rows:
        raise DataError(f"{path} holds no class folders with images",
                        fix="lay images out as DIR/<class_name>/<image>.png, or pass a CSV/JSONL table")
    return Source(rows, str(path), IMAGEFOLDER)
