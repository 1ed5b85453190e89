"""edgeft-runtime: run and check an edgeft bundle on the device, with numpy + onnxruntime (+ tokenizers for
text, pillow for images) only: no torch, no transformers.

    from edgeft_runtime import Bundle
    bundle = Bundle.open("my-bundle.tar.gz")        # checksums (and signature) checked before anything loads
    bundle.predict(["turn on the kitchen lights"])
"""
from __future__ import annotations

__version__ = "0.1.0"
# The distribution's requirements, also written into runtime/pyproject.toml (a test keeps them equal) and
# into the wheel edgeft package builds for a bundle.
REQUIRES = ["numpy>=1.26", "onnxruntime>=1.20", "tokenizers>=0.20"]
EXTRAS = {"image": ["pillow>=10"], "sign": ["cryptography>=42"], "tensorrt": ["polygraphy>=0.49"],
          "openvino": ["openvino>=2025.0"]}
REQUIRES_PYTHON = ">=3.10"

__all__ = ["Bundle", "__version__"]


def __getattr__(name):                     # Bundle on first use: `import edgeft_runtime` stays cheap
    if name == "Bundle":
        from edgeft_runtime.bundle import Bundle

        return Bundle
    raise AttributeError(name)
