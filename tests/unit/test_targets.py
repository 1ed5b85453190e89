import pytest

from edgeft.errors import ConfigError, TargetError
from edgeft.targets import list_targets, load_target, targets_dir


def test_shipped_targets_all_load_and_match_their_backend():
    names = list_targets()
    assert "x86-avx512-int8" in names
    for name in names:
        spec = load_target(name)
        assert spec.name == name, f"{name}.yaml declares name {spec.name!r}"
        text = (targets_dir() / f"{name}.yaml").read_text()
        assert text.startswith("#"), f"{name}.yaml must start with a comment saying what it is and how to use it"


def test_load_target_unknown_name_lists_available():
    with pytest.raises(TargetError) as e:
        load_target("x86-nope")
    assert "x86-avx512-int8" in str(e.value)


def test_load_target_misspelled_key_names_the_key(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text((targets_dir() / "x86-avx512-int8.yaml").read_text().replace("precision:", "precison:"))
    with pytest.raises(ConfigError) as e:
        load_target(str(p))
    assert "precison" in str(e.value) and "precision" in str(e.value)


def test_load_target_capability_mismatch_fails_before_work(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text((targets_dir() / "x86-avx512-int8.yaml").read_text().replace("precision: int8", "precision: fp16"))
    with pytest.raises(TargetError, match="precision: onnxruntime-cpu supports"):
        load_target(str(p))


def test_load_target_bad_shape_range_is_refused(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text((targets_dir() / "x86-avx512-int8.yaml").read_text().replace("opt: [1, 128], max: [32, 512]}\n  attention", "opt: [1, 900], max: [32, 512]}\n  attention"))
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        load_target(str(p))


def _avx2_target(tmp_path, *replacements):
    text = (targets_dir() / "x86-avx2-int8.yaml").read_text()
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    p = tmp_path / "t.yaml"
    p.write_text(text)
    return str(p)


def test_u8s8_on_a_target_that_may_meet_a_cpu_without_vnni_is_refused(tmp_path):
    """Its sums saturate in int16 on such CPUs: the engine would be wrong there."""
    with pytest.raises(TargetError, match="onnxruntime.int8_kernels: u8s8 on an isa 'avx2' target") as e:
        load_target(_avx2_target(tmp_path, ("int8_kernels: u8u8", "int8_kernels: u8s8")))
    assert "u8u8 or u8s8_7bit" in str(e.value)
    spec = load_target(_avx2_target(tmp_path, ("int8_kernels: u8u8", "int8_kernels: u8s8_7bit")))
    assert spec.int8_kernels == "u8s8_7bit"


def test_dynamic_activations_only_where_they_mean_something(tmp_path):
    spec = load_target(_avx2_target(tmp_path, ("int8_kernels: u8u8", "int8_kernels: u8u8\n  dynamic_activations: post_gelu")))
    assert spec.onnxruntime.dynamic_activations == "post_gelu"
    fp32 = _avx2_target(tmp_path, ("precision: int8", "precision: fp32"),
                        ("int8_kernels: u8u8", "int8_kernels: auto\n  dynamic_activations: all"))
    with pytest.raises(TargetError, match="dynamic_activations: applies to onnxruntime-cpu int8 targets only"):
        load_target(fp32)
