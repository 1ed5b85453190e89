"""Package data: the shipped targets and calibration sets (``targets/`` and ``calibration/`` at the top of
the repository, mapped here by ``pyproject.toml``)."""
