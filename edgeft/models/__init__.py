"""Model families behind one interface (load, save, datasets, feeds, export), chosen from --model.

    builtin:all-MiniLM-L6-v2 / a text model folder   -> hf_text.TextFamily
    a vision model folder / hf-config:TYPE           -> vision.HFVisionFamily
    torchvision:ARCH                                 -> vision.TorchvisionFamily
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from edgeft.errors import ConfigError

VISION_MODEL_TYPES = {"vit", "resnet", "mobilenet_v2", "mobilenet_v1", "convnext", "efficientnet", "deit",
                      "mobilevit", "regnet", "swin", "beit", "levit", "dinov2"}
TORCHVISION_ARCHS = ("resnet18", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0")
HF_CONFIG_TYPES = ("resnet", "mobilenet_v2", "vit")

# the names transformers' PyTorch from_pretrained looks for (edgeft passes no variant and no from_tf)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
OTHER_FRAMEWORK_WEIGHTS = ("tf_model.h5", "flax_model.msgpack")
# a tokenizer's own vocabulary: fast (tokenizer.json), WordPiece (vocab.txt), BPE (vocab.json), sentencepiece (*.model)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")
SAVE_FIX = ("pass --model a folder written by model.save_pretrained(folder) and, for text, "
            "tokenizer.save_pretrained(folder)")


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


def check_model_name(model: str) -> None:
    """``torchvision:ARCH`` and ``hf-config:TYPE`` name something edgeft can build (ConfigError listing what it
    can otherwise); any other value is a folder and is checked by ``check_model_folder``."""
    kind, _, name = model.partition(":")
    if kind == "torchvision" and name not in TORCHVISION_ARCHS:
        raise ConfigError(f"unknown torchvision model {name!r} (--model {model}). Supported: {list(TORCHVISION_ARCHS)}",
                          fix="pass --model torchvision:<one of those> (optionally with --weights FILE)")
    if kind == "hf-config" and name not in HF_CONFIG_TYPES:
        raise ConfigError(f"unknown Hugging Face config {name!r} (--model {model}): hf-config builds one of "
                          f"{list(HF_CONFIG_TYPES)} (image models, random init)",
                          fix="pass --model hf-config:<one of those>, or a local model folder (text or image) "
                              "for pretrained weights")


def _missing_weights(path: Path) -> str | None:
    """What is wrong with a folder's weights, or None when transformers will find them."""
    if any((path / n).is_file() for n in WEIGHT_FILES):
        return None
    for index in WEIGHT_INDEXES:
        if (path / index).is_file():
            try:
                shards = set(json.loads((path / index).read_text(encoding="utf-8"))["weight_map"].values())
            except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
                return f"{index} is not a sharded-weights index (no readable weight_map)"
            absent = sorted(str(s) for s in shards if not (path / str(s)).is_file())
            return f"weight shard(s) {absent[:3]}{' ...' if len(absent) > 3 else ''} listed in {index} are " \
                   "missing" if absent else None
    other = [n for n in OTHER_FRAMEWORK_WEIGHTS if (path / n).is_file()]
    if other:
        return f"no PyTorch weights: it only has {other[0]}, which edgeft does not load (convert it: " \
               "from_pretrained(folder, from_tf=True or from_flax=True).save_pretrained(folder))"
    return "no weights (model.safetensors or pytorch_model.bin)"


def _has_tokenizer(path: Path) -> bool:
    """A vocabulary file is there, or at least a tokenizer_config.json (vocabulary-free tokenizers such as
    CANINE's need nothing else; loading tells the rest)."""
    return any((path / n).is_file() for n in (*TOKENIZER_FILES, "tokenizer_config.json")) or \
        any(path.glob("*.model"))


def check_model_folder(path: Path) -> None:
    """A Hugging Face folder holds what loading it needs, checked from its file names before any library
    is imported: config.json (valid), weights, and for a text model a tokenizer. An image model needs no
    preprocessor_config.json: edgeft's pre-processing comes from --image-size and the vision settings.
    ConfigError naming the folder, everything missing at once, and the fix."""
    path = Path(path)
    if path.is_file():
        raise ConfigError(f"--model {path} is a file; a Hugging Face model is a folder",
                          fix=f"pass --model {path.parent} if that folder holds config.json, the weights and "
                              "the tokenizer")
    if not path.is_dir():
        raise ConfigError(f"--model {path}: no such folder", fix="pass --model a local Hugging Face model folder "
                          "(nothing is downloaded), torchvision:ARCH or hf-config:TYPE")
    cfg = read_model_config(path)
    if cfg is None:
        raise ConfigError(f"{path} is not a Hugging Face model folder (no config.json)", fix=SAVE_FIX)
    problems = [p for p in (_missing_weights(path),) if p]
    if not _is_vision_config(cfg) and not _has_tokenizer(path):
        problems.append("no tokenizer (tokenizer.json, vocab.txt, vocab.json or a sentencepiece .model file)")
    if problems:
        raise ConfigError(f"{path} is not a complete model folder: " + "; ".join(problems), fix=SAVE_FIX)


def loading_error(path: Path, what: str, err: Exception, fix: str = SAVE_FIX) -> ConfigError:
    """A library's failure to load ``what`` from a folder, as one line naming the folder and the cause."""
    first = (str(err).strip().splitlines() or [""])[0][:200]
    return ConfigError(f"cannot load {what} from {path} ({type(err).__name__}: {first})", fix=fix)


def check_before_work(cfg) -> None:
    """What can be known about the model before any data is read or trained: a torchvision/hf-config name is
    known, a folder holds config.json (valid), weights and a tokenizer, and --max-length fits its position
    embeddings. A path that is not there passes: the stages after finetune never read the model (it may be gone
    by then), and finetune itself checks the folder again."""
    model = cfg.model
    if model.startswith(("torchvision:", "hf-config:")):
        check_model_name(model)
        return
    if model.startswith("builtin:"):
        from edgeft.models.hf_text import resolve_model_path

        path = resolve_model_path(model)
    else:
        path = Path(model)
    if path.exists():
        check_model_folder(path)
    mc = read_model_config(path)
    limit = (mc or {}).get("max_position_embeddings")
    if isinstance(limit, int) and cfg.train.max_length > limit:
        raise ConfigError(f"--max-length {cfg.train.max_length} is longer than {model} can take "
                          f"(max_position_embeddings {limit} in its config.json)",
                          fix=f"pass --max-length {limit} or less")


def model_modality(cfg) -> str | None:
    """"image" or "text" as far as the config says before any data is read (--modality, or the model: a
    torchvision/hf-config name, a vision config.json), None when only the data can tell."""
    if cfg.modality != "auto":
        return cfg.modality
    model = cfg.model
    if model.startswith(("torchvision:", "hf-config:")):
        check_model_name(model)               # an unknown name is reported as unknown, not as an image model
        return "image"                        # hf-config builds only image architectures (HF_CONFIG_TYPES)
    if model.startswith("builtin:"):
        return "text"
    mc = read_model_config(Path(model))
    return None if mc is None else "image" if _is_vision_config(mc) else "text"


def _is_vision_config(cfg: dict) -> bool:
    archs = " ".join(str(a) for a in cfg.get("architectures") or [])
    return "ImageClassification" in archs or cfg.get("model_type") in VISION_MODEL_TYPES


def is_vision_folder(path: Path) -> bool:
    cfg = read_model_config(path)
    return cfg is not None and _is_vision_config(cfg)


def random_init_warning(model: str, weights: str | None) -> str | None:
    """Why a model to be fine-tuned starts from random weights, or None when it starts pretrained."""
    if model.startswith("torchvision:") and not weights:
        return (f"{model} has no --weights: random initialization; train it long enough (a random net's logits "
                "are ~0 and any accuracy check on it is vacuous), or pass --weights FILE (.pth/.safetensors)")
    if model.startswith("hf-config:"):
        return (f"{model} is built from its default config: random initialization (no pretrained weights); "
                "train it long enough, or pass --model a pretrained image folder or torchvision:ARCH --weights FILE")
    return None


def family_for(cfg, modality: str, saved: Path | None = None, log: Callable[[str], None] | None = None):
    """The family for ``cfg.model``; with ``saved`` (a fine-tuned folder) Hugging Face families read it instead.
    Without ``saved`` the model is about to be trained: a random start is said once through ``log`` (edgeft's
    console line by default), because a warning from deep inside model building would reach only the log."""
    model = cfg.model
    if saved is not None and not model.startswith("torchvision:"):
        model = str(saved)
    # an unknown name is reported as unknown, whatever the data: its modality cannot be known
    check_model_name(model)
    if saved is None and not model.startswith(("torchvision:", "hf-config:", "builtin:")):
        check_model_folder(Path(model))
    if model.startswith("torchvision:") or model.startswith("hf-config:") or (
            not model.startswith("builtin:") and is_vision_folder(Path(model))):
        if modality != "image":
            raise ConfigError(f"--model {model} is an image model but the data is text",
                              fix="pass image data (an image folder or a table with an image column), or a text model")
        from edgeft.models.vision import HFVisionFamily, TorchvisionFamily

        cls = TorchvisionFamily if model.startswith("torchvision:") else HFVisionFamily
        family = cls(model, cfg.vision)
    else:
        if modality == "image":
            raise ConfigError(f"the data is images but --model {model} is a text model",
                              fix="pass --model torchvision:resnet18 (or another image model)")
        from edgeft.models.hf_text import TextFamily

        family = TextFamily(model, cfg.train.max_length)
    note = random_init_warning(model, cfg.weights) if saved is None else None
    if note:
        if log is None:
            from edgeft.console import CONSOLE

            log = CONSOLE.line
        log(f"warning: {note}")
    return family
