"""Per-block quantization sensitivity, and keeping chosen blocks in higher precision.

A *group* is a block of the network: the module-name prefix up to its first numeric index
(``bert.encoder.layer.3``, ``net.layer2.1``) or, for modules outside numbered blocks, their parent
(``bert.pooler.dense`` -> ``bert.pooler``, ``classifier``). Sensitivity = the validation cost of quantizing
that group alone (every other quantizer off), sorted worst first.
"""
from __future__ import annotations

import re
from typing import Callable


def group_of(module_name: str) -> str:
    parts = module_name.split(".")
    for i, p in enumerate(parts):
        if re.fullmatch(r"\d+", p):
            return ".".join(parts[: i + 1])
    return ".".join(parts[:-1]) or parts[0]


def quantizer_groups(model) -> dict[str, list]:
    """Enabled quantizers by group (weight and input quantizers of the same layer share its group)."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    out: dict[str, list] = {}
    for name, q in model.named_modules():
        if isinstance(q, TensorQuantizer) and q.is_enabled:
            layer = name.rsplit(".", 1)[0]            # strip "input_quantizer" / "weight_quantizer"
            out.setdefault(group_of(layer), []).append(q)
    return out


def sensitivity(model, evaluate: Callable[[], float], lower_is_better: bool = False,
                progress: Callable[[int, int, str], None] | None = None) -> list[dict]:
    """Quantize one group at a time and measure; returns rows sorted by cost (worst first). ``progress``
    (when given) gets a line after each group."""
    groups = quantizer_groups(model)
    every = [q for qs in groups.values() for q in qs]
    for q in every:
        q.disable()
    try:
        reference = evaluate()
        rows = []
        for name, qs in groups.items():
            for q in qs:
                q.enable()
            score = evaluate()
            for q in qs:
                q.disable()
            cost = (score - reference) if lower_is_better else (reference - score)
            rows.append({"group": name, "quantizers": len(qs), "score": score, "cost": cost})
            if progress:
                progress(len(rows), len(groups), f"{name}: {cost:+.4f}")
    finally:
        for q in every:
            q.enable()
    return sorted(rows, key=lambda r: -r["cost"])


def keep_in_high_precision(model, names: list[str]) -> int:
    """Disable the quantizers of the named blocks or layers, so they export without Q/DQ and run in float.
    A name is a group from the sensitivity table (``bert.encoder.layer.3``) or one layer's module path
    (``bert.encoder.layer.3.output.dense``). Returns the quantizers disabled; raises ``ValueError`` naming
    any entry that matches no quantized layer, with the groups that exist."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    layers: dict[str, list] = {}
    for name, q in model.named_modules():
        if isinstance(q, TensorQuantizer) and q.is_enabled:
            layers.setdefault(name.rsplit(".", 1)[0], []).append(q)

    def hit(layer: str, p: str) -> bool:
        return layer == p or layer.startswith(p + ".")

    unknown = [p for p in names if not any(hit(layer, p) for layer in layers)]
    if unknown:
        groups = sorted({group_of(layer) for layer in layers})
        raise ValueError(f"keep_fp32 {unknown} names no quantized block or layer; blocks: {', '.join(groups)} "
                         f"(or a layer inside one, e.g. {next(iter(layers), '')})")
    n = 0
    for layer, qs in layers.items():
        if any(hit(layer, p) for p in names):
            for q in qs:
                q.disable()
                n += 1
    return n
