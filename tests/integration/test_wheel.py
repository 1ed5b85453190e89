"""The wheel carries what a non-editable install needs: `edgeft targets ls|validate` work from it alone."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    import shutil

    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"                       # setuptools builds in the source tree: a copy keeps the checkout clean
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("edgeft", "targets", "calibration", "runtime", "docker"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp),
                    str(src)], check=True, capture_output=True)
    wheel = next(tmp.glob("edgeft-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin/python"
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True)
    # click, pydantic and pyyaml from this environment, as a plain path: its editable edgeft stays out
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return {"wheel": wheel, "venv": venv}


def _edgeft(venv, *args, env=None):
    return subprocess.run([venv / "bin/edgeft", *args], capture_output=True, text=True, cwd="/",
                          env={**os.environ, **(env or {})})


def test_wheel_ships_targets_and_calibration_as_package_data(wheel_venv):
    names = zipfile.ZipFile(wheel_venv["wheel"]).namelist()
    assert "edgeft/shipped/targets/x86-avx2-int8.yaml" in names
    assert "edgeft/shipped/calibration/default.yaml" in names
    assert "edgeft/shipped/docker/tensorrt-jetson.Dockerfile" in names
    assert "edgeft_runtime/bundle.py" in names and "edgeft/bundling/make.py" in names
    assert "edgeft/benchmark/run.py" in names and "edgeft/backends/openvino_cpu.py" in names


def test_the_runtime_wheel_is_written_from_a_non_editable_install(wheel_venv, tmp_path):
    """edgeft package needs no source tree: the runtime's wheel comes from the installed package."""
    py = wheel_venv["venv"] / "bin/python"
    r = subprocess.run([py, "-c", "import sys; from pathlib import Path; from edgeft.bundling.wheel import "
                        "build_runtime_wheel; print(build_runtime_wheel(Path(sys.argv[1])))", str(tmp_path)],
                       capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    names = zipfile.ZipFile(r.stdout.strip()).namelist()
    assert "edgeft_runtime/cli.py" in names and "edgeft_runtime-0.1.0.dist-info/RECORD" in names


def test_targets_ls_and_validate_from_a_non_editable_install(wheel_venv):
    venv = wheel_venv["venv"]
    where = subprocess.run([venv / "bin/python", "-c", "import edgeft; print(edgeft.__file__)"],
                           capture_output=True, text=True, cwd="/").stdout
    assert str(venv) in where, where                      # the installed copy, not this checkout
    ls = _edgeft(venv, "targets", "ls")
    assert ls.returncode == 0 and "x86-avx512-int8" in ls.stdout and "jetson-orin-nano-int8" in ls.stdout, ls.stderr
    validate = _edgeft(venv, "targets", "validate")
    assert validate.returncode == 0 and validate.stdout.count("✓") >= 8, validate.stderr


def test_no_targets_found_is_an_error_not_an_empty_pass(wheel_venv, tmp_path):
    empty = {"EDGEFT_TARGETS_DIR": str(tmp_path)}
    for args in (("targets", "ls"), ("targets", "validate")):
        r = _edgeft(wheel_venv["venv"], *args, env=empty)
        assert r.returncode == 1 and "no target YAMLs found" in r.stderr, r.stderr
