"""Stage fingerprints cover the edgeft code each stage runs: a code change redoes exactly those stages."""
from __future__ import annotations

import shutil

from edgeft import pipeline


def test_stage_code_follows_imports():
    ort = pipeline.edgeft_imports("edgeft.backends.onnxruntime_cpu")
    assert {"edgeft.backends.ort_fusions", "edgeft.backends.qdq_ort", "edgeft.backends.onnx_graph"} <= set(ort)
    assert "edgeft.training" not in pipeline.edgeft_imports("edgeft.stages.compile")
    assert "edgeft.training" in pipeline.edgeft_imports("edgeft.stages.finetune")
    assert "edgeft_runtime.session" in pipeline.edgeft_imports("edgeft.stages.verify")


def test_editing_a_backend_changes_compile_and_not_finetune(tmp_path, monkeypatch):
    pkg = tmp_path / "edgeft"
    shutil.copytree(pipeline.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(pipeline, "PACKAGE_DIR", pkg)
    stages = ("finetune", "export", "compile", "verify")

    def digests():
        pipeline.code_digest.cache_clear()
        out = {s: pipeline.code_digest(f"edgeft.stages.{s}") for s in stages}
        # compile loads its backend by name; the stage names it (as its fingerprint does)
        out["compile"] = pipeline.code_digest("edgeft.stages.compile", "edgeft.backends.onnxruntime_cpu")
        return out

    try:
        before = digests()
        fusions = pkg / "backends/ort_fusions.py"
        fusions.write_text(fusions.read_text() + "\n# changed\n")
        after = digests()
    finally:
        pipeline.code_digest.cache_clear()
    assert after["compile"] != before["compile"]
    assert {s: after[s] == before[s] for s in ("finetune", "export", "verify")} == \
        {"finetune": True, "export": True, "verify": True}


def test_compile_fingerprint_covers_the_targets_backend(monkeypatch):
    from types import SimpleNamespace

    from edgeft.stages import compile as compile_stage

    seen = {}

    class Ctx:
        config = SimpleNamespace(targets=["x86-avx512-int8", "jetson-orin-nano-int8"])

        def recorded(self, *kinds, **fields):
            return []

        def fingerprint(self, stage, part, upstream, code=True, modules=()):
            seen.update(stage=stage, modules=modules, code=code)
            return "x"

    compile_stage.fingerprint(Ctx())
    assert seen == {"stage": "compile", "code": True,
                    "modules": ("edgeft.backends.onnxruntime_cpu", "edgeft.backends.tensorrt")}
