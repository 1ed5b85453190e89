"""Run Python code on an x86 CPU without VNNI: natively on an AVX2 host, else under qemu-user's Haswell
model (AVX2 and FMA, no AVX512, no VNNI), so ONNX Runtime dispatches the kernels an AVX2 device runs.
``.ci/run`` installs qemu-user where it is missing."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
QEMU_CPU = "Haswell-noTSX"


def avx2_prefix() -> list[str]:
    from edgeft_runtime import hostinfo

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("AVX2 kernels exist only on x86-64")
    if hostinfo.current().isa_class == "avx2":
        return [sys.executable]
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        why = ("this host has VNNI and qemu-user is missing: `apt-get install qemu-user` (.ci/run installs it) "
               "to run the AVX2 kernels under emulation")
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
    return [qemu, "-cpu", QEMU_CPU, sys.executable]


def run_on_avx2(script: str, *args: str, timeout: int = 900) -> dict:
    """Run ``script`` (Python source printing one JSON line last) on AVX2 kernels; returns that JSON."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*avx2_prefix(), "-c", script, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
