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


def test_misspelled_nested_key_is_answered_with_its_own_sections_keys(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text((targets_dir() / "x86-avx512-int8.yaml").read_text()
                 + "onnxruntime:\n  int8_kernel: u8u8\n")
    with pytest.raises(ConfigError) as e:
        load_target(str(p))
    line = next(ln for ln in str(e.value).splitlines() if "onnxruntime.int8_kernel:" in ln)
    assert "did you mean 'int8_kernels'?" in line
    assert "dynamic_activations" in line and "fuse_attention" in line     # the onnxruntime section's keys
    assert "input_shapes" not in line                                      # not the top level's


def test_misspelled_key_inside_a_dict_of_sections_names_that_sections_keys(tmp_path):
    p = tmp_path / "t.yaml"
    text = (targets_dir() / "x86-avx512-int8.yaml").read_text()
    p.write_text(text.replace("opt: [1, 128]", "optimal: [1, 128]", 1))
    with pytest.raises(ConfigError) as e:
        load_target(str(p))
    line = next(ln for ln in str(e.value).splitlines() if ".optimal:" in ln)
    assert "valid keys here: min, opt, max" in line


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


def test_with_ort_varies_only_the_onnxruntime_options_and_validates_them():
    spec = load_target("x86-avx2-int8")
    variant = spec.with_ort(int8_kernels="u8s8_7bit")
    assert variant.int8_kernels == "u8s8_7bit" and spec.int8_kernels == "u8u8"      # the original is untouched
    assert variant.model_dump(exclude={"onnxruntime"}) == spec.model_dump(exclude={"onnxruntime"})
    assert variant.onnxruntime.fuse_attention == spec.onnxruntime.fuse_attention
    with pytest.raises(Exception, match="int8_kernels"):
        spec.with_ort(int8_kernels="u4s4")


@pytest.mark.parametrize("backend, module, install", [("onnxruntime-cpu", "onnxruntime", "pip install onnxruntime"),
                                                      ("openvino-cpu", "openvino", "pip install 'edgeft[openvino]'")])
def test_a_backend_whose_runtime_is_missing_names_its_install_command(monkeypatch, backend, module, install):
    from edgeft.backends import backend_class
    from edgeft.errors import BackendUnavailable

    monkeypatch.setitem(__import__("sys").modules, module, None)         # `import module` raises ImportError
    with pytest.raises(BackendUnavailable, match=f"{module} is not installed") as e:
        backend_class(backend)().check_available()
    assert e.value.fix == install


def test_target_files_that_are_missing_empty_a_list_or_tabbed_say_so(tmp_path):
    with pytest.raises(TargetError, match="no such file") as e:
        load_target(str(tmp_path / "nothere.yaml"))
    assert "Available" not in str(e.value)
    for text, needle in (("", "got nothing (the file is empty)"), ("- a\n- b\n", "got a list"),
                         ("name: x\n\tbackend: y\n", "not valid YAML at line 2, column 1")):
        p = tmp_path / "t.yaml"
        p.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_target(str(p))
        assert needle in str(e.value) and e.value.fix, str(e.value)
        assert len(e.value.message.splitlines()) == 1            # one line, not the parser's multi-line dump
    assert "not tabs" in str(e.value)


def test_host_picks_the_vision_target_for_an_image_model_where_one_is_shipped():
    from edgeft.config import build_config
    from edgeft.models import model_modality
    from edgeft.targets import host_target_name
    from edgeft_runtime.hostinfo import Host

    vnni = Host("cpu", "x86_64", frozenset("sse2 avx2 fma avx512f avx512bw avx512_vnni".split()))
    avx2 = Host("cpu", "x86_64", frozenset("sse2 avx2 fma".split()))
    assert host_target_name(vnni, "text")[0] == "x86-avx512-int8"
    name, why = host_target_name(vnni, "image")
    assert name == "x86-avx512-int8-vision" and "image model" in why
    assert load_target(name).input_shapes.keys() == {"pixel_values"}
    assert host_target_name(avx2, "image")[0] == "x86-avx2-int8"        # no AVX2 vision target shipped
    assert model_modality(build_config({"model": "torchvision:resnet18"}, check_paths=False)) == "image"
    assert model_modality(build_config({}, check_paths=False)) == "text"
    assert model_modality(build_config({"model": "torchvision:resnet18", "modality": "text"}, check_paths=False)) == "text"
