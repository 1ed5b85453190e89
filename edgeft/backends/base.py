"""The protocol every backend implements, and the capabilities checked before any work."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from edgeft.errors import BackendUnavailable

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


class Backend:
    """One backend: what it can serve (``capabilities``, checked when a target loads), how it builds an
    engine (``compile``), opens one (``open``) and times one (``latency``). Registered by ``name`` in
    ``edgeft.backends.REGISTRY``; target validation, compile, verify and the device runtime all go through
    that registry. Modules stay light to import: the backend's own runtime is imported where it is used."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    requires: ClassVar[tuple[str, str] | None] = None     # (module compile imports, the command that installs it)

    def check_available(self) -> None:
        """Raise BackendUnavailable (naming the install command) when compile cannot run here."""
        if self.requires is None:
            return
        module, install = self.requires
        try:
            __import__(module)
        except ImportError:
            raise BackendUnavailable(f"{module} is not installed", fix=install) from None

    def compile(self, onnx_path: Path, target: Any, out_dir: Path, precision: str | None = None,
                calibration_inputs: Path | None = None) -> dict[str, Any]:
        """Build an engine for ``target`` from ``onnx_path`` into ``out_dir``; returns ``engine.json``'s content.

        ``calibration_inputs`` (an ``.npz`` of model inputs) lets a backend calibrate activations its own
        Q/DQ flavour adds; a backend that needs none ignores it."""
        raise NotImplementedError

    def open(self, engine_dir: Path, threads: int | None = None) -> Any:
        """Open an engine this backend built, for inference (numpy in, numpy out)."""
        raise NotImplementedError

    def latency(self, engine_dir: Path, shapes: dict[str, list[int]], warmup: int = 20, iters: int = 100,
                threads: int | None = None) -> dict[str, float]:
        """Open the engine and time ``iters`` runs at ``shapes`` in this process (after ``warmup``)."""
        import time

        from edgeft_runtime.timing import time_session

        t0 = time.perf_counter()
        sess = self.open(engine_dir, threads)
        load_s = time.perf_counter() - t0
        return {**time_session(sess, shapes, warmup, iters), "load_s": load_s}
