"""Data hygiene: duplicates and train/eval leakage, counted for the data report.

- exact duplicates (same text, same label) keep their first occurrence;
- normalized duplicates (same text after lowercasing, collapsing whitespace and trimming punctuation)
  keep their first occurrence; when their labels disagree the text is ambiguous and every copy is dropped;
- leakage: a training example whose normalized text occurs in the validation or test split is removed
  from training (the evaluation split is never touched, so its numbers stay comparable).
"""
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable

from edgeft.data.example import Example

_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    return _SPACES.sub(" ", text.lower()).strip().strip(string.punctuation + " ")


def dedupe(examples: list[Example]) -> tuple[list[Example], Counter]:
    counts: Counter = Counter()
    labels_of: dict[str, set[str]] = {}
    for ex in examples:
        labels_of.setdefault(normalize(ex.text), set()).add(ex.label)
    seen_exact: set[tuple[str, str]] = set()
    seen_norm: set[str] = set()
    kept = []
    for ex in examples:
        key = normalize(ex.text)
        if len(labels_of[key]) > 1:
            counts["conflicting_labels"] += 1
        elif (ex.text, ex.label) in seen_exact:
            counts["exact_duplicates"] += 1
        elif key in seen_norm:
            counts["normalized_duplicates"] += 1
        else:
            kept.append(ex)
        seen_exact.add((ex.text, ex.label))
        seen_norm.add(key)
    return kept, counts


def remove_leakage(train: list[Example], evaluation: Iterable[Example]) -> tuple[list[Example], int]:
    held = {normalize(ex.text) for ex in evaluation}
    kept = [ex for ex in train if normalize(ex.text) not in held]
    return kept, len(train) - len(kept)
