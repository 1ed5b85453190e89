"""Read labeled text from CSV/TSV/JSONL, clean it, and split it (stratified, seeded).

Raises:
    DataError: missing file, unsupported format, missing columns (the existing ones are listed), no
        usable rows, a single class, fewer examples than classes, eval labels unseen in training.
"""
from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edgeft.config import BUILTIN_DATA, RunConfig
from edgeft.errors import DataError

FORMATS = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".json": None}


@dataclass(frozen=True)
class Example:
    text: str
    label: str


@dataclass
class SplitData:
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    labels: list[str]
    report: dict = field(default_factory=dict)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name in ("train", "validation", "test"):
            for ex in getattr(self, name):
                h.update(f"{name}\0{ex.label}\0{ex.text}\n".encode())
        return h.hexdigest()

    def label_ids(self, split: str) -> list[int]:
        index = {name: i for i, name in enumerate(self.labels)}
        return [index[ex.label] for ex in getattr(self, split)]


def read_rows(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}", fix="check the path given to --data / --eval-data")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"unsupported data format {suffix!r} for {path}",
                        fix=f"use one of {sorted(FORMATS)} (or convert the file)")
    try:
        if FORMATS[suffix] is None:
            return _read_jsonl(path)
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f, delimiter=FORMATS[suffix]))
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read {path}: {err}", fix="save the file as UTF-8 with a header row") from None


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


def to_examples(rows: list[dict], path: Path, text_col: str, label_col: str) -> tuple[list[Example], Counter]:
    """Keep rows with a non-empty text and label; count what was dropped and why."""
    if not rows:
        raise DataError(f"{path} holds no rows", fix="point --data at a file with a header and examples")
    columns = list(rows[0].keys())
    missing = [c for c in (text_col, label_col) if c not in columns]
    if missing:
        raise DataError(f"{path}: column(s) {missing} not found; columns present: {columns}",
                        fix="pass --text-column and --label-column with names from that list")
    dropped: Counter = Counter()
    out = []
    for row in rows:
        text, label = row.get(text_col), row.get(label_col)
        if text is None or not str(text).strip():
            dropped["empty_text"] += 1
            continue
        if label is None or str(label).strip() == "":
            dropped["missing_label"] += 1
            continue
        out.append(Example(str(text).strip(), str(label).strip()))
    if not out:
        raise DataError(f"{path}: no usable rows (dropped: {dict(dropped)})",
                        fix="check that the text and label columns hold values")
    return out, dropped


def _label_order(labels: set[str]) -> list[str]:
    try:
        return [str(x) for x in sorted(int(label) for label in labels)]
    except ValueError:
        return sorted(labels)


def stratified_split(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Split off ``fraction`` of every class (at least one example of classes with >= 2)."""
    by_label: dict[str, list[Example]] = {}
    for ex in examples:
        by_label.setdefault(ex.label, []).append(ex)
    rng = random.Random(seed)
    keep, held = [], []
    for label in sorted(by_label):
        group = by_label[label][:]
        rng.shuffle(group)
        n = round(len(group) * fraction)
        n = min(max(n, 1 if len(group) >= 2 else 0), len(group) - 1)
        held.extend(group[:n])
        keep.extend(group[n:])
    rng.shuffle(keep)
    rng.shuffle(held)
    return keep, held


def _check_classes(train: list[Example], where: str) -> None:
    counts = Counter(ex.label for ex in train)
    if len(counts) < 2:
        raise DataError(f"{where}: only one class ({next(iter(counts))!r}); classification needs at least two",
                        fix="check --label-column, or add examples of the other classes")
    if len(train) < 2 * len(counts):
        raise DataError(f"{where}: {len(train)} examples for {len(counts)} classes: too few to train and validate",
                        fix="provide at least a few examples per class")


def load_splits(cfg: RunConfig) -> SplitData:
    """Return train/validation/test splits for the run's data settings, cleaned (see cleaning.py)."""
    from edgeft.data.cleaning import dedupe, remove_leakage

    if cfg.data == BUILTIN_DATA:
        from edgeft.data.builtin import SMARTHOME_DIR

        parts = {}
        for name in ("train", "validation", "test"):
            p = SMARTHOME_DIR / f"{name}.csv"
            parts[name], _ = to_examples(read_rows(p), p, "text", "intent")
        train, val, test = parts["train"], parts["validation"], parts["test"]
        dropped: Counter = Counter()
    else:
        data_path = Path(cfg.data)
        examples, dropped = to_examples(read_rows(data_path), data_path, cfg.text_column, cfg.label_column)
        before = _distribution(examples)
        examples, dup = dedupe(examples)
        dropped.update(dup)
        _check_classes(examples, str(data_path))
        if cfg.eval_data:
            eval_path = Path(cfg.eval_data)
            test, eval_dropped = to_examples(read_rows(eval_path), eval_path, cfg.text_column, cfg.label_column)
            test, eval_dup = dedupe(test)
            dropped.update({f"eval_{k}": v for k, v in (eval_dropped + eval_dup).items()})
            train, val = stratified_split(examples, cfg.split.validation_fraction, cfg.seed)
        else:
            rest, test = stratified_split(examples, cfg.split.test_fraction, cfg.seed)
            frac = cfg.split.validation_fraction / (1 - cfg.split.test_fraction)
            train, val = stratified_split(rest, frac, cfg.seed + 1)
    if cfg.data == BUILTIN_DATA:
        before = _distribution(train + val + test)
    train, leaked = remove_leakage(train, val + test)
    if leaked:
        dropped["leaked_into_eval"] = leaked
    _check_classes(train, "training split")
    labels = _label_order({ex.label for ex in train})
    unseen = sorted({ex.label for ex in val + test} - set(labels))
    if unseen:
        raise DataError(f"labels {unseen[:10]} occur in the evaluation data but never in training",
                        fix="make sure --data and --eval-data use the same label set")
    report = {
        "dropped": dict(dropped),
        "class_distribution_before": before,
        "counts": {name: len(s) for name, s in (("train", train), ("validation", val), ("test", test))},
        "class_distribution": {name: dict(sorted(Counter(ex.label for ex in s).items()))
                               for name, s in (("train", train), ("validation", val), ("test", test))},
    }
    return SplitData(train, val, test, labels, report)


def _distribution(examples: list[Example]) -> dict[str, int]:
    return dict(sorted(Counter(ex.label for ex in examples).items()))


def save_splits(data: SplitData, out_dir: Path) -> list[Path]:
    """Write the splits as JSONL (torch-free readers use them later) plus labels.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("train", "validation", "test"):
        p = out_dir / f"{name}.jsonl"
        with open(p, "w", encoding="utf-8") as f:
            for ex in getattr(data, name):
                f.write(json.dumps({"text": ex.text, "label": ex.label}, ensure_ascii=False) + "\n")
        paths.append(p)
    p = out_dir / "labels.json"
    p.write_text(json.dumps(data.labels, indent=1))
    paths.append(p)
    p = out_dir / "report.json"
    p.write_text(json.dumps(data.report, indent=1))
    paths.append(p)
    return paths


def read_split(run_data_dir: Path, name: str) -> list[Example]:
    with open(run_data_dir / f"{name}.jsonl", encoding="utf-8") as f:
        return [Example(**json.loads(line)) for line in f if line.strip()]
