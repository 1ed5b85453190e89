"""A copy of the shared tiny run with a variant of its target, for tests that compile or verify something else."""
from __future__ import annotations

import shutil
from pathlib import Path


def run_with_target(tiny_run: dict, tmp: Path, name: str, *replacements: tuple[str, str],
                    run_name: str = "copy") -> tuple[Path, Path]:
    """``(run_dir, target_yaml)``: the tiny run copied to ``tmp/<run_name>`` and its target YAML with each
    ``(old, new)`` replaced (each ``old`` must occur) written to ``tmp/<name>.yaml``."""
    run_dir = tmp / run_name
    shutil.copytree(tiny_run["out"], run_dir)
    text = tiny_run["target"].read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    target = tmp / f"{name}.yaml"
    target.write_text(text)
    return run_dir, target
