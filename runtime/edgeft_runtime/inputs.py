"""Pick the pre-processor an engine folder carries: a tokenizer (text) or preprocessor.json (images)."""
from __future__ import annotations

from pathlib import Path

from edgeft_runtime.image import PREPROCESSOR_JSON


def modality_of(folder: Path) -> str:
    return "image" if (Path(folder) / PREPROCESSOR_JSON).is_file() else "text"


def preprocessor_for(folder: Path, max_length: int = 128):
    if modality_of(folder) == "image":
        from edgeft_runtime.image import ImagePreprocessor

        return ImagePreprocessor.from_folder(folder)
    from edgeft_runtime.text import TextPreprocessor

    return TextPreprocessor(folder, max_length)
