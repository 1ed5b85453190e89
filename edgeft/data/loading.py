"""Turn a data source (see sources.py) into cleaned, stratified, seeded train/validation/test splits.

Labels that differ only in case/whitespace, or that are the same number ("0" and "0.0"), stay separate
classes (they may be meant so); one warning line names them before training.

Raises:
    DataError: missing file, unsupported format, missing columns (the existing ones are listed), the same
        column as input and label, no usable rows, a single class, fewer examples than classes (after
        cleaning: with what cleaning dropped and the fix for it), eval labels unseen in training.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edgeft.config import BUILTIN_DATA, RunConfig
from edgeft.data.sources import IMAGEFOLDER, Source, read_source, read_table
from edgeft.data.example import Example
from edgeft.errors import DataError

# what each dropped-row count means, and what to do when it leaves too little to train on
_DROP_CAUSES = {
    "leaked_into_eval": ("leakage: training texts that also occur in the evaluation data",
                         "pass an --eval-data file that does not repeat the training texts, or drop --eval-data "
                         "to have a stratified train/validation/test split made from --data"),
    "conflicting_labels": ("texts that appear with more than one label",
                           "give each text one label: every copy of a text with conflicting labels is dropped"),
    "missing_label": ("rows without a label", "check that --label-column names the column holding the labels"),
    "empty_text": ("rows with an empty input", "check that --text-column / --image-column names the input column"),
    "exact_duplicates": ("exact duplicates", "add more distinct examples"),
    "normalized_duplicates": ("duplicates up to case, spacing and punctuation", "add more distinct examples"),
    "undecodable_images": ("images that cannot be decoded", "replace the undecodable images"),
}


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
                input_flag: str = "--text-column", missing_labels: frozenset[str] = frozenset()) -> tuple[list[Example], Counter]:
    """Keep rows with a non-empty input and label; count what was dropped and why. ``missing_labels``: label strings
    that mean "no label" (a CSV's "NaN", see sources.MISSING_SPELLINGS)."""
    if not rows:
        raise DataError(f"{path} holds no rows", fix="point --data at a file with a header and examples")
    columns = list(rows[0].keys())
    if text_col == label_col:
        raise DataError(f"{path}: {input_flag} and --label-column both name the column {text_col!r}; the labels "
                        "must come from a column of their own",
                        fix=f"pass the column holding the labels as --label-column (columns present: {columns})")
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
        if _missing(label) or (isinstance(label, str) and label.strip() in missing_labels):
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
    "none", "null", "nan" are left alone here: they can be real class names (a CSV, which has no null, passes
    its missing-value spellings to ``to_examples`` as ``missing_labels``)."""
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


def _cleaning_note(dropped: Counter | None, left: int) -> tuple[str, str | None]:
    """What cleaning dropped from the training data (message suffix), and the fix for its largest cause when
    that cause dropped at least as many rows as are ``left`` (otherwise the data was small to begin with)."""
    counts = {k: v for k, v in (dropped or {}).items() if v and not k.startswith("eval_")}
    if not counts:
        return "", None
    parts = [f"{k}={v} ({_DROP_CAUSES[k][0]})" if k in _DROP_CAUSES else f"{k}={v}" for k, v in counts.items()]
    top = max((k for k in counts if k in _DROP_CAUSES), key=counts.get, default=None)
    fix = _DROP_CAUSES[top][1] if top and counts[top] >= left else None
    return f"; cleaning dropped {', '.join(parts)}", fix


def _check_targets(examples: list[Example], where: str, dropped: Counter | None = None) -> None:
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
        note, fix = _cleaning_note(dropped, len(examples))
        raise DataError(f"{where}: {len(examples)} examples are too few to train, validate and test{note}",
                        fix=fix or "provide at least 10 examples")


def _check_labels(train: list[Example], where: str, task: str, dropped: Counter | None = None) -> None:
    """``dropped``: the cleaning counts so far, named in the error when too little is left."""
    if task == "regression":
        _check_targets(train, where, dropped)
    else:
        _check_classes(train, where, dropped)


def _check_classes(train: list[Example], where: str, dropped: Counter | None = None) -> None:
    counts = Counter(ex.label for ex in train)
    note, fix = _cleaning_note(dropped, len(train))
    if not counts:
        raise DataError(f"{where}: cleaning left 0 training examples{note}",
                        fix=fix or "check the text and label columns")
    if len(counts) < 2:
        raise DataError(f"{where}: only one class ({next(iter(counts))!r}); classification needs at least two{note}",
                        fix=fix or "check --label-column, or add examples of the other classes")
    if len(train) < 2 * len(counts):
        raise DataError(f"{where}: {len(train)} examples for {len(counts)} classes: too few to train and validate{note}",
                        fix=fix or "provide at least a few examples per class")


def label_spelling_clashes(labels) -> list[list[str]]:
    """Groups of labels that differ only by case/whitespace, or that are the same number ("0", "0.0")."""
    groups: dict[tuple, list[str]] = {}
    for label in sorted(set(labels)):
        groups.setdefault(("text", " ".join(label.split()).casefold()), []).append(label)
        try:
            number = float(label)
        except ValueError:
            continue
        if math.isfinite(number):               # "nan" and "inf" are words here, not numbers to compare
            groups.setdefault(("number", number), []).append(label)
    return [g for g in groups.values() if len(g) > 1]


def _warn_label_spellings(labels, report: dict) -> None:
    """One console line (and the report) naming near-identical labels: merging them is the user's call."""
    from edgeft.console import CONSOLE
    from edgeft.distributed import is_main

    clashes = label_spelling_clashes(labels)
    if not clashes:
        return
    shown = "; ".join(" vs ".join(repr(x) for x in g) for g in clashes[:5])
    more = f" (and {len(clashes) - 5} more)" if len(clashes) > 5 else ""
    msg = (f"labels that differ only in case/spacing or are the same number train as separate classes: {shown}"
           f"{more}; if each is one class, write it one way in the label column")
    report["warnings"] = [msg]
    if is_main():                                # every DDP rank loads the data; one line is enough
        CONSOLE.line(f"[edgeft] data: warning: {msg}")


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
        _check_labels(examples, source.where, cfg.task, dropped)
        split = stratified_split if cfg.task == "classification" else random_split
        eval_source = read_source(cfg.eval_data) if cfg.eval_data else None
        if eval_source is None and source.eval_rows:
            eval_source = Source(source.eval_rows, source.where.replace("[train]", "[test]"), source.kind)
        if eval_source is not None:
            test, eval_dropped = _examples(eval_source, cfg, modality)
            test, eval_dup = dedupe(test)
            dropped.update({f"eval_{k}": v for k, v in (eval_dropped + eval_dup).items()})
            if not test:                     # only conflicting labels drop every copy of a text
                raise DataError(f"{eval_source.where}: cleaning left 0 evaluation examples: all "
                                f"{eval_dup['conflicting_labels']} are {_DROP_CAUSES['conflicting_labels'][0]}",
                                fix=_DROP_CAUSES["conflicting_labels"][1])
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
    _check_labels(train, "training split", cfg.task, dropped)
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
        _warn_label_spellings({ex.label for _, s in parts for ex in s}, report)
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
        return to_examples(source.rows, source.where, cfg.text_column, cfg.label_column, missing_labels=source.missing)
    col, label = ("image", "label") if source.kind == IMAGEFOLDER else (cfg.image_column, cfg.label_column)
    examples, dropped = to_examples(source.rows, source.where, col, label, "--image-column", source.missing)
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
