"""What this host is: CPU model, ISA flags, its int8 instruction-set class, and the shipped target for it.

Torch-free. Every function takes the flags and machine as arguments, so code that depends on the ISA
is testable on any host; ``EDGEFT_CPU_FLAGS`` (space or comma separated) and ``EDGEFT_MACHINE``
override what is read from ``/proc/cpuinfo`` and ``platform.machine()`` for a whole process.
"""
from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

# The ISA classes a CPU target names, best first; each maps to the ONNX Runtime int8 kernels it gets.
# A host with AVX512-VNNI runs MLAS's VNNI kernels even for an avx2 target, so a latency measured there
# is not the avx2 device's: a host matches a target only when its class equals the target's ISA.
# avx_vnni and avx512 hosts get the avx2 target: its u8u8 engine is correct on every x86 CPU; their latency
# is not an AVX2 device's (other kernels), so it is reported as not measured
HOST_TARGETS = {"avx512_vnni": "x86-avx512-int8", "avx_vnni": "x86-avx2-int8", "avx512": "x86-avx2-int8",
                "avx2": "x86-avx2-int8", "neon": "arm64-int8"}
REPORTED_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16",
                  "neon", "asimd", "asimddp")


@dataclass(frozen=True)
class Host:
    cpu: str
    machine: str
    flags: frozenset[str]

    @property
    def isa_class(self) -> str:
        return isa_class(self.flags, self.machine)

    def isa_summary(self) -> str:
        """The flags that decide int8 kernels, e.g. ``avx2 avx512_vnni amx_int8``."""
        shown = [f for f in REPORTED_FLAGS if f in self.flags]
        return " ".join(shown) or "none of " + "/".join(REPORTED_FLAGS[:4])


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def parse_flags(text: str) -> frozenset[str]:
    """Flags of the first CPU in a ``/proc/cpuinfo`` text (x86 ``flags``, ARM ``Features``)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_model(text: str | None = None) -> str:
    text = _cpuinfo() if text is None else text
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def _sysctl_flags() -> frozenset[str]:
    """macOS (no /proc/cpuinfo): the CPU features sysctl reports, in Linux's spelling where they differ."""
    import subprocess

    try:
        out = subprocess.run(["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"],
                             capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    rename = {"avx512vnni": "avx512_vnni"}
    return frozenset(rename.get(w.lower(), w.lower()) for w in out.split())


def current() -> Host:
    """This host, with the ``EDGEFT_CPU_FLAGS`` / ``EDGEFT_MACHINE`` overrides applied."""
    text = _cpuinfo()
    env = os.environ.get("EDGEFT_CPU_FLAGS")
    if env is not None:
        flags = frozenset(re.split(r"[\s,]+", env.strip())) - {""}
    else:
        flags = parse_flags(text) or (_sysctl_flags() if platform.system() == "Darwin" else frozenset())
    return Host(cpu_model(text), os.environ.get("EDGEFT_MACHINE", platform.machine()), flags)


def isa_class(flags: frozenset[str] | set[str], machine: str) -> str:
    """The int8 kernel family ONNX Runtime (MLAS) picks on this CPU: ``avx512_vnni`` (AMX hosts included),
    ``avx_vnni`` (256-bit VNNI: client CPUs without AVX512), ``avx512`` (AVX512BW without VNNI: its u8s8
    kernels saturate like AVX2's), ``avx2``, ``neon``, or ``x86-64``/the machine name."""
    if machine.lower() in ("aarch64", "arm64"):
        return "neon"
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx_vnni" in flags or "avx_vnni_int8" in flags:
        return "avx_vnni"
    if "avx512bw" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "x86-64" if machine.lower() in ("x86_64", "amd64") else machine.lower()


def host_target(host: Host) -> tuple[str | None, str]:
    """The shipped target for this host and a sentence saying why (name None: no shipped target fits)."""
    cls = host.isa_class
    name = HOST_TARGETS.get(cls)
    why = {"avx512_vnni": "has AVX512-VNNI" + (" and AMX" if "amx_int8" in host.flags else ""),
           "avx_vnni": "has AVX-VNNI without AVX512 (no shipped target for that class; the AVX2 one is correct "
                       "there, its latency is not measured on AVX2 kernels)",
           "avx512": "has AVX512 without VNNI (its int8 kernels saturate like AVX2's: the AVX2 target; its "
                     "latency is not measured on AVX2 kernels)",
           "avx2": "has AVX2 without AVX512-VNNI",
           "neon": "is an ARM64 CPU (NEON)"}.get(cls, f"has none of AVX2, AVX512-VNNI or NEON ({cls})")
    return name, f"this host ({host.cpu}) {why}"


def matches(target_isa: str, host: Host) -> bool:
    """Whether latency measured on ``host`` is latency on a ``target_isa`` device's int8 kernels."""
    return target_isa == "any" or target_isa == host.isa_class
