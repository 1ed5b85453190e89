"""Time `auto` calibration on a finished run's FP32 baseline, and its fidelity on the test split.

    python bench/auto_calibration.py RUN_DIR [--no-prefix-cache] [--selection-samples N]

Re-runs ModelOpt INT8 insertion + `auto` calibration exactly as the finetune stage does (PTQ, no QAT) on
the run's saved baseline, then scores the fake-quant model against the FP32 one on the test split (never
seen by calibration): logit MSE and top-1 agreement. `--no-prefix-cache` evaluates every candidate on
the whole model (the behaviour before the block-prefix cache), to measure what the cache saves; its
choices must be identical. Prints one JSON line with the host (CPU model, ISA flags) it ran on.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--no-prefix-cache", action="store_true")
    ap.add_argument("--selection-samples", type=int)
    a = ap.parse_args()

    import torch

    from edgeft_runtime import hostinfo
    from edgeft.calibration import batches, load_calibration
    from edgeft.config import RunConfig
    from edgeft_runtime.fileio import read_json
    from edgeft.models import family_for
    from edgeft.pipeline import RunContext
    from edgeft.quant import modelopt_int8
    from edgeft.stages.finetune import _fidelity_error

    cfg = RunConfig.model_validate(read_json(a.run_dir / "manifest.json")["config"])
    ctx = RunContext.open(cfg.model_copy(update={"out": a.run_dir}))
    data = ctx.splits()
    family = family_for(cfg, data.modality)
    calib = load_calibration(cfg.calibration).model_copy(update={"method": "auto"})
    if a.selection_samples:
        calib = calib.model_copy(update={"selection_samples": a.selection_samples})
    model = family.load_saved(a.run_dir / "finetune/baseline", data.labels)
    fp32 = family.load_saved(a.run_dir / "finetune/baseline", data.labels).eval()
    texts = [e.text for e in getattr(data, calib.split)]
    error = _fidelity_error(model, family, data, calib)
    modelopt_int8.snap_embeddings(model)
    report: dict = {}
    t0 = time.perf_counter()
    q = modelopt_int8.quantize(model, lambda: (family.feeds(c, calib.max_length) for c in batches(texts, calib)),
                               "auto", calib.percentile, error=error, report=report,
                               prefix_cache=not a.no_prefix_cache)
    seconds = time.perf_counter() - t0
    test = [e.text for e in data.test]
    with torch.no_grad():
        ref = torch.cat([fp32(**family.feeds(test[i:i + 32], cfg.train.max_length)).logits for i in range(0, len(test), 32)])
        got = torch.cat([q(**family.feeds(test[i:i + 32], cfg.train.max_length)).logits for i in range(0, len(test), 32)])
    h = hostinfo.current()
    print(json.dumps({"run": str(a.run_dir), "prefix_cache": not a.no_prefix_cache,
                      "selection_samples": calib.selection_samples, "seconds": round(seconds, 1),
                      "validation_error": report["error"], "units": report["units"],
                      "refined": report["refined"], "chosen": report["chosen"],
                      "test_logit_mse": float(((got - ref) ** 2).mean()),
                      "test_top1_agreement": float((got.argmax(-1) == ref.argmax(-1)).float().mean()),
                      "host": {"cpu": h.cpu, "isa": h.isa_summary(), "torch_threads": torch.get_num_threads()}}))


if __name__ == "__main__":
    main()
