"""YAML loading with errors that name the file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeft.errors import ConfigError


def load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}", fix="fix the syntax at the line shown") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
