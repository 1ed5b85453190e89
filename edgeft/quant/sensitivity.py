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


def sensitivity(model, evaluate: Callable[[], float], lower_is_better: bool = False) -> list[dict]:
    """Quantize one group at a time and measure; returns rows sorted by cost (worst first)."""
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
    finally:
        for q in every:
            q.enable()
    return sorted(rows, key=lambda r: -r["cost"])


def keep_in_high_precision(model, prefixes: list[str]) -> int:
    """Disable the quantizers of the named groups (they export without Q/DQ and run in float)."""
    n = 0
    for name, qs in quantizer_groups(model).items():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            for q in qs:
                q.disable()
                n += 1
    return n
