"""What installs a bundle's runtime on the device: ``runtime/requirements.txt`` (the runtime's wheel, pinned by
sha256), ``runtime/dependencies.txt`` (numpy, onnxruntime, ... from the device's own index or wheelhouse:
ONNX Runtime wheels differ between x86, ARM and JetPack), ``install.sh`` and the bundle's README."""
from __future__ import annotations

import os
from pathlib import Path

from edgeft_runtime.fileio import sha256_file

INSTALL_SH = """#!/bin/sh
# Install edgeft-runtime for this bundle and check the bundle on this device.
# The venv goes NEXT TO the bundle (VENV=... to choose): the bundle folder must stay exactly as shipped.
# Offline: put numpy/onnxruntime/tokenizers wheels for this device in a folder and set PIP_FIND_LINKS=that
# folder and PIP_NO_INDEX=1. On Jetson use NVIDIA's onnxruntime-gpu wheel for your JetPack instead of PyPI's.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${{VENV:-$HERE.venv}}
PYTHON=${{PYTHON:-python3}}
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --no-index --find-links "$HERE/runtime" --no-deps --require-hashes -r "$HERE/runtime/requirements.txt"
"$VENV/bin/pip" install -r "$HERE/runtime/dependencies.txt"
"$VENV/bin/edgeft-runtime" check "$HERE"
echo "installed: $VENV/bin/edgeft-runtime"
echo "try: \"$VENV/bin/edgeft-runtime\" predict \"$HERE\" {example}"
"""

README = """# {name}

An edgeft bundle: the {backend} {precision} engine for target `{target}`, its pre-processing, labels, a golden set
that proves on the device that it runs the same engine, and the torch-free runtime that runs it.

Install and check (Python {python}; downloads numpy, onnxruntime and tokenizers unless PIP_FIND_LINKS points at
wheels for this device):

    sh install.sh

or by hand:

    python3 -m venv ../{name}.venv
    ../{name}.venv/bin/pip install --no-index --find-links runtime --no-deps --require-hashes -r runtime/requirements.txt
    ../{name}.venv/bin/pip install -r runtime/dependencies.txt
    ../{name}.venv/bin/edgeft-runtime check .        # checksums, then the golden set: exit 0 = same engine
    ../{name}.venv/bin/edgeft-runtime info .
    ../{name}.venv/bin/edgeft-runtime predict . {example}
    ../{name}.venv/bin/edgeft-runtime bench . --out ../{name}-bench     # outputs go outside the bundle

`bundle.json` lists every file with its sha256; every command refuses the bundle when a file was changed,
removed or added. With a signature (`bundle.sig`), pass `--public-key KEY.pem` to refuse it unless it verifies.
{extra}"""

TENSORRT_NOTE = """
This is a TensorRT target: `engine/` is a build kit (ONNX + settings). On the device (TensorRT 10 or newer with
its Python bindings, `pip install polygraphy`), `edgeft-runtime check .` builds the engine from the kit with
exactly the target's settings (cached in ~/.cache/edgeft-runtime) and runs the golden set through TensorRT.
"""


def write_runtime_files(work: Path, wheel: Path, deps: list[str], spec, name: str) -> None:
    import edgeft_runtime

    rt = work / "runtime"
    (rt / "requirements.txt").write_text(
        f"# the runtime itself, pinned by hash: pip install --no-index --find-links . --no-deps --require-hashes -r requirements.txt\n"
        f"edgeft-runtime=={edgeft_runtime.__version__} --hash=sha256:{sha256_file(wheel)}\n")
    (rt / "dependencies.txt").write_text("# from the device's index or wheelhouse (JetPack: NVIDIA's onnxruntime-gpu wheel)\n"
                                          + "".join(d + "\n" for d in deps))
    sh = work / "install.sh"
    example = "photo.jpg" if (work / "engine/preprocessor.json").is_file() else '"turn on the kitchen lights"'
    sh.write_text(INSTALL_SH.format(example=example.replace('"', "'")))      # inside the echo's double quotes
    os.chmod(sh, 0o755)
    (work / "README.md").write_text(README.format(
        name=name, backend=spec.backend, precision=spec.precision, target=spec.name, python=edgeft_runtime.REQUIRES_PYTHON,
        example=example, extra=TENSORRT_NOTE if spec.backend == "tensorrt" else ""))
