"""Finding ModelOpt's quantizers in a model, and the words edgeft uses for where they sit.

- *layer*: one quantized module, named by its module path (``bert.encoder.layer.3.output.dense``); its
  input and weight quantizers belong to it.
- *block*: a repeated block of the network, the module path up to its first numeric index
  (``bert.encoder.layer.3``, ``net.layer2.1``), or for a layer outside numbered blocks its parent
  (``bert.pooler``, ``classifier``). Sensitivity, ``--keep-fp32`` and the fallback work per block.
- *role*: a layer's place in every block, its path with the block indices as ``#``
  (``bert.encoder.layer.#.output.dense``); *unit*: the quantizers that read one tensor (q, k and v
  share their input). ``auto`` calibration chooses per role, then per unit.
"""
from __future__ import annotations

import re


def quantizers(model, *, enabled: bool = True, histogram: bool = False) -> list[tuple[str, object]]:
    """``(name, TensorQuantizer)`` of the model in module order: the enabled ones (``enabled``), or only
    those that collected a histogram (``histogram``: activation quantizers under histogram calibration)."""
    from modelopt.torch.quantization.calib import HistogramCalibrator
    from modelopt.torch.quantization.nn import TensorQuantizer

    out = []
    for name, q in model.named_modules():
        if not isinstance(q, TensorQuantizer) or (enabled and not q.is_enabled):
            continue
        if histogram:
            cal = getattr(q, "_calibrator", None)
            if not (isinstance(cal, HistogramCalibrator) and cal._calib_hist is not None):
                continue
        out.append((name, q))
    return out


def layer_of(quantizer_name: str) -> str:
    """``...output.dense.input_quantizer`` -> ``...output.dense``."""
    return quantizer_name.rsplit(".", 1)[0]


def block_of(layer: str) -> str:
    parts = layer.split(".")
    for i, p in enumerate(parts):
        if re.fullmatch(r"\d+", p):
            return ".".join(parts[: i + 1])
    return ".".join(parts[:-1]) or parts[0]


def role_of(quantizer_name: str) -> str:
    """The quantizer's layer with block indices as ``#`` (``bert.encoder.layer.#.output.dense``)."""
    return ".".join("#" if p.isdigit() else p for p in layer_of(quantizer_name).split("."))


def by_layer(model) -> dict[str, list]:
    """Enabled quantizers by layer."""
    out: dict[str, list] = {}
    for name, q in quantizers(model):
        out.setdefault(layer_of(name), []).append(q)
    return out


def by_block(model) -> dict[str, list]:
    """Enabled quantizers by block."""
    out: dict[str, list] = {}
    for name, q in quantizers(model):
        out.setdefault(block_of(layer_of(name)), []).append(q)
    return out
