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


def read_model_config(path: Path) -> dict | None:
    """A model folder's config.json (None when there is none); ConfigError naming the file when it is not
    a JSON object."""
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        return None
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"{cfg_file} is not valid JSON ({str(err).splitlines()[0][:120]})",
                          fix="restore the model folder (save_pretrained writes config.json)") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{cfg_file} does not hold a model config (a JSON object)",
                          fix="restore the model folder (save_pretrained writes config.json)")
    return cfg


def check_before_work(cfg) -> None:
    """What can be known about the model before any data is read or trained: its config.json parses, and
    --max-length fits its position embeddings."""
    model = cfg.model
    if model.startswith(("torchvision:", "hf-config:")):
        return
    if model.startswith("builtin:"):
        from edgeft.models.hf_text import resolve_model_path

        path = resolve_model_path(model)
    else:
        path = Path(model)
    mc = read_model_config(path)
    limit = (mc or {}).get("max_position_embeddings")
    if isinstance(limit, int) and cfg.train.max_length > limit:
        raise ConfigError(f"--max-length {cfg.train.max_length} is longer than {model} can take "
                          f"(max_position_embeddings {limit} in its config.json)",
                          fix=f"pass --max-length {limit} or less")


def is_vision_folder(path: Path) -> bool:
    cfg = read_model_config(path)
    if cfg is None:
        return False
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
