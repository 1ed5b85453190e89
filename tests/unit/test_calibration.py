import pytest

from edgeft.calibration import batches, fingerprint, load_calibration


def test_default_calibration_loads_and_streams_in_batches():
    spec = load_calibration("default")
    texts = [f"text {i}" for i in range(100)]
    got = list(batches(texts, spec.model_copy(update={"num_samples": 70, "batch_size": 32})))
    assert [len(b) for b in got] == [32, 32, 6]
    assert len({t for b in got for t in b}) == 70


def test_calibration_fingerprint_changes_with_samples_and_seed():
    spec = load_calibration("default")
    texts = [f"text {i}" for i in range(500)]
    a = fingerprint(texts, spec)
    assert a == fingerprint(texts, spec)
    assert a != fingerprint(texts, spec.model_copy(update={"seed": 1}))
    full = spec.model_copy(update={"num_samples": 500})
    assert fingerprint(texts, full) != fingerprint(texts[:-1] + ["changed"], full)


def test_shipped_calibration_is_auto_on_train():
    from edgeft.calibration import CalibrationSpec
    from edgeft.targets import REPO_ROOT
    from edgeft.yamlio import load_yaml

    spec = CalibrationSpec.model_validate(load_yaml(REPO_ROOT / "calibration/default.yaml"))
    assert spec.method == "auto" and spec.split == "train"


def test_selection_samples_sets_how_many_validation_examples_the_fidelity_error_uses(tiny_model_dir):
    """``auto`` and the QAT keep-check compare with the FP32 model on ``selection_samples`` validation
    examples, never on test (verify's split)."""
    import torch

    from edgeft.data.loading import Example, SplitData
    from edgeft.models.hf_text import load_classifier, load_tokenizer
    from edgeft.stages.finetune import _fidelity_error

    tok = load_tokenizer(tiny_model_dir)
    seen: list[str] = []

    class Family:
        def feeds(self, texts, max_length):
            seen.extend(texts)
            return tok(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")

    data = SplitData(train=[Example(f"train {i}", "a") for i in range(50)],
                     validation=[Example(f"valid {i}", "a") for i in range(40)],
                     test=[Example(f"test {i}", "a") for i in range(50)], labels=["a", "b"])
    model = load_classifier(tiny_model_dir, ["a", "b"], dropout=0.0).eval()
    spec = load_calibration("default").model_copy(update={"selection_samples": 12, "batch_size": 5})
    error = _fidelity_error(model, Family(), data, spec)
    assert len(seen) == 12 and len(set(seen)) == 12 and all(t.startswith("valid") for t in seen)
    assert error(model) == 0.0
    with torch.no_grad():
        model.classifier.bias += 0.5
    assert error(model) == pytest.approx(0.25, rel=1e-5)    # both logits moved by 0.5 on every example

    seen.clear()
    _fidelity_error(model, Family(), data, spec.model_copy(update={"selection_samples": 400}))
    assert len(seen) == 40                 # capped at the split's size
