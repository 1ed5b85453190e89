"""The int8 grid that large embedding tables are stored on, shared by training and the ONNX Runtime backend.

The ORT backend stores every embedding table of at least ``EMBEDDING_MIN_ROWS`` rows as int8 with one
scale per row (``backends.qdq_ort.int8_embedding_tables``). The finetune stage puts those tables on the
same grid before calibration and keeps them frozen through QAT (``quant.modelopt_int8.snap_embeddings``),
so the engine's tables hold the values the quantized model was trained and measured with. numpy only.
"""
from __future__ import annotations

import numpy as np

EMBEDDING_MIN_ROWS = 1024


def per_row_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row: ``(q, scale)`` with ``q * scale`` ~ ``w``; scale float32 of shape (rows, 1)."""
    w = np.asarray(w, dtype=np.float32)
    scale = np.abs(w).max(axis=1, keepdims=True) / np.float32(127.0)
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def on_per_row_grid(w: np.ndarray) -> np.ndarray:
    """``w`` snapped to its per-row int8 grid (float32): what the engine dequantizes."""
    q, scale = per_row_int8(w)
    return q.astype(np.float32) * scale
