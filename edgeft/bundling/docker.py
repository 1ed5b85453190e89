"""``edgeft package --docker``: the Dockerfile of the bundle's target (from docker/, shipped in the package)
written into the bundle as ``Dockerfile``; the bundle folder is its build context."""
from __future__ import annotations

from pathlib import Path

JETSON_ISAS = ("sm_72", "sm_87")          # Xavier, Orin: integrated GPUs on L4T


def dockerfile_for(spec) -> str:
    if spec.backend in ("onnxruntime-cpu", "openvino-cpu"):          # a slim Python image; the runtime's deps differ
        return "onnxruntime-cpu.Dockerfile"
    if spec.backend == "tensorrt":
        return "tensorrt-jetson.Dockerfile" if spec.device.isa in JETSON_ISAS else "tensorrt-x86.Dockerfile"
    raise ValueError(f"no Dockerfile for backend {spec.backend!r}")


def write_dockerfile(work: Path, spec, name: str) -> None:
    from edgeft.targets import shipped_dir

    src = shipped_dir("docker") / dockerfile_for(spec)
    (work / "Dockerfile").write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
    gpu = {"tensorrt-jetson.Dockerfile": " --runtime nvidia -v edgeft-cache:/cache",
           "tensorrt-x86.Dockerfile": " --gpus all -v edgeft-cache:/cache"}.get(src.name, "")
    with open(work / "README.md", "a", encoding="utf-8") as f:
        f.write(f"\nDocker (this folder is the build context):\n\n    docker build -t {name.lower()} .\n"
                f"    docker run --rm{gpu} {name.lower()}                 # edgeft-runtime check /bundle\n"
                f"    docker run --rm{gpu} {name.lower()} predict /bundle \"turn on the kitchen lights\"\n")
