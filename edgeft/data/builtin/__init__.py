"""The built-in smart-home voice-command dataset (see make_smarthome.py)."""
from pathlib import Path

SMARTHOME_DIR = Path(__file__).parent / "smarthome"
