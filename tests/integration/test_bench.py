"""`edgeft bench` and `edgeft-runtime bench` on the tiny run (short durations: the pipeline is under test, not speed)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeft.cli.commands import cli

pytestmark = pytest.mark.filterwarnings("ignore")
FAST = ["--rounds", "2", "--duration", "0.05", "--warmup", "0"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def benched(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    r = invoke("bench", tiny_run["out"], "--sweep", "batch=1,2", "--sweep", "seq=8,16", "--out", out, *FAST)
    return {"result": r, "out": out}


def test_bench_writes_every_output_valid_against_its_schema(benched):
    import jsonschema

    from edgeft_runtime.schema import BENCH_SCHEMA

    r = benched["result"]
    assert r.exit_code == 0, r.output
    out = benched["out"]
    for name in ("bench.json", "bench.md", "bench.csv", "latency_vs_batch.png", "latency_vs_seq.png",
                 "throughput_vs_batch.png", "rounds.png", "accuracy_vs_latency.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "latency_vs_batch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((out / "bench.json").read_text())
    jsonschema.Draft202012Validator.check_schema(BENCH_SCHEMA)
    jsonschema.validate(doc, BENCH_SCHEMA)
    assert doc["schema_version"] == 1 and doc["host"]["cpu"] and doc["host"]["isa_flags"]
    assert not (out / ".work").exists()
    assert not list(Path.cwd().glob("sym_shape_infer_temp*")) and not list(Path.cwd().glob("*.data"))


def test_bench_runs_every_named_engine_over_the_whole_grid(benched):
    doc = json.loads((benched["out"] / "bench.json").read_text())
    names = {"edgeft-int8", "edgeft-fp32-reference", "ort-fp32", "ort-dynamic", "ort-dynamic-per-channel",
             "ort-static", "torch-fp32"}
    assert names <= {e["name"] for e in doc["engines"]}
    grid = {(b, s) for b in (1, 2) for s in (8, 16)}
    for name in names:
        rows = [r for r in doc["results"] if r["engine"] == name]
        assert {(r["batch"], r["seq"]) for r in rows} == grid, name
        for r in rows:
            assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and len(r["rounds_p50_ms"]) == 2
            assert r["throughput"] == pytest.approx(r["batch"] * 1000 / r["mean_ms"])
            assert r["peak_rss_mb"] > 10 and r["cold_start_s"] > 0 and r["load_s"] > 0 and r["file_bytes"] > 0
    # each worker's own peak memory, not its parent's (the pytest process holds torch and far more)
    rss = {r["engine"]: r["peak_rss_mb"] for r in doc["results"]}
    assert rss["edgeft-int8"] < rss["torch-fp32"] and rss["edgeft-int8"] < 400
    rows = list(csv.DictReader(open(benched["out"] / "bench.csv")))
    assert len(rows) == len(doc["results"]) and {"engine", "batch", "seq", "threads", "p50_ms"} <= set(rows[0])
    # a CSV travels without its bench.json: every row says where and when it was measured
    assert {(r["host_cpu"], r["host_isa_class"], r["created"]) for r in rows} == {
        (doc["host"]["cpu"].strip(), doc["host"]["isa_class"], doc["created"])}
    md = (benched["out"] / "bench.md").read_text()
    assert "| 2 | 16 | default | ort-dynamic |" in md and doc["host"]["cpu"] in md
    assert "## Accuracy per batch size on the run's test split" in md


def test_accuracy_per_batch_size_is_reported_and_padding_matters_only_where_it_does(benched, tiny_run):
    doc = json.loads((benched["out"] / "bench.json").read_text())
    acc = {(a["engine"], a["batch"]): a for a in doc["accuracy"]}
    report = json.loads((tiny_run["out"] / "report.json").read_text())
    verify_acc = next(e["accuracy"] for e in report["engines"] if e["role"] == "engine")
    assert acc[("edgeft-int8", 1)]["accuracy"] == pytest.approx(verify_acc)     # batch 1 = verify's protocol
    assert acc[("edgeft-int8", 1)]["examples"] == report["test_examples"]
    assert {b for (_, b) in acc} == {1, 2}
    assert acc[("torch-fp32", 1)]["top1_agreement"] == 1.0                     # the FP32 model agrees with itself


def test_shapes_outside_the_target_range_are_refused_with_the_range(tiny_run, tmp_path):
    r = invoke("bench", tiny_run["out"], "--sweep", "batch=8", "--out", tmp_path, *FAST)
    assert r.exit_code == 1 and "batch=8 is outside what edgeft-int8 accepts (batch 1..4)" in r.output
    r = invoke("bench", tiny_run["out"], "--sweep", "seq=65", "--out", tmp_path, *FAST)
    assert r.exit_code == 1 and "seq 1..64" in r.output
    r = invoke("bench", tiny_run["out"], "--sweep", "width=3", "--out", tmp_path)
    assert r.exit_code == 1 and "KEY one of batch, seq, threads" in r.output
    r = invoke("bench", tiny_run["out"], "--engines", "ort-magic", "--out", tmp_path)
    assert r.exit_code == 1 and "unknown engine 'ort-magic'" in r.output
    assert not (tmp_path / "bench.json").exists()


def _slowed(doc: dict, factor: float) -> dict:
    out = json.loads(json.dumps(doc))
    for r in out["results"]:
        r["rounds_p50_ms"] = [x * factor for x in r["rounds_p50_ms"]]
    return out


def test_compare_exits_0_on_two_runs_of_the_same_engine_and_3_on_a_slower_one(tiny_run, tmp_path):
    args = ["--engines", "edgeft,ort-fp32", "--sweep", "batch=4", "--sweep", "seq=64", "--no-accuracy",
            "--rounds", "5", "--duration", "0.2", "--warmup", "0.05"]
    for name in ("a", "b"):
        assert invoke("bench", tiny_run["out"], "--out", tmp_path / name, *args).exit_code == 0
    r = invoke("bench", "compare", tmp_path / "a/bench.json", tmp_path / "b/bench.json", "--threshold", "25%")
    assert r.exit_code == 0, r.output
    assert "edgeft-int8" in r.output and "REGRESSED" not in r.output
    # the measured run made 3x slower (every round): what a regressed engine's bench.json looks like
    a = json.loads((tmp_path / "a/bench.json").read_text())
    slow = _slowed(a, 3.0)
    (tmp_path / "slow3.json").write_text(json.dumps(slow))
    r = invoke("bench", "compare", tmp_path / "a/bench.json", tmp_path / "slow3.json")
    assert r.exit_code == 3 and "REGRESSED" in r.output and "beyond noise" in r.output
    r = invoke("bench", "compare", tmp_path / "a/bench.json", tmp_path / "nothing.json")
    assert r.exit_code == 1 and "no such file" in r.output
    r = invoke("bench", "compare", tmp_path / "a", tmp_path / "b", "--threshold", "25%")     # the --out folders
    assert r.exit_code == 0 and "edgeft-int8" in r.output, r.output
    r = invoke("bench", "compare", tmp_path, tmp_path / "b")
    assert r.exit_code == 1 and "without a bench.json" in r.output
    # cloud CPUs share a model name: a different ISA class or architecture is a different host too
    for key in ("isa_class", "machine"):
        other = json.loads(json.dumps(a))
        value = other["host"][key] = f"{a['host'][key]}-other"          # differs on every CI host
        (tmp_path / f"{key}.json").write_text(json.dumps(other))
        r = invoke("bench", "compare", tmp_path / "a/bench.json", tmp_path / f"{key}.json")
        assert r.exit_code == 0 and f"different hosts ({key} {a['host'][key]} vs {value})" in r.output, r.output


def test_compare_uses_the_noise_of_both_runs():
    from edgeft_runtime.bench import compare

    def doc(rounds):
        return {"results": [{"engine": "e", "batch": 1, "seq": 8, "threads": None, "rounds_p50_ms": rounds}]}

    noisy_old, noisy_new = doc([1.0, 1.5, 0.8, 1.3, 0.9]), doc([1.2, 1.6, 0.9, 1.4, 1.0])
    assert not compare(noisy_old, noisy_new)[0]["regressed"]               # +8% inside wide noise
    quiet_old, quiet_new = doc([1.00, 1.01, 0.99, 1.00, 1.00]), doc([1.20, 1.21, 1.19, 1.20, 1.20])
    row = compare(quiet_old, quiet_new)[0]
    assert row["regressed"] and row["ratio"] == pytest.approx(1.2) and row["ci95"][0] > 1.05
    assert not compare(quiet_old, quiet_new, threshold=0.25)[0]["regressed"]


def test_compare_gives_no_verdict_from_a_single_round():
    """One round has no spread: a 3x slower single round is not called a regression, nor a 3x faster one an
    improvement (the interval collapses to a point)."""
    from edgeft_runtime.bench import compare

    def doc(rounds):
        return {"results": [{"engine": "e", "batch": 1, "seq": 8, "threads": None, "rounds_p50_ms": rounds}]}

    for old, new in ((doc([1.0]), doc([3.0])), (doc([1.0, 1.0, 1.0]), doc([3.0])), (doc([3.0]), doc([1.0]))):
        row = compare(old, new)[0]
        assert not row["judged"] and not row["regressed"] and not row["improved"]
    assert compare(doc([1.0, 1.01]), doc([3.0, 3.01]))[0]["regressed"]          # two rounds each: judged


def test_repeated_sweep_keys_add_their_values():
    from edgeft_runtime.bench import parse_sweep

    got = parse_sweep(["batch=1", "batch=8,2", "seq=16"], {"batch": [4], "seq": [128], "threads": [0]})
    assert got == {"batch": [1, 2, 8], "seq": [16], "threads": [0]}


def test_out_holds_only_one_bench_and_never_a_users_files(tiny_run, tmp_path):
    args = ["--engines", "edgeft", "--no-accuracy", *FAST]
    out = tmp_path / "o"
    assert invoke("bench", tiny_run["out"], "--out", out, "--sweep", "batch=1,2", *args).exit_code == 0
    assert (out / "latency_vs_batch.png").is_file()
    r = invoke("bench", tiny_run["out"], "--out", out, "--sweep", "batch=1", *args)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "bench.json").read_text())
    assert {r["batch"] for r in doc["results"]} == {1}
    assert not (out / "latency_vs_batch.png").exists() and not (out / "throughput_vs_batch.png").exists()
    assert sorted(p.name for p in out.glob("*.png")) == sorted(doc["plots"])
    # a folder of the user's: refused, nothing in it touched
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "bench.md").write_text("my notes")
    (mine / "other.txt").write_text("x")
    r = invoke("bench", tiny_run["out"], "--out", mine, *args)
    assert r.exit_code == 1 and "holds files `bench` did not write" in r.output and "fix:" in r.output
    assert (mine / "bench.md").read_text() == "my notes" and sorted(p.name for p in mine.iterdir()) == ["bench.md", "other.txt"]
    (tmp_path / "afile").write_text("x")
    r = invoke("bench", tiny_run["out"], "--out", tmp_path / "afile", *args)
    assert r.exit_code == 1 and "error: --out" in r.output and "is a file" in r.output


def test_device_bench_runs_in_the_runtime_alone(tiny_run, tmp_path):
    """edgeft-runtime bench on a bundle, in a process where torch cannot be imported."""
    r = invoke("package", tiny_run["out"], "--out", tmp_path / "b", "--with-reference")
    assert r.exit_code == 0, r.output
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "torch.py").write_text("raise ImportError('torch is not on this device')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), *sys.path])}
    r = subprocess.run([sys.executable, "-m", "edgeft_runtime.cli", "bench", tmp_path / "b/out-test-int8.tar.gz",
                        "--sweep", "batch=1,2", "--out", tmp_path / "dev", "--rounds", "2", "--duration", "0.05",
                        "--warmup", "0", "--json"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {e["name"] for e in doc["engines"]} == {"edgeft-int8", "edgeft-fp32-reference"}
    assert {(x["engine"], x["batch"]) for x in doc["results"]} == {(n, b) for n in ("edgeft-int8", "edgeft-fp32-reference") for b in (1, 2)}
    assert doc["source"]["kind"] == "bundle" and len(doc["accuracy"]) == 4
    assert (tmp_path / "dev/bench.json").is_file()
    assert "## Accuracy per batch size on the bundle's golden set" in (tmp_path / "dev/bench.md").read_text()
    r = subprocess.run([sys.executable, "-m", "edgeft_runtime.cli", "bench", tmp_path / "b/out-test-int8",
                        "--sweep", "seq=65"], capture_output=True, text=True)
    assert r.returncode == 1 and "seq 1..64" in r.stderr
    # edgeft bench on the same bundle measures the same engines with the same code
    r = invoke("bench", tmp_path / "b/out-test-int8", "--out", tmp_path / "host", "--sweep", "batch=2", *FAST)
    assert r.exit_code == 0, r.output
    host = json.loads((tmp_path / "host/bench.json").read_text())
    assert {x["engine"] for x in host["results"]} == {"edgeft-int8", "edgeft-fp32-reference"}
    assert host["source"] == {**host["source"], "kind": "bundle", "name": "out-test-int8"}


def test_trtexec_export_times_are_parsed_into_copy_and_compute_medians():
    from edgeft_runtime.bench import parse_export_times

    # the fields TensorRT 10's trtexec writes (exportJSONTrace); end to end = first copy in to last copy out
    trace = [{"startEnqMs": 0.0, "endEnqMs": 0.02, "startH2dMs": 0.0, "endH2dMs": 0.1, "startComputeMs": 0.1,
              "endComputeMs": 1.1 + i * 0.01, "startD2hMs": 1.1 + i * 0.01, "endD2hMs": 1.15 + i * 0.01, "h2dMs": 0.1,
              "computeMs": 1.0 + i * 0.01, "d2hMs": 0.05, "latencyMs": 1.15 + i * 0.01} for i in range(11)]
    got = parse_export_times(trace)
    assert got["iterations"] == 11 and got["h2d_ms"] == pytest.approx(0.1) and got["d2h_ms"] == pytest.approx(0.05)
    assert got["compute_ms"] == pytest.approx(1.05) and got["latency_ms"] == pytest.approx(1.2)
    assert got["end_to_end_ms"] == pytest.approx(1.2)
    with pytest.raises(ValueError):
        parse_export_times([{"count": 3}])


def test_bench_checks_its_inputs_before_any_work(tiny_run, tmp_path):
    r = invoke("bench", tiny_run["out"], "--out", tiny_run["out"], *FAST)
    assert r.exit_code == 1 and "inside" in r.output and "/bench" in r.output
    assert not (tiny_run["out"] / "bench.json").exists() and not (tiny_run["out"] / "bench.log").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,not-a-label\n")
    r = invoke("bench", tiny_run["out"], "--out", tmp_path / "o", "--data", bad, *FAST)
    assert r.exit_code == 1 and "not the run's" in r.output and not (tmp_path / "o").exists()
    r = invoke("bench", tiny_run["out"], "--out", tmp_path / "o", "--engines", "", *FAST)
    assert r.exit_code == 1 and "--engines is empty" in r.output
    # refused after the peers were built: the folder made for this bench goes with it
    r = invoke("bench", tiny_run["out"], "--out", tmp_path / "new", "--engines", "edgeft", "--sweep", "batch=8", *FAST)
    assert r.exit_code == 1 and "outside what" in r.output and not (tmp_path / "new").exists()
    r = invoke("bench", tmp_path / "nowhere")
    assert r.exit_code == 1 and "no such run directory or bundle" in r.output


def test_one_round_reports_no_spread_and_too_many_threads_are_flagged(tiny_run, tmp_path):
    import os as _os

    many = (_os.cpu_count() or 1) * 4
    r = invoke("bench", tiny_run["out"], "--out", tmp_path, "--engines", "edgeft,edgeft", "--no-accuracy",
               "--sweep", f"threads={many}", "--rounds", "1", "--duration", "0.05", "--warmup", "0")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert [e["name"] for e in doc["engines"]] == ["edgeft-int8"] and len(doc["results"]) == 1
    assert doc["results"][0]["round_cv"] is None and "| — |" in (tmp_path / "bench.md").read_text()
    assert any("more threads than this host's" in w for w in doc["warnings"])
    assert any(w.startswith("one round: its noise") for w in doc["warnings"])


def test_device_bench_refuses_bad_numbers_and_an_output_inside_the_bundle(tiny_run, tmp_path):
    r = invoke("package", tiny_run["out"], "--out", tmp_path / "b")
    assert r.exit_code == 0, r.output
    bundle = tmp_path / "b/out-test-int8"
    cmd = [sys.executable, "-m", "edgeft_runtime.cli", "bench", str(bundle)]
    r = subprocess.run(cmd + ["--rounds", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "--rounds" in r.stderr
    r = subprocess.run(cmd + ["--duration", "-1"], capture_output=True, text=True)
    assert r.returncode == 2 and "below 0" in r.stderr
    r = subprocess.run(cmd + ["--rounds", "1"], capture_output=True, text=True, cwd=bundle)   # default ./bench-...
    assert r.returncode == 1 and "is inside" in r.stderr
    assert subprocess.run([sys.executable, "-m", "edgeft_runtime.cli", "check", str(bundle)]).returncode == 0


def test_data_file_gives_accuracy_and_agreement_with_the_fp32_reference(tiny_run, tmp_path):
    data = tmp_path / "d.jsonl"
    rows = [json.loads(x) for x in (tiny_run["out"] / "finetune/data/test.jsonl").read_text().splitlines()][:8]
    data.write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in rows))
    r = invoke("bench", tiny_run["out"], "--out", tmp_path / "o", "--engines", "edgeft,edgeft-fp32-reference",
               "--data", data, "--rounds", "1", "--duration", "0.05", "--warmup", "0")
    assert r.exit_code == 0, r.output
    acc = json.loads((tmp_path / "o/bench.json").read_text())["accuracy"]
    assert {a["engine"] for a in acc} == {"edgeft-int8", "edgeft-fp32-reference"}
    assert all(a["examples"] == 8 and a["agreement_with"] == "edgeft-fp32-reference" for a in acc)
    assert next(a for a in acc if a["engine"] == "edgeft-fp32-reference")["top1_agreement"] == 1.0


def test_kernel_flavours_are_compiled_on_request_and_their_outputs_checked(tiny_run, tmp_path, monkeypatch):
    """`--engines edgeft-int8-u8u8,edgeft-int8-u8s8-7bit` compiles the run's Q/DQ export in those flavours
    (the AVX2 flavour sweep of the speed issue); the u8u8 one computes the target engine's math exactly, the
    7-bit one within its weight rounding. On a host whose u8s8 kernels saturate, u8s8 engines are flagged."""
    monkeypatch.setenv("EDGEFT_CPU_FLAGS", "sse2 fma avx2")          # a CPU without VNNI
    r = invoke("bench", tiny_run["out"], "--out", tmp_path / "o", "--engines",
               "edgeft,edgeft-int8-u8u8,edgeft-int8-u8s8,edgeft-int8-u8s8-7bit,edgeft-int8-dynamic-all", *FAST)
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "o/bench.json").read_text())
    notes = {e["name"]: e["note"] for e in doc["engines"]}
    assert "int8_kernels u8s8_7bit" in notes["edgeft-int8-u8s8-7bit"] and "int8_kernels u8u8" in notes["edgeft-int8-u8u8"]
    assert "dynamic_activations all" in notes["edgeft-int8-dynamic-all"]
    assert notes["edgeft-int8"].endswith("int8_kernels u8u8")          # the run's own engine names its flavour too
    flagged = " ".join(doc["notes"])
    assert "edgeft-int8-u8s8: u8s8 kernels on this CPU (avx2" in flagged and "edgeft-int8-u8u8:" not in flagged
    caveats = {e["name"] for e in doc["engines"] if e.get("caveat")}
    assert caveats == {"edgeft-int8-u8s8"}
    md = (tmp_path / "o/bench.md").read_text()
    acc_rows = md.split("## Accuracy per batch size")[1]
    assert "| edgeft-int8-u8s8 ⚠ | 1 |" in acc_rows and "| edgeft-int8-u8u8 | 1 |" in acc_rows
    assert "⚠ edgeft-int8-u8s8: u8s8 kernels on this CPU" in acc_rows
    acc = {a["engine"]: a for a in doc["accuracy"] if a["batch"] == 1}
    assert acc["edgeft-int8-u8u8"]["accuracy"] == acc["edgeft-int8"]["accuracy"]
    assert acc["edgeft-int8-u8s8-7bit"]["top1_agreement"] >= 0.75


def test_kernel_flavours_are_refused_for_other_backends():
    from edgeft.benchmark.engines import chosen_engines
    from edgeft.errors import EdgeftError
    from edgeft.targets import load_target

    assert chosen_engines(load_target("x86-avx2-int8"), ["edgeft-int8-u8s8-7bit"]) == ["edgeft-int8-u8s8-7bit"]
    assert "edgeft-int8-u8u8" not in chosen_engines(load_target("x86-avx2-int8"), None)     # only on request
    with pytest.raises(EdgeftError, match="kernel flavours are for ONNX Runtime int8 targets"):
        chosen_engines(load_target("x86-avx512-int8-openvino"), ["edgeft-int8-u8u8"])


def test_console_table_title_keeps_the_isa_class_in_brackets(capsys):
    """rich reads "[avx512_vnni]" as markup; the title must print it as text."""
    from edgeft.benchmark.run import _print_table

    doc = {"host": {"cpu": "AMD EPYC", "isa_class": "avx512_vnni", "cores": 2}, "source": {"name": "r"},
           "settings": {"rounds": 3}, "results": [], "accuracy": []}
    _print_table(doc)
    assert "AMD EPYC [avx512_vnni], 2 cores" in capsys.readouterr().err


def test_a_folder_left_by_a_killed_bench_can_be_reused():
    import tempfile

    from edgeft.errors import EdgeftError
    from edgeft_runtime.bench import prepare_out

    with tempfile.TemporaryDirectory() as tmp:
        crashed = Path(tmp) / "crashed"
        (crashed / ".work").mkdir(parents=True)
        (crashed / "bench.log").write_text("building ort-dynamic\n")
        assert prepare_out(crashed, bench=True) == crashed.resolve()
        mine = Path(tmp) / "mine"
        mine.mkdir()
        (mine / "bench.md").write_text("my notes")            # one of bench's names, but no bench wrote it
        with pytest.raises(EdgeftError, match="did not write"):
            prepare_out(mine, bench=True)
