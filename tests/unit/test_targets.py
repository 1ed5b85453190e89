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
