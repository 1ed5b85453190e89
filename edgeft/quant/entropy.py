"""Entropy (KL-divergence) calibration, vectorized: the same result as ModelOpt's
``HistogramCalibrator.compute_amax("entropy")``, bit for bit, in a fraction of the time.

ModelOpt's ``_compute_amax_entropy`` walks every candidate bin count in Python loops over the bins and
calls ``scipy.stats.entropy`` through its argument-checking wrapper each time: about 1 s per quantizer
on this project's CPUs, half of ``auto`` calibration on MiniLM. Here each candidate is the same integer
sums (``np.bincount``, exact in float64) and the same ``rel_entr`` sum that ``scipy.stats.entropy``
computes, so the divergences and the chosen amax are identical (tests compare them on real and random
histograms).
"""
from __future__ import annotations

import numpy as np


def entropy_amax_from_histogram(calib_hist: np.ndarray, calib_bin_edges: np.ndarray, num_bits: int = 8,
                                unsigned: bool = False, stride: int = 1, start_bin: int = 128) -> float:
    """ModelOpt's entropy amax for one histogram. Like ModelOpt, sets ``calib_hist[0] = calib_hist[1]``
    in place (its arrays share memory with the calibrator's histogram)."""
    from scipy.special import rel_entr

    bins = calib_hist[:]
    bins[0] = bins[1]
    total_data = np.sum(bins)
    nbins = 1 << (num_bits - 1 + int(unsigned))
    divergences = []
    for i in range(start_bin, len(bins) + 1, stride):
        space = np.linspace(0, i, num=nbins + 1)
        digitized = np.digitize(range(i), space) - 1
        digitized[bins[:i] == 0] = -1
        used = digitized != -1
        counts = np.bincount(digitized[used], weights=bins[:i][used].astype(np.float64), minlength=nbins)
        members = np.bincount(digitized[used], minlength=nbins)
        density_counts = np.where(members > 0, counts / np.maximum(members, 1), counts)
        new_density = np.zeros(i, dtype=np.float64)
        new_density[used] = density_counts[digitized[used]]
        tail = np.sum(bins[i:])
        reference = np.array(bins[:i])
        reference[-1] += tail
        if round(np.sum(new_density) + tail) != total_data or round(np.sum(reference)) != total_data:
            raise RuntimeError("entropy calibration: histogram counts do not add up")
        # scipy.stats.entropy(reference, new_density), without its per-call argument handling
        pk = 1.0 * reference / np.sum(reference, axis=0, keepdims=True)
        qk = 1.0 * new_density / np.sum(new_density, axis=0, keepdims=True)
        divergences.append(np.sum(rel_entr(pk, qk), axis=0))
    divergences = np.array(divergences)
    last_argmin = len(divergences) - 1 - np.argmin(divergences[::-1])
    return float(np.float32(calib_bin_edges[last_argmin * stride + start_bin].item()))   # ModelOpt's float32 amax


def entropy_amax(calibrator) -> float:
    """``calibrator.compute_amax("entropy")`` for a ModelOpt ``HistogramCalibrator``, faster."""
    import torch

    hist = calibrator._calib_hist
    if isinstance(hist, torch.Tensor):
        calib_hist = hist.int().cpu().numpy()
        edges = calibrator._calib_bin_edges.cpu().numpy()
    else:
        calib_hist, edges = hist, calibrator._calib_bin_edges
    return entropy_amax_from_histogram(calib_hist, edges, calibrator._num_bits, calibrator._unsigned)
