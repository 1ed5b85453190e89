"""Host ISA classes, `--target host` and the not-measured latency gate, with the CPU flags injected."""
from __future__ import annotations

import pytest

from edgeft_runtime import hostinfo
from edgeft.errors import TargetError
from edgeft.targets import host_isa_note, load_target, resolve_host

AMX = frozenset("sse2 avx2 avx512f avx512bw avx512_vnni amx_int8 amx_bf16 amx_tile".split())
VNNI = frozenset("sse2 avx2 avx512f avx512bw avx512_vnni".split())
AVX2 = frozenset("sse2 fma avx2".split())
ALDER = frozenset("sse2 avx2 avx_vnni".split())          # client CPUs: 256-bit VNNI, no AVX512
SKYLAKE = frozenset("sse2 avx2 avx512f avx512bw".split())  # AVX512 without VNNI: u8s8 saturates as on AVX2


def host(flags, machine="x86_64", cpu="test cpu"):
    return hostinfo.Host(cpu, machine, frozenset(flags))


@pytest.mark.parametrize("flags, machine, target", [
    (AMX, "x86_64", "x86-avx512-int8"),
    (VNNI, "x86_64", "x86-avx512-int8"),
    (AVX2, "x86_64", "x86-avx2-int8"),
    (ALDER, "x86_64", "x86-avx2-int8"),
    (SKYLAKE, "x86_64", "x86-avx2-int8"),
    (frozenset({"fp", "asimd", "asimddp"}), "aarch64", "arm64-int8"),
])
def test_host_target_follows_the_isa(flags, machine, target):
    names, why = resolve_host(["host"], host(flags, machine))
    assert names == [target]
    assert target in why and "test cpu" in why


def test_named_targets_are_left_alone_and_host_is_replaced_in_place():
    assert resolve_host(["arm64-int8"], host(AVX2)) == (["arm64-int8"], None)
    names, _ = resolve_host(["gpu-server-int8", "host"], host(AVX2))
    assert names == ["gpu-server-int8", "x86-avx2-int8"]


def test_host_without_a_shipped_target_is_a_clear_error():
    with pytest.raises(TargetError) as e:
        resolve_host(["host"], host({"sse2"}))
    assert "--target" in e.value.fix


def test_cpu_flags_can_be_injected(monkeypatch):
    monkeypatch.setenv("EDGEFT_CPU_FLAGS", "avx2, fma")
    monkeypatch.setenv("EDGEFT_MACHINE", "x86_64")
    h = hostinfo.current()
    assert h.flags == {"avx2", "fma"} and h.isa_class == "avx2"
    assert load_target("host").name == "x86-avx2-int8"
    monkeypatch.setenv("EDGEFT_CPU_FLAGS", "avx2 avx512_vnni amx_int8")
    assert load_target("host").name == "x86-avx512-int8"


def test_parse_real_cpuinfo_text():
    text = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx2 avx512_vnni amx_int8\n"
    assert hostinfo.parse_flags(text) == {"fpu", "avx2", "avx512_vnni", "amx_int8"}
    assert hostinfo.cpu_model(text) == "Intel(R) Xeon(R) Platinum 8480+"


def test_latency_counts_only_on_a_host_of_the_target_class():
    """A VNNI host runs VNNI kernels even for an avx2 engine, so neither direction is the target's latency."""
    avx512, avx2 = load_target("x86-avx512-int8"), load_target("x86-avx2-int8")
    assert host_isa_note(avx512, host(VNNI)) is None
    assert host_isa_note(avx2, host(AVX2)) is None
    assert "not measured" in host_isa_note(avx512, host(AVX2))
    assert "not measured" in host_isa_note(avx2, host(AMX))
    assert host_isa_note(load_target("arm64-int8"), host(AVX2)) is not None
    # other kernels than an AVX2 device's: the avx2 engine runs there, its latency is not that device's
    assert "not measured" in host_isa_note(avx2, host(ALDER)) and "not measured" in host_isa_note(avx2, host(SKYLAKE))
    assert host_isa_note(load_target("gpu-server-int8"), host(AVX2)) is None        # GPU targets: not a CPU ISA


def test_int8_kernel_flavour_per_target():
    """Without VNNI x86 saturates u8s8 sums: avx2 (and isa any) engines are built u8u8."""
    assert load_target("x86-avx512-int8").int8_kernels == "u8s8"
    assert load_target("x86-avx2-int8").int8_kernels == "u8u8"
    assert load_target("arm64-int8").int8_kernels == "u8s8"
