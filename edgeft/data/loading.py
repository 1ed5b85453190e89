"""Turn a data source (see sources.py) into cleaned, stratified, seeded train/validation/test splits.

Raises:
    DataError: missing file, unsupported format, missing columns (the existing ones are listed), no
        usable rows, a single class, fewer examples than classes, eval labels unseen in training.
"""
from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edgeft.config import BUILTIN_DATA, RunConfig
from edgeft.data.sources import IMAGEFOLDER, Source, read_source, read_table
from edgeft.data.example import Example
from edgeft.errors import DataError



@dataclass
class SplitData:
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    labels: list[str]
    report: dict = field(default_factory=dict)
    modality: str = "text"                    # "text" or "image"
    task: str = "classification"              # or "regression": labels are numbers, ``labels == ["value"]``

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name in ("train", "validation", "test"):
            for ex in getattr(self, name):
                h.update(f"{name}\0{ex.label}\0{ex.text}\n".encode())
        return h.hexdigest()

    def label_ids(self, split: str) -> list:
        """Class indices, or for regression the float targets."""
        if self.task == "regression":
            return [float(ex.label) for ex in getattr(self, split)]
        index = {name: i for i, name in enumerate(self.labels)}
        return [index[ex.label] for ex in getattr(self, split)]


def to_examples(rows: list[dict], path: Path | str, text_col: str, label_col: str,
                input_flag: str = "--text-column") -> tuple[list[Example], Counter]:
    """Keep rows with a non-empty input and label; count what was dropped and why."""
    if not rows:
        raise DataError(f"{path} holds no rows", fix="point --data at a file with a header and examples")
    columns = list(rows[0].keys())
    missing = [c for c in (text_col, label_col) if c not in columns]
    if missing:
        raise DataError(f"{path}: column(s) {missing} not found; columns present: {columns}",
                        fix=f"pass {input_flag} and --label-column with names from that list")
    dropped: Counter = Counter()
    out = []
    kinds: dict[str, set] = {}                   # label as text -> the types it came as
    for row in rows:
        text, label = row.get(text_col), row.get(label_col)
        if text is None or not str(text).strip():
            dropped["empty_text"] += 1
            continue
        if _missing(label):
            dropped["missing_label"] += 1
            continue
        label_text = _label_text(label)
        kinds.setdefault(label_text, set()).add("number" if isinstance(label, (int, float)) else "text")
        out.append(Example(str(text).strip(), label_text))
    mixed = sorted(k for k, v in kinds.items() if len(v) > 1)
    if mixed:
        raise DataError(f"{path}: label(s) {mixed[:5]} appear both as numbers and as text in {label_col!r}; "
                        "they would be merged into one class without anyone deciding it",
                        fix=f"make {label_col!r} one type (all numbers or all strings) and run again")
    if not out:
        raise DataError(f"{path}: no usable rows (dropped: {dict(dropped)})",
                        fix="check that the text and label columns hold values")
    return out, dropped


def _missing(value) -> bool:
    """None, empty text, and a float NaN (what parquet/JSON writers leave for a missing label). The words
    "none", "null", "nan" are left alone: they can be real class names."""
    if value is None:
        return True
    if isinstance(value, float) and value != value:
        return True
    return str(value).strip() == ""


def _label_text(value) -> str:
    """A label as text; a whole float (3.0, from a numeric column with gaps) is the integer 3."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


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


def random_split(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Seeded split for regression targets (nothing to stratify on)."""
    shuffled = examples[:]
    random.Random(seed).shuffle(shuffled)
    n = min(max(round(len(shuffled) * fraction), 1), len(shuffled) - 1)
    return shuffled[n:], shuffled[:n]


def _check_targets(examples: list[Example], where: str) -> None:
    bad = []
    for ex in examples:
        try:
            float(ex.label)
        except ValueError:
            bad.append(ex.label)
    if bad:
        raise DataError(f"{where}: regression needs numeric labels, got {sorted(set(bad))[:5]}",
                        fix="check --label-column, or drop --task regression for class labels")
    if len(examples) < 10:
        raise DataError(f"{where}: {len(examples)} examples are too few to train, validate and test",
                        fix="provide at least 10 examples")


def _check_labels(train: list[Example], where: str, task: str) -> None:
    if task == "regression":
        _check_targets(train, where)
    else:
        _check_classes(train, where)


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
            parts[name], _ = to_examples(read_table(p), p, "text", "intent")
        train, val, test = parts["train"], parts["validation"], parts["test"]
        dropped: Counter = Counter()
        modality = "text"
    else:
        source = read_source(cfg.data)
        modality = detect_modality(source, cfg)
        examples, dropped = _examples(source, cfg, modality)
        before = _distribution(examples)
        examples, dup = dedupe(examples)
        dropped.update(dup)
        _check_labels(examples, source.where, cfg.task)
        split = stratified_split if cfg.task == "classification" else random_split
        eval_source = read_source(cfg.eval_data) if cfg.eval_data else None
        if eval_source is None and source.eval_rows:
            eval_source = Source(source.eval_rows, source.where.replace("[train]", "[test]"), source.kind)
        if eval_source is not None:
            test, eval_dropped = _examples(eval_source, cfg, modality)
            test, eval_dup = dedupe(test)
            dropped.update({f"eval_{k}": v for k, v in (eval_dropped + eval_dup).items()})
            train, val = split(examples, cfg.split.validation_fraction, cfg.seed)
        else:
            rest, test = split(examples, cfg.split.test_fraction, cfg.seed)
            frac = cfg.split.validation_fraction / (1 - cfg.split.test_fraction)
            train, val = split(rest, frac, cfg.seed + 1)
    if cfg.data == BUILTIN_DATA:
        before = _distribution(train + val + test)
    train, leaked = remove_leakage(train, val + test)
    if leaked:
        dropped["leaked_into_eval"] = leaked
    if modality == "image":
        from edgeft.data.images import check_images

        train, val, test = (check_images(part, cfg.bad_images, dropped) for part in (train, val, test))
    _check_labels(train, "training split", cfg.task)
    if cfg.task == "regression":
        _check_targets(val + test, "evaluation data")
        labels = ["value"]
    else:
        labels = _label_order({ex.label for ex in train})
        unseen = sorted({ex.label for ex in val + test} - set(labels))
        if unseen:
            raise DataError(f"labels {unseen[:10]} occur in the evaluation data but never in training",
                            fix="make sure --data and --eval-data use the same label set")
    parts = (("train", train), ("validation", val), ("test", test))
    report = {"dropped": dict(dropped), "counts": {name: len(s) for name, s in parts}}
    if cfg.task == "regression":
        report["target_stats"] = {name: _stats(s) for name, s in parts}
    else:
        report["class_distribution_before"] = before
        report["class_distribution"] = {name: _distribution(s) for name, s in parts}
    return SplitData(train, val, test, labels, report, modality, cfg.task)


def _stats(examples: list[Example]) -> dict[str, float]:
    import statistics

    v = [float(e.label) for e in examples]
    return {"mean": statistics.fmean(v), "std": statistics.pstdev(v), "min": min(v), "max": max(v)} if v else {}


def detect_modality(source: Source, cfg: RunConfig) -> str:
    if cfg.modality != "auto":
        return cfg.modality
    if source.kind == IMAGEFOLDER:
        return "image"
    columns = set(source.rows[0]) if source.rows else set()
    return "image" if cfg.image_column in columns and cfg.text_column not in columns else "text"


def _examples(source: Source, cfg: RunConfig, modality: str) -> tuple[list[Example], Counter]:
    if modality == "text":
        return to_examples(source.rows, source.where, cfg.text_column, cfg.label_column)
    col, label = ("image", "label") if source.kind == IMAGEFOLDER else (cfg.image_column, cfg.label_column)
    examples, dropped = to_examples(source.rows, source.where, col, label, "--image-column")
    if source.kind == "table":                 # paths in a table are relative to the table's folder
        base = Path(source.where).resolve().parent
        examples = [Example(str((base / e.text).resolve()), e.label) for e in examples]
    return examples, dropped


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
