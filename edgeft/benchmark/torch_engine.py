"""The fine-tuned FP32 model in PyTorch eager mode, as a benchmark engine (``kind: adapter``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


class TorchSession:
    def __init__(self, run_dir: str, threads: int):
        import torch

        from edgeft.artifacts import RunFacts, rel_path
        from edgeft.config import build_config
        from edgeft.manifest import Manifest
        from edgeft.models import family_for

        if threads:
            torch.set_num_threads(threads)
        run = Path(run_dir)
        cfg = build_config({"out": run}, Manifest.load(run).data["config"], check_paths=False)
        facts = RunFacts.read(run / rel_path("finetune.facts"))
        baseline = run / rel_path("finetune.baseline")
        self.model = family_for(cfg, facts.modality, saved=baseline).load_saved(baseline, facts.labels).eval()
        import inspect

        accepted = inspect.signature(self.model.forward).parameters
        names = ["pixel_values"] if facts.modality == "image" else ["input_ids", "attention_mask", "token_type_ids"]
        self.input_names = [n for n in names if n in accepted] or names[:1]
        self.torch = torch

    def run(self, feeds):
        with self.torch.inference_mode():
            out = self.model(**{k: self.torch.from_numpy(np.ascontiguousarray(feeds[k])) for k in self.input_names if k in feeds})
        logits = out.logits if hasattr(out, "logits") else out
        return {"logits": logits.float().numpy()}


def session(path: str, threads: int) -> TorchSession:
    return TorchSession(path, threads)
