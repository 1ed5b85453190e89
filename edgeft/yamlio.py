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
        # one line: the parser's own message spans several, with a copy of the line that a terminal mangles
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        tab = " (YAML indents with spaces, not tabs)" if "\\t" in problem or "\t" in problem else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}{tab}",
                          fix="fix the syntax there") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot be read ({err})", fix="pass a readable UTF-8 YAML file") from None
    if not isinstance(data, dict):
        got = "nothing (the file is empty)" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{path}: expected keys and values at the top level (`name: ...`), got {got}",
                          fix="write the YAML as `key: value` lines; see a shipped example with `edgeft targets show NAME`")
    return data
