"""Image classifiers: Hugging Face vision models (ResNet, MobileNetV2, ViT, ... from a local folder or
built from config) and torchvision classifiers, exported through Optimum.

torchvision models are wrapped so they look like any Hugging Face classifier to the rest of the
pipeline (``forward(pixel_values) -> .logits``, a ``config``) and are exported with
``TorchvisionOnnxConfig``, an Optimum ``VisionOnnxConfig`` of this project's own.

Raises:
    ConfigError: unknown torchvision architecture or hf-config type, unreadable weights, a folder
        transformers cannot load (the folder and the library's reason named).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Sequence

from edgeft.errors import ConfigError
from edgeft.models import check_model_name, loading_error
from edgeft_runtime.image import ImagePreprocessor

TV_JSON = "torchvision.json"


class ImageFamily:
    """What every image family shares: pre-processing, augmentation, datasets, feeds."""

    modality = "image"

    def __init__(self, source: str, vision_cfg):
        self.source = source
        self.cfg = vision_cfg
        self.pre = ImagePreprocessor(vision_cfg.image_size, vision_cfg.mean, vision_cfg.std)

    def describe(self) -> str:
        return self.source

    def train_transform(self):
        from torchvision import transforms as T

        c = self.cfg
        steps = [T.RandomResizedCrop(c.image_size, scale=(c.crop_scale, 1.0), antialias=True)]
        if c.hflip:
            steps.append(T.RandomHorizontalFlip())
        if c.color_jitter:
            steps.append(T.ColorJitter(c.color_jitter, c.color_jitter, c.color_jitter))
        return T.Compose([*steps, T.ToTensor(), T.Normalize(c.mean, c.std)])

    def dataset(self, inputs: Sequence[str], label_ids: Sequence[int] | None, train: bool):
        return ImageDataset(inputs, label_ids, self.train_transform() if train and self.cfg.augment else None, self.pre)

    def collator(self):
        from transformers import default_data_collator

        return default_data_collator

    def feeds(self, inputs: Sequence[str], max_length: int | None = None) -> dict:
        import torch

        return {"pixel_values": torch.from_numpy(self.pre(inputs, ["pixel_values"])["pixel_values"])}

    def save_preprocessor(self, folder: Path) -> None:
        self.pre.save(folder)


class ImageDataset:
    """Training applies the augmentation; evaluation applies exactly the device's pre-processing."""

    def __init__(self, paths, label_ids, transform, pre: ImagePreprocessor):
        self.paths, self.labels, self.transform, self.pre = list(paths), label_ids, transform, pre

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        import torch
        from PIL import Image

        if self.transform is not None:
            with Image.open(self.paths[i]) as im:
                x = self.transform(im.convert("RGB"))
        else:
            x = torch.from_numpy(self.pre.array(self.paths[i]))
        item = {"pixel_values": x}
        if self.labels is not None:
            item["labels"] = int(self.labels[i])
        return item


class HFVisionFamily(ImageFamily):
    """AutoModelForImageClassification from a local folder, or ``hf-config:TYPE`` built from config."""

    def _config(self, labels):
        from transformers import AutoConfig

        kw = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
              "label2id": {n: i for i, n in enumerate(labels)}}
        if self.source.startswith("hf-config:"):
            check_model_name(self.source)
            kind = self.source.split(":", 1)[1]
            extra = {"image_size": self.cfg.image_size} if kind in ("vit", "mobilenet_v2") else {}
            return AutoConfig.for_model(kind, **kw, **extra)
        try:
            return AutoConfig.from_pretrained(self.source, **kw)
        except Exception as err:  # noqa: BLE001 - any failure here means config.json is not a usable model config
            raise loading_error(self.source, "the model config (config.json)", err) from err

    def new_model(self, labels, dropout=None, weights=None):
        from transformers import AutoModelForImageClassification

        cfg = self._config(labels)
        if dropout is not None:
            for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob"):
                if hasattr(cfg, key):
                    setattr(cfg, key, dropout)
        if self.source.startswith("hf-config:"):
            warnings.warn(f"{self.source}: random initialization (no pretrained weights); train it or expect chance accuracy")
            return AutoModelForImageClassification.from_config(cfg)
        try:
            return AutoModelForImageClassification.from_pretrained(self.source, config=cfg, ignore_mismatched_sizes=True)
        except Exception as err:  # noqa: BLE001 - missing, truncated or foreign weights all mean an unusable folder
            raise loading_error(self.source, "an image classifier", err) from err

    def load_saved(self, folder: Path, labels):
        from transformers import AutoModelForImageClassification

        try:
            return AutoModelForImageClassification.from_pretrained(folder)
        except Exception as err:  # noqa: BLE001 - a damaged fine-tuned folder: name it rather than show a traceback
            raise loading_error(folder, "the fine-tuned image classifier", err,
                                fix="redo the fine-tuning: edgeft finetune RUN_DIR --force") from err

    def save(self, model, folder: Path) -> None:
        model.save_pretrained(folder)
        self.save_preprocessor(folder)

    def export(self, model, out: Path, opset: int) -> None:
        from optimum.exporters.onnx import onnx_export_from_model

        onnx_export_from_model(model, str(out), task="image-classification", opset=opset, do_validation=False)
        self.save_preprocessor(out)


def _fresh_batchnorm_momentum(model, momentum: float = 0.1) -> int:
    """torchvision builds MobileNetV3 and EfficientNet with BatchNorm momentum 0.01, tuned for runs of
    hundreds of ImageNet epochs. From random init over a few hundred steps the running statistics stay
    near their initial values and evaluation collapses to one class (seen: MNIST, mobilenet_v3_small,
    213 steps: training loss 0.25, validation accuracy 0.10). Random-init models get PyTorch's default
    momentum instead; pretrained weights keep theirs. Returns how many layers changed."""
    import torch

    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
              and m.momentum is not None and m.momentum < momentum]
    for m in layers:
        m.momentum = momentum
    return len(layers)


def _torchvision_wrapper():
    import torch
    from transformers import PretrainedConfig
    from transformers.modeling_outputs import ImageClassifierOutput

    class TorchvisionClassifier(torch.nn.Module):
        """A torchvision net behind the Hugging Face calling convention (pixel_values in, .logits out)."""

        def __init__(self, arch: str, num_classes: int, image_size: int):
            import torchvision

            super().__init__()
            self.net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
            self.config = PretrainedConfig(num_channels=3, image_size=image_size, num_labels=num_classes)
            self.config.arch = arch

        def forward(self, pixel_values, labels=None, **_):
            return ImageClassifierOutput(logits=self.net(pixel_values))

    return TorchvisionClassifier


class TorchvisionFamily(ImageFamily):
    """``torchvision:ARCH``; weights from a local .pth/.safetensors (``--weights``) or random init."""

    def __init__(self, source: str, vision_cfg):
        super().__init__(source, vision_cfg)
        check_model_name(source)
        self.arch = source.split(":", 1)[1]

    def _build(self, n: int):
        return _torchvision_wrapper()(self.arch, n, self.cfg.image_size)

    def new_model(self, labels, dropout=None, weights=None):
        model = self._build(len(labels))
        if weights:
            _load_backbone_weights(model.net, Path(weights))
        else:
            warnings.warn(f"{self.arch}: no --weights given, random initialization; train it long enough "
                          "(a random net's logits are ~0 and any accuracy check on it is vacuous)")
            _fresh_batchnorm_momentum(model)
        return model

    def load_saved(self, folder: Path, labels):
        from safetensors.torch import load_file

        meta = json.loads((Path(folder) / TV_JSON).read_text())
        model = self._build(meta["num_classes"])
        model.load_state_dict(load_file(str(Path(folder) / "model.safetensors")))
        return model

    def save(self, model, folder: Path) -> None:
        from safetensors.torch import save_file

        Path(folder).mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(Path(folder) / "model.safetensors"))
        (Path(folder) / TV_JSON).write_text(json.dumps({"arch": self.arch, "num_classes": model.config.num_labels}))
        self.save_preprocessor(folder)

    def export(self, model, out: Path, opset: int) -> None:
        from optimum.exporters.onnx import export

        out.mkdir(parents=True, exist_ok=True)
        export(model.eval(), torchvision_onnx_config(model.config), out / "model.onnx", opset=opset)
        self.save_preprocessor(out)


def torchvision_onnx_config(config):
    from optimum.exporters.onnx.config import VisionOnnxConfig
    from optimum.utils import NormalizedVisionConfig

    class TorchvisionOnnxConfig(VisionOnnxConfig):
        NORMALIZED_CONFIG_CLASS = NormalizedVisionConfig
        DEFAULT_ONNX_OPSET = 17

        @property
        def inputs(self):
            return {"pixel_values": {0: "batch_size"}}

    return TorchvisionOnnxConfig(config, task="image-classification")


def _load_backbone_weights(net, path: Path) -> None:
    """Load a state dict, keeping this run's head when the checkpoint's has another number of classes."""
    import torch

    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}", fix="pass --weights a local .pth or .safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means the file is not a usable state dict
        raise ConfigError(f"cannot read weights {path}: {err}", fix="save them with torch.save(model.state_dict())") from None
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ConfigError(f"{path} has no weights matching this architecture", fix="check the --model architecture")
    net.load_state_dict(usable, strict=False)
