"""Image classification end to end: ImageFolder / CSV data, torchvision and HF vision models, Q/DQ export,
ORT engines, torch-free image pre-processing. Synthetic stripes: horizontal vs vertical."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeft.cli.commands import cli

pytestmark = pytest.mark.filterwarnings("ignore")


def make_stripes(root, n_per_class=24, size=24, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label in ("horizontal", "vertical"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            period = rng.integers(3, 7)
            line = ((np.arange(size) // period) % 2 * 200 + 30).astype(np.uint8)
            img = np.repeat(line[:, None], size, 1) if label == "horizontal" else np.repeat(line[None, :], size, 0)
            noisy = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).convert("RGB").save(root / label / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def stripes(tmp_path_factory):
    return make_stripes(tmp_path_factory.mktemp("stripes"))


@pytest.fixture(scope="module")
def loose_vision_target(tmp_path_factory):
    p = tmp_path_factory.mktemp("t") / "vision-int8.yaml"
    p.write_text("name: vision-int8\nbackend: onnxruntime-cpu\nprecision: int8\n"
                 "device: {kind: cpu, isa: any, threads: 1}\n"
                 "input_shapes: {pixel_values: {min: [1, 3, 32, 32], opt: [1, 3, 32, 32], max: [8, 3, 32, 32]}}\n"
                 "gates: {accuracy: {max_drop: 0.05}, agreement: {min_top1: 0.9}}\n")
    return p


def run(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return r


def test_torchvision_on_image_folder_end_to_end(stripes, loose_vision_target, tmp_path, monkeypatch):
    out = tmp_path / "out"
    r = run("run", "--model", "torchvision:resnet18", "--data", stripes, "--image-size", "32", "--epochs", "6",
            "--lr", "1e-3", "--no-hflip", "--target", loose_vision_target, "--out", out)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "finetune/metrics.json").read_text())
    assert m["modality"] == "image" and m["baseline"]["test_accuracy"] >= 0.9, m["baseline"]
    eng = out / "compile/vision-int8/engine"
    meta = json.loads((eng / "engine.json").read_text())
    wr = meta["where_it_ran"]
    # ModelOpt quantizes Conv inputs and weights only; compile completes the graph (BN folded, output
    # quantizers calibrated) so every conv, residual add and the classifier run in ORT's int8 kernels
    assert wr["int8_share"] == 1.0 and wr["float_compute_nodes"] == 0, wr
    assert wr["op_counts"]["QLinearConv"] == 20 and wr["op_counts"]["QLinearAdd"] == 8, wr["op_counts"]
    assert wr["op_counts"]["QGemm"] == 1 and "BatchNormalization" not in wr["op_counts"]
    rw = meta["qdq_rewrites"]
    assert rw["batchnorm_folded"] == 20 and rw["output_qdq_inserted"] > 0, rw
    assert json.loads((eng / "preprocessor.json").read_text())["image_size"] == 32
    report = json.loads((out / "report.json").read_text())
    e = next(x for x in report["engines"] if x["role"] == "engine")
    assert e["latency_shape"] == {"pixel_values": [1, 3, 32, 32]}
    assert e["top1_agreement"] >= 0.9
    # the device runtime classifies an image with numpy + onnxruntime + PIL, no torch
    import subprocess
    import sys

    # every image, not one: training differs slightly between CPU vendors, and one image may sit near the boundary
    code = ("import sys, json; from pathlib import Path; from edgeft_runtime.predict import Classifier; "
            f"c = Classifier({str(eng)!r}); imgs = sorted(Path({str(stripes)!r}).rglob('*.png')); "
            "right = sum(c(str(p))['label'] == p.parent.name for p in imgs); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(right / len(imgs))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.strip()) >= 0.9
    # `package --target host` means what `run --target host` would pick for this image model
    monkeypatch.setenv("EDGEFT_CPU_FLAGS", "sse2 avx2 fma avx512f avx512bw avx512_vnni")
    r = run("package", out, "--out", tmp_path / "b", "--target", "host")
    assert r.exit_code == 1 and "--target x86-avx512-int8-vision: this run has no engine for it" in r.output, r.output


def test_hf_vit_from_folder_and_csv_of_image_paths(stripes, loose_vision_target, tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    model_dir = tmp_path / "tiny-vit"
    ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=64, num_labels=2)).save_pretrained(model_dir)
    rows = [f"{p.relative_to(stripes)},{p.parent.name}" for p in sorted(stripes.rglob("*.png"))]
    table = stripes / "index.csv"
    table.write_text("path,kind\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    r = run("run", "--model", model_dir, "--data", table, "--image-column", "path", "--label-column", "kind",
            "--image-size", "32", "--epochs", "2", "--target", loose_vision_target, "--out", out)
    assert r.exit_code in (0, 3), r.output            # a 2-epoch tiny ViT need not pass accuracy gates
    m = json.loads((out / "finetune/metrics.json").read_text())
    assert m["modality"] == "image" and m["labels"] == ["horizontal", "vertical"]
    parity = json.loads((out / "export/parity.json").read_text())
    assert parity["fp32"]["ok"] and parity["int8"]["qdq_nodes"]["QuantizeLinear"] > 0


def test_undecodable_image_is_named_or_skipped(stripes, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(stripes, data, ignore=shutil.ignore_patterns("*.csv"))
    (data / "vertical" / "broken.png").write_bytes(b"not a png")
    r = run("finetune", tmp_path / "o", "--model", "torchvision:mobilenet_v3_small", "--data", data,
            "--image-size", "32", "--epochs", "1", "--max-steps", "1", "--qat-epochs", "0")
    assert r.exit_code == 1 and "broken.png" in r.output and "--bad-images skip" in r.output
    assert not (tmp_path / "o/finetune").exists()
    r = run("finetune", tmp_path / "o", "--model", "torchvision:mobilenet_v3_small", "--data", data,
            "--image-size", "32", "--epochs", "1", "--max-steps", "1", "--qat-epochs", "0", "--bad-images", "skip")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "o/finetune/data/report.json").read_text())
    assert report["dropped"]["undecodable_images"] == 1


def test_text_model_on_image_data_is_refused(stripes, tmp_path, tiny_model_dir):
    r = run("run", "--model", tiny_model_dir, "--data", stripes, "--out", tmp_path / "o")
    assert r.exit_code == 1 and "the data is images" in r.output and "torchvision:" in r.output


def test_image_preprocessing_is_identical_in_training_eval_and_runtime(stripes):
    """The evaluation dataset and the device runtime produce the same tensor for the same file."""
    from edgeft.config import VisionConfig
    from edgeft.models.vision import TorchvisionFamily
    from edgeft_runtime.image import ImagePreprocessor

    fam = TorchvisionFamily("torchvision:resnet18", VisionConfig(image_size=32))
    path = str(next(stripes.rglob("*.png")))
    ds = fam.dataset([path], [0], train=False)
    runtime = ImagePreprocessor(32, VisionConfig().mean, VisionConfig().std)(([path]), ["pixel_values"])
    np.testing.assert_array_equal(ds[0]["pixel_values"].numpy(), runtime["pixel_values"][0])
    aug = fam.dataset([path], [0], train=True)[0]["pixel_values"]
    assert tuple(aug.shape) == (3, 32, 32)


def test_torchvision_weights_file_loads_backbone_and_keeps_new_head(tmp_path):
    import torch
    import torchvision

    from edgeft.config import VisionConfig
    from edgeft.models.vision import TorchvisionFamily

    src = torchvision.models.resnet18(weights=None, num_classes=1000)
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    model = TorchvisionFamily("torchvision:resnet18", VisionConfig(image_size=32)).new_model(
        ["a", "b", "c"], weights=str(tmp_path / "r18.pth"))
    assert torch.equal(model.net.conv1.weight, src.conv1.weight)
    assert model.net.fc.out_features == 3


def test_random_init_mobilenet_v3_gets_default_batchnorm_momentum_pretrained_keeps_its_own(tmp_path):
    import torch
    import torchvision

    from edgeft.config import VisionConfig
    from edgeft.models.vision import TorchvisionFamily

    def momenta(model):
        return {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}

    fam = TorchvisionFamily("torchvision:mobilenet_v3_small", VisionConfig(image_size=32))
    assert momenta(torchvision.models.mobilenet_v3_small(weights=None)) == {0.01}   # torchvision's choice
    with pytest.warns(UserWarning, match="random initialization"):
        assert momenta(fam.new_model(["a", "b"])) == {0.1}
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), tmp_path / "m.pth")
    assert momenta(fam.new_model(["a", "b"], weights=str(tmp_path / "m.pth"))) == {0.01}


def test_hf_mobilenet_v2_built_from_config_runs_the_flow(stripes, loose_vision_target, tmp_path):
    out = tmp_path / "out"
    r = run("run", "--model", "hf-config:mobilenet_v2", "--data", stripes, "--image-size", "32", "--epochs", "1",
            "--max-steps", "2", "--qat-epochs", "1", "--target", loose_vision_target, "--out", out)
    assert r.exit_code in (0, 3), r.output           # 2 steps from random init: gates may fail, the flow must not
    assert json.loads((out / "export/parity.json").read_text())["fp32"]["ok"]
    assert (out / "compile/vision-int8/engine/preprocessor.json").is_file()
    assert json.loads((out / "report.json").read_text())["engines"][0]["latency_ms"]["p50_ms"] > 0
