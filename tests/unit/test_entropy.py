"""edgeft's vectorized entropy calibration returns exactly ModelOpt's amax."""
from __future__ import annotations

import numpy as np
import pytest

from edgeft.quant.entropy import entropy_amax_from_histogram


def _modelopt(hist, edges, **kw):
    from modelopt.torch.quantization.calib.histogram import _compute_amax_entropy

    return float(_compute_amax_entropy(hist, edges, 8, False, **kw))


@pytest.mark.parametrize("seed", range(4))
def test_same_amax_as_modelopt_on_random_histograms(seed):
    rng = np.random.default_rng(seed)
    n = 512
    hist = (rng.exponential(1.0, n) ** 3 * 1000).astype(np.int32)
    hist[rng.random(n) < 0.3] = 0                       # empty bins: they are skipped in the merge
    hist[-20:] = rng.integers(0, 3, 20)                  # a sparse outlier tail
    edges = np.linspace(0, float(rng.uniform(1, 50)), n + 1)
    for kw in ({}, {"stride": 3, "start_bin": 200}):
        assert entropy_amax_from_histogram(hist.copy(), edges, **kw) == _modelopt(hist.copy(), edges, **kw)


def test_same_amax_as_modelopt_on_a_models_activations(tiny_model_dir):
    import torch
    from modelopt.torch.quantization.calib import HistogramCalibrator
    from modelopt.torch.quantization.nn import TensorQuantizer

    from edgeft.models.hf_text import load_classifier, load_tokenizer
    from edgeft.quant import modelopt_int8
    from edgeft.quant.entropy import entropy_amax

    tok = load_tokenizer(tiny_model_dir)
    model = modelopt_int8.quantize(load_classifier(tiny_model_dir, ["a", "b"]).eval(), lambda: iter([]), "max")
    feeds = tok(["turn on the kitchen lights", "play jazz", "what's the weather", "set a timer"] * 3,
                padding=True, return_tensors="pt")

    def loop(m):
        with torch.no_grad():
            m(**feeds)

    quantizers = modelopt_int8._collect_histograms(model, loop)
    compared = 0
    for _, q in quantizers:
        cal = q._calibrator
        if compared < 4 and isinstance(cal, HistogramCalibrator) and cal._calib_hist is not None:   # ModelOpt's is slow
            saved = cal._calib_hist.clone()
            theirs = float(cal.compute_amax("entropy"))
            cal._calib_hist = saved.clone()
            assert entropy_amax(cal) == theirs
            compared += 1
    assert compared == 4 and all(isinstance(q, TensorQuantizer) for _, q in quantizers)
