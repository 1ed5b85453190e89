"""Model families behind one interface (load, save, datasets, feeds, export), chosen from --model.

    builtin:all-MiniLM-L6-v2 / a text model folder   -> hf_text.TextFamily
    a vision model folder / hf-config:TYPE           -> vision.HFVisionFamily
    torchvision:ARCH                                 -> vision.TorchvisionFamily
"""
from __future__ import annotations

import json
from pathlib import Path

from edgeft.errors import ConfigError

VISION_MODEL_TYPES = {"vit", "resnet", "mobilenet_v2", "mobilenet_v1", "convnext", "efficientnet", "deit",
                      "mobilevit", "regnet", "swin", "beit", "levit", "dinov2"}


def is_vision_folder(path: Path) -> bool:
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        return False
    cfg = json.loads(cfg_file.read_text())
    archs = " ".join(cfg.get("architectures") or [])
    return "ImageClassification" in archs or cfg.get("model_type") in VISION_MODEL_TYPES


def family_for(cfg, modality: str, saved: Path | None = None):
    """The family for ``cfg.model``; with ``saved`` (a fine-tuned folder) Hugging Face families read it instead."""
    model = cfg.model
    if saved is not None and not model.startswith("torchvision:"):
        model = str(saved)
    if model.startswith("torchvision:") or model.startswith("hf-config:") or (
            not model.startswith("builtin:") and is_vision_folder(Path(model))):
        if modality != "image":
            raise ConfigError(f"--model {model} is an image model but the data is text",
                              fix="pass image data (an image folder or a table with an image column), or a text model")
        from edgeft.models.vision import HFVisionFamily, TorchvisionFamily

        cls = TorchvisionFamily if model.startswith("torchvision:") else HFVisionFamily
        return cls(model, cfg.vision)
    if modality == "image":
        raise ConfigError(f"the data is images but --model {model} is a text model",
                          fix="pass --model torchvision:resnet18 (or another image model)")
    from edgeft.models.hf_text import TextFamily

    return TextFamily(model, cfg.train.max_length)
