"""INT8 fake quantization with nvidia-modelopt: config, calibration, save/restore.

The config starts from ``mtq.INT8_DEFAULT_CFG`` (weights per-channel, activations per-tensor, max
calibration) and turns off the LayerNorm-input quantizers: they sit on the residual stream, whose
outlier channels give a huge amax and coarse steps (docs/design.md has the cost on SST-2). ONNX Runtime
has no int8 LayerNorm kernel, so they would buy no speed either.
Large embedding tables are put on the int8 grid the ORT engine stores them on (``snap_embeddings``).
"""
from __future__ import annotations

import copy
import contextlib
from pathlib import Path
from typing import Callable, Iterable

from edgeft.quant.grid import EMBEDDING_MIN_ROWS
from edgeft.quant.quantizers import quantizers as enabled_quantizers

STATE_FILE = "modelopt_state.pth"


def int8_config() -> dict:
    import modelopt.torch.quantization as mtq

    cfg = copy.deepcopy(mtq.INT8_DEFAULT_CFG)
    cfg["quant_cfg"].append({"quantizer_name": "*", "parent_class": "nn.LayerNorm", "enable": False})
    return cfg


@contextlib.contextmanager
def _scratch_tempdir():
    """ModelOpt writes the source of each quantized attention class it generates (BERT's SDPA attention)
    to a ``modelopt_*.py`` file in the temp folder and never removes it: one file per run. Those calls
    run with the temp folder pointed at a scratch folder that is removed afterwards (the file only names
    the generated code in tracebacks)."""
    import shutil
    import tempfile

    scratch, previous = tempfile.mkdtemp(prefix="edgeft-modelopt-"), tempfile.tempdir
    tempfile.tempdir = scratch
    try:
        yield
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(scratch, ignore_errors=True)


class CalibrationMethod:
    """How activation ranges are found (ModelOpt's ``CalibrateModeRegistry`` pattern), registered by name.
    ``quantize`` inserts the INT8 quantizers (weights calibrated) and hands the model to ``calibrate``."""
    name: str
    needs_error = False          # chooses by the model's output error (``error``)

    def quantize(self, model, forward_loop: Callable, **opts):
        import modelopt.torch.quantization as mtq

        model = mtq.quantize(model, int8_config(), forward_loop=None)
        self.calibrate(model, forward_loop, **opts)
        return model

    def calibrate(self, model, forward_loop: Callable, *, percentile: float, error, progress, report: dict,
                  prefix_cache: bool) -> None:
        raise NotImplementedError


CALIBRATION_METHODS: dict[str, type[CalibrationMethod]] = {}


def register_method(cls: type[CalibrationMethod]) -> type[CalibrationMethod]:
    CALIBRATION_METHODS[cls.name] = cls
    return cls


class _Histogram(CalibrationMethod):
    """ModelOpt's HistogramCalibrator on the activation quantizers; weights keep per-channel max."""

    def calibrate(self, model, forward_loop, *, percentile, **_):
        _finish_calibration(_collect_histograms(model, forward_loop), self.name, percentile)


@register_method
class Max(CalibrationMethod):
    """ModelOpt's own max calibration, in the pass that inserts the quantizers (its default)."""
    name = "max"

    def quantize(self, model, forward_loop, **_):
        import modelopt.torch.quantization as mtq

        return mtq.quantize(model, int8_config(), forward_loop)


@register_method
class Entropy(_Histogram):
    name = "entropy"


@register_method
class Percentile(_Histogram):
    name = "percentile"


@register_method
class Mse(_Histogram):
    name = "mse"


@register_method
class Auto(CalibrationMethod):
    """Per role, then per unit, the candidate range that keeps the model's outputs closest (``quant.auto``)."""
    name = "auto"
    needs_error = True

    def calibrate(self, model, forward_loop, *, percentile, error, progress, report, prefix_cache):
        from edgeft.quant.auto import auto_calibrate

        _finish_calibration(_collect_histograms(model, forward_loop), None, percentile)   # activations: below
        report.update(auto_calibrate(model, error, percentile, progress or (lambda *_: None), prefix_cache))


METHODS = tuple(CALIBRATION_METHODS)


def quantize(model, calib_batches: Callable[[], Iterable[dict]], method: str = "max", percentile: float = 99.99,
             error: Callable[[object], float] | None = None, report: dict | None = None,
             progress: Callable[[int, int, str], None] | None = None, prefix_cache: bool = True):
    """Insert INT8 quantizers and calibrate them on ``calib_batches()`` (a fresh iterator of feeds) with a
    registered method (``CALIBRATION_METHODS``).

    ``max`` is ModelOpt's own calibration, in the pass that inserts the quantizers. ``entropy``,
    ``percentile`` and ``mse`` give the activation (input) quantizers ModelOpt's HistogramCalibrator;
    weights keep max (per-channel) calibration. ``auto`` (``quant.auto``) picks a range per role, then
    per unit, to minimize ``error(model)``; what it chose goes into ``report``, and ``progress`` gets
    ``(evaluations done, total, note)`` after each step. ``prefix_cache=False`` evaluates every auto
    candidate on the whole model (same result, slower; for benchmarks).
    """
    import torch

    def forward_loop(m) -> None:
        with torch.no_grad():
            for feeds in calib_batches():
                m(**{k: v.to(next(m.parameters()).device) for k, v in feeds.items()})

    model.eval()
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; use one of {METHODS}")
    calibrator = CALIBRATION_METHODS[method]()
    if calibrator.needs_error and error is None:
        raise ValueError(f"calibration method {method!r} needs an error function to choose by")
    with _scratch_tempdir():
        return calibrator.quantize(model, forward_loop, percentile=percentile, error=error, progress=progress,
                                   report=report if report is not None else {}, prefix_cache=prefix_cache)


def _collect_histograms(model, forward_loop) -> list:
    from modelopt.torch.quantization.calib import HistogramCalibrator
    from modelopt.torch.quantization.model_calib import enable_stats_collection

    quantizers = enabled_quantizers(model)
    for name, q in quantizers:
        if name.endswith("input_quantizer"):
            q._calibrator = HistogramCalibrator(num_bits=8, axis=None, unsigned=False)
    enable_stats_collection(model)
    forward_loop(model)
    return quantizers


def _finish_calibration(quantizers: list, method: str | None, percentile: float) -> None:
    """Load each quantizer's amax from its collected statistics (histogram ones with ``method``; with
    ``None`` they are left for ``_auto_calibrate``), then switch from collecting to quantizing."""
    import torch
    from modelopt.torch.quantization.calib import HistogramCalibrator

    from edgeft.quant.entropy import entropy_amax

    for _, q in quantizers:
        cal = getattr(q, "_calibrator", None)
        if isinstance(cal, HistogramCalibrator):
            if method == "entropy" and cal._calib_hist is not None:
                q.amax = torch.tensor(entropy_amax(cal))       # ModelOpt's result, computed faster
            elif method is not None:
                q.load_calib_amax(method, **({"percentile": percentile} if method == "percentile" else {}))
        elif cal is not None:
            q.load_calib_amax()
        q.enable_quant()
        q.disable_calib()


def snap_embeddings(model, min_rows: int = EMBEDDING_MIN_ROWS) -> dict:
    """Put every ``nn.Embedding`` table of at least ``min_rows`` rows on the per-row int8 grid the ONNX Runtime
    engine stores it on (``edgeft.quant.grid``) and freeze it, so calibration, QAT and the fake-quant
    accuracy see the values the engine will hold. Returns the tables snapped and the largest change."""
    import numpy as np
    import torch

    from edgeft.quant.grid import on_per_row_grid

    names, worst = [], 0.0
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Embedding) and m.num_embeddings >= min_rows:
            w = m.weight.detach().float().cpu().numpy()
            snapped = on_per_row_grid(w)
            worst = max(worst, float(np.abs(snapped - w).max()))
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(snapped).to(m.weight.device, m.weight.dtype))
            m.weight.requires_grad_(False)
            names.append(name)
    return {"tables": names, "max_abs_change": worst}


def count_quantizers(model) -> dict[str, int]:
    return {"total": len(enabled_quantizers(model, enabled=False)), "enabled": len(enabled_quantizers(model))}


def save(model, out_dir: Path) -> Path:
    import modelopt.torch.opt as mto

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / STATE_FILE
    mto.save(model, str(path))
    return path


def restore(base_model, state_path: Path):
    """Rebuild the quantized model: the baseline architecture + the saved quantizers and weights.

    Loaded with ``weights_only=True`` stated explicitly: torch then unpickles tensors and plain data only,
    even under ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (which ModelOpt's own error message suggests), so a
    state file in a shared run directory cannot run code."""
    import modelopt.torch.opt as mto

    with _scratch_tempdir():
        return mto.restore(base_model, str(state_path), weights_only=True)
