"""Image checks at load time: an image that cannot be decoded is named, then skipped or stops the run."""
from __future__ import annotations

from collections import Counter

from edgeft.errors import DataError


def check_images(examples: list, mode: str, dropped: Counter) -> list:
    from PIL import Image, UnidentifiedImageError

    kept = []
    for ex in examples:
        try:
            with Image.open(ex.text) as im:
                im.verify()
        except (OSError, UnidentifiedImageError, SyntaxError) as err:
            if mode == "stop":
                raise DataError(f"cannot decode image {ex.text}: {err}",
                                fix="remove or replace the file, or pass --bad-images skip to skip such files") from None
            dropped["undecodable_images"] += 1
            continue
        kept.append(ex)
    return kept
