"""`edgeft package` and the device runtime (`edgeft-runtime`, `edgeft_runtime.Bundle`) on the tiny run."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeft.cli.commands import cli
from edgeft_runtime.fileio import sha256_file

pytestmark = pytest.mark.filterwarnings("ignore")
REPO = Path(__file__).resolve().parents[2]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def runtime_cli(*args, env=None):
    """edgeft-runtime in a fresh process: what the device runs."""
    return subprocess.run([sys.executable, "-m", "edgeft_runtime.cli", *map(str, args)], capture_output=True,
                          text=True, env=env)


@pytest.fixture(scope="module")
def bundle(tiny_run, tmp_path_factory):
    assert tiny_run["result"].exit_code == 0, tiny_run["result"].output
    out = tmp_path_factory.mktemp("bundles")
    r = invoke("package", tiny_run["out"], "--out", out)
    assert r.exit_code == 0, r.output
    return {"dir": out / "out-test-int8", "tar": out / "out-test-int8.tar.gz", "out": out}


def fresh_copy(bundle, tmp_path) -> Path:
    dest = tmp_path / bundle["dir"].name
    shutil.copytree(bundle["dir"], dest)
    return dest


def test_package_writes_folder_and_archive_with_every_named_part(bundle):
    d = bundle["dir"]
    meta = json.loads((d / "bundle.json").read_text())
    assert meta["schema_version"] == 1 and meta["name"] == "out-test-int8"
    for key in ("name", "version", "target", "engine", "inputs", "labels", "runtime", "verification", "golden",
                "lineage", "files"):
        assert key in meta
    assert meta["target"] == {**meta["target"], "name": "test-int8", "backend": "onnxruntime-cpu", "precision": "int8"}
    assert [i["name"] for i in meta["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert meta["inputs"][0] == {"name": "input_ids", "dtype": "int64", "min": [1, 1], "opt": [1, 16], "max": [4, 64]}
    assert meta["labels"] == ["lights_on", "play_music", "set_timer", "weather"]
    v = meta["verification"]
    assert v["verdict"] == "passed" and v["host"]["cpu"] and v["p50_ms"] > 0 and len(v["gates"]) == 2
    assert meta["lineage"]["data_fingerprint"] and len(meta["lineage"]["run_manifest_sha256"]) == 64
    assert (d / "runtime" / "requirements.txt").is_file() and list((d / "runtime").glob("edgeft_runtime-*.whl"))
    # every file but bundle.json is listed with its real size and sha256, and nothing else is there
    files = {f["path"]: f for f in meta["files"]}
    on_disk = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()} - {"bundle.json"}
    assert set(files) == on_disk
    for rel, f in files.items():
        assert f["sha256"] == sha256_file(d / rel) and f["bytes"] == (d / rel).stat().st_size
    # the wheel is pinned by its hash
    wheel = next((d / "runtime").glob("*.whl"))
    assert f"--hash=sha256:{sha256_file(wheel)}" in (d / "runtime/requirements.txt").read_text()
    # golden set: 32 test inputs (all of the tiny test split), raw text, with both logits
    golden = [json.loads(x) for x in (d / "golden/inputs.jsonl").read_text().splitlines()]
    expected = json.loads((d / "golden/expected.json").read_text())
    assert len(golden) == meta["golden"]["count"] == 32 and isinstance(golden[0]["text"], str)
    assert np.asarray(expected["engine_logits"]).shape == np.asarray(expected["baseline_logits"]).shape == (32, 4)
    assert meta["golden"]["tolerance"]["atol"] > 0 and meta["golden"]["tolerance"]["quantization_floor"] > 0


def test_bundle_json_is_valid_json_schema_and_matches_it(bundle):
    import jsonschema

    from edgeft_runtime.schema import BUNDLE_SCHEMA, problems

    jsonschema.Draft202012Validator.check_schema(BUNDLE_SCHEMA)
    meta = json.loads((bundle["dir"] / "bundle.json").read_text())
    jsonschema.validate(meta, BUNDLE_SCHEMA)
    assert problems(meta, BUNDLE_SCHEMA) == []
    broken = {**meta, "files": [{**meta["files"][0], "sha256": "xyz"}], "modality": "audio"}
    del broken["golden"]
    mine = problems(broken, BUNDLE_SCHEMA)
    assert any("golden is missing" in p for p in mine) and any("modality" in p for p in mine)
    assert any("files[0].sha256" in p for p in mine)
    with pytest.raises(jsonschema.ValidationError):             # the published schema says the same
        jsonschema.validate(broken, BUNDLE_SCHEMA)


def test_archive_is_byte_reproducible_and_holds_only_relative_plain_members(bundle, tiny_run, tmp_path):
    r = invoke("package", tiny_run["out"], "--out", tmp_path)
    assert r.exit_code == 0, r.output
    again = tmp_path / bundle["tar"].name
    assert sha256_file(again) == sha256_file(bundle["tar"])
    with tarfile.open(bundle["tar"]) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: (n != "out-test-int8", n))
    assert all(n == "out-test-int8" or n.startswith("out-test-int8/") for n in names)
    assert all(not n.startswith("/") and ".." not in n.split("/") for n in names)
    assert all((m.isfile() or m.isdir()) and m.uid == 0 and m.uname == "" and m.mtime == 315532800 for m in members)


def test_check_passes_on_folder_and_archive_and_prints_the_recorded_verdict(bundle):
    for src in (bundle["dir"], bundle["tar"]):
        r = runtime_cli("check", src)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("PASS out-test-int8:") and "32 inputs" in r.stdout
        assert "recorded verdict: passed" in r.stderr


def test_predictions_equal_verify_and_predict_reads_csv_and_jsonl(bundle, tiny_run, tmp_path):
    from edgeft.data.loading import read_split
    from edgeft_runtime import Bundle

    test = read_split(tiny_run["out"] / "finetune/data", "test")
    texts = [e.text for e in test]
    verify = np.load(tiny_run["out"] / "verify/predictions/test-int8-engine.npy")
    with Bundle.open(bundle["tar"]) as b:
        got = b.logits(texts)
        labels = [p["label"] for p in b.predict(texts)]
    np.testing.assert_allclose(got, verify, atol=1e-5)
    assert labels == [b.meta["labels"][i] for i in verify.argmax(-1)]
    csv_file = tmp_path / "in.csv"
    csv_file.write_text("text,other\n" + "".join(f'"{t}",x\n' for t in texts[:3]))
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[3:5]))
    r = runtime_cli("predict", bundle["dir"], "--file", csv_file)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["label"] for x in rows] == labels[:3] and all(0 < x["score"] <= 1 for x in rows)
    assert len(rows[0]["top_k"]) == 3
    r = runtime_cli("predict", bundle["dir"], "--file", jsonl, "--top-k", "2")
    assert [json.loads(x)["label"] for x in r.stdout.splitlines()] == labels[3:5]
    bad = tmp_path / "bad.csv"
    bad.write_text("utterance\nhello\n")
    r = runtime_cli("predict", bundle["dir"], "--file", bad)
    assert r.returncode == 1 and "no 'text' column" in r.stderr and "fix:" in r.stderr


def _refused(src, *extra) -> str:
    r = runtime_cli("check", src, *extra)
    assert r.returncode == 1 and r.stdout == "", (r.stdout, r.stderr)
    assert "error:" in r.stderr and "fix:" in r.stderr
    return r.stderr


def test_a_flipped_byte_a_removed_file_and_an_added_file_are_each_refused(bundle, tmp_path):
    d = fresh_copy(bundle, tmp_path / "flip")
    model = d / "engine/model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    assert "engine/model.onnx was changed" in _refused(d)
    d = fresh_copy(bundle, tmp_path / "removed")
    (d / "engine/tokenizer.json").unlink()
    assert "engine/tokenizer.json is missing" in _refused(d)
    d = fresh_copy(bundle, tmp_path / "added")
    (d / "engine/extra.py").write_text("print('hi')\n")
    assert "engine/extra.py is not part of this bundle" in _refused(d)
    d = fresh_copy(bundle, tmp_path / "schema")
    meta = json.loads((d / "bundle.json").read_text())
    meta["golden"]["tolerance"]["atol"] = "large"
    (d / "bundle.json").write_text(json.dumps(meta))
    assert "does not match its schema: golden.tolerance.atol must be number" in _refused(d)


def _archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_archives_with_traversal_or_link_members_are_refused_and_nothing_is_written_outside(tmp_path):
    outside = tmp_path / "evil.txt"
    dotdot = tarfile.TarInfo("b/../../evil.txt")
    dotdot.size = 4
    assert "points outside the bundle" in _refused(_archive(tmp_path / "dotdot.tar.gz", [(dotdot, b"evil")]))
    absolute = tarfile.TarInfo(str(outside))
    absolute.size = 4
    assert "points outside the bundle" in _refused(_archive(tmp_path / "abs.tar.gz", [(absolute, b"evil")]))
    link = tarfile.TarInfo("b/engine")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc"
    assert "is a symlink" in _refused(_archive(tmp_path / "link.tar.gz", [(link, None)]))
    dev = tarfile.TarInfo("b/null")
    dev.type = tarfile.CHRTYPE
    assert "is a device" in _refused(_archive(tmp_path / "dev.tar.gz", [(dev, None)]))
    assert not outside.exists() and not (tmp_path.parent / "evil.txt").exists()
    (tmp_path / "junk.tar.gz").write_bytes(b"not an archive")
    assert "not a readable .tar.gz" in _refused(tmp_path / "junk.tar.gz")


def test_a_symlink_inside_a_bundle_folder_is_refused(bundle, tmp_path):
    d = fresh_copy(bundle, tmp_path)
    (d / "engine/tokenizer.json").unlink()
    (d / "engine/tokenizer.json").symlink_to(bundle["dir"] / "engine/tokenizer.json")
    assert "engine/tokenizer.json is a symlink" in _refused(d)


def test_signed_bundle_verifies_with_its_key_and_is_refused_with_another_or_unsigned(tiny_run, bundle, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    def keypair(name):
        key = ed25519.Ed25519PrivateKey.generate()
        priv, pub = tmp_path / f"{name}.pem", tmp_path / f"{name}.pub.pem"
        priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
        return priv, pub

    priv, pub = keypair("mine")
    _, other = keypair("other")
    r = invoke("package", tiny_run["out"], "--out", tmp_path / "signed", "--sign-key", priv)
    assert r.exit_code == 0, r.output
    signed = tmp_path / "signed/out-test-int8.tar.gz"
    ok = runtime_cli("check", signed, "--public-key", pub)
    assert ok.returncode == 0 and "signature verified" in ok.stdout, ok.stderr
    assert "signature of" in _refused(signed, "--public-key", other) and "does not verify" in _refused(signed, "--public-key", other)
    assert "is not signed" in _refused(bundle["dir"], "--public-key", pub)
    # a bundle.json edited after signing (its checksums re-made consistent) fails the signature, not just a checksum
    d = tmp_path / "edited"
    shutil.copytree(tmp_path / "signed/out-test-int8", d)
    meta = json.loads((d / "bundle.json").read_text())
    meta["verification"]["verdict"] = "passed"
    meta["version"] = "9.9.9"
    (d / "bundle.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    assert "does not verify" in _refused(d, "--public-key", pub)
    r = invoke("package", tiny_run["out"], "--out", tmp_path / "x", "--sign-key", pub)
    assert r.exit_code == 1 and "not an unencrypted PEM private key" in r.output + str(r.stderr_bytes or b"")


def test_golden_check_fails_on_another_engine_even_with_consistent_checksums(bundle, tiny_run, tmp_path):
    """Someone swaps the engine and rewrites bundle.json's checksums: the golden set still catches it."""
    d = fresh_copy(bundle, tmp_path)
    shutil.copyfile(tiny_run["out"] / "compile/test-int8/fp32-reference/model.onnx", d / "engine/model.onnx")
    meta = json.loads((d / "bundle.json").read_text())
    for f in meta["files"]:
        f["sha256"], f["bytes"] = sha256_file(d / f["path"]), (d / f["path"]).stat().st_size
    (d / "bundle.json").write_text(json.dumps(meta))
    r = runtime_cli("check", d)
    assert r.returncode == 1 and r.stdout.startswith("FAIL out-test-int8") and "outside the tolerance" in r.stdout


def test_failed_gate_is_refused_unless_allowed_and_then_every_command_says_so(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run["out"], run_dir)
    strict = tmp_path / "strict.yaml"
    strict.write_text(tiny_run["target"].read_text().replace("name: test-int8", "name: strict")
                      .replace("agreement: {min_top1: 0.0}}", "agreement: {min_top1: 0.0}, latency: {p50_ms: 0.000001}}"))
    assert invoke("compile", run_dir, "--target", strict).exit_code == 0
    assert invoke("verify", run_dir, "--target", strict).exit_code == 3
    r = invoke("package", run_dir, "--out", tmp_path / "b")
    assert r.exit_code == 3 and "strict failed verification (p50_ms" in r.output and "--allow-failed" in r.output
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())
    r = invoke("package", run_dir, "--out", tmp_path / "b", "--allow-failed")
    assert r.exit_code == 0, r.output
    folder = tmp_path / "b/run-strict"
    meta = json.loads((folder / "bundle.json").read_text())
    assert meta["verification"]["verdict"] == "failed" and meta["verification"]["packaged_despite_failure"]
    info = runtime_cli("info", folder)
    assert "recorded verdict: failed" in info.stdout and "packaged with --allow-failed" in info.stdout
    assert "gate p50_ms: FAILED" in info.stdout
    for command in ("check", "predict"):
        r = runtime_cli(command, folder, *(["hello"] if command == "predict" else []))
        assert "recorded verdict: failed" in r.stderr


def test_package_refuses_what_it_cannot_package_and_replaces_only_its_own_bundles(tiny_run, tmp_path):
    r = invoke("package", tmp_path / "nothing")
    assert r.exit_code == 1 and "not an edgeft run directory" in r.output
    r = invoke("package", tiny_run["out"], "--out", tmp_path, "--target", "x86-avx512-int8")
    assert r.exit_code == 1 and "no engine for it" in r.output and "test-int8" in r.output
    r = invoke("package", tiny_run["out"], "--out", tmp_path, "--target", "x86-avx51-int8")      # a typo
    assert r.exit_code == 1 and "no such target" in r.output and "test-int8" in r.output
    r = invoke("package", tiny_run["out"], "--out", tmp_path, "--target", "")
    assert r.exit_code == 1 and "--target is empty" in r.output
    mine = tmp_path / "out-test-int8"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    r = invoke("package", tiny_run["out"], "--out", tmp_path)
    assert r.exit_code == 1 and "is not a bundle edgeft wrote" in r.output
    assert (mine / "notes.txt").read_text() == "mine" and not (tmp_path / "out-test-int8.tar.gz").exists()
    shutil.rmtree(mine)
    assert invoke("package", tiny_run["out"], "--out", tmp_path).exit_code == 0
    assert invoke("package", tiny_run["out"], "--out", tmp_path).exit_code == 0     # its own bundle: replaced
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_dockerfile_passes_hadolint(dockerfile):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    r = subprocess.run([hadolint, "--failure-threshold", "warning", str(dockerfile)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_docker_flag_writes_the_targets_dockerfile_whose_paths_exist_in_the_bundle(tiny_run, tmp_path):
    import re

    r = invoke("package", tiny_run["out"], "--out", tmp_path, "--docker")
    assert r.exit_code == 0, r.output
    d = tmp_path / "out-test-int8"
    text = (d / "Dockerfile").read_text()
    assert text == (REPO / "docker/onnxruntime-cpu.Dockerfile").read_text()
    assert "docker build -t out-test-int8 ." in (d / "README.md").read_text()
    copies = re.findall(r"^COPY\s+(\S+)\s+(\S+)", text, re.M)
    assert copies == [(".", "/bundle")]
    for used in re.findall(r"/bundle/(\S+)", text):
        assert (d / used).exists(), used
    assert runtime_cli("check", d).returncode == 0            # the Dockerfile is listed like every other file


def test_dockerfile_choice_per_target():
    from edgeft.bundling.docker import dockerfile_for
    from edgeft.targets import load_target

    assert dockerfile_for(load_target("x86-avx2-int8")) == "onnxruntime-cpu.Dockerfile"
    assert dockerfile_for(load_target("arm64-int8")) == "onnxruntime-cpu.Dockerfile"
    assert dockerfile_for(load_target("jetson-orin-nano-int8")) == "tensorrt-jetson.Dockerfile"
    assert dockerfile_for(load_target("gpu-server-int8")) == "tensorrt-x86.Dockerfile"


def test_bundle_installs_into_a_venv_without_torch_and_checks_and_predicts_there(bundle, tmp_path):
    """What the device does: only the bundle and a package index (the CI's PyPI, or pip's cache)."""
    d = tmp_path / bundle["dir"].name
    with tarfile.open(bundle["tar"]) as tar:
        tar.extractall(tmp_path, filter="data")
    venv = tmp_path / "device-venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    r = subprocess.run(["sh", str(d / "install.sh")], capture_output=True, text=True, timeout=900,
                       env={**env, "VENV": str(venv), "PYTHON": sys.executable})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "PASS out-test-int8" in r.stdout
    py = venv / "bin/python"
    r = subprocess.run([py, "-c", "import torch"], capture_output=True, text=True)
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr
    r = subprocess.run([py, "-c", "import transformers"], capture_output=True, text=True)
    assert r.returncode != 0
    r = subprocess.run([venv / "bin/edgeft-runtime", "predict", d, "turn on the lights"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["label"] in json.loads((d / "bundle.json").read_text())["labels"] and "score" in row
    # the device's answer is verify's answer, input by input
    from edgeft_runtime import Bundle

    with Bundle.open(d) as b:
        want = [p["label"] for p in b.predict(b.golden_inputs())]
    golden = d / "golden/inputs.jsonl"
    r = subprocess.run([venv / "bin/edgeft-runtime", "predict", d, "--file", golden], capture_output=True, text=True, env=env)
    assert [json.loads(x)["label"] for x in r.stdout.splitlines()] == want
    assert not (d.parent / (d.name + ".venv")).exists()       # VENV put it where we said
    assert runtime_cli("check", d).returncode == 0             # installing added nothing to the bundle


def test_runtime_distribution_declares_what_the_package_says():
    tomllib = pytest.importorskip("tomllib")          # Python 3.11+

    import edgeft_runtime

    project = tomllib.loads((REPO / "runtime/pyproject.toml").read_text())["project"]
    assert project["version"] == edgeft_runtime.__version__
    assert project["dependencies"] == edgeft_runtime.REQUIRES
    assert project["optional-dependencies"] == edgeft_runtime.EXTRAS
    assert project["requires-python"] == edgeft_runtime.REQUIRES_PYTHON
    for name in ("numpy", "onnxruntime", "tokenizers"):
        assert any(r.startswith(name) for r in project["dependencies"])
    assert not any(r.startswith(("torch", "transformers", "optimum", "nvidia-modelopt")) for r in project["dependencies"])


def test_runtime_package_imports_nothing_from_edgeft_or_torch():
    import ast

    for f in (REPO / "runtime/edgeft_runtime").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for n in names:
                assert n.split(".")[0] not in ("edgeft", "torch", "transformers", "optimum", "modelopt"), (f.name, n)


def test_runtime_wheel_is_reproducible(tmp_path):
    from edgeft.bundling.wheel import build_runtime_wheel

    a = build_runtime_wheel(tmp_path / "a")
    b = build_runtime_wheel(tmp_path / "b")
    assert sha256_file(a) == sha256_file(b)


def test_check_of_the_tiny_bundle_passes_on_avx2_kernels(bundle):
    """The golden tolerance holds across int8 kernel families: the VNNI host's recorded logits, checked on AVX2."""
    from tests.avx2 import run_on_avx2

    script = ("import sys, json; from edgeft_runtime import Bundle\n"
              "b = Bundle.open(sys.argv[1]); g = b.check_golden()\n"
              "print(json.dumps({'passed': g.passed, 'max': g.max_abs_diff, 'atol': g.atol}))")
    res = run_on_avx2(script, str(bundle["dir"]))
    assert res["passed"], res


def test_what_a_careless_or_hostile_user_does_is_refused_cleanly(bundle, tiny_run, tmp_path):
    from edgeft_runtime import Bundle

    # a truncated archive: a clean error, not a traceback
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(bundle["tar"].read_bytes()[: bundle["tar"].stat().st_size // 2])
    err = _refused(cut)
    assert "damaged or cut short" in err and "Traceback" not in err
    # bundle.json's labels edited (checksums untouched, unsigned): refused against the engine's labels.json
    d = fresh_copy(bundle, tmp_path / "labels")
    meta = json.loads((d / "bundle.json").read_text())
    meta["labels"] = meta["labels"][::-1]
    (d / "bundle.json").write_text(json.dumps(meta))
    assert "labels differ from engine/labels.json" in _refused(d)
    # an error about an archive names the archive, not a temp folder
    r = runtime_cli("check", _archive_of(fresh_copy(bundle, tmp_path / "extra"), tmp_path, "note.txt"))
    assert r.returncode == 1 and "extra.tar.gz" in r.stderr and "/tmp/edgeft-bundle-" not in r.stderr
    # one string is one input
    with Bundle.open(bundle["dir"]) as b:
        assert len(b.predict("turn on the lights")) == 1
    # --out inside the run directory (other than bundles/), a bad --name, --golden 0
    r = invoke("package", tiny_run["out"], "--out", tiny_run["out"] / "compile")
    assert r.exit_code == 1 and "inside" in r.output and "bundles" in r.output
    assert not (tiny_run["out"] / "compile" / ".edgeft-write-test").exists()
    assert invoke("package", tiny_run["out"], "--out", tmp_path / "n", "--name", "../evil").exit_code == 1
    assert invoke("package", tiny_run["out"], "--out", tmp_path / "g", "--golden", "0").exit_code == 2
    # a public key that is really the private key is refused: signing keys stay off devices
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    priv = tmp_path / "k.pem"
    priv.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    assert "is a private key" in _refused(bundle["dir"], "--public-key", priv)


def _archive_of(folder: Path, where: Path, extra: str) -> Path:
    (folder / extra).write_text("added\n")
    out = where / "extra.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return out


@pytest.mark.parametrize("stop", ["archive", "engine"])
def test_an_interrupted_or_failed_package_leaves_nothing_behind(tiny_run, tmp_path, monkeypatch, stop):
    """Ctrl-C while the archive is written, or a failure while the bundle is assembled: no bundle folder without
    its archive, no staging files, and an output folder made for this package is gone."""
    import edgeft.bundling.archive as archive
    import edgeft.bundling.golden as golden

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(*(archive, "write_tar_gz", interrupt) if stop == "archive" else (golden, "reference_logits", fail))
    out = tmp_path / "new"
    r = CliRunner().invoke(cli, ["package", str(tiny_run["out"]), "--out", str(out)])
    assert r.exit_code != 0 and not out.exists(), r.output
    # into a folder that holds a previous bundle: that one stays whole, nothing is added next to it
    monkeypatch.undo()
    assert invoke("package", tiny_run["out"], "--out", out).exit_code == 0
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr(*(archive, "write_tar_gz", interrupt) if stop == "archive" else (golden, "reference_logits", fail))
    r = CliRunner().invoke(cli, ["package", str(tiny_run["out"]), "--out", str(out)])
    assert r.exit_code != 0
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_repackaging_replaces_an_archive_left_alone_by_its_folder(tiny_run, tmp_path):
    assert invoke("package", tiny_run["out"], "--out", tmp_path).exit_code == 0
    sha = sha256_file(tmp_path / "out-test-int8.tar.gz")
    shutil.rmtree(tmp_path / "out-test-int8")
    assert invoke("package", tiny_run["out"], "--out", tmp_path).exit_code == 0
    assert sha256_file(tmp_path / "out-test-int8.tar.gz") == sha
    (tmp_path / "out-test-int8.tar.gz").unlink()
    shutil.rmtree(tmp_path / "out-test-int8")
    (tmp_path / "out-test-int8.tar.gz").write_bytes(b"somebody else's file")
    r = invoke("package", tiny_run["out"], "--out", tmp_path)
    assert r.exit_code == 1 and "not a bundle edgeft wrote" in r.output
    assert (tmp_path / "out-test-int8.tar.gz").read_bytes() == b"somebody else's file"


def test_loading_a_kits_build_script_on_the_device_adds_no_file_to_the_bundle(tmp_path):
    from edgeft_runtime.trt_device import _load_kit_builder

    kit = tmp_path / "engine"
    kit.mkdir()
    (kit / "build_engine.py").write_text("def build():\n    return 'ok'\n")
    assert _load_kit_builder(kit).build() == "ok"
    assert sorted(p.name for p in kit.iterdir()) == ["build_engine.py"]


def test_bundle_json_paths_must_be_its_own_files_and_a_dot_archive_is_refused(bundle, tmp_path):
    d = fresh_copy(bundle, tmp_path / "paths")
    meta = json.loads((d / "bundle.json").read_text())
    meta["engine"]["dir"] = "../elsewhere"
    (d / "bundle.json").write_text(json.dumps(meta))
    assert "engine.dir '../elsewhere' points outside the bundle" in _refused(d)
    meta["engine"]["dir"] = "golden"
    meta["engine"]["model_file"] = "golden/model.onnx"
    (d / "bundle.json").write_text(json.dumps(meta))
    assert "engine.model_file 'golden/model.onnx' is not a file of the bundle" in _refused(d)
    dot = tmp_path / "dot.tar.gz"                      # tar czf dot.tar.gz -C BUNDLE .
    with tarfile.open(dot, "w:gz") as tar:
        tar.add(bundle["dir"], arcname=".")
    assert "not inside one named folder" in _refused(dot)
