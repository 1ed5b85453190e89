"""Text pre-processing with the ``tokenizers`` library alone (tokenizer.json), no transformers."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


class TextPreprocessor:
    """Turns strings into the int64 feeds a BERT-style engine takes."""

    def __init__(self, folder: Path, max_length: int = 128):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        self.max_length = max_length
        self.tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer.no_padding()
        pad_id = self.tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad_id is None else pad_id

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """How many tokens (special tokens included) each text has before truncation to ``max_length``."""
        self.tokenizer.no_truncation()
        try:
            return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts))]
        finally:
            self.tokenizer.enable_truncation(max_length=self.max_length)

    def __call__(self, texts: Sequence[str], input_names: Sequence[str]) -> dict[str, np.ndarray]:
        encs = self.tokenizer.encode_batch(list(texts))
        length = max(len(e.ids) for e in encs)
        feeds = {
            "input_ids": np.full((len(encs), length), self.pad_id, dtype=np.int64),
            "attention_mask": np.zeros((len(encs), length), dtype=np.int64),
            "token_type_ids": np.zeros((len(encs), length), dtype=np.int64),
        }
        for i, e in enumerate(encs):
            n = len(e.ids)
            feeds["input_ids"][i, :n] = e.ids
            feeds["attention_mask"][i, :n] = e.attention_mask
            feeds["token_type_ids"][i, :n] = e.type_ids
        return {k: v for k, v in feeds.items() if k in input_names}
