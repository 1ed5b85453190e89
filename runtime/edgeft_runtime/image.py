"""Image pre-processing with PIL + numpy only: the exact transform used at evaluation, in training's
evaluation pass, and on the device. Settings travel with the engine in ``preprocessor.json``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

PREPROCESSOR_JSON = "preprocessor.json"


class ImagePreprocessor:
    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]):
        self.size = int(size)
        self.mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(3, 1, 1)

    @classmethod
    def from_folder(cls, folder: Path) -> "ImagePreprocessor":
        d = json.loads((Path(folder) / PREPROCESSOR_JSON).read_text())
        return cls(d["image_size"], d["mean"], d["std"])

    def save(self, folder: Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / PREPROCESSOR_JSON).write_text(json.dumps(
            {"type": "image", "image_size": self.size, "mean": self.mean.ravel().tolist(),
             "std": self.std.ravel().tolist(), "resize": "bilinear, to size x size", "layout": "NCHW float32"}))

    def array(self, path_or_image) -> np.ndarray:
        """One image -> (3, size, size) float32, normalized."""
        try:
            from PIL import Image
        except ImportError:
            from edgeft_runtime.errors import EdgeftError

            raise EdgeftError("image bundles need pillow, which is not installed here",
                              fix="pip install 'edgeft-runtime[image]'") from None

        im = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
        im = im.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        x = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (x - self.mean) / self.std

    def __call__(self, inputs: Sequence, input_names: Sequence[str]) -> dict[str, np.ndarray]:
        return {input_names[0]: np.stack([self.array(x) for x in inputs]).astype(np.float32)}
