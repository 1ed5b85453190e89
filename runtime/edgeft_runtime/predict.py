"""Classify with a compiled engine: numpy + onnxruntime (+ tokenizers for text, PIL for images) only.

Usage: python -m edgeft_runtime.predict ENGINE_DIR "turn on the lights" ["another text" ...]
       python -m edgeft_runtime.predict ENGINE_DIR photo1.png [photo2.png ...]       (image engines)
Prints one JSON line per input: the label, its probability, and the top-3.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edgeft_runtime.fileio import read_json


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class Classifier:
    def __init__(self, engine_dir: Path, max_length: int = 128):
        from edgeft_runtime.inputs import preprocessor_for
        from edgeft_runtime.session import check_engine_folder, open_engine

        check_engine_folder(engine_dir)
        self.session = open_engine(engine_dir)
        self.pre = preprocessor_for(engine_dir, max_length)
        self.labels = read_json(Path(engine_dir) / "labels.json")

    def __call__(self, item: str) -> dict:
        logits = self.session.run(self.pre([item], self.session.input_names))["logits"][0]
        p = softmax(logits.astype(np.float64))
        top = np.argsort(-p)[:3]
        return {"input": item, "label": self.labels[top[0]], "probability": round(float(p[top[0]]), 4),
                "top3": [[self.labels[i], round(float(p[i]), 4)] for i in top]}


def main(argv: list[str] | None = None) -> None:
    from edgeft_runtime.cli import Parser
    from edgeft_runtime.errors import EdgeftError

    ap = Parser(prog="python -m edgeft_runtime.predict", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("engine_dir", type=Path)
    ap.add_argument("inputs", nargs="+", help="texts, or image paths for an image engine")
    ap.add_argument("--max-length", type=int, default=128)
    try:
        a = ap.parse_args(argv)
        clf = Classifier(a.engine_dir, a.max_length)
    except EdgeftError as e:
        print(f"error: {e}", file=sys.stderr)       # EdgeftError prints its fix under the message
        raise SystemExit(e.exit_code) from None
    counts = clf.pre.token_counts(a.inputs) if hasattr(clf.pre, "token_counts") else [0] * len(a.inputs)
    for x, n in zip(a.inputs, counts):
        if not x.strip():
            print("warning: an empty input: the engine still answers, from no words at all", file=sys.stderr)
        if n > a.max_length:
            print(f"warning: an input of {n} tokens was cut to the first {a.max_length}: {n - a.max_length} tokens "
                  "dropped", file=sys.stderr)
        print(json.dumps(clf(x), ensure_ascii=False))


if __name__ == "__main__":
    main()
