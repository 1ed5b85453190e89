"""``manifest.json``: every artifact of a run with its sha256, the stage that made it and its parents;
the resolved config, package versions, the data fingerprint, and which stages are done (for resume)."""
from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeft import __version__
from edgeft_runtime.fileio import read_json, sha256_file, write_json_atomic

SCHEMA_VERSION = 2     # 2: every file a stage writes is recorded, and the published reports
TRACKED_PACKAGES = ("torch", "transformers", "optimum", "optimum-onnx", "nvidia-modelopt", "onnx",
                    "onnxruntime", "tokenizers", "numpy", "accelerate", "tensorrt")


@dataclass
class Artifact:
    path: str                      # relative to the run directory
    kind: str                      # e.g. "model/pytorch", "onnx/qdq", "engine/onnxruntime"
    stage: str
    parents: list[str] = field(default_factory=list)
    target: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    bytes: int = 0


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "edgeft": __version__}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


class Manifest:
    def __init__(self, run_dir: Path, data: dict[str, Any] | None = None):
        self.run_dir = Path(run_dir)
        self.data = data or {"schema_version": SCHEMA_VERSION, "edgeft_version": __version__,
                             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stages": {}, "artifacts": []}

    @classmethod
    def load(cls, run_dir: Path) -> "Manifest":
        """The run's manifest (a new one when there is none); RunDirError for a manifest.json that is not
        edgeft's, which is left untouched."""
        from edgeft.errors import RunDirError

        p = Path(run_dir) / "manifest.json"
        if not p.is_file():
            return cls(run_dir)
        try:
            data = read_json(p)
        except (ValueError, UnicodeDecodeError):
            data = None
        if not (isinstance(data, dict) and isinstance(data.get("stages"), dict)
                and isinstance(data.get("artifacts"), list) and "schema_version" in data):
            raise RunDirError(f"{p} is not an edgeft manifest, so {run_dir} is not an edgeft run directory "
                              "(edgeft changes nothing in it)",
                              fix="pass --out a new or empty folder, or the run directory of an earlier edgeft run")
        return cls(run_dir, data)

    def save(self) -> None:
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_json_atomic(self.run_dir / "manifest.json", self.data)

    @property
    def artifacts(self) -> list[Artifact]:
        return [Artifact(**a) for a in self.data["artifacts"]]

    def artifact(self, path: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.path == path), None)

    def by_stage(self, stage: str) -> list[Artifact]:
        return [a for a in self.artifacts if a.stage == stage]

    def stage_done(self, stage: str) -> bool:
        return stage in self.data["stages"]

    def is_current(self, stage: str, fingerprint: str) -> bool:
        """True when ``stage`` finished with this fingerprint and its files are intact."""
        rec = self.data["stages"].get(stage)
        if not rec or rec.get("fingerprint") != fingerprint:
            return False
        return self.damaged(stage) is None

    def damaged(self, stage: str) -> str | None:
        """The first recorded file of ``stage`` that is missing or no longer matches its sha256, or None."""
        for a in self.by_stage(stage):
            p = self.run_dir / a.path
            if not p.is_file() or p.stat().st_size != a.bytes or sha256_file(p) != a.sha256:
                return a.path
        return None

    def record(self, stage: str, fingerprint: str, artifacts: list[Artifact], seconds: float,
               info: dict[str, Any] | None = None) -> None:
        for a in artifacts:
            p = self.run_dir / a.path
            a.sha256, a.bytes = sha256_file(p), p.stat().st_size
        self.data["artifacts"] = [a for a in self.data["artifacts"] if a["stage"] != stage]
        self.data["artifacts"] += [asdict(a) for a in artifacts]
        self.data["stages"][stage] = {"fingerprint": fingerprint, "seconds": round(seconds, 2),
                                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(info or {})}
        self.data["versions"] = package_versions()
