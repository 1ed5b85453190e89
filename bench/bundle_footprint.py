"""What a bundle costs on the device: its size against the FP32 engine's, the runtime venv's install size,
`edgeft-runtime check` time, and the peak RSS of `edgeft-runtime predict`.

    python bench/bundle_footprint.py RUN_DIR [--target T] [--out DIR]

Packages RUN_DIR (`edgeft package`), installs the bundle's runtime into a fresh venv with its install.sh (numpy,
onnxruntime and tokenizers from the package index or pip's cache), then times `check` (median of 3, from the
.tar.gz: extraction, checksums, golden set) and measures `predict`'s peak RSS (one text; max over 3 runs).
Prints one JSON object with the host (CPU model, ISA flags) it ran on.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def child_peak_rss_mb(cmd: list) -> float:
    """Peak RSS of ``cmd`` alone: run it through a fresh Python whose only child it is."""
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, *map(str, cmd)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--target", default=None)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    from edgeft_runtime import hostinfo

    tmp = Path(tempfile.mkdtemp(prefix="edgeft-footprint-"))
    out = a.out or tmp / "bundles"
    cmd = [sys.executable, "-m", "edgeft", "package", a.run_dir, "--out", out, *(["--target", a.target] if a.target else [])]
    subprocess.run([str(c) for c in cmd], check=True)
    archive = next(out.glob("*.tar.gz"))
    folder = out / archive.name[:-len(".tar.gz")]
    meta = json.loads((folder / "bundle.json").read_text())
    ref = a.run_dir / "compile" / meta["target"]["name"] / "fp32-reference" / "model.onnx"
    venv = tmp / "device-venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    t0 = time.perf_counter()
    subprocess.run(["sh", str(folder / "install.sh")], check=True, capture_output=True,
                   env={**env, "VENV": str(venv), "PYTHON": sys.executable})
    install_s = time.perf_counter() - t0
    rt = venv / "bin/edgeft-runtime"
    checks = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([rt, "check", archive], check=True, capture_output=True, env=env)
        checks.append(time.perf_counter() - t0)
    rss = max(child_peak_rss_mb([rt, "predict", folder, "turn on the kitchen lights"]) for _ in range(3))
    h = hostinfo.current()
    result = {"host": {"cpu": h.cpu, "isa_flags": h.isa_summary(), "cores": os.cpu_count()},
              "bundle": meta["name"], "archive_mb": archive.stat().st_size / 1e6, "folder_mb": du(folder) / 1e6,
              "engine_mb": (folder / meta["engine"]["model_file"]).stat().st_size / 1e6,
              "fp32_engine_mb": ref.stat().st_size / 1e6 if ref.is_file() else None,
              "archive_vs_fp32_engine": archive.stat().st_size / ref.stat().st_size if ref.is_file() else None,
              "venv_mb": du(venv) / 1e6, "install_s (pip, cache warm)": install_s,
              "check_s_median": sorted(checks)[1], "predict_peak_rss_mb": rss,
              "golden_inputs": meta["golden"]["count"], "atol": meta["golden"]["tolerance"]["atol"]}
    print(json.dumps(result, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
