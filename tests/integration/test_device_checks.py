"""What `edgeft-runtime` checks on the device before trusting a bundle: the CPU's int8 kernels against the
engine's, the golden tolerance against what it is derived from, long inputs, and its own command line."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeft.cli.commands import cli
from edgeft_runtime.fileio import sha256_file

pytestmark = pytest.mark.filterwarnings("ignore")

AVX2 = "sse4_2 avx avx2 fma"
AVX512_NO_VNNI = "sse4_2 avx avx2 fma avx512f avx512bw"
VNNI = "sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni"


def runtime_cli(*args, flags: str | None = None):
    """edgeft-runtime in a fresh process (what the device runs), with this CPU's ISA flags replaced by ``flags``."""
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEFT_CPU_FLAGS", "EDGEFT_MACHINE")}
    if flags is not None:
        env.update(EDGEFT_CPU_FLAGS=flags, EDGEFT_MACHINE="x86_64")
    return subprocess.run([sys.executable, "-m", "edgeft_runtime.cli", *map(str, args)], capture_output=True,
                          text=True, env=env)


@pytest.fixture(scope="module")
def bundle(tiny_run, tmp_path_factory) -> Path:
    assert tiny_run["result"].exit_code == 0, tiny_run["result"].output
    out = tmp_path_factory.mktemp("bundles")
    r = CliRunner().invoke(cli, ["package", str(tiny_run["out"]), "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out / "out-test-int8"


def edited(bundle: Path, dest: Path, meta_edit=None, files: dict | None = None) -> Path:
    """A copy of ``bundle`` with ``files`` ({relative path: function(json) -> json}) rewritten and their checksums
    updated in bundle.json (what someone without the signing key can do), then ``meta_edit`` applied to bundle.json."""
    d = dest / bundle.name
    shutil.copytree(bundle, d)
    meta = json.loads((d / "bundle.json").read_text())
    for rel, edit in (files or {}).items():
        (d / rel).write_text(json.dumps(edit(json.loads((d / rel).read_text()))))
        row = next(f for f in meta["files"] if f["path"] == rel)
        row.update(sha256=sha256_file(d / rel), bytes=(d / rel).stat().st_size)
    if meta_edit:
        meta_edit(meta)
    (d / "bundle.json").write_text(json.dumps(meta))
    return d


def u8s8_bundle(bundle: Path, dest: Path) -> Path:
    """The tiny bundle as an x86-avx512-int8 bundle records itself: isa avx512_vnni, u8s8 int8 kernels."""
    def meta_edit(meta):
        meta["target"]["int8_kernels"] = "u8s8"
        meta["target"]["device"]["isa"] = "avx512_vnni"
    return edited(bundle, dest, meta_edit, {"engine/engine.json": lambda e: {**e, "int8_kernels": "u8s8"}})


# 1. the CPU's int8 kernels against the engine's ------------------------------------------------------------

def test_u8s8_bundle_is_refused_on_avx2_and_avx512_without_vnni_by_predict_check_and_bench(bundle, tmp_path):
    d = u8s8_bundle(bundle, tmp_path)
    for flags in (AVX2, AVX512_NO_VNNI):
        for args in (("predict", d, "hello"), ("check", d), ("bench", d, "--out", tmp_path / "bench", "--rounds", "1")):
            r = runtime_cli(*args, flags=flags)
            assert r.returncode == 1, (args, flags, r.stdout, r.stderr)
            assert r.stdout == ""                                   # nothing ran, nothing was predicted
            err = r.stderr
            assert "error: this bundle's engine (test-int8, target isa avx512_vnni) uses u8s8 int8 kernels" in err
            assert "without VNNI" in err and "wrong" in err
            assert "fix: package the run for target x86-avx2-int8" in err
    assert not (tmp_path / "bench").exists()


def test_the_python_api_refuses_the_u8s8_engine_on_avx2_too(bundle, tmp_path, monkeypatch):
    from edgeft_runtime import Bundle
    from edgeft_runtime.errors import EdgeftError

    d = u8s8_bundle(bundle, tmp_path)
    monkeypatch.setenv("EDGEFT_CPU_FLAGS", AVX2)
    monkeypatch.setenv("EDGEFT_MACHINE", "x86_64")
    with Bundle.open(d) as b, pytest.raises(EdgeftError, match="u8s8 int8 kernels"):
        b.predict(["turn on the lights"])
    monkeypatch.setenv("EDGEFT_CPU_FLAGS", VNNI)
    with Bundle.open(d) as b:
        assert len(b.predict(["turn on the lights"])) == 1


def test_info_warns_of_the_mismatch_and_vnni_cpus_run_the_u8s8_bundle(bundle, tmp_path):
    d = u8s8_bundle(bundle, tmp_path)
    r = runtime_cli("info", d, flags=AVX2)
    assert r.returncode == 0, r.stderr
    warning = [x for x in r.stdout.splitlines() if x.startswith("warning:")]
    assert len(warning) == 1 and "u8s8" in warning[0] and "avx2" in warning[0]
    here = json.loads(runtime_cli("info", d, "--json", flags=AVX2).stdout)["this_host"]
    assert here["fit"] == "wrong_results" and here["isa_class"] == "avx2" and here["int8_kernels"] == "u8s8"
    # AVX512-VNNI: the target's own instruction set, no word
    r = runtime_cli("check", d, flags=VNNI)
    assert r.returncode == 0 and r.stdout.startswith("PASS"), r.stdout + r.stderr
    assert "note:" not in r.stderr and "warning:" not in r.stderr
    assert json.loads(runtime_cli("info", d, "--json", flags=VNNI).stdout)["this_host"]["fit"] == "ok"


def test_mismatches_that_only_cost_speed_get_one_note_never_a_refusal(bundle, tmp_path):
    # the tiny bundle: u8u8, isa any: correct and "its own" instruction set everywhere
    for flags in (AVX2, AVX512_NO_VNNI, VNNI):
        r = runtime_cli("predict", bundle, "turn on the lights", flags=flags)
        assert r.returncode == 0 and "note:" not in r.stderr and "warning:" not in r.stderr, r.stderr
    # a u8u8 avx2 bundle on a VNNI CPU: runs, with one note saying its speed is not the target's
    avx2 = edited(bundle, tmp_path, lambda m: m["target"]["device"].update(isa="avx2"))
    r = runtime_cli("check", avx2, flags=VNNI)
    assert r.returncode == 0 and r.stdout.startswith("PASS"), r.stderr
    notes = [x for x in r.stderr.splitlines() if x.startswith("note:")]
    assert len(notes) == 1 and "isa avx2" in notes[0] and "avx512_vnni" in notes[0] and "speed" in notes[0]
    assert "error:" not in r.stderr


def test_host_fit_over_every_isa_class():
    from edgeft_runtime.bundle import Bundle
    from edgeft_runtime.hostinfo import Host

    hosts = {"avx2": Host("c", "x86_64", frozenset({"avx2"})),
             "avx512": Host("c", "x86_64", frozenset({"avx2", "avx512f", "avx512bw"})),
             "avx_vnni": Host("c", "x86_64", frozenset({"avx2", "avx_vnni"})),
             "avx512_vnni": Host("c", "x86_64", frozenset({"avx2", "avx512bw", "avx512_vnni"})),
             "neon": Host("c", "aarch64", frozenset({"asimd"}))}

    def fit(kernels, isa, backend="onnxruntime-cpu", kind="cpu"):
        meta = {"target": {"name": "t", "backend": backend, "int8_kernels": kernels,
                           "device": {"kind": kind, "isa": isa}}, "engine": {"dir": "engine"}}
        b = Bundle(root=Path("/nonexistent"), meta=meta, source=Path("/nonexistent"))
        return {cls: (b.host_fit(h) or ("ok",))[0] for cls, h in hosts.items()}

    assert fit("u8s8", "avx512_vnni") == {"avx2": "refuse", "avx512": "refuse", "avx_vnni": "note",
                                          "avx512_vnni": "ok", "neon": "note"}
    assert fit("u8u8", "avx2") == {"avx2": "ok", "avx512": "note", "avx_vnni": "note", "avx512_vnni": "note",
                                   "neon": "note"}
    assert set(fit("u8u8", "any").values()) == {"ok"}
    assert set(fit("u8s8_7bit", "any").values()) == {"ok"}              # 7-bit weights do not saturate
    assert set(fit(None, "any", backend="tensorrt", kind="gpu").values()) == {"ok"}


def test_bundle_json_claiming_other_kernels_than_the_engine_is_refused(bundle, tmp_path):
    """Editing bundle.json's int8_kernels to get past the refusal: engine.json (checksummed) says otherwise."""
    d = u8s8_bundle(bundle, tmp_path / "a")
    meta = json.loads((d / "bundle.json").read_text())
    meta["target"]["int8_kernels"] = "u8u8"
    (d / "bundle.json").write_text(json.dumps(meta))
    r = runtime_cli("predict", d, "hello", flags=AVX2)
    assert r.returncode == 1 and "target.int8_kernels (u8u8) differs from engine/engine.json's (u8s8)" in r.stderr


# 2. the golden tolerance -----------------------------------------------------------------------------------

def test_an_edited_atol_is_refused_naming_the_field(bundle, tmp_path):
    d = edited(bundle, tmp_path / "a", lambda m: m["golden"]["tolerance"].update(atol=9.178))
    r = runtime_cli("check", d)
    assert r.returncode == 1 and "PASS" not in r.stdout
    assert "golden.tolerance.atol (9.178) differs from golden/expected.json's" in r.stderr
    # a bundle whose expected.json does not carry the tolerance: atol is recomputed from what it is derived from
    legacy = edited(bundle, tmp_path / "b", lambda m: m["golden"]["tolerance"].update(atol=9.178),
                    {"golden/expected.json": lambda e: {k: v for k, v in e.items() if k != "tolerance"}})
    r = runtime_cli("check", legacy)
    assert r.returncode == 1 and "PASS" not in r.stdout
    assert "golden.tolerance.atol 9.178 is not what its measured_kernel_deviation and quantization_floor give" in r.stderr
    # untouched, the same check passes and compares labels
    r = runtime_cli("check", bundle, "--json")
    golden = json.loads(r.stdout)["golden"]
    assert r.returncode == 0 and golden["top1_checked"] > 0 and golden["not_checked"] is None


def test_check_never_passes_when_no_golden_input_is_decisive(bundle, tmp_path):
    """Raising atol and the deviation it derives from together keeps them consistent: then no recorded margin
    exceeds 2 x atol, no label is compared, and check fails saying so."""
    def meta_edit(m):
        m["golden"]["tolerance"].update(atol=9.178, measured_kernel_deviation=9.178 / 4)
    d = edited(bundle, tmp_path, meta_edit,
               {"golden/expected.json": lambda e: {k: v for k, v in e.items() if k != "tolerance"}})
    r = runtime_cli("check", d)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.startswith("FAIL out-test-int8") and "top-1 same on 0/0 decisive inputs" in r.stdout
    assert "no top-1 label was checked" in r.stdout


def test_an_empty_golden_set_fails_the_check(bundle, tmp_path):
    d = edited(bundle, tmp_path, lambda m: m["golden"].update(count=0),
               {"golden/expected.json": lambda e: {**e, "engine_logits": [], "baseline_logits": []}})
    (d / "golden/inputs.jsonl").write_text("")
    meta = json.loads((d / "bundle.json").read_text())
    next(f for f in meta["files"] if f["path"] == "golden/inputs.jsonl").update(
        sha256=sha256_file(d / "golden/inputs.jsonl"), bytes=0)
    (d / "bundle.json").write_text(json.dumps(meta))
    r = runtime_cli("check", d)
    assert r.returncode == 1 and r.stdout.startswith("FAIL") and "the golden set is empty: nothing was checked" in r.stdout


# 3. long inputs ---------------------------------------------------------------------------------------------

def test_predict_warns_on_stderr_how_many_tokens_a_long_text_lost(bundle):
    from tokenizers import Tokenizer

    long = " ".join(f"lights{i % 7} kitchen music weather timer" for i in range(400))       # 2000 words
    tok = Tokenizer.from_file(str(bundle / "engine/tokenizer.json"))
    tok.no_truncation()
    n = len(tok.encode(long).ids)
    limit = json.loads((bundle / "bundle.json").read_text())["preprocessing"]["max_length"]
    assert n > limit
    r = runtime_cli("predict", bundle, long, "turn on the lights")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]                      # stdout stays JSON lines
    assert len(rows) == 2 and rows[0]["input"] == long
    warnings = [x for x in r.stderr.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1
    assert f"1 input(s) longer than the engine's {limit} tokens were cut, {n - limit} tokens dropped" in warnings[0]
    assert f"input 1 lost {n - limit} of its {n}" in warnings[0]
    r = runtime_cli("predict", bundle, "turn on the lights")
    assert r.returncode == 0 and "warning:" not in r.stderr


# 4. the command line ----------------------------------------------------------------------------------------

def test_usage_errors_are_error_and_fix_naming_the_valid_options(bundle):
    r = runtime_cli("bench", bundle, "--engines", "ort-fp32")
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[0] == "error: edgeft-runtime bench: unrecognized arguments: --engines ort-fp32"
    assert lines[1].startswith("  fix: ") and "edgeft bench RUN_DIR --engines" in lines[1]
    assert "edgeft-runtime bench takes --public-key, --sweep, --rounds" in lines[1]
    assert "usage:" not in r.stderr
    r = runtime_cli("predict")
    assert r.returncode == 2 and r.stderr.startswith("error: edgeft-runtime predict: the following arguments are required")
    assert "\n  fix: edgeft-runtime predict [-h]" in r.stderr
    r = runtime_cli("check", bundle, "--top-k", "3")
    assert r.returncode == 2 and "fix: edgeft-runtime check takes --public-key, --json" in r.stderr


# 5. the version ---------------------------------------------------------------------------------------------

def test_a_version_with_a_control_character_is_refused_when_packaging_and_on_the_device(tiny_run, bundle, tmp_path):
    r = CliRunner().invoke(cli, ["package", str(tiny_run["out"]), "--out", str(tmp_path / "p"), "--version", "1.0\nx"],
                           catch_exceptions=False)
    assert r.exit_code != 0
    assert "--version '1.0\\nx' holds a control or invisible character" in r.output and "fix:" in r.output
    assert not (tmp_path / "p" / "out-test-int8").exists()
    d = edited(bundle, tmp_path, lambda m: m.update(version="1.0\nx"))
    r = runtime_cli("info", d)
    assert r.returncode == 1 and "version" in r.stderr and "does not match" in r.stderr


def test_the_host_side_bench_of_a_u8s8_bundle_on_avx2_marks_it_rather_than_passing_it(bundle, tmp_path, monkeypatch):
    """`edgeft bench BUNDLE` on the build machine compares engines there (it does not refuse), but an engine that
    computes wrong sums on this CPU carries a caveat and its accuracy rows a ⚠."""
    d = u8s8_bundle(bundle, tmp_path)
    monkeypatch.setenv("EDGEFT_CPU_FLAGS", AVX2)
    r = CliRunner().invoke(cli, ["bench", str(d), "--out", str(tmp_path / "o"), "--rounds", "1", "--duration", "0.05",
                                 "--warmup", "0"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "o/bench.json").read_text())
    caveat = next(e for e in doc["engines"] if e["name"] == "edgeft-int8").get("caveat", "")
    assert "u8s8 int8 kernels" in caveat and "wrong" in caveat
    assert "| edgeft-int8 ⚠ | 1 |" in (tmp_path / "o/bench.md").read_text()


def test_a_tensorrt_kit_from_before_the_kit_floor_is_checked_by_its_own_rule(bundle, tmp_path):
    """Kits packaged before `tensorrt_kit_floor` existed have an atol without it: not called edited."""
    from edgeft_runtime.bundle import Bundle

    d = edited(bundle, tmp_path, lambda m: m["engine"].update(deferred=True))
    with Bundle.open(d) as b:
        assert "tensorrt_kit_floor" not in b.meta["golden"]["tolerance"]
        assert b.check_tolerance(np.ones((2, 3), np.float32)) == b.meta["golden"]["tolerance"]["atol"]


def test_bundle_names_and_versions_with_a_trailing_newline_fail_the_schema():
    from edgeft_runtime.schema import BUNDLE_SCHEMA, problems

    props = BUNDLE_SCHEMA["properties"]
    assert not problems("1.2.0", props["version"]) and not problems("voice-1", props["name"])
    for value, field in (("1.2.0\n", "version"), ("1\u202e0", "version"), ("1\u200b", "version"), ("voice-1\n", "name")):
        assert problems(value, props[field]), (value, field)


def test_package_refuses_a_golden_set_whose_check_could_compare_no_label():
    import numpy as _np

    from edgeft.bundling.make import _require_decisive
    from edgeft.errors import EdgeftError

    logits = _np.array([[1.0, 0.9], [0.2, 0.25]], _np.float32)
    _require_decisive(logits, 0.01, "classification", 2, 10, 2)            # margin 0.1 > 2 x 0.01: fine
    with pytest.raises(EdgeftError, match="no golden input has a top-1 margin") as e:
        _require_decisive(logits, 0.06, "classification", 2, 10, 2)
    assert "larger --golden (the test split has 10 inputs)" in e.value.fix
    _require_decisive(logits, 0.06, "regression", 2, 10, 2)                 # no labels to check: nothing to refuse


def test_package_target_host_resolves_to_this_cpus_target(tiny_run, tmp_path):
    r = CliRunner().invoke(cli, ["package", str(tiny_run["out"]), "--out", str(tmp_path), "--target", "host"])
    assert r.exit_code == 1 and "no such target" not in r.output
    assert "this run has no engine for it" in r.output and "test-int8" in r.output
