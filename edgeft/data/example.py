"""The labeled example every data module shares (a leaf module: loading and cleaning both import it)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One labeled input: ``text`` is the text, or for image data the image file's absolute path."""

    text: str
    label: str
