"""The protocol every backend implements, and the capabilities checked before any work."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from edgeft.runtime.session import Session
    from edgeft.targets import TargetSpec


SIDECAR_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json",
                 "preprocessor.json")


def copy_sidecars(src_dir: Path, out_dir: Path) -> None:
    """Copy the tokenizer and model config next to an engine, so the engine folder stands alone."""
    import shutil

    for name in SIDECAR_FILES:
        if (src_dir / name).is_file():
            shutil.copy2(src_dir / name, out_dir / name)


@dataclass(frozen=True)
class Capabilities:
    precisions: tuple[str, ...]
    device_kinds: tuple[str, ...]
    isas: tuple[str, ...]


class Backend(Protocol):
    name: str

    def check_available(self) -> None:
        """Raise BackendUnavailable (naming the install command) when compile cannot run here."""

    def compile(self, onnx_path: Path, target: "TargetSpec", out_dir: Path, precision: str | None = None,
                calibration_inputs: Path | None = None) -> dict[str, Any]:
        """Build an engine for ``target`` from ``onnx_path`` into ``out_dir``.

        ``calibration_inputs`` (an ``.npz`` of model inputs) lets a backend calibrate activations its
        own Q/DQ flavour adds; a backend that needs none ignores it.

        Returns the engine description written next to it (``engine.json``).
        """

    def load(self, engine_dir: Path) -> "Session":
        """Open a compiled engine for inference."""
