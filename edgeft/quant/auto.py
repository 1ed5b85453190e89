"""``auto`` calibration: activation ranges chosen by their effect on the model's outputs.

Every activation quantizer gets candidate ranges from one histogram pass (max, entropy, percentile, and
for the per-unit pass more percentiles and max scaled down); the choice minimizes ``error(model)``, the
logit MSE to the FP32 model on validation samples. Roles and units as in ``edgeft.quant.quantizers``.
"""
from __future__ import annotations

from typing import Callable

from edgeft.quant.entropy import entropy_amax
from edgeft.quant.quantizers import quantizers, role_of

AUTO_CANDIDATES = ("max", "entropy", "percentile")
REFINE_PERCENTILES = (99.9, 99.999)     # the per-unit pass also tries these and max scaled down
REFINE_MAX_SCALES = (0.7, 0.5)


def auto_calibrate(model, error: Callable[[object], float], percentile: float,
                    progress: Callable[[int, int, str], None], prefix_cache: bool = True) -> dict:
    """Activation ranges chosen on ``error``: per role, then per unit.

    Every activation quantizer gets its amax from each candidate (one histogram pass, collected before).
    Quantizers that saw the same tensor (equal histograms: q, k and v read one input) form one *unit*, so
    they keep one scale; units with the same ``role_of`` form a *role*.
    1. Per role, greedy: start from the best single method (``AUTO_CANDIDATES``) for all, then try each
       role on each other method and keep what lowers the error.
    2. Per unit, one pass: each unit tries the methods above, ``REFINE_PERCENTILES`` and its max scaled
       by ``REFINE_MAX_SCALES`` on its own, and keeps what lowers the error.
    What each step buys on SST-2 is in docs/design.md ("Calibration").
    """
    import torch

    inputs = quantizers(model, histogram=True)
    units: list[list] = []          # [(name, quantizer), ...] that share one tensor
    for n, q in inputs:
        cal = q._calibrator
        twin = next((u for u in units if torch.equal(u[0][1]._calibrator._calib_hist, cal._calib_hist)
                     and torch.equal(u[0][1]._calibrator._calib_bin_edges, cal._calib_bin_edges)), None)
        (twin.append((n, q)) if twin is not None else units.append([(n, q)]))
    amax: dict[tuple[int, str], torch.Tensor] = {}
    for i, unit in enumerate(units):
        cal = unit[0][1]._calibrator
        top = cal._calib_bin_edges[-1].detach().clone().float()
        amax[(i, "max")] = top
        amax[(i, "entropy")] = torch.tensor(entropy_amax(cal))
        amax[(i, "percentile")] = torch.as_tensor(cal.compute_amax("percentile", percentile=percentile)).float()
        for p in REFINE_PERCENTILES:
            amax[(i, f"percentile {p}")] = torch.as_tensor(cal.compute_amax("percentile", percentile=p)).float()
        for f in REFINE_MAX_SCALES:
            amax[(i, f"max x{f}")] = top * f
    role_of_unit = {i: " | ".join(sorted({role_of(n) for n, _ in unit})) for i, unit in enumerate(units)}
    roles = list(dict.fromkeys(role_of_unit.values()))

    def set_unit(i: int, candidate: str) -> None:
        for _, q in units[i]:
            q.amax = amax[(i, candidate)].to(q._calibrator._calib_bin_edges.device)

    def apply(choice: dict[str, str]) -> float:
        for i, role in role_of_unit.items():
            set_unit(i, choice[role])
        return float(error(model))

    candidates = {i: [c for (j, c) in amax if j == i] for i in range(len(units))}
    total = len(AUTO_CANDIDATES) + len(roles) * (len(AUTO_CANDIDATES) - 1) + sum(len(c) - 1 for c in candidates.values())
    done = 0

    def step(note: str) -> None:
        nonlocal done
        done += 1
        progress(done, total, note)

    tried = {}
    for m in AUTO_CANDIDATES:
        tried[m] = apply({r: m for r in roles})
        step(f"{m} for all: error {tried[m]:.4f}")
    start = min(tried, key=tried.get)
    choice, best = {r: start for r in roles}, tried[start]
    for k, role in enumerate(roles, 1):
        for m in [m for m in AUTO_CANDIDATES if m != choice[role]]:     # the current one is scored already
            e = apply({**choice, role: m})
            if e < best:
                choice, best = {**choice, role: m}, e
            step(f"role {k}/{len(roles)}: error {best:.4f}")
    role_error = best
    per_unit = {i: choice[role] for i, role in role_of_unit.items()}
    for i, method in per_unit.items():
        set_unit(i, method)
    blocks = _unit_blocks(model, units)
    with _BlockPrefixCache(model, error) as cached:
        for i in range(len(units)):
            # units run bottom to top, so the blocks below unit i are final: their output is computed
            # once per block and reused by each candidate of the units above (same result, less work)
            cached.start_at(blocks[i] if prefix_cache else 0)
            for candidate in [c for c in candidates[i] if c != per_unit[i]]:
                set_unit(i, candidate)
                e = cached.error()
                if e < best:
                    per_unit[i], best = candidate, e
                step(f"unit {i + 1}/{len(units)}: error {best:.4f}")
            set_unit(i, per_unit[i])
    changed = {" | ".join(n for n, _ in units[i]): c for i, c in per_unit.items() if c != choice[role_of_unit[i]]}
    return {"single_method_error": tried, "chosen": choice, "role_error": role_error,
            "units": len(units), "refined": changed, "error": best}


def _unit_blocks(model, units: list[list]) -> list[int]:
    """For each unit, the index of the first repeated block (``training.transformer_blocks``) it sits in;
    0 for units before the blocks, ``len(blocks)`` for units after them (pooler, classifier)."""
    from edgeft.training import transformer_blocks

    blocks = transformer_blocks(model)
    names = {id(m): n for n, m in model.named_modules()}
    prefixes = [names[id(b)] + "." for b in blocks]
    order = [n for n, _ in model.named_modules()]
    out = []
    for unit in units:
        index = []
        for name, _ in unit:
            hit = [b for b, p in enumerate(prefixes) if name.startswith(p)]
            if hit:
                index.append(hit[0])
            elif prefixes and order.index(name) > order.index(prefixes[-1][:-1]):
                index.append(len(blocks))
            else:
                index.append(0)
        out.append(min(index))
    return out


class _BlockPrefixCache:
    """``error(model)`` with the repeated blocks below block ``b`` replaced by their recorded output.

    ``start_at(b)`` records, in one full evaluation, what block ``b - 1`` returns for each batch the error
    function runs; later ``error()`` calls make blocks ``0 .. b-1`` return that record instead of computing
    (the blocks above get exactly the inputs they would have). A model without repeated blocks, or
    ``b == 0``, is evaluated in full."""

    def __init__(self, model, error: Callable[[object], float]):
        from edgeft.training import transformer_blocks

        self.model, self._error = model, error
        self.blocks = transformer_blocks(model)
        self.start, self.outputs, self._batch = 0, [], 0

    def __enter__(self) -> "_BlockPrefixCache":
        return self

    def __exit__(self, *exc) -> None:
        self.outputs = []

    def start_at(self, block: int) -> None:
        block = min(block, len(self.blocks))
        if block == self.start and (block == 0 or self.outputs):
            return
        self.start, self.outputs = block, []
        if block == 0:
            return
        handle = self.blocks[block - 1].register_forward_hook(lambda _m, _a, out: self.outputs.append(out))
        try:
            self._error(self.model)
        finally:
            handle.remove()

    def error(self) -> float:
        if self.start == 0:
            return float(self._error(self.model))
        skipped = self.blocks[:self.start]
        saved = [b.__dict__.get("forward") for b in skipped]

        def first(*args, **kwargs):                 # block 0 runs once per batch, in order
            self._batch += 1
            return self.outputs[self._batch - 1]

        self._batch = 0
        skipped[0].forward = first
        for b in skipped[1:]:
            b.forward = lambda *a, **k: self.outputs[self._batch - 1]
        try:
            return float(self._error(self.model))
        finally:
            for b, f in zip(skipped, saved):
                if f is None:
                    del b.forward
                else:
                    b.forward = f
