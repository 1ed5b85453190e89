"""Per-block quantization sensitivity, and keeping chosen blocks or layers in higher precision.

Blocks and layers as in ``edgeft.quant.quantizers``. Sensitivity = the validation cost of quantizing one
block alone (every other quantizer off), sorted worst first.
"""
from __future__ import annotations

from typing import Callable

from edgeft.quant.quantizers import block_of, by_block, by_layer


def sensitivity(model, evaluate: Callable[[], float], lower_is_better: bool = False,
                progress: Callable[[int, int, str], None] | None = None) -> list[dict]:
    """Quantize one block at a time and measure; returns rows sorted by cost (worst first). ``progress``
    (when given) gets ``(blocks done, blocks, note)`` after each block."""
    blocks = by_block(model)
    every = [q for qs in blocks.values() for q in qs]
    for q in every:
        q.disable()
    try:
        reference = evaluate()
        rows = []
        for name, qs in blocks.items():
            for q in qs:
                q.enable()
            score = evaluate()
            for q in qs:
                q.disable()
            cost = (score - reference) if lower_is_better else (reference - score)
            rows.append({"block": name, "quantizers": len(qs), "score": score, "cost": cost})
            if progress:
                progress(len(rows), len(blocks), f"{name}: {cost:+.4f}")
    finally:
        for q in every:
            q.enable()
    return sorted(rows, key=lambda r: -r["cost"])


def keep_in_high_precision(model, names: list[str]) -> int:
    """Disable the quantizers of the named blocks or layers, so they export without Q/DQ and run in float.
    A name is a block from the sensitivity table (``bert.encoder.layer.3``) or one layer's module path
    (``bert.encoder.layer.3.output.dense``). Returns the quantizers disabled; raises ``ValueError`` naming
    any entry that matches no quantized layer, with the blocks that exist."""
    layers = by_layer(model)

    def hit(layer: str, p: str) -> bool:
        return layer == p or layer.startswith(p + ".")

    unknown = [p for p in names if not any(hit(layer, p) for layer in layers)]
    if unknown:
        blocks = sorted({block_of(layer) for layer in layers})
        raise ValueError(f"keep_fp32 {unknown} names no quantized block or layer; blocks: {', '.join(blocks)} "
                         f"(or a layer inside one, e.g. {next(iter(layers), '')})")
    n = 0
    for layer, qs in layers.items():
        if any(hit(layer, p) for p in names):
            for q in qs:
                q.disable()
                n += 1
    return n
